//! The relay `listen` embeds when no `--relay` is given: the relay library on 127.0.0.1:8443
//! (or `--relay-port`; a taken port is an error, never another port), with a fresh self-signed certificate that only this
//! process trusts and a fresh random token that only this process knows. Any other local
//! process that connects to the port is refused (401); this process's own session presents the
//! token and, since the token changes with every start, owns its tunnel by the claim key it
//! keeps in the config dir, so the remembered tunnel stays this machine's across restarts.

use anyhow::Context as _;
use illumitunnel::{paths, Token};
use illumitunnel_relay::tls::SelfSigned;
use illumitunnel_relay::{Config, RelayError, TlsConfig};

use crate::usage::UsageError;
use rand::RngCore;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Random bytes in the per-process token (256 bits).
const TOKEN_BYTES: usize = 32;

/// A running embedded relay.
pub(super) struct Embedded {
    /// The port it listens on.
    pub port: u16,
    /// Its self-signed certificate, the only one the session trusts.
    pub cert: CertificateDer<'static>,
    /// The same certificate as PEM, for `trigger` (`listen-ca.pem`).
    pub cert_pem: String,
    /// The token it accepts, and no other: this process's session presents it.
    pub token: Token,
    /// The relay task; it ends on shutdown.
    pub task: JoinHandle<Result<(), RelayError>>,
}

/// Starts the relay library in this process on 127.0.0.1:`port` with a fresh self-signed
/// certificate that only this client trusts; a taken port is a usage error naming `--relay-port`.
pub(super) async fn start_embedded(
    port: u16,
    shutdown: &CancellationToken,
) -> anyhow::Result<Embedded> {
    let cert = SelfSigned::generate(&["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(|e| anyhow::anyhow!("could not create the embedded relay's certificate: {e}"))?;
    let addr = format!("127.0.0.1:{port}");
    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        // Another port would change the tunnel URL silently: the user picks one instead.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(UsageError(format!(
                "port {port} is taken (by another program, or another listen on this machine); pass --relay-port PORT or set ILLUMITUNNEL_PORT"
            ))
            .into())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("could not start the embedded relay on {addr}"))
        }
    };
    let port = listener
        .local_addr()
        .context("could not start the embedded relay")?
        .port();
    let token = process_token();
    // The relay creates its data dir 0700; one an older release left 0755 is tightened here.
    let data_dir = paths::default_relay_data_dir();
    paths::ensure_own_dir(&data_dir)
        .with_context(|| format!("could not create {}", data_dir.display()))?;
    let mut config = Config::embedded(
        TlsConfig::Certified {
            chain: vec![cert.cert.clone()],
            key: cert.key.clone_key(),
        },
        data_dir,
    );
    config.public_url = Some(format!("https://127.0.0.1:{port}"));
    config.allow_anonymous = false;
    config.process_token = Some(token.clone());
    let task = tokio::spawn(illumitunnel_relay::run(
        config,
        listener,
        shutdown.child_token(),
    ));
    Ok(Embedded {
        port,
        cert_pem: cert.cert_pem.clone(),
        cert: cert.cert,
        token,
        task,
    })
}

/// A token for this process only, from the operating system's random source.
fn process_token() -> Token {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Token::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}
