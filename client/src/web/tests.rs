//! The web inspector's request checks: `Host` and the token.

use super::*;

fn request(host: Option<&str>, token: Option<&str>) -> Request<()> {
    let mut builder = Request::builder().uri("/api/deliveries");
    if let Some(host) = host {
        builder = builder.header(http::header::HOST, host);
    }
    if let Some(token) = token {
        builder = builder.header(TOKEN_HEADER, token);
    }
    builder.body(()).unwrap()
}

#[test]
fn only_the_bound_address_or_localhost_with_its_port_is_a_host() {
    let v4: SocketAddr = "127.0.0.1:4041".parse().unwrap();
    for host in ["127.0.0.1:4041", "localhost:4041", "LOCALHOST:4041"] {
        assert!(host_allowed(v4, &request(Some(host), None)), "{host}");
    }
    for host in [
        "evil.example",
        "evil.example:4041",
        "localhost:4040",
        "127.0.0.1",
        "127.0.0.2:4041",
        "[::1]:4041",
    ] {
        assert!(!host_allowed(v4, &request(Some(host), None)), "{host}");
    }
    assert!(!host_allowed(v4, &request(None, None)));
    let v6: SocketAddr = "[::1]:4041".parse().unwrap();
    assert!(host_allowed(v6, &request(Some("[::1]:4041"), None)));
    assert!(host_allowed(v6, &request(Some("localhost:4041"), None)));
    assert!(!host_allowed(v6, &request(Some("127.0.0.1:4041"), None)));
}

#[test]
fn the_token_must_match_exactly() {
    let token = new_token();
    assert_eq!(token.len(), 43);
    assert!(token_matches(&token, &request(None, Some(&token))));
    assert!(!token_matches(&token, &request(None, None)));
    assert!(!token_matches(&token, &request(None, Some(&token[1..]))));
    assert!(!token_matches(&token, &request(None, Some(&new_token()))));
}

/// A committed delivery reaches an open `GET /api/stream` within 100 ms of its commit: the
/// stream waits on the recorder's commit signal, it does not poll. In-process, with a real
/// capture store, the real writer thread and the real server on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_reaches_the_stream_within_100_ms() {
    use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
    use illumitunnel::store::CaptureStore;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut store = CaptureStore::open(&path).unwrap();
    // Stored by an earlier run: never streamed.
    let mut earlier: Vec<illumitunnel::Delivery> = (0..3)
        .map(|n| {
            illumitunnel::Delivery::new(
                illumitunnel::DeliveryId::parse(&format!("earlier{n}")).unwrap(),
                1,
                Source::Tunnel,
                RequestRecord::default(),
            )
        })
        .collect();
    store.insert_batch(&mut earlier).unwrap();
    let (screen, _screen_rx) = mpsc::channel(1024);
    let sink = crate::recorder::ScreenSink {
        events: screen,
        lossless: false,
    };
    let retention = crate::recorder::Retention {
        max_bytes: u64::MAX,
        max_age: std::time::Duration::MAX,
    };
    let (recorder, thread) = crate::recorder::spawn(store, sink, retention).unwrap();
    let (replays, _replays_rx) = mpsc::channel(1);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let started = start(
        listener,
        Sources {
            store: path,
            committed: recorder.committed(),
            replays,
        },
        shutdown.clone(),
    );
    let addr = started.addr.to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/api/stream")
        .header("host", &addr)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    assert!(next_text(&mut body).await.starts_with("retry:"));
    let mut waits = Vec::new();
    for n in 0..20 {
        let capture = crate::recorder::Capture {
            id: illumitunnel::DeliveryId::parse(&format!("stream{n:02}")).unwrap(),
            received_at_ms: illumitunnel::now_ms(),
            tunnel: "t".into(),
            queued: false,
            target: "http://127.0.0.1:3000/".into(),
            request: RequestRecord {
                method: "POST".into(),
                path: "/".into(),
                ..Default::default()
            },
            result: Ok(ResponseRecord {
                status: 200,
                ..Default::default()
            }),
            duration_us: 5,
            source: Source::Tunnel,
            skipped: false,
        };
        recorder.record_committed(capture).await.unwrap();
        let committed = std::time::Instant::now();
        let event = next_text(&mut body).await;
        waits.push(committed.elapsed());
        assert!(
            event.contains(&format!("\"id\":\"stream{n:02}\"")),
            "in order: {event}"
        );
    }
    waits.sort();
    let p50 = waits[waits.len() / 2];
    let max = waits[waits.len() - 1];
    eprintln!("commit to stream over 20 deliveries: p50 {p50:?}, max {max:?}");
    assert!(
        max < std::time::Duration::from_millis(100),
        "commit to stream: p50 {p50:?}, max {max:?}"
    );
    shutdown.cancel();
    let _ = started.task.await;
    drop(recorder);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}

/// The next frame of a stream, as text, within 10 s.
async fn next_text(body: &mut hyper::body::Incoming) -> String {
    use http_body_util::BodyExt as _;
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("a frame within 10 s")
        .expect("open")
        .expect("frame");
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}
