//! Trust that follows the user: the CA `login --ca` saved for a self-signed relay is used by
//! every command that reaches that relay or its tunnels (`listen`, `trigger`), and a certificate
//! given with `--forward-ca` or `--ca` that is exactly the one the server presents is accepted
//! even when it is marked `CA:TRUE` (what `openssl req -x509` makes).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use support::sender::Request;
use support::target::Target;
use support::{after, command, runtime, temp_dir, ChildGuard, Finished, Relay, Stream};

const TOKEN: &str = "trust-token-4c1d8e-2a9f7b3e";

fn tokens_file(dir: &Path) -> String {
    let path = dir.join("tokens");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write tokens file");
    path.to_str().expect("UTF-8 path").to_string()
}

/// `illumitunnel login ARGS` with the token piped in.
fn login(home: &Path, args: &[&str]) -> Finished {
    let mut cmd = command("illumitunnel", home);
    cmd.arg("login").args(args);
    support::run_with_stdin(cmd, format!("{TOKEN}\n").as_bytes())
}

/// `listen --no-tui` with the relay, token and CA from config.toml.
fn listen_from_config(home: &Path, forward_to: &str, tunnel: &str, extra: &[&str]) -> ChildGuard {
    let mut cmd = command("illumitunnel", home);
    cmd.args([
        "listen", forward_to, "--tunnel", tunnel, "--no-tui", "--json",
    ])
    .args(extra);
    let guard = ChildGuard::spawn(cmd);
    guard.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    guard
}

#[test]
fn trigger_through_a_self_signed_relay_uses_the_ca_login_saved() {
    let rt = runtime();
    let handler = Target::ok(&rt);
    let dir = temp_dir();
    let relay = Relay::start(&[
        "--self-signed",
        "--hostname",
        "localhost",
        "--tokens-file",
        &tokens_file(dir.path()),
    ]);
    let line = relay.guard.wait_for_text(Stream::Stdout, "relay-ca.pem");
    let ca = after(&line, "--ca ").to_string();
    // The tunnel URL the relay advertises is on `localhost`, the name it was made for.
    let url = relay.url.replace("127.0.0.1", "localhost");
    let home = temp_dir();

    let out = login(home.path(), &["--relay", &url, "--ca", &ca]);
    assert_eq!(out.code(), 0, "{out:?}");
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["status", "--json"]);
    let status = ChildGuard::run(cmd);
    let status: serde_json::Value =
        serde_json::from_str(status.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {status:?}"));
    assert_eq!(status["ca"], ca.as_str(), "{status}");
    let _listen = listen_from_config(home.path(), &handler.url("/hooks"), "trusted-relay", &[]);

    // No --ca, no --url: the tunnel of the running listen, trusted by the CA login saved.
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["trigger", "ticket.created", "--json"]);
    let sent = ChildGuard::run(cmd);
    assert_eq!(sent.code(), 0, "{sent:?}");
    let result: serde_json::Value =
        serde_json::from_str(sent.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {sent:?}"));
    assert_eq!(result["status"], 200, "{result}");
    let received = handler.wait_for_requests(1);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/hooks");
    assert!(
        String::from_utf8_lossy(&received[0].body).contains("ticket.created"),
        "{:?}",
        received[0].body
    );
}

/// A self-signed certificate marked `CA:TRUE` for 127.0.0.1 and localhost, as
/// `openssl req -x509` makes one: (cert PEM path, key PEM path).
fn ca_marked_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-sign");
    let cert_path = dir.join("x509.pem");
    let key_path = dir.join("x509-key.pem");
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

/// An https server on 127.0.0.1:0 presenting `cert` that answers each request `200 ok` and
/// counts them.
fn https_handler(
    rt: &tokio::runtime::Runtime,
    cert: &Path,
    key: &Path,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use rustls::pki_types::pem::PemObject as _;
    let certs = vec![rustls::pki_types::CertificateDer::from_pem_file(cert).expect("cert PEM")];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("key PEM");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    rt.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0; 16 * 1024];
                let _ = tls.read(&mut buf).await;
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, count)
}

#[test]
fn forward_ca_accepts_the_exact_certificate_the_handler_presents_even_with_ca_true() {
    let rt = runtime();
    let pki = temp_dir();
    let (cert, key) = ca_marked_certificate(pki.path());
    let (port, count) = https_handler(&rt, &cert, &key);
    let relay = Relay::http(&[]);
    let home = temp_dir();
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["listen", &format!("https://localhost:{port}/hooks")])
        .args(["--relay", &relay.url, "--tunnel", "x509-handler"])
        .args(["--no-tui", "--json", "--forward-ca"])
        .arg(&cert);
    let listen = ChildGuard::spawn(cmd);
    listen.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));

    let response = Request::post(&relay.tunnel_url("x509-handler"))
        .body("{}")
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "ok");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    let line = listen.wait_for_line(Stream::Stdout, |l| l.starts_with('{'));
    let delivery: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(delivery["error"], serde_json::Value::Null, "{delivery}");
}

#[test]
fn login_ca_accepts_the_exact_certificate_a_relay_presents_even_with_ca_true() {
    let pki = temp_dir();
    let (cert, key) = ca_marked_certificate(pki.path());
    let dir = temp_dir();
    let (cert_arg, key_arg) = (
        cert.to_str().expect("UTF-8").to_string(),
        key.to_str().expect("UTF-8").to_string(),
    );
    let relay = Relay::start(&[
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &key_arg,
        "--tokens-file",
        &tokens_file(dir.path()),
    ]);
    let home = temp_dir();
    let out = login(home.path(), &["--relay", &relay.url, "--ca", &cert_arg]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("logged in to"), "{out:?}");
}
