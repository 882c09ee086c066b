//! No secret in any log: a relay and a client run with every log at `trace` (`RUST_LOG`,
//! `ILLUMITUNNEL_LOG`), a delivery carries secret headers both ways, and nothing either process
//! printed holds a token, a secret header value, or the hex of one (frame dumps).

mod support;

use support::secrets::{self, RESPONSE_HEADER, TOKEN};
use support::sender::Request;
use support::target::{Reply, Target};
use support::{after, command, runtime, temp_dir, ChildGuard, Stream};

#[test]
fn trace_logs_of_relay_and_client_hold_no_token_and_no_secret_header() {
    let rt = runtime();
    let target = Target::start(&rt, |_| {
        Reply::ok().header(RESPONSE_HEADER.0, RESPONSE_HEADER.1)
    });
    let relay_home = temp_dir();
    let tokens = relay_home.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("write the tokens file");
    let mut relay_cmd = command("illumitunnel-relay", relay_home.path());
    relay_cmd
        .args(["--http", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(relay_home.path().join("relay"))
        .arg("--tokens-file")
        .arg(&tokens)
        .env("RUST_LOG", "trace");
    let mut relay = ChildGuard::spawn(relay_cmd);
    let line = relay.wait_for_text(Stream::Stdout, "illumitunnel-relay listening on ");
    let relay_url = after(&line, "listening on ").to_string();

    let home = temp_dir();
    let mut listen_cmd = command("illumitunnel", home.path());
    listen_cmd
        .args(["listen", "--relay", &relay_url, "--tunnel", "privacy"])
        .args(["--token", TOKEN, "--forward-to", &target.url("/hook")])
        .args(["--no-tui", "--json", "--store"])
        .arg(home.path().join("captures.db"))
        .env("ILLUMITUNNEL_LOG", "trace");
    let mut listen = ChildGuard::spawn(listen_cmd);
    listen.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));

    let response =
        secrets::planted(Request::post(&format!("{relay_url}/t/privacy")).body("{}")).send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    // Planted for real: the secrets crossed both processes.
    let received = target.wait_for_requests(1);
    assert_eq!(
        received[0].header("x-api-key").as_deref(),
        Some("apikey-planted-e07")
    );
    assert_eq!(
        response.header("set-cookie").as_deref(),
        Some(RESPONSE_HEADER.1)
    );
    listen.wait_for_line(Stream::Stdout, |l| l.starts_with('{'));

    listen.signal("TERM");
    relay.signal("TERM");
    listen.wait_for_exit();
    relay.wait_for_exit();

    let mut outputs = vec![
        ("relay stdout".to_string(), relay.stdout()),
        ("relay stderr".to_string(), relay.stderr()),
        ("listen stdout".to_string(), listen.stdout()),
        ("listen stderr".to_string(), listen.stderr()),
    ];
    for dir in [relay_home.path(), home.path()] {
        outputs.extend(log_files(dir));
    }
    // The logs really were at trace, dependencies' `log` records included, so the test can fail.
    assert!(outputs[1].1.contains("TRACE"), "{}", outputs[1].1);
    assert!(outputs[3].1.contains("TRACE"), "{}", outputs[3].1);
    assert!(
        outputs[3].1.contains("Client handshake done"),
        "tungstenite's log records are not in the client's log: {}",
        outputs[3].1
    );
    for (what, text) in &outputs {
        secrets::assert_none_in(what, text);
    }
}

/// Every `*.log` file under `dir`, with its text.
fn log_files(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                found.push((path.display().to_string(), text));
            }
        }
    }
    found
}
