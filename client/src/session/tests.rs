//! A session's link against a fake relay over an in-memory websocket, forwarding to a real
//! local server on 127.0.0.1: redeliveries in order and one at a time, `Recorded` only after a
//! commit, and the client's limits on what a relay can make it hold.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use illumitunnel::protocol::{ClientMessage, RelayMessage};
use illumitunnel::store::CaptureStore;
use illumitunnel::DeliveryId;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::connect::{Io, Ws};
use super::delivery::Deliveries;
use super::link::{self, MAX_PARTIALS};
use crate::forward::{Forwarder, Target};
use crate::recorder::{self, Retention, ScreenSink};

/// What the local server saw: bodies in arrival order and the most requests at once.
#[derive(Default)]
struct Seen {
    bodies: Mutex<Vec<String>>,
    now: AtomicUsize,
    most: AtomicUsize,
}

/// A local server answering 200; a request with a body starting `slow` takes 100 ms, so
/// requests forwarded concurrently would overtake it; one starting `gate` waits (up to 10 s)
/// until another request was answered, which only concurrent forwarding allows.
async fn local_server() -> (std::net::SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = shared.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
                            seen.most.fetch_max(now, Ordering::SeqCst);
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = String::from_utf8_lossy(&body).to_string();
                            if body.starts_with("slow") {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            if body.starts_with("gate") {
                                let deadline =
                                    tokio::time::Instant::now() + Duration::from_secs(10);
                                while seen.bodies.lock().unwrap().is_empty()
                                    && tokio::time::Instant::now() < deadline
                                {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                            }
                            seen.bodies.lock().unwrap().push(body);
                            seen.now.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                                b"ok",
                            ))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// The relay's end of the link and the session serving the other end.
struct Link {
    relay: WebSocketStream<DuplexStream>,
    served: tokio::task::JoinHandle<String>,
    store: std::path::PathBuf,
    _dir: tempfile::TempDir,
    screen: mpsc::Receiver<crate::status::ListenEvent>,
}

async fn link(addr: std::net::SocketAddr, max_body: usize) -> Link {
    link_to_store(addr, max_body, None).await
}

/// Like [`link`], with a capture store that cannot grow past `max_pages` pages.
async fn link_to_store(
    addr: std::net::SocketAddr,
    max_body: usize,
    max_pages: Option<u32>,
) -> Link {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("c.db");
    let (screen_tx, screen_rx) = mpsc::channel(1024);
    let opened = match max_pages {
        Some(pages) => CaptureStore::open_capped(&store, pages),
        None => CaptureStore::open(&store),
    };
    let (recorder, _thread) = recorder::spawn(
        opened.unwrap(),
        ScreenSink {
            events: screen_tx.clone(),
            lossless: false,
        },
        Retention::UNLIMITED,
    )
    .unwrap();
    let forwarder = Forwarder::new(Target::parse(&format!("http://{addr}/hooks")).unwrap());
    let (outbound_tx, mut outbound_rx) = mpsc::channel(1024);
    let deliveries = Deliveries::new(
        forwarder,
        recorder,
        "my-app".into(),
        outbound_tx,
        screen_tx.clone(),
    );
    let (client_io, relay_io) = tokio::io::duplex(1024 * 1024);
    let client: Ws =
        WebSocketStream::from_raw_socket(Box::new(client_io) as Box<dyn Io>, Role::Client, None)
            .await;
    let relay = WebSocketStream::from_raw_socket(relay_io, Role::Server, None).await;
    let served = tokio::spawn(async move {
        let connection = deliveries.connection(1);
        link::serve(
            client,
            connection,
            &mut outbound_rx,
            Duration::from_secs(30),
            max_body,
            &CancellationToken::new(),
        )
        .await
    });
    Link {
        relay,
        served,
        store,
        _dir: dir,
        screen: screen_rx,
    }
}

fn id(s: &str) -> DeliveryId {
    DeliveryId::parse(s).unwrap()
}

fn request(id_: &str, redelivery: bool, body: &[u8], end: bool) -> RelayMessage {
    RelayMessage::Request {
        id: id(id_),
        received_at_ms: 1,
        answer: false,
        redelivery,
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: Bytes::copy_from_slice(body),
        end,
    }
}

impl Link {
    async fn send(&mut self, message: RelayMessage) {
        self.relay
            .send(Message::Binary(message.encode()))
            .await
            .unwrap();
    }

    /// The client's next message within 10 s.
    async fn next(&mut self) -> ClientMessage {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.relay.next())
                .await
                .expect("no message from the client within 10 s")
                .expect("link closed")
                .unwrap();
            if let Message::Binary(buf) = msg {
                return ClientMessage::decode(&buf).unwrap();
            }
        }
    }
}

#[tokio::test]
async fn redeliveries_reach_the_local_server_in_order_one_at_a_time() {
    let (addr, seen) = local_server().await;
    let mut link = link(addr, 1024).await;
    let ids: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    // All sent at once, as a relay that did not wait would; the first is slow to answer.
    for (i, id_) in ids.iter().enumerate() {
        let body = if i == 0 {
            "slow0".to_string()
        } else {
            id_.clone()
        };
        link.send(request(id_, true, body.as_bytes(), true)).await;
    }
    let mut recorded = Vec::new();
    for _ in 0..ids.len() {
        match link.next().await {
            ClientMessage::Recorded { id } => {
                // Committed before it is acknowledged.
                let store = CaptureStore::open(&link.store).unwrap();
                assert!(
                    store.contains(&id).unwrap(),
                    "{id} acknowledged before commit"
                );
                recorded.push(id.to_string());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(recorded, ids);
    let bodies = seen.bodies.lock().unwrap().clone();
    let mut expected = ids.clone();
    expected[0] = "slow0".into();
    assert_eq!(bodies, expected);
    assert_eq!(
        seen.most.load(Ordering::SeqCst),
        1,
        "forwarded one at a time"
    );

    // A redelivery already recorded is answered from the store, in its turn, not forwarded.
    link.send(request("r3", true, b"r3", true)).await;
    assert_eq!(link.next().await, ClientMessage::Recorded { id: id("r3") });
    assert_eq!(seen.bodies.lock().unwrap().len(), ids.len());
}

#[tokio::test]
async fn live_deliveries_are_still_forwarded_concurrently() {
    let (addr, seen) = local_server().await;
    let mut link = link(addr, 1024).await;
    // The first is held until the second was answered: only concurrent forwarding passes.
    link.send(request("l0", false, b"gate-live", true)).await;
    link.send(request("l1", false, b"fast", true)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.bodies.lock().unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "not forwarded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen.bodies.lock().unwrap().clone(), ["fast", "gate-live"]);
}

#[tokio::test]
async fn a_relay_cannot_make_the_client_hold_more_than_max_body() {
    let (addr, seen) = local_server().await;
    let mut link = link(addr, 1000).await;
    // Grows past the bound chunk by chunk.
    link.send(request("big1", true, &[b'a'; 600], false)).await;
    link.send(RelayMessage::RequestChunk {
        id: id("big1"),
        data: Bytes::from_static(&[b'a'; 600]),
        end: true,
    })
    .await;
    let ClientMessage::Rejected {
        id: rejected,
        message,
    } = link.next().await
    else {
        panic!("not rejected")
    };
    assert_eq!(rejected, id("big1"));
    assert!(message.contains("--max-body of 1000 bytes"), "{message}");

    // Declared too large up front: refused before anything is held.
    let mut declared = request("big2", false, b"x", false);
    if let RelayMessage::Request { headers, .. } = &mut declared {
        headers.push(("content-length".into(), b"99999999999".to_vec()));
    }
    link.send(declared).await;
    assert!(
        matches!(link.next().await, ClientMessage::Rejected { id, .. } if id.as_str() == "big2")
    );

    // Too many partial bodies at once: the extra one is refused.
    for i in 0..MAX_PARTIALS {
        link.send(request(&format!("p{i}"), false, b"x", false))
            .await;
    }
    link.send(request("extra", false, b"x", false)).await;
    let ClientMessage::Rejected {
        id: rejected,
        message,
    } = link.next().await
    else {
        panic!("not rejected")
    };
    assert_eq!(rejected, id("extra"));
    assert!(message.contains("at once"), "{message}");

    // A body within the bound still goes through in chunks.
    link.send(RelayMessage::Cancel { id: id("p0") }).await;
    link.send(request("ok1", true, b"fine-", false)).await;
    link.send(RelayMessage::RequestChunk {
        id: id("ok1"),
        data: Bytes::from_static(b"body"),
        end: true,
    })
    .await;
    assert_eq!(link.next().await, ClientMessage::Recorded { id: id("ok1") });
    assert_eq!(seen.bodies.lock().unwrap().clone(), ["fine-body"]);

    // Gross misbehaviour ends the session with a sentence.
    link.send(request("p1", false, b"again", false)).await;
    let cause = tokio::time::timeout(Duration::from_secs(10), &mut link.served)
        .await
        .expect("session did not end")
        .unwrap();
    assert!(cause.contains("sent delivery p1 twice"), "{cause}");
}

#[tokio::test]
async fn dead_letters_reach_the_screen() {
    let (addr, _seen) = local_server().await;
    let mut link = link(addr, 1024).await;
    link.send(RelayMessage::DeadLettered {
        id: id("dl1"),
        reason: "rejected 3 times in a row".into(),
    })
    .await;
    let event = tokio::time::timeout(Duration::from_secs(10), link.screen.recv())
        .await
        .expect("nothing on the screen within 10 s");
    assert!(
        matches!(&event, Some(crate::status::ListenEvent::DeadLettered { id, reason })
            if id.as_str() == "dl1" && reason == "rejected 3 times in a row"),
        "{event:?}"
    );
}

#[tokio::test]
async fn every_queued_delivery_is_counted_on_arrival_even_one_recorded_before() {
    use crate::status::ListenEvent;
    let (addr, _seen) = local_server().await;
    let mut link = link(addr, 1024).await;
    link.send(request("q1", true, b"q1", true)).await;
    assert_eq!(link.next().await, ClientMessage::Recorded { id: id("q1") });
    // Sent again after a break: it is recorded already, so only acknowledged, never shown.
    link.send(request("q1", true, b"q1", true)).await;
    assert_eq!(link.next().await, ClientMessage::Recorded { id: id("q1") });
    let mut arrived = 0;
    while let Ok(event) = link.screen.try_recv() {
        arrived += usize::from(matches!(event, ListenEvent::QueuedArrived));
    }
    assert_eq!(arrived, 2);
}

#[tokio::test]
async fn hello_carries_the_kept_claim_key_and_welcome_gives_the_new_one() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let relay = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let Some(Ok(Message::Binary(buf))) = ws.next().await else {
            panic!("no hello")
        };
        let hello = ClientMessage::decode(&buf).unwrap();
        let welcome = RelayMessage::Welcome {
            tunnel: "my-app".into(),
            public_url: "http://127.0.0.1/t/my-app".into(),
            queued: 0,
            expired: 0,
            dead_letters: 3,
            claim_key: "key-2".into(),
        };
        ws.send(Message::Binary(welcome.encode())).await.unwrap();
        hello
    });
    let config = super::SessionConfig {
        relay: super::RelayUrl::loopback(false, port),
        token: None,
        tunnel: illumitunnel::TunnelName::parse("my-app").unwrap(),
        tls: super::tls::client_config(super::tls::Trust::Insecure).unwrap(),
        keepalive: Duration::from_secs(30),
        max_body: 1024,
        claim_key: String::new(),
        observer: true,
    };
    let Ok((_ws, welcome)) = super::connect::connect(&config, "key-1").await else {
        panic!("not welcomed")
    };
    assert_eq!(
        (welcome.dead_letters, welcome.claim_key.as_str()),
        (3, "key-2")
    );
    let hello = relay.await.unwrap();
    assert!(
        matches!(&hello, ClientMessage::Hello { claim_key, observer: true, .. } if claim_key == "key-1"),
        "{hello:?}"
    );
}

#[tokio::test]
async fn a_full_store_gets_not_recorded_never_recorded() {
    let (addr, seen) = local_server().await;
    let mut link = link_to_store(addr, 4 * 1024 * 1024, Some(40)).await;
    let big = vec![b'b'; 512 * 1024];
    let chunked = |id_: &str, redelivery: bool| {
        let mut messages = vec![request(id_, redelivery, &big[..1024], false)];
        for (i, slice) in big[1024..].chunks(60 * 1024).enumerate() {
            let last = 1024 + (i + 1) * 60 * 1024 >= big.len();
            messages.push(RelayMessage::RequestChunk {
                id: id(id_),
                data: Bytes::copy_from_slice(slice),
                end: last,
            });
        }
        messages
    };
    // A live delivery the store cannot take is kept in memory (the screen hears the store is
    // failing once it is); when the relay sends it again, it is answered from memory but not
    // acknowledged as recorded.
    for m in chunked("live1", false) {
        link.send(m).await;
    }
    let failing = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match link.screen.recv().await {
                Some(crate::status::ListenEvent::Store(health)) => return health,
                Some(_) => continue,
                None => panic!("screen closed"),
            }
        }
    })
    .await
    .expect("the store never said it was failing");
    assert!(
        matches!(&failing, crate::status::StoreHealth::Failing(s) if s.contains("disk is full")),
        "{failing:?}"
    );
    link.send(request("live1", true, b"again", true)).await;
    let ClientMessage::NotRecorded { id: not, message } = link.next().await else {
        panic!("acknowledged a delivery held only in memory")
    };
    assert_eq!(not, id("live1"));
    assert!(message.contains("not committed"), "{message}");
    assert_eq!(seen.bodies.lock().unwrap().len(), 1, "not forwarded again");

    // A redelivery the store cannot take: forwarded, then NotRecorded with the store's sentence.
    for m in chunked("full1", true) {
        link.send(m).await;
    }
    let ClientMessage::NotRecorded { id: not, message } = link.next().await else {
        panic!("acknowledged a delivery the store did not take")
    };
    assert_eq!(not, id("full1"));
    assert!(message.contains("database or disk is full"), "{message}");
    assert_eq!(seen.bodies.lock().unwrap().len(), 2);
}

/// Deliveries forwarding to `addr`, recording in a fresh store; what they send the relay.
fn deliveries_to(
    addr: std::net::SocketAddr,
) -> (
    Arc<Deliveries>,
    mpsc::Receiver<super::delivery::Outbound>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let (screen_tx, _screen_rx) = mpsc::channel(1024);
    let (recorder, _thread) = recorder::spawn(
        CaptureStore::open(&dir.path().join("c.db")).unwrap(),
        ScreenSink {
            events: screen_tx.clone(),
            lossless: false,
        },
        Retention::UNLIMITED,
    )
    .unwrap();
    let forwarder = Forwarder::new(Target::parse(&format!("http://{addr}/hooks")).unwrap());
    let (outbound_tx, outbound_rx) = mpsc::channel(1024);
    let deliveries = Deliveries::new(forwarder, recorder, "my-app".into(), outbound_tx, screen_tx);
    (deliveries, outbound_rx, dir)
}

fn redelivery(id_: &str, body: &str) -> super::delivery::Arrived {
    super::delivery::Arrived {
        id: id(id_),
        received_at_ms: 1,
        answer: false,
        redelivery: true,
        request: illumitunnel::delivery::RequestRecord {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![],
            body: Bytes::copy_from_slice(body.as_bytes()),
        },
    }
}

#[tokio::test]
async fn a_redelivery_sent_again_on_a_new_connection_mid_forward_reaches_the_server_once() {
    let (addr, seen) = local_server().await;
    let (deliveries, mut outbound, _dir) = deliveries_to(addr);
    let first = deliveries.connection(1);
    first.arrive(redelivery("x1", "slow-x1")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.now.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "x1 never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The link breaks while x1 is at the local server; the relay sends it again, then y1.
    first.ended().cancel();
    let second = deliveries.connection(2);
    second.arrive(redelivery("x1", "slow-x1")).await;
    second.arrive(redelivery("y1", "y1")).await;
    let mut acks = Vec::new();
    while acks.last() != Some(&ClientMessage::Recorded { id: id("y1") }) {
        let out = tokio::time::timeout(Duration::from_secs(10), outbound.recv())
            .await
            .expect("no acknowledgement within 10 s")
            .unwrap();
        acks.push(out.message);
    }
    let recorded = |s: &str| ClientMessage::Recorded { id: id(s) };
    assert_eq!(acks, [recorded("x1"), recorded("x1"), recorded("y1")]);
    assert_eq!(seen.bodies.lock().unwrap().clone(), ["slow-x1", "y1"]);
    deliveries.drain().await;
}

#[tokio::test]
async fn redeliveries_are_forwarded_without_waiting_for_each_commit_and_acknowledged_in_order() {
    let (addr, seen) = local_server().await;
    let (deliveries, mut outbound, dir) = deliveries_to(addr);
    // Another writer holds the capture store: no commit can happen until it lets go.
    let blocker = rusqlite::Connection::open(dir.path().join("c.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let connection = deliveries.connection(1);
    let ids: Vec<String> = (0..10).map(|i| format!("p{i:03}")).collect();
    for id_ in &ids {
        connection.arrive(redelivery(id_, id_)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while seen.bodies.lock().unwrap().len() < ids.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the next redelivery waited for the previous commit: {:?}",
            seen.bodies.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        outbound.try_recv().is_err(),
        "acknowledged before its commit"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    let mut acks = Vec::new();
    while acks.len() < ids.len() {
        let out = tokio::time::timeout(Duration::from_secs(10), outbound.recv())
            .await
            .expect("no acknowledgement within 10 s")
            .unwrap();
        let ClientMessage::Recorded { id } = out.message else {
            panic!("unexpected {:?}", out.message)
        };
        acks.push(id.to_string());
    }
    assert_eq!(acks, ids, "acknowledged in order");
    assert_eq!(
        seen.bodies.lock().unwrap().clone(),
        ids,
        "forwarded in order"
    );
    assert_eq!(seen.most.load(Ordering::SeqCst), 1, "one at a time");
    deliveries.drain().await;
}

#[tokio::test]
async fn a_live_delivery_behind_waiting_redeliveries_is_forwarded_after_them() {
    let (addr, seen) = local_server().await;
    let (deliveries, _outbound, _dir) = deliveries_to(addr);
    let connection = deliveries.connection(1);
    connection.arrive(redelivery("q1", "slow-q1")).await;
    let mut live = redelivery("l1", "l1");
    live.redelivery = false;
    connection.arrive(live).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.bodies.lock().unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "not forwarded");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(seen.bodies.lock().unwrap().clone(), ["slow-q1", "l1"]);
    assert_eq!(seen.most.load(Ordering::SeqCst), 1);
    deliveries.drain().await;
}
