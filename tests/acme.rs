//! `--acme-domain` end to end against Pebble, Let's Encrypt's test CA (Debian package
//! `pebble`, installed by `.ci/run`). `pebble-challtestsrv` is Pebble's DNS and answers every
//! name with 127.0.0.1; Pebble's TLS-ALPN-01 port is set to the relay's port, so the relay
//! proves `relay.test` on its own listener, as it would on 443. Pebble serves its API with a
//! certificate this test makes, and its root (new on every launch) comes from its management
//! port. Everything listens on 127.0.0.1, on ports picked free just before.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use support::target::Target;
use support::{closed_port, command, runtime, temp_dir, test_ca, ChildGuard, Listen, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The name the relay gets a certificate for; challtestsrv resolves it to 127.0.0.1.
const DOMAIN: &str = "relay.test";
/// Longest an ACME order may take (Pebble validates at once with PEBBLE_VA_NOSLEEP, and
/// rustls-acme polls a processing order after 1 s, 2 s, …).
const ACME_DEADLINE: Duration = Duration::from_secs(60);

/// A Debian `pebble` binary on PATH, or a failure that says how to get it.
fn pebble_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: the ACME tests need Pebble; run `apt-get install -y pebble` (.ci/run installs it)"
            )
        })
}

/// Pebble and its DNS, ready to issue certificates validated on `tls_port`.
struct Pebble {
    directory: String,
    /// Pebble's own HTTPS CA, for `--acme-ca-root`.
    api_ca: PathBuf,
    /// The root Pebble signs certificates with.
    root: CertificateDer<'static>,
    _dns: ChildGuard,
    _pebble: ChildGuard,
}

impl Pebble {
    fn start(dir: &Path, tls_port: u16) -> Pebble {
        let (pebble, challtestsrv) = (pebble_bin("pebble"), pebble_bin("pebble-challtestsrv"));
        let dns_port = closed_port();
        let mut dns = Command::new(challtestsrv);
        dns.args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{}", closed_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""]);
        let dns = ChildGuard::spawn(dns);
        dns.wait_for_text(Stream::Stdout, "Starting management server");

        let ca = test_ca(dir);
        let (api, management) = (closed_port(), closed_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{api}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": ca.cert_pem,
                "privateKey": ca.key_pem,
                "httpPort": closed_port(),
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).expect("write the Pebble config");
        let mut cmd = Command::new(pebble);
        cmd.arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0");
        let pebble = ChildGuard::spawn(cmd);
        pebble.wait_for_text(Stream::Stdout, "Listening on");

        let rt = runtime();
        let root_pem = rt.block_on(get_root(management, ca.ca_der.clone()));
        let root = CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap_or_else(|e| {
            panic!("Pebble's /roots/0 is not a PEM certificate ({e}): {root_pem}")
        });
        Pebble {
            directory: format!("https://127.0.0.1:{api}/dir"),
            api_ca: ca.ca_pem,
            root,
            _dns: dns,
            _pebble: pebble,
        }
    }
}

/// `GET /roots/0` from Pebble's management port (HTTP/1.0: the answer ends with the connection).
async fn get_root(port: u16, api_ca: CertificateDer<'static>) -> String {
    let deadline = Instant::now() + support::DEADLINE;
    let mut tls = loop {
        match handshake(port, "127.0.0.1", &api_ca).await {
            Ok(tls) => break tls,
            Err(err) if Instant::now() < deadline => {
                eprintln!("Pebble's management port not ready yet: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("Pebble's management port never answered: {err}"),
        }
    };
    tls.write_all(b"GET /roots/0 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("ask for the root");
    let mut answer = String::new();
    tokio::time::timeout(support::DEADLINE, tls.read_to_string(&mut answer))
        .await
        .expect("root within the deadline")
        .ok();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

/// A TLS handshake with 127.0.0.1:`port` for `name`, trusting only `root`.
async fn handshake(
    port: u16,
    name: &str,
    root: &CertificateDer<'static>,
) -> Result<TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        support::DEADLINE,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?;
    tls.map_err(|e| e.to_string())
}

/// The leaf the relay serves for `relay.test`, once a client trusting only `root` accepts it.
async fn wait_for_certificate(
    port: u16,
    root: &CertificateDer<'static>,
    relay: &ChildGuard,
) -> Vec<u8> {
    let deadline = Instant::now() + ACME_DEADLINE;
    loop {
        match handshake(port, DOMAIN, root).await {
            Ok(tls) => {
                let (_, connection) = tls.get_ref();
                let chain = connection.peer_certificates().expect("a certificate chain");
                return chain[0].to_vec();
            }
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "the relay never served a certificate from Pebble: {err}\n{}",
                    relay.stderr()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// `POST /t/{tunnel}/hook` as IllumiChat would send it: to the relay's port, for `relay.test`,
/// trusting only Pebble's root.
async fn post_webhook(
    port: u16,
    root: &CertificateDer<'static>,
    tunnel: &str,
    body: &'static str,
) -> u16 {
    let tls = handshake(port, DOMAIN, root)
        .await
        .expect("handshake for relay.test");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP/1.1 over TLS");
    tokio::spawn(connection);
    let request = http::Request::post(format!("/t/{tunnel}/hook"))
        .header("host", DOMAIN)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    let response = tokio::time::timeout(support::DEADLINE, sender.send_request(request))
        .await
        .expect("answer within the deadline")
        .expect("an answer");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

fn start_relay(home: &Path, data_dir: &Path, port: u16, pebble: &Pebble) -> ChildGuard {
    let mut cmd = command("illumitunnel-relay", home);
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .args(["--acme-domain", DOMAIN, "--acme-email", "ops@relay.test"])
        .args(["--acme-directory", &pebble.directory, "--acme-ca-root"])
        .arg(&pebble.api_ca)
        .arg("--allow-anonymous");
    let relay = ChildGuard::spawn(cmd);
    relay.wait_for_text(Stream::Stdout, "illumitunnel-relay listening on https://");
    relay
}

#[test]
fn acme_certificate_from_pebble_serves_webhooks() {
    let dir = temp_dir();
    let port = closed_port();
    let pebble = Pebble::start(dir.path(), port);
    let data_dir = dir.path().join("relay");
    let relay = start_relay(dir.path(), &data_dir, port, &pebble);
    let rt = runtime();
    rt.block_on(wait_for_certificate(port, &pebble.root, &relay));

    // Account and certificate are cached privately for the next start.
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .expect("cache entry")
            .permissions()
            .mode()
            & 0o777
    };
    let acme = data_dir.join("acme");
    assert_eq!(mode(&acme), 0o700);
    let cached: Vec<_> = std::fs::read_dir(&acme)
        .expect("read the ACME cache")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(
        cached.iter().any(|p| p.to_string_lossy().contains("cert-")),
        "{cached:?}"
    );
    assert!(
        cached
            .iter()
            .any(|p| p.to_string_lossy().contains("account-")),
        "{cached:?}"
    );
    for path in &cached {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }

    // A webhook for relay.test reaches a connected client's local server.
    let target = Target::ok(&rt);
    let listen = Listen::start(
        Some(&format!("https://127.0.0.1:{port}")),
        &target.url(""),
        "acme-e2e",
        &["--insecure"],
    );
    let status = rt.block_on(post_webhook(
        port,
        &pebble.root,
        "acme-e2e",
        r#"{"event":"ticket.created"}"#,
    ));
    assert_eq!(status, 200, "{}", listen.guard.stderr());
    let received = target.wait_for_requests(1);
    assert_eq!(received[0].path, "/hook");
    assert_eq!(received[0].body, br#"{"event":"ticket.created"}"#);
}

#[test]
fn a_certificate_due_for_renewal_is_replaced_without_a_restart() {
    let dir = temp_dir();
    let port = closed_port();
    let pebble = Pebble::start(dir.path(), port);

    // A cached certificate two thirds through its life: served at start, renewed at once.
    let data_dir = dir.path().join("relay");
    let acme = data_dir.join("acme");
    std::fs::create_dir_all(&acme).expect("create the ACME cache");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![DOMAIN.to_string()]).expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(80);
    params.not_after = now + time::Duration::days(9);
    let old = params.self_signed(&key).expect("old certificate");
    let hash: String = Sha256::digest(pebble.directory.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cache_file = acme.join(format!("cert-{hash}-{DOMAIN}.pem"));
    let seed = format!("{}{}", key.serialize_pem(), old.pem());
    std::fs::write(&cache_file, &seed).expect("seed the cache");

    let relay = start_relay(dir.path(), &data_dir, port, &pebble);
    let pid = relay.pid();
    relay.wait_for_text(Stream::Stderr, "serving the cached ACME certificate");
    let rt = runtime();
    let renewed = rt.block_on(wait_for_certificate(port, &pebble.root, &relay));
    assert_ne!(renewed, old.der().to_vec());
    relay.wait_for_text(Stream::Stderr, "serving a new certificate from the ACME CA");
    assert_eq!(relay.pid(), pid);
    // `systemctl reload` sends SIGHUP: an ACME relay has nothing to reload and keeps running.
    relay.signal("HUP");
    relay.wait_for_text(
        Stream::Stderr,
        "SIGHUP: no --tls-cert or --tokens-file to reload",
    );
    let mut relay = relay;
    assert!(
        relay.try_status().is_none(),
        "the relay restarted or stopped"
    );
    let deadline = Instant::now() + support::DEADLINE;
    while std::fs::read_to_string(&cache_file).expect("cache file") == seed {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never cached"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
