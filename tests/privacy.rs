//! No secret in any log: a relay and a client run with every log at `trace` (`RUST_LOG`,
//! `ILLUMITUNNEL_LOG`), a delivery carries secret headers both ways, and nothing either process
//! printed holds a token, a secret header value, or the hex of one (frame dumps).

mod support;

use support::sender::Request;
use support::target::{Reply, Target};
use support::{after, command, runtime, temp_dir, ChildGuard, Stream};

/// The client's token.
const TOKEN: &str = "relay-token-planted-7c1e9";

/// Headers whose values must never reach a log: (name, value, planted part of the value).
const SENDER_SECRETS: &[(&str, &str)] = &[
    ("Authorization", "Bearer sender-bearer-planted-41a"),
    ("Cookie", "session=cookie-planted-9d2"),
    ("Proxy-Authorization", "Basic proxy-planted-55b"),
    ("X-Api-Key", "apikey-planted-e07"),
    ("X-IllumiChat-Signature", "sha256=sig-planted-3b8"),
    ("X-Webhook-Secret", "whsecret-planted-c44"),
];

/// A secret header in the local server's answer, so the way back is covered too.
const RESPONSE_SECRET: (&str, &str) = ("Set-Cookie", "resp-cookie-planted-0f1");

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Every form a planted secret could be logged in: as text and as a frame's hex.
fn forbidden() -> Vec<String> {
    let mut values: Vec<&str> = SENDER_SECRETS.iter().map(|(_, v)| *v).collect();
    values.extend([TOKEN, RESPONSE_SECRET.1]);
    values
        .iter()
        .flat_map(|v| {
            let planted = v.rsplit([' ', '=']).next().unwrap_or(v);
            [planted.to_string(), hex(planted)]
        })
        .collect()
}

#[test]
fn trace_logs_of_relay_and_client_hold_no_token_and_no_secret_header() {
    let rt = runtime();
    let target = Target::start(&rt, |_| {
        Reply::ok().header(RESPONSE_SECRET.0, RESPONSE_SECRET.1)
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

    let mut request = Request::post(&format!("{relay_url}/t/privacy")).body("{}");
    for (name, value) in SENDER_SECRETS {
        request = request.header(name, value);
    }
    let response = request.send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    // Planted for real: the secrets crossed both processes.
    let received = target.wait_for_requests(1);
    assert_eq!(
        received[0].header("x-api-key").as_deref(),
        Some("apikey-planted-e07")
    );
    assert_eq!(
        response.header("set-cookie").as_deref(),
        Some(RESPONSE_SECRET.1)
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
        for secret in forbidden() {
            assert!(!text.contains(&secret), "{what} holds {secret}:\n{text}");
        }
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
