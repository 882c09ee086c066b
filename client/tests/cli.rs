//! The `illumitunnel` binary as a user runs it: usage errors, `events` and `show` against a
//! capture store filled here, and `listen` against a scripted relay (a websocket server in this
//! test speaking the wire protocol) and a scripted local server, all on 127.0.0.1:0.

// Helpers here are test code too; `allow-unwrap-in-tests` only covers `#[test]` functions.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::protocol::{ClientMessage, Refusal, RelayMessage, MAX_CHUNK};
use illumitunnel::store::CaptureStore;
use illumitunnel::{Delivery, DeliveryId};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::*;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(home: &Path, args: &[&str]) -> Output {
    let out = command(home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run illumitunnel");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_one_error_line(what: &str, out: &Output, code: i32) {
    let described = format!("{what}\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, code, "{described}");
    assert!(!out.stderr.contains("panicked"), "{described}");
    assert!(!out.stderr.contains("backtrace"), "{described}");
    assert!(out.stdout.is_empty(), "{described}");
    assert_eq!(out.stderr.lines().count(), 1, "{described}");
    assert!(out.stderr.starts_with("error: "), "{described}");
}

#[test]
fn our_usage_errors_exit_2_with_one_line() {
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("c.db");
    let store = store.to_str().unwrap();
    let relay = "http://127.0.0.1:9";
    let target = "http://127.0.0.1:9";
    for (args, needle) in [
        (
            vec!["listen", "--relay", relay, "--store", store],
            "missing --forward-to URL",
        ),
        (
            vec![
                "listen",
                "--relay",
                relay,
                "--forward-to",
                "ftp://localhost:3000",
            ],
            "only http:// and https://",
        ),
        (
            vec!["listen", "3000", "--relay", relay, "--forward-to", target],
            "pass one of them",
        ),
        (
            vec!["listen", "--relay", relay, "--forward-to", "not a url"],
            "not a URL",
        ),
        (
            vec![
                "listen",
                "--relay",
                relay,
                "--forward-to",
                target,
                "--tunnel",
                "Bad_Name!",
            ],
            "invalid tunnel name",
        ),
        (
            vec![
                "listen",
                "--relay",
                "relay.example.com",
                "--forward-to",
                target,
            ],
            "invalid --relay",
        ),
        (
            vec!["events", "--store", store, "--event", "ticket.deleted"],
            "unknown event type",
        ),
    ] {
        let out = run(home.path(), &args);
        assert_one_error_line(&args.join(" "), &out, 2);
        assert!(
            out.stderr.contains(needle),
            "{}: {}",
            args.join(" "),
            out.stderr
        );
    }
}

#[test]
fn clap_usage_errors_exit_2() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "listen",
            "--forward-to",
            "http://x",
            "--ca",
            "a.pem",
            "--insecure",
        ],
        vec!["events", "--limit", "many"],
        vec!["show"],
        vec!["frobnicate"],
    ] {
        let out = run(home.path(), &args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn a_missing_trigger_file_exits_2_saying_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    let out = run(
        home.path(),
        &[
            "trigger",
            "ticket.created",
            "--file",
            missing,
            "--forward-to",
            "http://127.0.0.1:9/h",
        ],
    );
    assert_one_error_line("trigger --file", &out, 2);
    assert!(out.stderr.contains(missing), "{}", out.stderr);
    assert!(out.stderr.contains("check the path"), "{}", out.stderr);
}

#[test]
fn unwritable_store_exits_1_naming_it() {
    let home = tempfile::tempdir().unwrap();
    let blocker = home.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let store = blocker.join("c.db");
    let store = store.to_str().unwrap();
    let out = run(home.path(), &["events", "--store", store]);
    assert_one_error_line("events", &out, 1);
    assert!(out.stderr.contains(store), "{}", out.stderr);
    let target = "http://127.0.0.1:9";
    let relay = "http://127.0.0.1:9";
    let out = run(
        home.path(),
        &[
            "listen",
            "--relay",
            relay,
            "--forward-to",
            target,
            "--store",
            store,
        ],
    );
    assert_one_error_line("listen", &out, 1);
    assert!(out.stderr.contains("--store PATH"), "{}", out.stderr);
}

fn stored(id: &str, ms: i64, event: Option<&str>, status: u16) -> Delivery {
    let body = match event {
        Some(e) => format!(
            r#"{{"event":"{e}","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_1","data":{{"id":"res_{id}"}}}}"#
        )
        .into_bytes(),
        None => vec![0xff, 0x00, 0xfe],
    };
    let mut d = Delivery::new(
        DeliveryId::parse(id).unwrap(),
        ms,
        Source::Tunnel,
        RequestRecord {
            method: "POST".into(),
            path: "/webhooks/illumichat".into(),
            query: "a=1".into(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Bytes::from(body),
        },
    );
    d.target = "http://127.0.0.1:3000/webhooks/illumichat?a=1".into();
    d.response = Some(ResponseRecord {
        status,
        headers: vec![("x-local".into(), b"yes".to_vec())],
        body: Bytes::from_static(br#"{"ok":true}"#),
    });
    d.duration_us = 12_000;
    d
}

fn filled_store(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("captures.db");
    let mut store = CaptureStore::open(&path).unwrap();
    let mut batch = vec![
        stored("aaaa0001", 1_000, Some("ticket.created"), 200),
        stored("aaaa0002", 2_000, Some("lead.captured"), 500),
        stored("bbbb0003", 3_000, None, 201),
    ];
    store.insert_batch(&mut batch).unwrap();
    path
}

#[test]
fn events_lists_newest_first_with_filter_limit_and_json() {
    let home = tempfile::tempdir().unwrap();
    let store = filled_store(home.path());
    let store = store.to_str().unwrap();

    let out = run(home.path(), &["events", "--store", store]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // A header row, then one fixed-width row per delivery, newest first.
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(lines[0].starts_with("ID  "), "{}", lines[0]);
    let rows = &lines[1..];
    assert!(rows[0].starts_with("bbbb0003  "), "{}", rows[0]);
    assert!(
        rows[1].contains("lead.captured") && rows[1].contains(" 500 ") && rows[1].contains("12ms"),
        "{}",
        rows[1]
    );
    assert!(
        rows[2].contains("ticket.created") && rows[2].contains("res_aaaa0001"),
        "{}",
        rows[2]
    );
    let column = |row: &str, text: &str| row.find(text).expect(text);
    assert_eq!(
        column(rows[1], "lead.captured"),
        column(rows[2], "ticket.created"),
        "the event column does not drift"
    );

    let args = [
        "events",
        "--store",
        store,
        "--json",
        "--event",
        "ticket.created",
    ];
    let out = run(home.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["id"], "aaaa0001");
    assert_eq!(v["resource_id"], "res_aaaa0001");
    assert_eq!(v["status"], 200);
    assert_eq!(v["received_at"], "1970-01-01T00:00:01.000Z");

    let out = run(
        home.path(),
        &["events", "--store", store, "--json", "--limit", "1"],
    );
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(out.stdout.contains("bbbb0003"));
}

#[test]
fn show_finds_by_prefix_and_prints_request_and_response() {
    let home = tempfile::tempdir().unwrap();
    let store = filled_store(home.path());
    let store = store.to_str().unwrap();

    let out = run(home.path(), &["show", "bbbb", "--store", store, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["request"]["body_base64"], "/wD+");
    assert_eq!(v["response"]["status"], 201);
    assert_eq!(v["request"]["query"], "a=1");

    let out = run(home.path(), &["show", "aaaa0001", "--store", store]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("POST /webhooks/illumichat?a=1"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\"id\": \"res_aaaa0001\""),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("x-local: yes"), "{}", out.stdout);

    let out = run(home.path(), &["show", "aaaa", "--store", store]);
    assert_one_error_line("ambiguous", &out, 2);
    assert!(out.stderr.contains("ambiguous"), "{}", out.stderr);

    let out = run(home.path(), &["show", "ffff", "--store", store]);
    assert_one_error_line("unknown", &out, 2);
    assert_eq!(
        out.stderr.trim(),
        "error: no delivery with id ffff; list ids with illumitunnel events"
    );
}

// ---- listen against a scripted relay -------------------------------------------------------

type Seen = tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>;

/// A local server answering every request with 201 and the request body echoed back, and
/// reporting each request's head and body.
async fn echo_target() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_echo(stream, tx.clone()));
        }
    });
    (url, rx)
}

async fn serve_echo(
    mut stream: TcpStream,
    tx: tokio::sync::mpsc::UnboundedSender<(String, Vec<u8>)>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = vec![0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let reply = format!(
            "HTTP/1.1 201 Created\r\ncontent-length: {}\r\nx-local: yes\r\n\r\n",
            body.len()
        );
        let _ = tx.send((head, body.clone()));
        if stream.write_all(reply.as_bytes()).await.is_err()
            || stream.write_all(&body).await.is_err()
        {
            return;
        }
    }
}

fn request(id: &str, body: &[u8], queued: bool, end: bool) -> RelayMessage {
    RelayMessage::Request {
        id: DeliveryId::parse(id).unwrap(),
        received_at_ms: 1_750_000_000_000,
        answer: !queued,
        redelivery: queued,
        method: "POST".into(),
        path: "/sub".into(),
        query: "a=1".into(),
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("host".into(), b"relay.test".to_vec()),
            ("x-raw".into(), vec![0xff, 0xfe]),
        ],
        body: Bytes::copy_from_slice(&body[..body.len().min(MAX_CHUNK)]),
        end,
    }
}

#[test]
fn listen_forwards_answers_records_and_prints() {
    let rt = runtime();
    let (target, mut seen) = rt.block_on(echo_target());
    let relay = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let relay_url = format!("http://{}", relay.local_addr().unwrap());
    let extra = ["--json", "--token", "s3cret-token"];
    let mut listen = Listening::spawn(&relay_url, &target, &extra);

    let (mut ws, auth, path) = rt.block_on(accept_client(&relay));
    assert_eq!(auth.as_deref(), Some("Bearer s3cret-token"));
    assert_eq!(path, "/_illumitunnel/connect");
    rt.block_on(send(&mut ws, welcome()));
    let url_line = listen.stderr_line(|l| l.starts_with("webhook URL"));
    assert_eq!(url_line, "webhook URL    https://relay.test/t/my-app");
    listen.stderr_line(|l| l == format!("forwarding to  {target}"));
    listen.stderr_line(|l| l.starts_with("capture store  "));
    listen.stderr_line(|l| l == "connected, 2 queued deliveries follow");

    // A small delivery, answered in one message.
    let body =
        br#"{"event":"ticket.created","timestamp":"2025-06-15T14:30:00Z","data":{"id":"tkt_1"}}"#;
    rt.block_on(send(&mut ws, request("d0000001", body, false, true)));
    let answer = rt.block_on(next_client_message(&mut ws));
    let ClientMessage::Response {
        id,
        status,
        headers,
        body: got,
        end,
    } = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!((id.as_str(), status, end), ("d0000001", 201, true));
    assert_eq!(&got[..], &body[..]);
    assert!(headers.contains(&("x-local".to_string(), b"yes".to_vec())));
    let (head, forwarded) = rt.block_on(async { seen.recv().await.unwrap() });
    assert!(
        head.starts_with("POST /hooks/sub?a=1 HTTP/1.1\r\n"),
        "{head}"
    );
    let authority = target
        .trim_start_matches("http://")
        .trim_end_matches("/hooks");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("\r\nhost: {authority}\r\n")),
        "Host not rewritten: {head}"
    );
    assert_eq!(forwarded, body);
    let line: Value = serde_json::from_str(&listen.stdout_line()).unwrap();
    assert_eq!(line["id"], "d0000001");
    assert_eq!(line["event"], "ticket.created");
    assert_eq!(line["status"], 201);
    assert_eq!(line["path"], "/hooks/sub");

    // A body larger than one chunk goes in chunks both ways, byte-exact.
    let big: Vec<u8> = (0..(MAX_CHUNK * 3 + 5)).map(|i| (i % 251) as u8).collect();
    rt.block_on(async {
        send(&mut ws, request("d0000002", &big, false, false)).await;
        let mut pos = MAX_CHUNK;
        while pos < big.len() {
            let end = (pos + MAX_CHUNK).min(big.len());
            let chunk = RelayMessage::RequestChunk {
                id: DeliveryId::parse("d0000002").unwrap(),
                data: Bytes::copy_from_slice(&big[pos..end]),
                end: end == big.len(),
            };
            send(&mut ws, chunk).await;
            pos = end;
        }
    });
    let mut echoed = Vec::new();
    loop {
        let (data, end) = match rt.block_on(next_client_message(&mut ws)) {
            ClientMessage::Response { body, end, .. } => (body, end),
            ClientMessage::ResponseChunk { data, end, .. } => (data, end),
            other => panic!("{other:?}"),
        };
        assert!(data.len() <= MAX_CHUNK);
        echoed.extend_from_slice(&data);
        if end {
            break;
        }
    }
    assert_eq!(echoed, big);
    assert_eq!(rt.block_on(async { seen.recv().await.unwrap() }).1, big);
    let line: Value = serde_json::from_str(&listen.stdout_line()).unwrap();
    assert_eq!(line["id"], "d0000002");

    // A queued delivery is acknowledged once recorded; its redelivery is neither forwarded
    // nor shown again, only acknowledged again.
    for _ in 0..2 {
        rt.block_on(send(&mut ws, request("q0000001", b"{}", true, true)));
        let ack = rt.block_on(next_client_message(&mut ws));
        let id = DeliveryId::parse("q0000001").unwrap();
        assert_eq!(ack, ClientMessage::Recorded { id });
    }
    let line: Value = serde_json::from_str(&listen.stdout_line()).unwrap();
    assert_eq!(line["id"], "q0000001");
    assert_eq!(line["queued"], true);
    rt.block_on(async {
        assert!(seen.recv().await.is_some());
        assert!(seen.try_recv().is_err(), "a redelivery was forwarded again");
    });

    assert_eq!(listen.terminate(), 0);
    assert!(
        listen.stdout.recv_timeout(DEADLINE).is_err(),
        "a delivery was shown twice"
    );
    let stderr = listen.all_stderr();
    assert!(
        !stderr.iter().any(|l| l.contains("s3cret-token")),
        "{stderr:#?}"
    );
}

#[test]
fn listen_exits_1_when_the_relay_refuses_the_token() {
    let rt = runtime();
    let relay = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let relay_url = format!("ws://{}", relay.local_addr().unwrap());
    let target = "http://127.0.0.1:9/hooks";
    let mut listen = Listening::spawn(&relay_url, target, &["--token", "nope"]);
    let (mut ws, _, _) = rt.block_on(accept_client(&relay));
    let refused = RelayMessage::Refused {
        reason: Refusal::Unauthorized,
        message: "unknown token".into(),
    };
    rt.block_on(send(&mut ws, refused));
    assert_eq!(listen.wait(), 1);
    assert_eq!(
        listen.all_stderr(),
        ["error: relay refused the token; run `illumitunnel login` with a token from the relay, or check --token and ILLUMITUNNEL_TOKEN"]
    );
}

#[test]
fn listen_retries_an_unreachable_relay_and_says_so() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay = format!("http://127.0.0.1:{port}");
    let mut listen = Listening::spawn(&relay, "http://127.0.0.1:9/hooks", &[]);
    let expected = format!(
        ": could not connect to relay ws://127.0.0.1:{port}: connection refused; check --relay"
    );
    for _ in 0..2 {
        let line = listen.stderr_line(|l| l.starts_with("reconnecting in "));
        assert!(line.ends_with(&expected), "{line}");
    }
    assert_eq!(listen.terminate(), 0);
}

#[test]
fn listen_retries_when_the_relay_limits_failed_token_checks_and_says_why() {
    let rt = runtime();
    let relay = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let relay_url = format!("http://{}", relay.local_addr().unwrap());
    // Answers every upgrade as a relay over its failed-check limit does.
    let server = rt.spawn(async move {
        for _ in 0..2 {
            let Ok((mut stream, _)) = relay.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = r#"{"error":"too many failed client token checks from this address; wait 2 s"}"#;
            let answer = format!(
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, answer.as_bytes()).await;
        }
    });
    let mut listen = Listening::spawn(
        &relay_url,
        "http://127.0.0.1:9/hooks",
        &["--token", "itr_0123456789abcdefghijklmnop"],
    );
    let line = listen.stderr_line(|l| l.starts_with("reconnecting in "));
    assert!(
        line.ends_with("the relay is refusing this address for a moment after too many failed token checks (429); if it repeats, check --token and ILLUMITUNNEL_TOKEN"),
        "{line}"
    );
    assert_eq!(listen.terminate(), 0);
    server.abort();
}

#[test]
fn listen_drops_a_silent_relay_and_reconnects() {
    let rt = runtime();
    let relay = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let relay_url = format!("http://{}", relay.local_addr().unwrap());
    let target = "http://127.0.0.1:9/hooks";
    let mut listen = Listening::spawn(&relay_url, target, &["--keepalive-ms", "100"]);
    let (mut ws, _, _) = rt.block_on(accept_client(&relay));
    rt.block_on(send(&mut ws, welcome()));
    listen.stderr_line(|l| l.starts_with("connected"));
    // This side never reads again, so no pong goes back: the client must give up on it.
    let line = listen.stderr_line(|l| l.starts_with("reconnecting in "));
    assert!(line.contains("the relay was silent for"), "{line}");
    let (mut again, _, _) = rt.block_on(accept_client(&relay));
    rt.block_on(send(&mut again, welcome()));
    listen.stderr_line(|l| l.starts_with("connected"));
    drop(ws);
    assert_eq!(listen.terminate(), 0);
}
