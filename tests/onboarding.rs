//! End to end for a new user's path: `login` checks the relay and token and writes a private
//! `config.toml` that `listen` then uses; `listen 3000`; an https local server with a private
//! CA (`--forward-ca`); the relay connection through an `HTTPS_PROXY`.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use support::connect_proxy::connect_proxy;
use support::sender::Request;
use support::target::Target;
use support::{command, runtime, temp_dir, test_ca, ChildGuard, Finished, Relay, Stream};

const TOKEN: &str = "login-token-5e1f0a-7b3d9c2e";

fn tokens_file(dir: &Path) -> String {
    let path = dir.join("tokens");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write tokens file");
    path.to_str().expect("UTF-8 path").to_string()
}

/// `illumitunnel login ARGS` with `stdin` as its standard input.
fn login(home: &Path, args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Finished {
    let mut cmd = command("illumitunnel", home);
    cmd.arg("login").args(args).envs(envs.iter().copied());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start illumitunnel login");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write the token");
    // Bounded: login's own handshake timeout is 10 s; a hang past the deadline fails here.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait for login") {
            let mut stdout = String::new();
            let mut stderr = String::new();
            let _ = child
                .stdout
                .take()
                .map(|mut s| s.read_to_string(&mut stdout));
            let _ = child
                .stderr
                .take()
                .map(|mut s| s.read_to_string(&mut stderr));
            return Finished {
                status,
                stdout,
                stderr,
            };
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "illumitunnel login did not finish within {:?}",
                support::DEADLINE
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config_toml(home: &Path) -> std::path::PathBuf {
    home.join("config").join("config.toml")
}

#[test]
fn login_writes_a_private_config_that_listen_then_uses() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let dir = temp_dir();
    let relay = Relay::start(&["--http", "--tokens-file", &tokens_file(dir.path())]);
    let home = temp_dir();

    // The token comes on standard input: it is never on a command line.
    let out = login(
        home.path(),
        &["--relay", &relay.url],
        &format!("{TOKEN}\n"),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.contains("logged in to"), "{out:?}");
    assert!(
        !out.stderr.contains(TOKEN),
        "login printed the token: {out:?}"
    );
    let path = config_toml(home.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("config.toml")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "config.toml is readable by others");
    }
    let text = std::fs::read_to_string(&path).expect("read config.toml");
    assert!(
        text.contains(&format!("relay = \"{}\"", relay.url)),
        "{text}"
    );
    assert!(text.contains(&format!("token = \"{TOKEN}\"")), "{text}");

    // No --relay, no --token: both come from config.toml.
    let (_listen, url) = listen_from_config(home.path(), &target);
    assert!(url.starts_with(&relay.url), "{url} is not on {}", relay.url);
    let response = Request::post(&url).body("{}").send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(target.wait_for_requests(1)[0].path, "/hooks");

    let out = ChildGuard::run({
        let mut cmd = command("illumitunnel", home.path());
        cmd.arg("logout");
        cmd
    });
    assert_eq!(out.code(), 0, "{out:?}");
    let text = std::fs::read_to_string(&path).expect("read config.toml");
    assert!(!text.contains("token"), "{text}");
    assert!(text.contains("relay"), "logout keeps the relay: {text}");
}

#[test]
fn login_with_a_refused_token_is_one_sentence_and_writes_nothing() {
    let dir = temp_dir();
    let relay = Relay::start(&["--http", "--tokens-file", &tokens_file(dir.path())]);
    let home = temp_dir();
    let out = login(
        home.path(),
        &["--relay", &relay.url, "--token", "wrong-token-77c2"],
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{out:?}");
    assert!(errors[0].contains("relay refused the token"), "{out:?}");
    assert!(!out.stderr.contains("wrong-token-77c2"), "{out:?}");
    assert!(!config_toml(home.path()).exists());

    // Unreachable relay: one sentence, exit 1.
    let closed = format!("http://127.0.0.1:{}", support::closed_port());
    let out = login(
        home.path(),
        &["--relay", &closed, "--token", TOKEN],
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.starts_with("error: could not connect to relay"),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[test]
fn flags_beat_env_which_beats_config_toml_for_the_relay() {
    let home = temp_dir();
    let port = |p: u16| format!("http://127.0.0.1:{p}");
    let (file, env, flag) = (
        port(support::closed_port()),
        port(support::closed_port()),
        port(support::closed_port()),
    );
    std::fs::create_dir_all(home.path().join("config")).expect("config dir");
    std::fs::write(
        config_toml(home.path()),
        format!("relay = \"{file}\"\ntoken = \"{TOKEN}\"\n"),
    )
    .expect("write config.toml");
    for (args, envs, want) in [
        (vec![], vec![], &file),
        (vec![], vec![("ILLUMITUNNEL_RELAY", env.as_str())], &env),
        (
            vec!["--relay", flag.as_str()],
            vec![("ILLUMITUNNEL_RELAY", env.as_str())],
            &flag,
        ),
    ] {
        // Each relay is a closed port, so the sentence names the one that was chosen.
        let out = login(home.path(), &args, &format!("{TOKEN}\n"), &envs);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let authority = want.trim_start_matches("http://");
        assert!(out.stderr.contains(authority), "{args:?} {envs:?}: {out:?}");
    }
}

#[test]
fn listen_3000_forwards_to_http_localhost_3000() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let home = temp_dir();
    let port = target.addr.port().to_string();
    let mut cmd = command("illumitunnel", home.path());
    cmd.args([
        "listen",
        &port,
        "--relay",
        &relay.url,
        "--tunnel",
        "port-only",
    ])
    .args(["--no-tui", "--json", "--store"])
    .arg(home.path().join("captures.db"));
    let listen = ChildGuard::spawn(cmd);
    let forwarding = listen.wait_for_text(Stream::Stderr, "forwarding to");
    assert!(
        forwarding.contains(&format!("http://localhost:{port}/")),
        "{forwarding}"
    );
    listen.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    let response = Request::post(&relay.tunnel_url("port-only"))
        .body("{}")
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(target.wait_for_requests(1).len(), 1);
}

/// An https server on 127.0.0.1:0 with `cert`/`key` that answers each request `200 ok`.
fn https_target(rt: &tokio::runtime::Runtime, cert: &Path, key: &Path) -> u16 {
    let certs: Vec<_> = rustls_pemfile_certs(cert);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pem_der(key, "PRIVATE KEY").into());
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
    rt.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0; 16 * 1024];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn pem_der(path: &Path, label: &str) -> Vec<u8> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).expect("read PEM");
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN") || !l.contains(label))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM base64")
}

fn rustls_pemfile_certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    vec![pem_der(path, "CERTIFICATE").into()]
}

#[test]
fn an_https_local_server_with_a_private_ca_works_with_forward_ca_in_listen_test_and_replay() {
    let rt = runtime();
    let pki = temp_dir();
    let ca = test_ca(pki.path());
    let port = https_target(&rt, &ca.cert_pem, &ca.key_pem);
    let relay = Relay::http(&[]);
    let target = format!("https://localhost:{port}/hooks");

    let run = |tunnel: &str, extra: &[&str]| {
        let home = temp_dir();
        let mut cmd = command("illumitunnel", home.path());
        cmd.args(["listen", &target, "--relay", &relay.url, "--tunnel", tunnel])
            .args(["--no-tui", "--json", "--store"])
            .arg(home.path().join("captures.db"))
            .args(extra);
        let listen = ChildGuard::spawn(cmd);
        listen.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
        let response = Request::post(&relay.tunnel_url(tunnel))
            .body("{}")
            .send(&rt);
        let line = listen.wait_for_line(Stream::Stdout, |l| l.starts_with('{'));
        (response, line, listen, home)
    };

    let ca_pem = ca.ca_pem.to_str().expect("UTF-8 path");
    let (trusted, line, listen, home) = run("https-trusted", &["--forward-ca", ca_pem]);
    assert_eq!(trusted.status, 200, "{}", trusted.text());
    assert_eq!(trusted.text(), "ok");
    drop(listen);

    // `test` re-sends the recorded delivery to the same https server, with the same trust.
    let recorded: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    let id = recorded["id"].as_str().expect("delivery id");
    let test = |extra: &[&str]| {
        let mut cmd = command("illumitunnel", home.path());
        cmd.args(["test", id, "--store"])
            .arg(home.path().join("captures.db"))
            .args(extra);
        ChildGuard::run(cmd)
    };
    let passed = test(&["--forward-ca", ca_pem]);
    assert_eq!(passed.code(), 0, "{}{}", passed.stdout, passed.stderr);
    assert!(
        passed.stdout.contains("1 passed, 0 failed"),
        "{}",
        passed.stdout
    );
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["replay", id, "--json", "--forward-ca", ca_pem, "--store"])
        .arg(home.path().join("captures.db"));
    let replayed = ChildGuard::run(cmd);
    assert_eq!(replayed.code(), 0, "{}", replayed.stderr);
    let replay: serde_json::Value = serde_json::from_str(replayed.stdout.trim()).expect("JSON");
    assert_eq!(replay["status"], 200, "{replay}");
    assert_eq!(replay["error"], serde_json::Value::Null, "{replay}");
    let refused = test(&[]);
    assert_eq!(refused.code(), 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stdout.contains("does not trust") && refused.stdout.contains("--forward-ca"),
        "{}",
        refused.stdout
    );

    let (untrusted, line, _l, _h) = run("https-untrusted", &[]);
    assert_eq!(untrusted.status, 502, "{}", untrusted.text());
    let delivery: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    let error = delivery["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("does not trust")
            && error.contains("--forward-ca")
            && error.contains("--forward-insecure"),
        "{delivery}"
    );
    assert!(
        !error.contains('\n') && !error.contains("OtherError"),
        "{error}"
    );
}

#[test]
fn the_relay_connection_goes_through_https_proxy_unless_no_proxy() {
    let pki = temp_dir();
    let ca = test_ca(pki.path());
    let dir = temp_dir();
    let relay = Relay::start(&[
        "--tls-cert",
        ca.cert_pem.to_str().expect("UTF-8 path"),
        "--tls-key",
        ca.key_pem.to_str().expect("UTF-8 path"),
        "--tokens-file",
        &tokens_file(dir.path()),
    ]);
    let (port, tunnels) = connect_proxy(8);
    let proxy = format!("http://127.0.0.1:{port}");
    let ca_pem = ca.ca_pem.to_str().expect("UTF-8 path");
    let args = [
        "--relay",
        relay.url.as_str(),
        "--token",
        TOKEN,
        "--ca",
        ca_pem,
    ];

    let home = temp_dir();
    let out = login(
        home.path(),
        &args,
        "",
        &[("HTTPS_PROXY", &proxy), ("NO_PROXY", "")],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        1,
        "login did not use the proxy"
    );

    let home = temp_dir();
    let out = login(
        home.path(),
        &args,
        "",
        &[("HTTPS_PROXY", &proxy), ("NO_PROXY", "127.0.0.1")],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        1,
        "NO_PROXY was not honoured"
    );

    // A proxy that is down is named in the one sentence.
    let down = format!("http://127.0.0.1:{}", support::closed_port());
    let out = login(
        home.path(),
        &args,
        "",
        &[("HTTPS_PROXY", &down), ("NO_PROXY", "")],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("proxy"), "{out:?}");
}

// Login replaces the token it is given.

/// A relay whose tokens file holds both tokens refuses the second one the tunnel the first one
/// claimed; login says so in one sentence and keeps the first token saved.
#[test]
fn login_with_a_new_token_for_a_tunnel_the_old_one_claimed_keeps_the_old_one() {
    const FIRST: &str = "itr_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6";
    const SECOND: &str = "itr_Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp";
    let dir = temp_dir();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{FIRST}\n{SECOND}\n")).expect("write tokens file");
    let relay = Relay::start(&["--http", "--tokens-file", tokens.to_str().expect("UTF-8")]);
    let home = temp_dir();
    let out = login(
        home.path(),
        &["--relay", &relay.url],
        &format!("{FIRST}\n"),
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let out = login(
        home.path(),
        &["--relay", &relay.url],
        &format!("{SECOND}\n"),
        &[],
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("belongs to another token"), "{out:?}");
    let text = std::fs::read_to_string(config_toml(home.path())).expect("read config.toml");
    assert!(text.contains(&format!("token = \"{FIRST}\"")), "{text}");
}

#[test]
fn login_with_a_new_piped_token_replaces_the_saved_one_and_names_it_by_prefix() {
    const FIRST: &str = "itr_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6";
    const SECOND: &str = "itr_Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp";
    // A tunnel belongs to the token that claimed it, so a relay with a tokens file refuses the
    // new token the old token's tunnel; an anonymous relay checks only the connection.
    let relay = Relay::start(&["--http", "--allow-anonymous"]);
    let home = temp_dir();
    let path = config_toml(home.path());
    let saved = || std::fs::read_to_string(&path).expect("read config.toml");

    let out = login(
        home.path(),
        &["--relay", &relay.url],
        &format!("{FIRST}\n"),
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("as itr_A1… (36 characters)"),
        "login says which token it saved: {out:?}"
    );
    assert!(
        !out.stderr.contains(FIRST),
        "login printed the token: {out:?}"
    );
    assert!(
        saved().contains(&format!("token = \"{FIRST}\"")),
        "{}",
        saved()
    );

    // The documented way to rotate: pipe the new token to login for the same relay. The old
    // token's tunnel stays its own on the relay, so the new token gets a tunnel name of its own.
    let mut text = saved();
    text.push_str("tunnel = \"rotated-token-tunnel\"\n");
    std::fs::write(&path, text).expect("write config.toml");
    let out = login(
        home.path(),
        &["--relay", &relay.url],
        &format!("{SECOND}\n"),
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("as itr_Zz… (36 characters)"), "{out:?}");
    assert!(
        !out.stderr.contains(SECOND),
        "login printed the token: {out:?}"
    );
    let text = saved();
    assert!(text.contains(&format!("token = \"{SECOND}\"")), "{text}");
    assert!(
        !text.contains(FIRST),
        "the old token is still saved: {text}"
    );

    // Nothing piped: the saved token is checked again and kept.
    let out = login(home.path(), &["--relay", &relay.url], "", &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("as itr_Zz…"), "{out:?}");
    assert!(
        saved().contains(&format!("token = \"{SECOND}\"")),
        "{}",
        saved()
    );
}

// login --insecure.

#[test]
fn login_insecure_trusts_a_self_signed_relay_and_listen_then_connects_without_flags() {
    const TOKEN_22: &str = "itr_Self5igned7Relay9Token1Abc2Def3";
    let dir = temp_dir();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN_22}\n")).expect("write tokens file");
    let relay = Relay::start(&[
        "--self-signed",
        "--tokens-file",
        tokens.to_str().expect("UTF-8"),
    ]);
    assert!(relay.url.starts_with("https://"), "{}", relay.url);
    let home = temp_dir();

    // Without --insecure (or --ca) the certificate is refused and nothing is written.
    let out = login(
        home.path(),
        &["--relay", &relay.url],
        &format!("{TOKEN_22}\n"),
        &[],
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(!config_toml(home.path()).exists(), "{out:?}");

    let out = login(
        home.path(),
        &["--relay", &relay.url, "--insecure"],
        &format!("{TOKEN_22}\n"),
        &[],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("logged in to"), "{out:?}");
    let text = std::fs::read_to_string(config_toml(home.path())).expect("read config.toml");
    assert!(text.contains("insecure = true"), "{text}");

    let rt = runtime();
    let target = Target::ok(&rt);
    let (_listen, url) = listen_from_config(home.path(), &target);
    assert!(url.starts_with(&relay.url), "{url} is not on {}", relay.url);
}

/// `listen` with no `--relay` or `--token`, so both come from `config.toml` under `home`; returns
/// the process and the webhook URL its banner printed.
fn listen_from_config(home: &std::path::Path, target: &Target) -> (ChildGuard, String) {
    let mut cmd = command("illumitunnel", home);
    cmd.args([
        "listen",
        &target.url("/hooks"),
        "--no-tui",
        "--json",
        "--store",
    ])
    .arg(home.join("captures.db"));
    let listen = ChildGuard::spawn(cmd);
    let line = listen.wait_for_text(Stream::Stderr, "webhook URL");
    let url = support::after(&line, "webhook URL").to_string();
    (listen, url)
}
