//! `illumitunnel listen`: connect to a relay (or start one in-process), forward every delivery
//! to `--forward-to`, record it, and show it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use illumitunnel::store::CaptureStore;
use illumitunnel::{paths, Token, TunnelName};
use illumitunnel_relay::tls::SelfSigned;
use illumitunnel_relay::{Config, OfflinePolicy, RelayError, TlsConfig};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Ctx, UsageError};
use crate::cli::ListenArgs;
use crate::forward::{Forwarder, Target};
use crate::output::{self, Banner, Format};
use crate::recorder::{self, ScreenSink};
use crate::session::tls::{self, Trust};
use crate::session::{self, RelayUrl, Session, SessionConfig, OUTBOUND_QUEUE};

/// Where the embedded relay listens when the port is free.
pub const EMBEDDED_ADDR: &str = "127.0.0.1:8443";
/// Websocket ping interval unless `--keepalive-ms` says otherwise.
pub const DEFAULT_KEEPALIVE: Duration = illumitunnel_relay::config::DEFAULT_KEEPALIVE;
/// Events waiting for the screen.
const SCREEN_QUEUE: usize = 1024;
/// How long shutdown waits for the capture store writer and the embedded relay.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How the relay's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustChoice {
    /// Web PKI roots.
    Default,
    /// Web PKI roots plus the certificates in this PEM file.
    Ca(PathBuf),
    /// Anything.
    Insecure,
}

/// `listen`'s arguments, validated.
#[derive(Debug)]
pub struct ListenConfig {
    /// Where deliveries go.
    pub target: Target,
    /// The relay; `None` starts one in-process.
    pub relay: Option<RelayUrl>,
    /// Client token.
    pub token: Option<Token>,
    /// Tunnel name; `None` uses the remembered one.
    pub tunnel: Option<TunnelName>,
    /// Relay certificate trust.
    pub trust: TrustChoice,
    /// How deliveries are shown.
    pub format: Format,
    /// Whether the user asked for lines even in a terminal.
    pub no_tui: bool,
    /// Websocket ping interval.
    pub keepalive: Duration,
}

impl TryFrom<&ListenArgs> for ListenConfig {
    type Error = UsageError;

    fn try_from(args: &ListenArgs) -> Result<Self, UsageError> {
        let usage = |e: &dyn std::fmt::Display| UsageError(e.to_string());
        let forward_to = args.forward_to.as_deref().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            UsageError(
                "missing --forward-to URL; pass your local server's webhook URL, e.g. --forward-to http://localhost:3000/webhooks/illumichat"
                    .into(),
            )
        })?;
        let target = Target::parse(forward_to).map_err(|e| usage(&e))?;
        let relay = args
            .relay
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(RelayUrl::parse)
            .transpose()
            .map_err(|e| usage(&e))?;
        let tunnel = args
            .tunnel
            .as_deref()
            .map(TunnelName::parse)
            .transpose()
            .map_err(|e| UsageError(format!("{e}; pass another with --tunnel NAME")))?;
        let trust = match (&args.ca, args.insecure) {
            (Some(_), true) => {
                return Err(UsageError(
                    "--ca and --insecure contradict each other; pass one of them".into(),
                ))
            }
            (Some(path), false) => TrustChoice::Ca(path.clone()),
            (None, true) => TrustChoice::Insecure,
            (None, false) => TrustChoice::Default,
        };
        if relay.is_none() && trust != TrustChoice::Default {
            return Err(UsageError(
                "--ca and --insecure only apply with --relay; the embedded relay is trusted already".into(),
            ));
        }
        let keepalive = match args.keepalive_ms {
            None => DEFAULT_KEEPALIVE,
            Some(0) => return Err(UsageError("--keepalive-ms must be at least 1".into())),
            Some(ms) => Duration::from_millis(ms),
        };
        Ok(ListenConfig {
            target,
            relay,
            token: args
                .token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Token::new),
            tunnel,
            trust,
            format: if args.json {
                Format::Json
            } else {
                Format::Lines
            },
            no_tui: args.no_tui,
            keepalive,
        })
    }
}

/// Picks `listen`'s screen: `--json` → JSON lines; `--no-tui` or stdout not a terminal → lines;
/// otherwise the inspector. The inspector is not wired in yet, so a terminal gets lines too:
/// wiring `crate::tui` is replacing the last arm.
fn choose_screen(config: &ListenConfig) -> Format {
    match config.format {
        Format::Json => Format::Json,
        _ if config.no_tui || !std::io::stdout().is_terminal() => Format::Lines,
        _ => Format::Lines,
    }
}

/// Runs `listen` until Ctrl-C / SIGTERM (exit 0) or a refusal (exit 1).
pub async fn run(args: ListenArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let config = ListenConfig::try_from(&args)?;
    let store = CaptureStore::open(&ctx.store)?;
    let tunnel = match config.tunnel.clone() {
        Some(t) => t,
        None => remembered_tunnel(),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let (relay, trust, embedded) = match &config.relay {
        Some(url) => {
            let trust = match &config.trust {
                TrustChoice::Default => Trust::WebPki(Vec::new()),
                TrustChoice::Ca(path) => Trust::WebPki(tls::load_ca(path).map_err(UsageError)?),
                TrustChoice::Insecure => Trust::Insecure,
            };
            (url.clone(), trust, None)
        }
        None => {
            let embedded = start_embedded(&shutdown).await?;
            (
                RelayUrl::loopback(true, embedded.port),
                Trust::Only(vec![embedded.cert.clone()]),
                Some(embedded),
            )
        }
    };
    let tls = tls::client_config(trust).map_err(anyhow::Error::msg)?;

    let format = choose_screen(&config);
    let (screen_tx, screen_rx) = mpsc::channel(SCREEN_QUEUE);
    let (public_url_tx, public_url_rx) = watch::channel(None);
    let (outbound_tx, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let (recorder, recorder_thread) = recorder::spawn(
        store,
        ScreenSink {
            events: screen_tx.clone(),
            lossless: true,
        },
        outbound_tx.clone(),
    )
    .context("could not start the capture store writer")?;
    let banner = Banner {
        forward_to: config.target.to_string(),
        store: ctx.store.clone(),
        embedded_relay: embedded
            .as_ref()
            .map(|e| format!("https://127.0.0.1:{}", e.port)),
    };
    let clock = ctx.clock;
    let screen = tokio::task::spawn_blocking(move || {
        output::run_lines(screen_rx, public_url_rx, banner, format, clock)
    });

    let session = Session {
        config: Arc::new(SessionConfig {
            relay,
            token: config.token.clone(),
            tunnel,
            tls,
            keepalive: config.keepalive,
        }),
        forwarder: Forwarder::new(config.target.clone()),
        recorder,
        screen: screen_tx,
        public_url: public_url_tx,
        outbound_tx,
        outbound_rx,
    };
    let mut relay_task = embedded.map(|e| e.task);
    let result = tokio::select! {
        result = session::run(session, shutdown.clone()) => result,
        stopped = wait_relay(&mut relay_task) => Err(stopped),
    };
    shutdown.cancel();

    // Every recorder handle is gone with the session: the writer commits what is left and ends,
    // which ends the screen once it has shown the last delivery.
    let joined = tokio::time::timeout(
        STOP_TIMEOUT,
        tokio::task::spawn_blocking(move || recorder_thread.join()),
    )
    .await;
    if joined.is_err() {
        tracing::warn!("the capture store writer did not stop in time");
    }
    match tokio::time::timeout(STOP_TIMEOUT, screen).await {
        Ok(Ok(Err(e))) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            tracing::warn!(%e, "could not write to stdout");
        }
        _ => {}
    }
    if let Some(task) = relay_task {
        let _ = tokio::time::timeout(STOP_TIMEOUT, task).await;
    }
    result
}

async fn wait_relay(task: &mut Option<JoinHandle<Result<(), RelayError>>>) -> anyhow::Error {
    let Some(handle) = task.as_mut() else {
        return std::future::pending().await;
    };
    let outcome = handle.await;
    *task = None;
    match outcome {
        Ok(Ok(())) => anyhow::anyhow!("the embedded relay stopped"),
        Ok(Err(e)) => anyhow::anyhow!("the embedded relay stopped: {e}"),
        Err(e) => anyhow::anyhow!("the embedded relay crashed: {e}"),
    }
}

struct Embedded {
    port: u16,
    cert: CertificateDer<'static>,
    task: JoinHandle<Result<(), RelayError>>,
}

/// Starts the relay library in this process on 127.0.0.1:8443 (or a free port) with a fresh
/// self-signed certificate that only this client trusts.
async fn start_embedded(shutdown: &CancellationToken) -> anyhow::Result<Embedded> {
    let cert = SelfSigned::generate(&["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(|e| anyhow::anyhow!("could not create the embedded relay's certificate: {e}"))?;
    let listener = match TcpListener::bind(EMBEDDED_ADDR).await {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("could not start the embedded relay on 127.0.0.1")?;
            let port = listener
                .local_addr()
                .context("could not start the embedded relay")?
                .port();
            eprintln!("port 8443 is in use; the embedded relay uses port {port} instead");
            listener
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("could not start the embedded relay on {EMBEDDED_ADDR}"))
        }
    };
    let port = listener
        .local_addr()
        .context("could not start the embedded relay")?
        .port();
    let config = Config {
        tls: TlsConfig::Certified {
            chain: vec![cert.cert.clone()],
            key: cert.key.clone_key(),
        },
        public_url: Some(format!("https://127.0.0.1:{port}")),
        tokens: Vec::new(),
        allow_anonymous: true,
        data_dir: paths::default_relay_data_dir(),
        max_body: illumitunnel_relay::config::DEFAULT_MAX_BODY,
        response_timeout: illumitunnel_relay::config::DEFAULT_RESPONSE_TIMEOUT,
        offline: OfflinePolicy::Queue,
        keepalive: illumitunnel_relay::config::DEFAULT_KEEPALIVE,
    };
    let task = tokio::spawn(illumitunnel_relay::run(
        config,
        listener,
        shutdown.child_token(),
    ));
    Ok(Embedded {
        port,
        cert: cert.cert,
        task,
    })
}

/// The tunnel name kept in the config dir, created on first use so the URL survives restarts.
fn remembered_tunnel() -> TunnelName {
    let path = paths::config_dir().join("tunnel");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(name) = TunnelName::parse(text.trim()) {
            return name;
        }
    }
    let name = TunnelName::random();
    let saved = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, format!("{name}\n")));
    if let Err(err) = saved {
        tracing::warn!(%err, path = %path.display(), "could not remember the tunnel name; the URL will change next time");
    }
    name
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = shutdown.cancelled() => return,
            }
            shutdown.cancel();
            return;
        }
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => shutdown.cancel(),
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ListenConfig, UsageError> {
        let mut argv = vec!["illumitunnel", "listen"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        match cli.command {
            crate::cli::Command::Listen(a) => ListenConfig::try_from(&a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn validates_arguments() {
        let ok = parse(&[
            "--forward-to",
            "http://localhost:3000/hooks",
            "--tunnel",
            "my-app",
        ])
        .unwrap();
        assert_eq!(ok.target.to_string(), "http://localhost:3000/hooks");
        assert_eq!(ok.tunnel.unwrap().as_str(), "my-app");
        assert!(ok.relay.is_none());
        assert_eq!(ok.keepalive, DEFAULT_KEEPALIVE);

        let ok = parse(&[
            "--forward-to",
            "https://localhost:3000",
            "--relay",
            "https://relay.example.com",
            "--insecure",
            "--keepalive-ms",
            "250",
        ])
        .unwrap();
        assert_eq!(ok.trust, TrustChoice::Insecure);
        assert_eq!(ok.keepalive, Duration::from_millis(250));
        assert_eq!(ok.relay.unwrap().to_string(), "wss://relay.example.com:443");

        for (args, needle) in [
            (&[][..], "missing --forward-to URL"),
            (&["--forward-to", ""][..], "missing --forward-to URL"),
            (&["--forward-to", "localhost:3000"][..], "missing http://"),
            (
                &["--forward-to", "ftp://x"][..],
                "only http:// and https://",
            ),
            (
                &["--forward-to", "http://x", "--tunnel", "No_Way"][..],
                "invalid tunnel name",
            ),
            (
                &["--forward-to", "http://x", "--relay", "relay.example.com"][..],
                "invalid --relay",
            ),
            (
                &["--forward-to", "http://x", "--insecure"][..],
                "only apply with --relay",
            ),
            (
                &["--forward-to", "http://x", "--keepalive-ms", "0"][..],
                "at least 1",
            ),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn empty_token_means_none() {
        let c = parse(&["--forward-to", "http://x", "--token", ""]).unwrap();
        assert!(c.token.is_none());
    }
}
