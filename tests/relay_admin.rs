//! Running a relay without restarting it: SIGHUP reloads the PEM certificate and the tokens
//! file with sessions kept open, and `illumitunnel-relay token add | list | revoke` changes the
//! stored tokens of a running relay within 5 s.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use support::sender::{Request, Trust};
use support::target::Target;
use support::{command, runtime, temp_dir, test_ca, ChildGuard, Finished, Relay, Stream};

/// `token add|list|revoke` applies to a running relay within this long.
const APPLY_WITHIN: Duration = Duration::from_secs(5);

/// `illumitunnel listen` with `token` on `tunnel`, its own home, `extra` flags.
struct Client {
    guard: ChildGuard,
    _home: tempfile::TempDir,
}

fn listen(relay: &Relay, tunnel: &str, token: &str, forward_to: &str, extra: &[&str]) -> Client {
    let home = temp_dir();
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["listen", "--relay", &relay.url, "--tunnel", tunnel])
        .args(["--token", token, "--forward-to", forward_to])
        .args(["--no-tui", "--json", "--store"])
        .arg(home.path().join("captures.db"))
        .args(extra);
    Client {
        guard: ChildGuard::spawn(cmd),
        _home: home,
    }
}

impl Client {
    fn wait_connected(&self) {
        self.guard
            .wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    }

    /// Waits for the client to give up and returns its one error line.
    fn refusal(&mut self) -> String {
        let status = self.guard.wait_for_exit();
        assert!(!status.success(), "{}", self.guard.stderr());
        let stderr = self.guard.stderr();
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        errors[0].to_string()
    }
}

fn token_cmd(data_dir: &Path, args: &[&str]) -> Finished {
    let home = temp_dir();
    let mut cmd = command("illumitunnel-relay", home.path());
    cmd.arg("token").args(args).arg("--data-dir").arg(data_dir);
    ChildGuard::run(cmd)
}

/// Whether a TLS client trusting only `root` completes a handshake with the relay.
fn handshake_trusting(relay: &Relay, root: &CertificateDer<'static>) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("a root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let mut tcp = std::net::TcpStream::connect(relay.authority()).expect("connect to the relay");
    tcp.set_read_timeout(Some(support::DEADLINE))
        .expect("read timeout");
    while tls.is_handshaking() {
        if tls.complete_io(&mut tcp).is_err() {
            return false;
        }
    }
    true
}

fn write_tokens(path: &Path, tokens: &[&str]) {
    std::fs::write(path, tokens.join("\n") + "\n").expect("write the tokens file");
}

#[test]
fn sighup_reloads_certificate_and_tokens_while_sessions_stay_open() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let dir = temp_dir();
    let (old_dir, new_dir) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::create_dir_all(&old_dir).expect("mkdir");
    std::fs::create_dir_all(&new_dir).expect("mkdir");
    let (old, new) = (test_ca(&old_dir), test_ca(&new_dir));
    let (cert, key, tokens) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("tokens"),
    );
    std::fs::copy(&old.cert_pem, &cert).expect("install the first certificate");
    std::fs::copy(&old.key_pem, &key).expect("install the first key");
    write_tokens(
        &tokens,
        &[
            "token-kept-5e1-a0c7f3b9d2e6",
            "token-dropped-9a2-f4b8e1c6a3d0",
        ],
    );
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    let relay = Relay::start(&[
        "--tls-cert",
        &path(&cert),
        "--tls-key",
        &path(&key),
        "--tokens-file",
        &path(&tokens),
    ]);
    assert!(handshake_trusting(&relay, &old.ca_der));

    // A session on the first certificate, with a token that stays in the file.
    let ca_both = dir.path().join("both-cas.pem");
    let both = std::fs::read_to_string(&old.ca_pem).expect("CA")
        + &std::fs::read_to_string(&new.ca_pem).expect("CA");
    std::fs::write(&ca_both, both).expect("write the CA bundle");
    let session = listen(
        &relay,
        "reloaded",
        "token-kept-5e1-a0c7f3b9d2e6",
        &target.url("/hook"),
        &["--ca", &path(&ca_both)],
    );
    session.wait_connected();

    std::fs::copy(&new.cert_pem, &cert).expect("swap the certificate");
    std::fs::copy(&new.key_pem, &key).expect("swap the key");
    write_tokens(&tokens, &["token-kept-5e1-a0c7f3b9d2e6"]);
    relay.guard.signal("HUP");
    relay.guard.wait_for_text(Stream::Stderr, "tokens reloaded");
    relay
        .guard
        .wait_for_text(Stream::Stderr, "certificate reloaded");

    // New connections see the new certificate only.
    assert!(handshake_trusting(&relay, &new.ca_der));
    assert!(!handshake_trusting(&relay, &old.ca_der));
    // The session opened before the reload still carries webhooks, on its first connection.
    let response = Request::post(&relay.tunnel_url("reloaded"))
        .body(r#"{"event":"ticket.updated"}"#)
        .trust(Trust::Roots(vec![new.ca_der.clone()]))
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(target.wait_for_requests(1)[0].path, "/hook");
    let connects = session
        .guard
        .stderr()
        .lines()
        .filter(|l| l.trim_start().starts_with("connected"))
        .count();
    assert_eq!(
        connects,
        1,
        "the session reconnected: {}",
        session.guard.stderr()
    );

    // The token taken out of the file is refused for new sessions.
    let mut dropped = listen(
        &relay,
        "dropped",
        "token-dropped-9a2-f4b8e1c6a3d0",
        &target.url("/hook"),
        &["--ca", &path(&ca_both)],
    );
    assert!(dropped.refusal().to_lowercase().contains("token"));
    let mut relay = relay;
    assert!(relay.guard.try_status().is_none(), "the relay stopped");
}

#[test]
fn stored_tokens_are_added_and_revoked_on_a_running_relay() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let dir = temp_dir();
    let data_dir = dir.path().join("relay");

    let added = token_cmd(&data_dir, &["add", "laptop"]);
    assert_eq!(added.code(), 0, "{added:?}");
    let laptop = added.stdout.trim().to_string();
    assert!(
        laptop.len() >= 32,
        "a token of at least 128 bits: {laptop:?}"
    );
    assert!(
        added.stderr.contains("shown only this once") && !added.stderr.contains(&laptop),
        "{}",
        added.stderr
    );
    let again = token_cmd(&data_dir, &["add", "laptop"]);
    assert_eq!(again.code(), 2, "{again:?}");
    assert!(
        again
            .stderr
            .starts_with("error: a token named laptop already exists"),
        "{}",
        again.stderr
    );
    let db = std::fs::read(data_dir.join("relay.db")).expect("relay.db");
    assert!(
        !db.windows(laptop.len()).any(|w| w == laptop.as_bytes()),
        "the token is stored in clear"
    );

    let relay = Relay::start_at(&data_dir, "127.0.0.1:0", &["--http"]);
    let first = listen(&relay, "stored-one", &laptop, &target.url("/hook"), &[]);
    first.wait_connected();
    let mut wrong = listen(
        &relay,
        "stored-two",
        "itr_not-a-stored-token",
        &target.url("/hook"),
        &[],
    );
    assert!(wrong.refusal().to_lowercase().contains("token"));

    // A token added while the relay runs is accepted within 5 s.
    let started = Instant::now();
    let ci = token_cmd(&data_dir, &["add", "ci"]);
    assert_eq!(ci.code(), 0, "{ci:?}");
    let ci = ci.stdout.trim().to_string();
    relay
        .guard
        .wait_for_text(Stream::Stderr, "stored client tokens changed");
    assert!(
        started.elapsed() <= APPLY_WITHIN,
        "applied after {:?}",
        started.elapsed()
    );
    let second = listen(&relay, "stored-two", &ci, &target.url("/hook"), &[]);
    second.wait_connected();

    let list = token_cmd(&data_dir, &["list"]);
    let names: Vec<&str> = list
        .stdout
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(names, ["laptop", "ci"], "{list:?}");
    assert!(!list.stdout.contains(&laptop) && !list.stdout.contains(&ci));
    let json = token_cmd(&data_dir, &["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&json.stdout).expect("one JSON array");
    let names: Vec<&str> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|t| t["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["laptop", "ci"], "{json:?}");
    assert!(listed[0]["created_at_ms"].as_i64().is_some_and(|ms| ms > 0));
    assert!(!json.stdout.contains(&laptop) && !json.stdout.contains(&ci));

    // Revoking closes the token's session within 5 s and refuses it afterwards.
    let started = Instant::now();
    let revoked = token_cmd(&data_dir, &["revoke", "laptop"]);
    assert_eq!(revoked.code(), 0, "{revoked:?}");
    relay
        .guard
        .wait_for_text(Stream::Stderr, "client token revoked; closing its session");
    assert!(
        started.elapsed() <= APPLY_WITHIN,
        "closed after {:?}",
        started.elapsed()
    );
    let mut again = listen(&relay, "stored-one", &laptop, &target.url("/hook"), &[]);
    assert!(again.refusal().to_lowercase().contains("token"));
    let unknown = token_cmd(&data_dir, &["revoke", "laptop"]);
    assert_eq!(unknown.code(), 2, "{unknown:?}");

    // The other token's session never noticed.
    let response = Request::post(&relay.tunnel_url("stored-two"))
        .body("{}")
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    drop(first);
}

#[test]
fn completions_and_the_man_page_come_from_the_flags() {
    let home = temp_dir();
    let mut cmd = command("illumitunnel-relay", home.path());
    cmd.args(["completions", "bash"]);
    let bash = ChildGuard::run(cmd);
    assert_eq!(bash.code(), 0, "{bash:?}");
    for flag in [
        "--self-signed",
        "--trusted-proxy",
        "--cluster-creds",
        "token",
        "release",
    ] {
        assert!(bash.stdout.contains(flag), "completions lack {flag}");
    }
    let mut cmd = command("illumitunnel-relay", home.path());
    cmd.arg("man");
    let man = ChildGuard::run(cmd);
    assert_eq!(man.code(), 0, "{man:?}");
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH"),
        "roff: {}",
        &man.stdout[..80.min(man.stdout.len())]
    );
    assert!(
        man.stdout.contains("illumitunnel\\-relay") && man.stdout.contains("min\\-body\\-rate")
    );
    let mut cmd = command("illumitunnel-relay", home.path());
    cmd.args(["completions", "tcsh"]);
    let unknown = ChildGuard::run(cmd);
    assert_eq!(
        unknown.code(),
        2,
        "an unknown shell is a usage error: {unknown:?}"
    );
}
