//! Hostile senders against a real relay over raw sockets: oversized heads, idle and half-open
//! connections, methods and paths no webhook sender uses, bodies over the limit written before
//! reading, the in-flight budget, connection limits, and `/metrics` off a public port. Each
//! test names the finding it guards against.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use http::StatusCode;
use illumitunnel::protocol::{ClientMessage, RelayMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Writes `request` and reads the answer until the relay closes or `wait` passes.
async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    read_answer(&mut socket, wait).await
}

async fn read_answer(socket: &mut TcpStream, wait: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    // One answer is enough: stop at the end of a JSON body.
                    if answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// Claims `tunnel` with a fake client that leaves, so deliveries to it are queued.
async fn offline_tunnel(relay: &Relay, tunnel: &str) {
    let mut ws = connect(relay, tunnel).await;
    ws.close(None).await.unwrap();
    while next_message(&mut ws).await.is_some() {}
    let deadline = Instant::now() + WAIT;
    while relay
        .post(&format!("/t/{tunnel}/probe"), "probe")
        .await
        .status
        != StatusCode::ACCEPTED
    {
        assert!(
            Instant::now() < deadline,
            "tunnel {tunnel} never went offline"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn h1_an_oversized_head_gets_431_and_cannot_jam_the_queue() {
    let relay = Relay::plain().await;
    offline_tunnel(&relay, "jam").await;
    let head = |header_bytes: usize| {
        let mut request = format!("POST /t/jam/x HTTP/1.1\r\nHost: {}\r\n", relay.addr);
        let value = "v".repeat(header_bytes / 4);
        for i in 0..4 {
            request.push_str(&format!("x-big-{i}: {value}\r\n"));
        }
        request.push_str("Content-Length: 2\r\n\r\n{}");
        request
    };
    // Just over the limit: the relay's own JSON answer.
    let answer = raw(relay.addr, head(70 * 1024).as_bytes(), WAIT).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert!(
        answer
            .contains("request line and headers are larger than this relay's limit of 65536 bytes"),
        "{answer}"
    );
    // The reported attack: 4 headers of 60 KB. hyper refuses it before the relay sees it.
    let answer = raw(relay.addr, head(240 * 1024).as_bytes(), WAIT).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    // Three normal deliveries behind it reach the client; nothing of the big ones was queued.
    for i in 0..3 {
        let answer = relay
            .post(&format!("/t/jam/ok{i}"), format!("ok {i}"))
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    let mut events = spawn_client(connect_with_backlog(&relay, "jam").await, Behavior::Record);
    let mut bodies = Vec::new();
    for _ in 0..4 {
        bodies.push(String::from_utf8(next_request(&mut events).await.body).unwrap());
    }
    assert_eq!(bodies, ["probe", "ok 0", "ok 1", "ok 2"]);
    relay.stop().await;
}

/// Opens a session on a tunnel that has a backlog (`connect` expects none).
async fn connect_with_backlog(relay: &Relay, tunnel: &str) -> Ws {
    let (ws, reply) = hello(
        relay,
        None,
        illumitunnel::protocol::PROTOCOL_VERSION,
        tunnel,
    )
    .await;
    assert!(matches!(reply, RelayMessage::Welcome { .. }), "{reply:?}");
    ws
}

/// Whether the relay closes `socket` (EOF or reset) within `wait`.
async fn closed_within(socket: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn h2_idle_and_half_open_connections_are_closed_while_healthz_stays_fast() {
    let first = Duration::from_millis(400);
    let tune = |c: &mut illumitunnel_relay::Config| {
        c.limits.first_request_timeout = first;
        c.limits.idle_timeout = Duration::from_millis(600);
    };
    let relay = Relay::start(false, tune).await;
    let tls_relay = Relay::start(true, tune).await;
    let mut silent = TcpStream::connect(relay.addr).await.unwrap();
    let mut partial_head = TcpStream::connect(relay.addr).await.unwrap();
    partial_head
        .write_all(b"POST /t/x/y HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let mut partial_preface = TcpStream::connect(relay.addr).await.unwrap();
    partial_preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .unwrap();
    let mut whole_preface = TcpStream::connect(relay.addr).await.unwrap();
    whole_preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // TLS finished, then silence.
    let tls_silent = tls_relay.connect_io(b"http/1.1").await;
    // TLS never started.
    let mut tls_idle = TcpStream::connect(tls_relay.addr).await.unwrap();
    // One request, then an idle keep-alive connection.
    let mut kept = TcpStream::connect(relay.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // Meanwhile the relay answers at once.
    let started = Instant::now();
    assert_eq!(relay.get("/healthz").await.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));

    for (name, socket) in [
        ("silent", &mut silent),
        ("partial head", &mut partial_head),
        ("partial HTTP/2 preface", &mut partial_preface),
        ("whole HTTP/2 preface", &mut whole_preface),
        ("TLS never started", &mut tls_idle),
        ("idle keep-alive", &mut kept),
    ] {
        assert!(
            closed_within(socket, Duration::from_secs(5)).await,
            "{name} connection still open"
        );
    }
    let mut tls_silent = tls_silent;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), tls_silent.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a TLS connection with no request stays open: {closed:?}"
    );
    relay.stop().await;
    tls_relay.stop().await;
}

#[tokio::test]
async fn l_connect_and_other_methods_get_405_and_sneaky_paths_get_400() {
    let relay = Relay::plain().await;
    let mut events = spawn_client(connect(&relay, "safe").await, Behavior::Echo);
    let answer = raw(
        relay.addr,
        format!(
            "CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            relay.addr, relay.addr
        )
        .as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(status_of(&answer), 405, "{answer}");
    assert!(
        answer.contains("method CONNECT is not accepted"),
        "{answer}"
    );
    let answer = raw(
        relay.addr,
        b"TRACE /t/safe/x HTTP/1.1\r\nHost: a\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(status_of(&answer), 405, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("allow: post, put, patch, delete, get, head, options"),
        "{answer}"
    );
    for path in [
        "/t/safe/..%2f..%2fadmin",
        "/t/safe/..%5Cadmin",
        "/t/safe/..;/admin",
        "/t/safe/x/%2e%2e;/admin",
    ] {
        let answer = relay.post(path, "x").await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            answer.error().starts_with("path refused"),
            "{path}: {}",
            answer.error()
        );
    }
    // None of them reached the client; a plain delivery does.
    assert_eq!(
        relay.post("/t/safe/ok", "ok").await.status,
        StatusCode::CREATED
    );
    assert_eq!(next_request(&mut events).await.path, "/ok");
    relay.stop().await;
}

#[tokio::test]
async fn l_a_413_is_seen_by_a_sender_that_writes_its_whole_body_first() {
    let relay = Relay::start(false, |c| c.max_body = 1000).await;
    let _events = spawn_client(connect(&relay, "big").await, Behavior::Echo);
    let body = vec![b'x'; 3 * 1024 * 1024];
    for framing in ["length", "chunked"] {
        let mut socket = TcpStream::connect(relay.addr).await.unwrap();
        let head = match framing {
            "length" => format!(
                "POST /t/big/x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
            _ => "POST /t/big/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
        };
        socket.write_all(head.as_bytes()).await.unwrap();
        if framing == "length" {
            socket.write_all(&body).await.unwrap();
        } else {
            for chunk in body.chunks(64 * 1024) {
                socket
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await
                    .unwrap();
                socket.write_all(chunk).await.unwrap();
                socket.write_all(b"\r\n").await.unwrap();
            }
            socket.write_all(b"0\r\n\r\n").await.unwrap();
        }
        let answer = read_answer(&mut socket, WAIT).await;
        assert_eq!(status_of(&answer), 413, "{framing}: {answer}");
        assert!(
            answer.contains("larger than this relay's limit of 1000 bytes"),
            "{framing}: {answer}"
        );
    }
    relay.stop().await;
}

#[tokio::test]
async fn m1_bodies_beyond_the_inflight_budget_get_503_with_retry_after() {
    let relay = Relay::start(false, |c| {
        c.max_body = 1000;
        c.limits.max_inflight_bytes = 1500;
    })
    .await;
    let _events = spawn_client(connect(&relay, "budget").await, Behavior::Echo);
    // A slow sender's request is in flight (4 of its 1000 bytes arrived); an 800-byte body
    // from the same address would take it past its eighth of a budget more than half full.
    let mut slow = TcpStream::connect(relay.addr).await.unwrap();
    slow.write_all(b"POST /t/budget/slow HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nhalf")
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let busy = loop {
        let answer = relay.post("/t/budget/x", vec![b'y'; 800]).await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            break answer;
        }
        assert!(Instant::now() < deadline, "never over budget");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(busy.headers["retry-after"], "5");
    assert!(
        busy.error().contains("--max-inflight-bytes"),
        "{}",
        busy.error()
    );
    // A small one still fits.
    assert_eq!(
        relay.post("/t/budget/small", vec![b'z'; 100]).await.status,
        StatusCode::CREATED
    );
    drop(slow);
    relay.stop().await;
}

#[tokio::test]
async fn connections_over_the_per_address_limit_are_closed_at_accept() {
    let relay = Relay::start(false, |c| c.limits.max_connections_per_ip = 2).await;
    let _a = TcpStream::connect(relay.addr).await.unwrap();
    let _b = TcpStream::connect(relay.addr).await.unwrap();
    let mut third = TcpStream::connect(relay.addr).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(5)).await);
    drop(_a);
    // The slot comes back once the first is gone.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = TcpStream::connect(relay.addr).await.unwrap();
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        if read_answer(&mut again, Duration::from_secs(1))
            .await
            .starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
    }
    relay.stop().await;
}

#[tokio::test]
async fn metrics_are_private_on_a_public_listener_and_served_on_metrics_listen() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut config = illumitunnel_relay::Config::embedded(
        illumitunnel_relay::TlsConfig::Plain,
        dir.path().join("relay"),
    );
    config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], metrics_port)));
    // Every address of this machine, reached here over loopback only.
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(illumitunnel_relay::run(config, listener, shutdown.clone()));
    let public = SocketAddr::from(([127, 0, 0, 1], port));
    let answer = raw(public, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", WAIT).await;
    assert_eq!(status_of(&answer), 404, "{answer}");
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        if let Ok(mut socket) = TcpStream::connect(metrics).await {
            socket
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut text = String::new();
            let _ = socket.read_to_string(&mut text).await;
            break text;
        }
        assert!(Instant::now() < deadline, "metrics listener never up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("illumitunnel_sessions"), "{answer}");
    shutdown.cancel();
    within("relay shutdown", task).await.unwrap().unwrap();
}

#[tokio::test]
async fn m3_an_answer_that_never_finishes_is_dropped_after_the_504() {
    let relay = Relay::start(false, |c| c.response_timeout = Duration::from_secs(1)).await;
    let (mut ws, _) = hello(
        &relay,
        None,
        illumitunnel::protocol::PROTOCOL_VERSION,
        "stuck",
    )
    .await;
    let sender = tokio::spawn({
        let addr = relay.addr;
        async move {
            raw(
                addr,
                b"POST /t/stuck/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
                WAIT,
            )
            .await
        }
    });
    let id = loop {
        if let Some(RelayMessage::Request { id, .. }) = next_message(&mut ws).await {
            break id;
        }
    };
    // "More to come", and never the rest.
    let head = ClientMessage::Response {
        id: id.clone(),
        status: 200,
        headers: vec![],
        body: bytes::Bytes::from(vec![b'a'; 60 * 1024]),
        end: false,
    };
    ws.send(Message::Binary(head.encode())).await.unwrap();
    let answer = within("the 504", sender).await.unwrap();
    assert_eq!(status_of(&answer), 504, "{answer}");
    // A later chunk for it is ignored, and the session keeps working.
    let chunk = ClientMessage::ResponseChunk {
        id,
        data: bytes::Bytes::from_static(b"late"),
        end: true,
    };
    ws.send(Message::Binary(chunk.encode())).await.unwrap();
    let mut events = spawn_client(ws, Behavior::Echo);
    assert_eq!(
        relay.post("/t/stuck/next", "next").await.status,
        StatusCode::CREATED
    );
    assert_eq!(next_request(&mut events).await.body, b"next");
    relay.stop().await;
}

#[tokio::test]
async fn over_http2_a_too_large_body_gets_413_on_its_stream_not_a_reset() {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let relay = Relay::start(true, |c| c.max_body = 1000).await;
    let _events = spawn_client(connect(&relay, "h2big").await, Behavior::Echo);
    let io = relay.connect_io(b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let url = format!("https://127.0.0.1:{}/t/h2big/x", relay.addr.port());
    // No declared length: the limit is found while the body streams.
    let frames = (0..4).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b'x';
            600
        ])))
    });
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let req = http::Request::post(url.as_str()).body(body).unwrap();
    let response = within("h2 413", sender.send_request(req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer = Answer::read(response).await;
    assert!(
        answer.error().contains("limit of 1000 bytes"),
        "{}",
        answer.error()
    );
    // The connection still serves the next stream.
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(relay.connect_io(b"h2").await),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(url.as_str())
        .body(Full::new(bytes::Bytes::from_static(b"small")))
        .unwrap();
    let ok = within("h2 answer", sender.send_request(req)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    relay.stop().await;
}
