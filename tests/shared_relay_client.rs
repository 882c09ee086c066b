//! The client's share of a relay a team shares, end to end with real processes: the token is
//! never sent to an `http://` relay off this machine unless `--allow-http` says so (`login`
//! remembers it for that relay, `listen` then works without it); the config and data dirs are
//! 0700 and every file the client writes 0600, older loose ones tightened; `test --suite` keeps
//! every case path under the forward path, as `listen` does.
//!
//! A relay "off this machine" is reached through a CONNECT proxy (`HTTP_PROXY`) that sends
//! `relay.example.com:PORT` to the relay on 127.0.0.1:PORT, so no test leaves loopback.

mod support;

use std::path::Path;
use std::sync::atomic::Ordering;

use support::connect_proxy::connect_proxy;
use support::sender::Request;
use support::target::{Reply, Target};
use support::{command, runtime, temp_dir, ChildGuard, Finished, Relay, Stream};

/// A client token with 192 bits, as a tokens file requires.
const TOKEN: &str = "itr_Xq3vN8kPz2LmW7bR4tYc9HsJd6FgA1eU";

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `illumitunnel ARGS` in `home`, through `proxy` for every http:// and https:// destination.
fn client(home: &Path, proxy: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = command("illumitunnel", home);
    cmd.args(args)
        .env("HTTP_PROXY", proxy)
        .env("HTTPS_PROXY", proxy)
        .env("NO_PROXY", "");
    cmd
}

fn assert_refused(what: &str, out: &Finished, relay: &str) {
    assert_eq!(out.code(), 2, "{what}: {out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{what}: {out:?}");
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "error: refusing to send the token to relay {relay} unencrypted: it is http:// and not on this machine, so anyone on the network could read the token and every delivery; use an https:// relay, or pass --allow-http to send it anyway"
        ),
        "{what}"
    );
}

#[test]
fn an_http_relay_off_this_machine_gets_the_token_only_with_allow_http() {
    let rt = runtime();
    let dir = temp_dir();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("write tokens file");
    let relay = Relay::start(&["--http", "--tokens-file", tokens.to_str().expect("UTF-8")]);
    let port = relay
        .authority()
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let remote = format!("http://relay.example.com:{port}");
    let (proxy_port, tunnels) = connect_proxy(16);
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let target = Target::ok(&rt);
    let forward_to = target.url("/webhooks");
    let home = temp_dir();

    let login = ["login", "--relay", &remote, "--token", TOKEN];
    let out = ChildGuard::run(client(home.path(), &proxy, &login));
    assert_refused("login", &out, &remote);
    let listen = [
        "listen",
        "--relay",
        &remote,
        "--token",
        TOKEN,
        "--forward-to",
        &forward_to,
    ];
    let out = ChildGuard::run(client(home.path(), &proxy, &listen));
    assert_refused("listen", &out, &remote);
    // ws:// is the same cleartext.
    let ws = format!("ws://relay.example.com:{port}");
    let out = ChildGuard::run(client(
        home.path(),
        &proxy,
        &["login", "--relay", &ws, "--token", TOKEN],
    ));
    assert_refused("login ws://", &out, &remote);
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        0,
        "a refused command dialled the relay"
    );
    assert!(!home.path().join("config/config.toml").exists());

    let mut allowed = login.to_vec();
    allowed.push("--allow-http");
    let out = ChildGuard::run(client(home.path(), &proxy, &allowed));
    assert_eq!(out.code(), 0, "{out:?}");
    let warning = format!(
        "warning: relay {remote} is http:// and not on this machine: the token and every delivery cross the network unencrypted (--allow-http)"
    );
    assert_eq!(out.stderr.lines().next(), Some(warning.as_str()), "{out:?}");
    assert_eq!(out.stderr.matches("warning:").count(), 1, "{out:?}");
    assert_eq!(tunnels.load(Ordering::SeqCst), 1);
    let config = home.path().join("config/config.toml");
    let saved = std::fs::read_to_string(&config).expect("config.toml");
    assert!(saved.contains("allow_http = true"), "{saved}");
    // Logging in again to the remembered relay needs neither the flag nor the token.
    let out = ChildGuard::run(client(home.path(), &proxy, &["login"]));
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stderr.lines().next(), Some(warning.as_str()), "{out:?}");
    assert_eq!(tunnels.load(Ordering::SeqCst), 2);

    // `listen` with what login remembered: the same warning, then a working tunnel.
    let mut cmd = client(
        home.path(),
        &proxy,
        &["listen", "--forward-to", &forward_to, "--no-tui", "--json"],
    );
    cmd.env("NO_PROXY", "127.0.0.1");
    let guard = ChildGuard::spawn(cmd);
    guard.wait_for_line(Stream::Stderr, |l| l == warning);
    let url_line = guard.wait_for_text(Stream::Stderr, "webhook URL");
    let url = support::after(&url_line, "webhook URL").to_string();
    guard.wait_for_line(Stream::Stderr, |l| l.starts_with("connected"));
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        3,
        "listen did not go through the proxy"
    );
    let answer = Request::post(&url)
        .header("content-type", "application/json")
        .body(r#"{"event":"ticket.created","data":{"id":"tkt_1"}}"#)
        .send(&rt);
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = target.wait_for_requests(1);
    assert_eq!(seen[0].path, "/webhooks");
    guard.wait_for_line(Stream::Stdout, |l| l.contains("tkt_1"));
    assert_eq!(
        guard.stderr().matches("warning:").count(),
        1,
        "{}",
        guard.stderr()
    );

    // Another relay by flag does not inherit what login allowed for this one.
    let other = format!("http://other.example.com:{port}");
    let out = ChildGuard::run(client(
        home.path(),
        &proxy,
        &["listen", "--relay", &other, "--forward-to", &forward_to],
    ));
    assert_refused("listen, another relay", &out, &other);
    assert_eq!(tunnels.load(Ordering::SeqCst), 3);
}

#[test]
fn config_and_data_dirs_are_0700_and_every_file_0600_old_loose_ones_tightened() {
    let rt = runtime();
    let home = temp_dir();
    let config = home.path().join("config");
    let data = home.path().join("data");
    // What an older release left: 0755 dirs, a 0644 tunnel name and capture store.
    let out = ChildGuard::run({
        let mut cmd = command("illumitunnel", home.path());
        cmd.arg("events");
        cmd
    });
    assert_eq!(out.code(), 0, "{out:?}");
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::write(config.join("tunnel"), "old-tunnel-name\n").expect("tunnel");
    std::fs::create_dir_all(data.join("relay")).expect("relay data dir");
    for (path, loose) in [
        (&data.join("relay"), 0o755),
        (&config, 0o755),
        (&data, 0o755),
        (&config.join("tunnel"), 0o644),
        (&data.join("captures.db"), 0o644),
    ] {
        set_mode(path, loose);
    }

    let target = Target::start(&rt, |_| Reply::ok());
    let mut cmd = command("illumitunnel", home.path());
    cmd.args([
        "listen",
        "--forward-to",
        &target.url("/webhooks"),
        "--no-tui",
        "--json",
        "--relay-port",
        &support::closed_port().to_string(),
    ]);
    let guard = ChildGuard::spawn(cmd);
    let url_line = guard.wait_for_text(Stream::Stderr, "webhook URL");
    let url = support::after(&url_line, "webhook URL").to_string();
    assert!(url.ends_with("/t/old-tunnel-name"), "{url}");
    guard.wait_for_line(Stream::Stderr, |l| l.starts_with("connected"));
    let answer = Request::post(&url)
        .header("content-type", "application/json")
        .body(r#"{"event":"ticket.created","data":{"id":"tkt_2"}}"#)
        .send(&rt);
    assert_eq!(answer.status, 200, "{answer:?}");
    guard.wait_for_line(Stream::Stdout, |l| l.contains("tkt_2"));

    for dir in [&config, &data, &config.join("claims"), &data.join("relay")] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    let claims: Vec<_> = std::fs::read_dir(config.join("claims"))
        .expect("claims dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(claims.len(), 1, "{claims:?}");
    for file in [
        config.join("tunnel"),
        claims[0].clone(),
        data.join("listen").join("old-tunnel-name.json"),
        data.join("listen").join("old-tunnel-name-ca.pem"),
        data.join("captures.db"),
        data.join("captures.db-wal"),
        data.join("captures.db-shm"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn test_suite_keeps_case_paths_under_the_forward_path() {
    let rt = runtime();
    let handler = Target::start(&rt, |_| Reply::ok());
    let home = temp_dir();
    let suite = home.path().join("hostile.jsonl");
    let hostile = [
        "/../../admin",
        "/%2e%2e/%2E%2E/admin",
        "/.%2e/admin",
        "/webhooks/../../admin",
        "admin",
    ];
    let lines: Vec<String> = hostile
        .iter()
        .enumerate()
        .map(|(i, path)| {
            serde_json::json!({
                "version": 1,
                "id": format!("0196a3f2c4d11e2{i}"),
                "event": "ticket.created",
                "resource_id": "tkt_1",
                "request": {
                    "method": "POST",
                    "path": path,
                    "query": "",
                    "headers": [["content-type", "application/json"]],
                    "body": "{\"event\":\"ticket.created\",\"data\":{\"id\":\"tkt_1\"}}"
                },
                "expected": {"status": 200, "body": "{\"received\":true}"}
            })
            .to_string()
        })
        .collect();
    std::fs::write(&suite, lines.join("\n") + "\n").expect("write suite");
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["test", "--suite", suite.to_str().expect("UTF-8")])
        .args(["--forward-to", &handler.url("/webhooks")]);
    let out = ChildGuard::run(cmd);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("5 passed, 0 failed"), "{out:?}");
    let seen: Vec<String> = handler.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(seen, vec!["/webhooks/admin"; hostile.len()], "{out:?}");
}
