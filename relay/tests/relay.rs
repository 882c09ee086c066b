//! The relay in process on `127.0.0.1:0` (plain and TLS), with a small fake client built from
//! tokio-tungstenite and the wire protocol, and senders built on hyper's client connections.
//! The last tests run the real binary for its exit codes and printed lines.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use illumitunnel::protocol::{
    ClientMessage, Refusal, RelayMessage, CONNECT_PATH, PROTOCOL_VERSION,
};
use illumitunnel::{DeliveryId, Token};
use illumitunnel_relay::OfflinePolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use common::*;

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn delivery_round_trip_is_byte_exact_both_ways() {
    let relay = Relay::plain().await;
    let mut events = spawn_client(connect(&relay, "my-app").await, Behavior::Echo);
    let body: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let req = Request::post("/t/my-app/webhooks/illumichat/sub?x=1&y=%20&x=2")
        .header(header::HOST, "hooks.example.com")
        .header("content-type", "application/json")
        .header(
            "x-raw",
            HeaderValue::from_bytes(&[0xff, 0x80, b'a']).unwrap(),
        )
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("connection", "x-hop")
        .header("x-hop", "drop me")
        .header("x-forwarded-for", "198.51.100.1")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let answer = relay.send(req).await;

    let got = next_request(&mut events).await;
    assert!(got.answer);
    assert_eq!(
        (got.method.as_str(), got.path.as_str(), got.query.as_str()),
        ("POST", "/webhooks/illumichat/sub", "x=1&y=%20&x=2")
    );
    assert_eq!(got.body, body);
    assert_eq!(
        header_values(&got.headers, "x-raw"),
        [&[0xff, 0x80, b'a'][..]]
    );
    assert_eq!(
        header_values(&got.headers, "x-multi"),
        [&b"one"[..], b"two"]
    );
    assert_eq!(
        header_values(&got.headers, "content-type"),
        [&b"application/json"[..]]
    );
    for gone in ["host", "connection", "x-hop", "transfer-encoding"] {
        assert!(
            header_values(&got.headers, gone).is_empty(),
            "{gone} forwarded: {:?}",
            got.headers
        );
    }
    // The sender's own X-Forwarded-For is not believed: the relay writes the peer alone.
    assert_eq!(
        header_values(&got.headers, "x-forwarded-for"),
        [&b"127.0.0.1"[..]]
    );
    assert_eq!(
        header_values(&got.headers, "x-forwarded-proto"),
        [&b"http"[..]]
    );
    assert_eq!(
        header_values(&got.headers, "x-forwarded-host"),
        [&b"hooks.example.com"[..]]
    );

    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body.as_ref(), body.as_slice());
    assert_eq!(answer.headers["x-echo-path"], "/webhooks/illumichat/sub");
    assert_eq!(answer.headers["x-bin"].as_bytes(), [0xff, 0xfe, b'x']);
    let cookies: Vec<_> = answer.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(
        answer.headers[header::CONTENT_LENGTH],
        body.len().to_string().as_str()
    );
    assert!(answer.headers.get(header::CONNECTION).is_none());
    relay.stop().await;
}

#[tokio::test]
async fn tunnel_root_and_empty_query() {
    let relay = Relay::plain().await;
    let mut events = spawn_client(connect(&relay, "my-app").await, Behavior::Echo);
    let answer = relay
        .send(
            Request::get("/t/my-app")
                .header(header::HOST, "x")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let got = next_request(&mut events).await;
    assert_eq!(
        (got.method.as_str(), got.path.as_str(), got.query.as_str()),
        ("GET", "/", "")
    );
    assert!(got.body.is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn unknown_tunnel_offline_tunnel_and_other_paths() {
    let relay = Relay::plain().await;
    let answer = relay.post("/t/nobody-here/x", "{}").await;
    assert_eq!(
        (answer.status, answer.error()),
        (StatusCode::NOT_FOUND, "unknown tunnel".to_string())
    );
    let answer = relay.post("/t/Not_A_Name/x", "{}").await;
    assert_eq!(
        (answer.status, answer.error()),
        (StatusCode::NOT_FOUND, "unknown tunnel".to_string())
    );
    let answer = relay.post("/elsewhere", "{}").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.error().contains("/t/{tunnel}"));

    relay.stop().await;

    // --offline reject: a known tunnel with no client is 503 and nothing is queued.
    let relay = Relay::start(false, |c| c.offline = OfflinePolicy::Reject).await;
    let mut ws = connect(&relay, "gone-soon").await;
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    // The relay notices the close asynchronously: wait until its metrics count no session.
    wait_for_metric(&relay, "illumitunnel_sessions 0").await;
    let answer = relay.post("/t/gone-soon/x", "{}").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer
            .error()
            .contains("the client for tunnel gone-soon is offline"),
        "{}",
        answer.error()
    );
    let (_ws, welcome) = hello(&relay, None, PROTOCOL_VERSION, "gone-soon").await;
    assert!(
        matches!(welcome, RelayMessage::Welcome { queued: 0, .. }),
        "{welcome:?}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn oversize_bodies_get_413_and_nothing_is_forwarded() {
    let relay = Relay::start(false, |c| c.max_body = 1024).await;
    let mut events = spawn_client(connect(&relay, "my-app").await, Behavior::Echo);

    let answer = relay.post("/t/my-app/big", vec![b'a'; 1025]).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer.error().contains("limit of 1024 bytes"),
        "{}",
        answer.error()
    );

    // Chunked: no Content-Length, so the limit applies while reading.
    let mut raw = TcpStream::connect(relay.addr).await.unwrap();
    let head = "POST /t/my-app/chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    raw.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..3 {
        let chunk = format!("200\r\n{}\r\n", "b".repeat(0x200));
        if raw.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = raw.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = within("413 on a chunked body", raw.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    // Exactly-at-limit passes, and it is the first thing the client ever saw.
    assert_eq!(
        relay.post("/t/my-app/fits", vec![b'c'; 1024]).await.status,
        StatusCode::CREATED
    );
    assert_eq!(next_request(&mut events).await.path, "/fits");
    relay.stop().await;
}

#[tokio::test]
async fn no_answer_within_the_response_timeout_is_504_and_cancels() {
    let relay = Relay::start(false, |c| c.response_timeout = Duration::from_millis(300)).await;
    let mut events = spawn_client(connect(&relay, "my-app").await, Behavior::Silent);
    let answer = relay.post("/t/my-app/slow", "{}").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        answer.error(),
        "the client for tunnel my-app did not answer within 300ms"
    );
    let sent = next_request(&mut events).await;
    match within("cancel", events.recv()).await {
        Some(Event::Cancel(id)) => assert_eq!(id, sent.id),
        other => panic!("expected a cancel, got {other:?}"),
    }
    relay.stop().await;
}

#[tokio::test]
async fn client_failure_is_502_naming_the_cause() {
    let relay = Relay::plain().await;
    let _events = spawn_client(
        connect(&relay, "my-app").await,
        Behavior::Fail("connection refused to 127.0.0.1:3000"),
    );
    let answer = relay.post("/t/my-app/x", "{}").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.error(), "connection refused to 127.0.0.1:3000");
    relay.stop().await;
}

#[tokio::test]
async fn fan_out_every_session_sees_it_and_the_first_answers() {
    let relay = Relay::plain().await;
    let mut first = spawn_client(connect(&relay, "shared").await, Behavior::Echo);
    let mut second = spawn_client(
        connect(&relay, "shared").await,
        Behavior::Fail("the second session must not answer"),
    );
    let answer = relay.post("/t/shared/hook", "payload").await;
    assert_eq!(
        (answer.status, answer.body.as_ref()),
        (StatusCode::CREATED, &b"payload"[..])
    );
    let (a, b) = (
        next_request(&mut first).await,
        next_request(&mut second).await,
    );
    assert!(a.answer && !b.answer);
    assert_eq!((a.id, a.body), (b.id, b.body));
    relay.stop().await;
}

#[tokio::test]
async fn refusals_say_why() {
    let relay = Relay::start(false, |c| {
        c.tokens = vec![Token::new("alpha"), Token::new("beta")];
        c.allow_anonymous = false;
    })
    .await;
    let refusal = |reply: RelayMessage| match reply {
        RelayMessage::Refused { reason, message } => (reason, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // A missing or wrong token is refused before the upgrade: 401 with a JSON sentence.
    for token in [None, Some("gamma"), Some("")] {
        let (status, body) = refused_upgrade(&relay, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            json["error"].as_str().unwrap().contains("--token"),
            "{body}"
        );
    }
    let (_, reply) = hello(&relay, Some("alpha"), PROTOCOL_VERSION, "Bad_Name").await;
    assert_eq!(refusal(reply).0, Refusal::TunnelNameInvalid);
    let (_, reply) = hello(&relay, Some("alpha"), PROTOCOL_VERSION + 1, "my-app").await;
    assert_eq!(refusal(reply).0, Refusal::VersionMismatch);

    let (owner, reply) = hello(&relay, Some("alpha"), PROTOCOL_VERSION, "my-app").await;
    assert!(matches!(reply, RelayMessage::Welcome { .. }), "{reply:?}");
    let (_, reply) = hello(&relay, Some("beta"), PROTOCOL_VERSION, "my-app").await;
    let (reason, message) = refusal(reply);
    assert_eq!(reason, Refusal::TunnelTaken);
    assert!(
        message.contains("my-app") && message.contains("--tunnel"),
        "{message}"
    );
    // The same token may add a second listener.
    let (_, reply) = hello(&relay, Some("alpha"), PROTOCOL_VERSION, "my-app").await;
    assert!(matches!(reply, RelayMessage::Welcome { .. }), "{reply:?}");
    drop(owner);
    relay.stop().await;
}

#[tokio::test]
async fn sessions_must_start_with_hello_and_speak_the_protocol() {
    let relay = Relay::plain().await;
    let mut ws = open_ws(&relay, None).await;
    let not_hello = ClientMessage::Recorded {
        id: DeliveryId::parse("abc").unwrap(),
    };
    ws.send(Message::Binary(not_hello.encode())).await.unwrap();
    assert!(
        next_message(&mut ws).await.is_none(),
        "closed without a welcome"
    );

    let mut ws = connect(&relay, "my-app").await;
    ws.send(Message::Binary(vec![0xee, 1, 2, 3])).await.unwrap();
    assert!(
        next_message(&mut ws).await.is_none(),
        "closed after garbage"
    );

    let get = Request::get(CONNECT_PATH)
        .header(header::HOST, "x")
        .body(Full::default())
        .unwrap();
    let answer = relay.send(get).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().starts_with("expected a websocket upgrade"));
    relay.stop().await;
}

#[tokio::test]
async fn ten_mib_travels_in_chunks_without_stalling_small_deliveries() {
    let relay = Relay::plain().await;
    let client = spawn_interleaving_client(connect(&relay, "big-app").await);
    let big: Vec<u8> = (0..10 * 1024 * 1024)
        .map(|i: usize| (i * 31 % 251) as u8)
        .collect();
    let big_answered = std::cell::Cell::new(false);
    let big_delivery = async {
        let answer = relay.post("/t/big-app/big", big.clone()).await;
        big_answered.set(true);
        answer
    };
    // The small delivery is sent once the 10 MiB one is on the link, so it has to get past it.
    let small_delivery = async {
        within(
            "the 10 MiB delivery's head at the client",
            client.big_started,
        )
        .await
        .unwrap();
        let answer = relay.post("/t/big-app/small", "tiny").await;
        (answer, big_answered.get())
    };
    let (big_answer, (small_answer, big_answered_first)) =
        tokio::join!(big_delivery, small_delivery);
    let completed_at_client = client.completed.lock().unwrap().clone();
    assert!(
        !big_answered_first,
        "the small delivery was answered only after the 10 MiB one; completed at the client: \
         {completed_at_client:?}"
    );
    assert_eq!(small_answer.status, StatusCode::CREATED);
    assert_eq!(small_answer.body.as_ref(), b"tiny");
    assert_eq!(big_answer.status, StatusCode::CREATED);
    assert!(
        big_answer.body.as_ref() == big.as_slice(),
        "10 MiB body changed on the way"
    );
    assert_eq!(
        completed_at_client,
        [("/small".to_string(), 4), ("/big".to_string(), big.len())],
        "the small delivery travels between the 10 MiB one's chunks"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_two_keepalive_intervals() {
    let relay = Relay::start(false, |c| c.keepalive = Duration::from_millis(100)).await;
    // Never polled again: it answers no ping, like a suspended laptop.
    let _frozen = connect(&relay, "frozen").await;
    let started = std::time::Instant::now();
    // The delivery in flight when the session is dropped is queued, never failed.
    let answer = relay.post("/t/frozen/x", "{}").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let answer = relay.post("/t/frozen/x", "{}").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);

    // A client that keeps reading (and so answers pings) stays connected. Three pings read and
    // answered span more than the two silent intervals that dropped the frozen one.
    let mut awake = connect(&relay, "awake").await;
    for _ in 0..3 {
        match within("a keepalive ping", awake.next()).await {
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected a ping on an idle session, got {other:?}"),
        }
    }
    let mut events = spawn_client(awake, Behavior::Echo);
    assert_eq!(
        relay.post("/t/awake/x", "{}").await.status,
        StatusCode::CREATED
    );
    next_request(&mut events).await;
    relay.stop().await;
}

#[tokio::test]
async fn healthz_and_metrics() {
    let relay = Relay::plain().await;
    let _events = spawn_client(connect(&relay, "my-app").await, Behavior::Echo);
    relay.post("/t/my-app/x", "{}").await;
    relay.post("/t/unknown-app/x", "{}").await;
    let get = |path: &str| {
        Request::get(path)
            .header(header::HOST, "x")
            .body(Full::default())
            .unwrap()
    };
    let health = relay.send(get("/healthz")).await;
    assert_eq!(
        (health.status, health.body.as_ref()),
        (StatusCode::OK, &b"ok"[..])
    );
    let metrics = relay.send(get("/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    for needle in [
        "illumitunnel_tunnels_connected 1",
        "illumitunnel_sessions 1",
        "illumitunnel_deliveries_total{outcome=\"answered\"} 1",
        "illumitunnel_deliveries_total{outcome=\"unknown_tunnel\"} 1",
        "illumitunnel_delivery_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    relay.stop().await;
}

#[tokio::test]
async fn tls_ingress_with_http2_and_a_tls_session() {
    let relay = Relay::start(true, |_| {}).await;
    let mut events = spawn_client(connect(&relay, "secure").await, Behavior::Echo);

    let io = relay.connect_io(b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let url = format!("https://127.0.0.1:{}/t/secure/h2?v=2", relay.addr.port());
    for i in 0..3 {
        let req = Request::post(url.as_str())
            .header("x-n", i.to_string())
            .body(Full::new(Bytes::from(vec![i as u8; 100_000])))
            .unwrap();
        let response = within("h2 response", sender.send_request(req))
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let answer = Answer::read(response).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(answer.body.as_ref(), vec![i as u8; 100_000].as_slice());
        let got = next_request(&mut events).await;
        assert_eq!((got.path.as_str(), got.query.as_str()), ("/h2", "v=2"));
        assert_eq!(
            header_values(&got.headers, "x-forwarded-proto"),
            [&b"https"[..]]
        );
        let host = format!("127.0.0.1:{}", relay.addr.port());
        assert_eq!(
            header_values(&got.headers, "x-forwarded-host"),
            [host.as_bytes()]
        );
    }
    let over_http1 = relay.post("/t/secure/h1", "x").await;
    assert_eq!(over_http1.status, StatusCode::CREATED);
    relay.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sessions() {
    let relay = Relay::plain().await;
    let mut ws = connect(&relay, "my-app").await;
    relay.shutdown.cancel();
    assert!(
        next_message(&mut ws).await.is_none(),
        "the session ends on shutdown"
    );
    within("relay shutdown", relay.task).await.unwrap().unwrap();
}

// ---------------------------------------------------------------- helpers

/// Pause between two looks at a condition nothing announces.
const POLL: Duration = Duration::from_millis(20);

/// Polls the relay's `/metrics` every [`POLL`], for at most [`WAIT`], until it holds `needle`.
async fn wait_for_metric(relay: &Relay, needle: &str) -> String {
    let start = tokio::time::Instant::now();
    loop {
        let get = Request::get("/metrics")
            .header(header::HOST, "x")
            .body(Full::default())
            .unwrap();
        let text = String::from_utf8_lossy(&relay.send(get).await.body).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < WAIT,
            "no {needle:?} in /metrics within {WAIT:?}:\n{text}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A fake client for interleaved deliveries (see [`spawn_interleaving_client`]).
struct InterleavingClient {
    /// Fires when the head of the first chunked delivery arrives.
    big_started: oneshot::Receiver<()>,
    /// Path and body length of each delivery, in the order their last byte arrived.
    completed: Arc<Mutex<Vec<(String, usize)>>>,
}

/// Runs a client that reassembles deliveries whose chunks interleave on the link and echoes
/// each (as [`Behavior::Echo`] does) as soon as it is complete.
fn spawn_interleaving_client(mut ws: Ws) -> InterleavingClient {
    let (started_tx, big_started) = oneshot::channel();
    let completed = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&completed);
    tokio::spawn(async move {
        let mut started_tx = Some(started_tx);
        let mut assembling: HashMap<DeliveryId, Received> = HashMap::new();
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Binary(bytes) = frame else {
                continue;
            };
            let done = match RelayMessage::decode(&bytes).unwrap() {
                RelayMessage::Request {
                    id,
                    answer,
                    redelivery,
                    method,
                    path,
                    query,
                    headers,
                    body,
                    end,
                    ..
                } => {
                    let request = Received {
                        id: id.clone(),
                        answer,
                        queued: redelivery,
                        method,
                        path,
                        query,
                        headers,
                        body: body.to_vec(),
                    };
                    if end {
                        Some(request)
                    } else {
                        if let Some(tx) = started_tx.take() {
                            let _ = tx.send(());
                        }
                        assembling.insert(id, request);
                        None
                    }
                }
                RelayMessage::RequestChunk { id, data, end } => {
                    let request = assembling.get_mut(&id).expect("a chunk after its head");
                    request.body.extend_from_slice(&data);
                    if end {
                        assembling.remove(&id)
                    } else {
                        None
                    }
                }
                _ => None,
            };
            let Some(request) = done else { continue };
            log.lock()
                .unwrap()
                .push((request.path.clone(), request.body.len()));
            for reply in answer(&Behavior::Echo, &request) {
                if ws.send(Message::Binary(reply.encode())).await.is_err() {
                    return;
                }
            }
        }
    });
    InterleavingClient {
        big_started,
        completed,
    }
}

// ---------------------------------------------------------------- the binary

/// Whether process `pid` catches SIGTERM (bit 15 of `SigCgt` in Linux's `/proc/PID/status`).
fn catches_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

fn relay_bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_illumitunnel-relay"));
    cmd.env_remove("ILLUMITUNNEL_RELAY_TOKENS")
        .env("RUST_LOG", "info");
    cmd
}

#[test]
fn binary_config_errors_exit_2_with_one_sentence() {
    for (args, want) in [
        (&["--listen", "0.0.0.0:0", "--http"][..], "error: refusing to listen on 0.0.0.0:0 without client tokens"),
        (&["--listen", "127.0.0.1:0", "--http"][..], "error: refusing to listen on 127.0.0.1:0 without client tokens"),
        (&["--listen", "127.0.0.1:0"][..], "error: choose how to serve: pass --acme-domain NAME (a certificate from Let's Encrypt), --tls-cert FILE --tls-key FILE, --self-signed, or --http"),
        (&["--listen", "127.0.0.1:0", "--tls-cert", "c.pem"][..], "error: --tls-cert needs --tls-key"),
        (&["--acme-domain", "relay.example.com", "--self-signed"][..], "error: --acme-domain obtains its own certificate and cannot be combined with --tls-cert/--tls-key, --self-signed or --http; pick one"),
        (&["token", "add", "has space"][..], "error: invalid token name \"has space\""),
    ] {
        // Its own data dir: tokens stored in the default one must not change the verdict.
        let data_dir = tempfile::tempdir().unwrap();
        let out = relay_bin().args(args).arg("--data-dir").arg(data_dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(want), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn binary_port_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = relay_bin()
        .args(["--listen", &addr, "--http", "--allow-anonymous"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("error: address {addr} is already in use; pass --listen with another port")
    );
}

#[test]
fn binary_prints_address_and_fingerprint_and_exits_0_on_sigterm() {
    use std::io::BufRead;
    let mut child = relay_bin()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--self-signed",
            "--tokens-file",
            "/dev/null",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // /dev/null holds no tokens: that is a config error, not a start.
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2));

    // Its own data dir: the default one is shared with whatever else runs on this machine.
    let data = tempfile::tempdir().unwrap();
    let mut child = relay_bin()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--self-signed",
            "--hostname",
            "relay.test",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .env("ILLUMITUNNEL_RELAY_TOKENS", "s3cret-token-value-9f2c7e1a")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    stdout.read_line(&mut first).unwrap();
    stdout.read_line(&mut second).unwrap();
    // The listening line is printed before the SIGTERM handler is installed, so a SIGTERM sent
    // at once can kill the relay outright (status None). Wait, under a deadline, until the
    // kernel shows the relay catching SIGTERM.
    let start = std::time::Instant::now();
    while !catches_sigterm(child.id()) {
        assert!(
            start.elapsed() < WAIT,
            "the relay installed no SIGTERM handler within {WAIT:?}"
        );
        std::thread::sleep(POLL);
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    // Polls the process state until it exits, for at most WAIT.
    let guard_status = (|| {
        let start = std::time::Instant::now();
        while start.elapsed() < WAIT {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    })();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(kill.unwrap().success());
    assert!(
        first.starts_with("illumitunnel-relay listening on https://127.0.0.1:"),
        "{first}"
    );
    assert!(!first.trim_end().ends_with(":0"), "{first}");
    let fingerprint = second
        .trim_end()
        .strip_prefix("certificate sha256 fingerprint ")
        .unwrap_or_else(|| panic!("{second}"));
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
    assert_eq!(
        guard_status.and_then(|s| s.code()),
        Some(0),
        "stderr: {stderr}"
    );
    assert!(
        !stderr.contains("s3cret-token-value-9f2c7e1a"),
        "token logged: {stderr}"
    );
}
