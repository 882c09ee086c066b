//! A relay that sends terminal controls: `listen` and `login` against a scripted relay whose
//! `Welcome` URL or refusal carries ESC, BEL and a bidi override. Nothing it sends may reach
//! the terminal raw; a tunnel URL that is not a plain http(s) URL ends the session with one
//! sentence, before anything is written for other commands.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;

use common::*;
use illumitunnel::protocol::{Refusal, RelayMessage};
use tokio::net::TcpListener;

/// ESC, an OSC title sequence ended by BEL, a clear-screen, and a right-to-left override.
const HOSTILE: &str = "\x1b]0;owned\x07\x1b[2J\u{202e}exe.ppa";

/// The raw control bytes a terminal acts on, as they would appear in output.
fn raw_controls(bytes: &[u8]) -> Vec<&'static str> {
    let mut found = Vec::new();
    if bytes.contains(&0x1b) {
        found.push("ESC");
    }
    if bytes.contains(&0x07) {
        found.push("BEL");
    }
    if bytes.windows(3).any(|w| w == "\u{202e}".as_bytes()) {
        found.push("U+202E");
    }
    found
}

fn hostile_welcome() -> RelayMessage {
    RelayMessage::Welcome {
        tunnel: format!("my-app{HOSTILE}"),
        public_url: format!("https://relay.test/t/my-app{HOSTILE}"),
        queued: 0,
        expired: 0,
        dead_letters: 0,
        claim_key: String::new(),
    }
}

#[test]
fn a_welcome_url_with_terminal_controls_ends_listen_with_an_escaped_sentence() {
    let rt = runtime();
    let relay = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let relay_url = format!("http://{}", relay.local_addr().unwrap());
    let mut listen = Listening::spawn(&relay_url, "http://127.0.0.1:9/hooks", &[]);
    let (mut ws, _, _) = rt.block_on(accept_client(&relay));
    rt.block_on(send(&mut ws, hostile_welcome()));
    assert_eq!(listen.wait(), 1, "{:#?}", listen.seen_stderr);
    let stderr = listen.all_stderr();
    let stdout: Vec<String> = listen.stdout.try_iter().collect();
    assert!(stdout.is_empty(), "{stdout:#?}");
    assert_eq!(stderr.len(), 1, "{stderr:#?}");
    let want = format!(
        "error: could not connect to relay ws://{}: it sent a tunnel URL that holds control or invisible characters (https://relay.test/t/my-app^[]0;owned^G^[[2J\\u{{202e}}exe.ppa); check --relay, or ask the relay's operator to fix its --public-url",
        relay.local_addr().unwrap()
    );
    assert_eq!(stderr[0], want);
    assert_eq!(
        raw_controls(stderr.join("\n").as_bytes()),
        Vec::<&str>::new()
    );
    // Nothing that trusts the URL was written: `trigger` must not send to it.
    let records: Vec<_> = std::fs::read_dir(listen.home.path().join("data/listen"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        !records
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "json")),
        "{records:?}"
    );
}

#[test]
fn login_against_a_hostile_relay_prints_nothing_raw_and_saves_nothing() {
    let rt = runtime();
    let relay = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let relay_url = format!("http://{}", relay.local_addr().unwrap());
    let home = tempfile::tempdir().unwrap();
    // `login` checks the remembered tunnel: name it as the scripted relay expects.
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    std::fs::write(home.path().join("config/tunnel"), "my-app\n").unwrap();
    let child = command(home.path())
        .args(["login", "--relay", &relay_url, "--token", "t0ken"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let (mut ws, _, _) = rt.block_on(accept_client(&relay));
    rt.block_on(send(&mut ws, hostile_welcome()));
    // Bounded by login's own 10 s handshake timeout, and by this deadline.
    let out = rx.recv_timeout(DEADLINE).expect("login exits").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("it sent a tunnel URL that holds control or invisible characters (https://relay.test/t/my-app^[]0;owned^G^[[2J\\u{202e}exe.ppa)"),
        "{stderr}"
    );
    assert_eq!(raw_controls(&out.stderr), Vec::<&str>::new());
    assert!(!home.path().join("config/config.toml").exists());
}

#[test]
fn a_refusal_with_terminal_controls_is_escaped() {
    let rt = runtime();
    let relay = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let relay_url = format!("ws://{}", relay.local_addr().unwrap());
    let mut listen = Listening::spawn(&relay_url, "http://127.0.0.1:9/hooks", &[]);
    let (mut ws, _, _) = rt.block_on(accept_client(&relay));
    let refused = RelayMessage::Refused {
        reason: Refusal::TunnelNameInvalid,
        message: HOSTILE.into(),
    };
    rt.block_on(send(&mut ws, refused));
    assert_eq!(listen.wait(), 1);
    let stderr = listen.all_stderr();
    assert_eq!(
        stderr,
        ["error: relay refused the tunnel name my-app (^[]0;owned^G^[[2J\\u{202e}exe.ppa); pass another with --tunnel NAME"]
    );
    assert_eq!(
        raw_controls(stderr.join("\n").as_bytes()),
        Vec::<&str>::new()
    );
}
