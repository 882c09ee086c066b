//! The offline queue in process: 202 and redelivery in order, acknowledgement by `Recorded`,
//! survival across a restart (drop the relay, start another on the same data dir), ownership
//! after a restart, limits, expiry, failover of a delivery in flight, and shutdown.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::SinkExt;
use http::StatusCode;
use illumitunnel::protocol::{ClientMessage, Refusal, RelayMessage, PROTOCOL_VERSION};
use illumitunnel::DeliveryId;
use illumitunnel_relay::auth::{Claim, Owner};
use illumitunnel_relay::metrics::QueueGauges;
use illumitunnel_relay::queue::{Backlog, Clock, QueueLimits, QueueStore, QueuedDelivery};
use tokio_tungstenite::tungstenite::Message;

fn queued_id(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["queued"], true, "{json}");
    json["id"].as_str().unwrap().to_string()
}

/// Opens a session and returns it with the `Welcome` counts.
async fn welcome(relay: &Relay, token: Option<&str>, tunnel: &str) -> (Ws, u32, u32) {
    let (ws, reply) = hello(relay, token, PROTOCOL_VERSION, tunnel).await;
    match reply {
        RelayMessage::Welcome {
            queued, expired, ..
        } => (ws, queued, expired),
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Claims `tunnel` and leaves, so the relay knows it with no client.
async fn claim_and_leave(relay: &Relay, tunnel: &str) {
    let mut ws = connect(relay, tunnel).await;
    ws.close(None).await.unwrap();
    while next_message(&mut ws).await.is_some() {}
    // The relay notices the close asynchronously; bounded poll until deliveries queue.
    for _ in 0..200 {
        if relay
            .post(&format!("/t/{tunnel}/probe"), "probe")
            .await
            .status
            == StatusCode::ACCEPTED
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("tunnel {tunnel} never went offline");
}

#[tokio::test]
async fn offline_deliveries_go_one_at_a_time_in_order_and_leave_once_recorded() {
    // `--catch-up-window 1`: each queued delivery waits for the client's word on the previous.
    let relay = Relay::start(false, |c| {
        c.keepalive = Duration::from_millis(50);
        c.catch_up_window = 1;
    })
    .await;
    claim_and_leave(&relay, "my-app").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(queued_id(
            &relay
                .post(&format!("/t/my-app/hook?n={i}"), format!("body {i}"))
                .await,
        ));
    }

    // A client that never says `Recorded` gets the oldest delivery and nothing more: the next
    // one waits for its word, and a new delivery queues behind the backlog.
    let (ws, queued, expired) = welcome(&relay, None, "my-app").await;
    assert_eq!((queued, expired), (6, 0), "the probe and five deliveries");
    let mut events = spawn_client(ws, Behavior::Echo);
    let first = next_request(&mut events).await;
    assert_eq!(first.body, b"probe");
    assert!(
        first.queued && !first.answer,
        "a redelivery nobody waits on"
    );
    ids.push(queued_id(&relay.post("/t/my-app/behind", "behind").await));
    assert!(
        events.try_recv().is_err(),
        "nothing else before the first is recorded"
    );
    drop(events);

    // This one records them: all seven arrive in arrival order, then the tunnel is live.
    // (The first client closes its socket at its next ping; until then a new session is a
    // second listener without the backlog.)
    let mut attempt = welcome(&relay, None, "my-app").await;
    for _ in 0..200 {
        if attempt.1 != 0 {
            break;
        }
        // Leave cleanly, so this probe never holds the backlog when the next one asks.
        attempt.0.close(None).await.unwrap();
        while next_message(&mut attempt.0).await.is_some() {}
        tokio::time::sleep(Duration::from_millis(10)).await;
        attempt = welcome(&relay, None, "my-app").await;
    }
    let (ws, queued, _) = attempt;
    assert_eq!(queued, 7, "unacknowledged deliveries stay queued");
    let mut events = spawn_client(ws, Behavior::Record);
    let mut got = Vec::new();
    for _ in 0..7 {
        got.push(next_request(&mut events).await);
    }
    assert!(got.iter().all(|r| r.queued && !r.answer));
    let bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    let mut want = vec!["probe".to_string()];
    want.extend((0..5).map(|i| format!("body {i}")));
    want.push("behind".into());
    assert_eq!(bodies, want);
    let got_ids: Vec<&str> = got[1..].iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got_ids, ids);
    assert_eq!(got[3].query, "n=2");
    let live = poll_until_live(&relay, "my-app", "live").await;
    assert_eq!(live.status, StatusCode::CREATED);
    // Probes that were queued before the tunnel went live arrive first, as redeliveries.
    let r = loop {
        let r = next_request(&mut events).await;
        assert_eq!(r.body, b"live");
        if !r.queued {
            break r;
        }
    };
    assert!(r.answer);
    drop(events);
    let mut left = u32::MAX;
    for _ in 0..200 {
        let (_ws, queued, _) = welcome(&relay, None, "my-app").await;
        left = queued;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(left, 0);
    relay.stop().await;
}

/// Posts to `/t/{tunnel}/{path}` until the tunnel answers live (not 202), under a deadline:
/// the last `Recorded` of a backlog and the tunnel going live are not one step.
async fn poll_until_live(relay: &Relay, tunnel: &str, path: &str) -> Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = relay
            .post(&format!("/t/{tunnel}/{path}"), path.to_owned())
            .await;
        if answer.status != StatusCode::ACCEPTED || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client that breaks its connection (no close frame) whenever it receives a delivery whose
/// body is `poison`, records everything else, and leaves cleanly after `last`. Returns the
/// request bodies it received and the dead letters its `Welcome` counted.
async fn poison_client(relay: &Relay, tunnel: &str, last: &[u8]) -> (Vec<Vec<u8>>, u32) {
    let (mut ws, reply) = hello(relay, None, PROTOCOL_VERSION, tunnel).await;
    let RelayMessage::Welcome { dead_letters, .. } = reply else {
        panic!("expected welcome, got {reply:?}");
    };
    let mut bodies = Vec::new();
    while let Some(message) = next_message(&mut ws).await {
        if let RelayMessage::Request { id, body, .. } = message {
            if body.as_ref() == b"poison" {
                return (bodies, dead_letters); // dropped without a close frame
            }
            bodies.push(body.to_vec());
            let recorded = ClientMessage::Recorded { id };
            ws.send(Message::Binary(recorded.encode())).await.unwrap();
            if body.as_ref() == last {
                ws.close(None).await.unwrap();
            }
        }
    }
    (bodies, dead_letters)
}

#[tokio::test]
async fn a_delivery_that_breaks_three_sessions_is_set_aside_and_the_rest_flows() {
    let relay = Relay::start(false, |_| {}).await;
    claim_and_leave(&relay, "jammed").await;
    queued_id(&relay.post("/t/jammed/x", "poison").await);
    queued_id(&relay.post("/t/jammed/y", "after").await);
    for session in 0..3 {
        let (bodies, dead_letters) = poison_client(&relay, "jammed", b"after").await;
        let want: Vec<Vec<u8>> = if session == 0 {
            vec![b"probe".to_vec()]
        } else {
            vec![]
        };
        assert_eq!(bodies, want, "session {session} stops at the poison");
        assert_eq!(dead_letters, 0);
        wait_for_offline(&relay, "jammed").await;
    }
    // The third broken session sets it aside; the relay counts it before the next session.
    let deadline = std::time::Instant::now() + WAIT;
    while !String::from_utf8_lossy(&relay.get("/metrics").await.body)
        .contains("illumitunnel_deliveries_total{outcome=\"dead_lettered\"} 1")
    {
        assert!(std::time::Instant::now() < deadline, "never set aside");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (bodies, dead_letters) = poison_client(&relay, "jammed", b"after").await;
    assert_eq!(
        bodies,
        vec![b"after".to_vec()],
        "the delivery behind it flows"
    );
    assert_eq!(dead_letters, 1, "the next session hears of the dead letter");
    let metrics = relay.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("illumitunnel_deliveries_total{outcome=\"dead_lettered\"} 1"),
        "{text}"
    );
    relay.stop().await;
}

/// Waits until a tunnel has no session (a probe delivery is queued), under a deadline.
async fn wait_for_offline(relay: &Relay, tunnel: &str) {
    let metric = |text: &str| {
        text.lines()
            .any(|l| l.starts_with("illumitunnel_tunnels_connected ") && l.ends_with(" 0"))
    };
    for _ in 0..500 {
        let metrics = relay.get("/metrics").await;
        if metric(&String::from_utf8_lossy(&metrics.body)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("tunnel {tunnel} never went offline");
}

#[tokio::test]
async fn a_client_gets_a_window_of_queued_deliveries_before_it_records_any() {
    let relay = Relay::start(false, |c| c.catch_up_window = 3).await;
    claim_and_leave(&relay, "windowed").await;
    for i in 0..5 {
        queued_id(&relay.post("/t/windowed/hook", format!("body {i}")).await);
    }
    let (ws, queued, _) = welcome(&relay, None, "windowed").await;
    assert_eq!(queued, 6, "the probe and five deliveries");
    // A client that never says `Recorded` gets the oldest three, in order, and no more.
    let mut events = spawn_client(ws, Behavior::Echo);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(String::from_utf8(next_request(&mut events).await.body).unwrap());
    }
    assert_eq!(got, ["probe", "body 0", "body 1"]);
    queued_id(&relay.post("/t/windowed/behind", "behind").await);
    assert!(events.try_recv().is_err(), "nothing beyond the window");
    drop(events);
    relay.stop().await;
}

#[tokio::test]
async fn rejected_deliveries_become_dead_letters_and_not_recorded_ones_are_sent_again() {
    // One at a time, so each word is on the delivery it names (the window's breaks are the
    // drain's unit tests).
    let relay = Relay::start(false, |c| c.catch_up_window = 1).await;
    claim_and_leave(&relay, "picky").await;
    let refused = queued_id(&relay.post("/t/picky/x", "refused").await);
    queued_id(&relay.post("/t/picky/y", "unrecorded").await);
    let (mut ws, _) = hello(&relay, None, PROTOCOL_VERSION, "picky").await;
    let mut seen = Vec::new();
    let mut store_failures = 0;
    let mut dead = Vec::new();
    while let Some(message) = next_message(&mut ws).await {
        let reply = match message {
            RelayMessage::Request { id, body, .. } => {
                seen.push(String::from_utf8(body.to_vec()).unwrap());
                match body.as_ref() {
                    b"refused" => ClientMessage::Rejected {
                        id,
                        message: "too large for this client".into(),
                    },
                    // The store fails twice, then works: sent again, never set aside.
                    b"unrecorded" if store_failures < 2 => {
                        store_failures += 1;
                        ClientMessage::NotRecorded {
                            id,
                            message: "database or disk is full".into(),
                        }
                    }
                    _ => ClientMessage::Recorded { id },
                }
            }
            RelayMessage::DeadLettered { id, reason } => {
                dead.push((id.to_string(), reason));
                continue;
            }
            _ => continue,
        };
        let recorded_at_last = matches!(&reply, ClientMessage::Recorded { .. })
            && seen.last().map(String::as_str) == Some("unrecorded");
        ws.send(Message::Binary(reply.encode())).await.unwrap();
        if recorded_at_last {
            break;
        }
    }
    let want: Vec<&str> = vec![
        "probe",
        "refused",
        "refused",
        "refused",
        "unrecorded",
        "unrecorded",
        "unrecorded",
    ];
    assert_eq!(seen, want);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, refused);
    assert!(
        dead[0].1.contains("too large for this client") && dead[0].1.contains("3 times in a row"),
        "{dead:?}"
    );
    ws.close(None).await.unwrap();
    let mut backlog = None;
    for _ in 0..200 {
        let (mut ws, reply) = hello(&relay, None, PROTOCOL_VERSION, "picky").await;
        ws.close(None).await.unwrap();
        if let RelayMessage::Welcome {
            queued,
            dead_letters,
            ..
        } = reply
        {
            backlog = Some((queued, dead_letters));
            if queued == 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(backlog, Some((0, 1)), "recorded at last, one dead letter");
    relay.stop().await;
}

#[tokio::test]
async fn the_queue_and_ownership_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("relay");
    let relay = Relay::start_in(false, data_dir.clone(), |_| {}).await;
    claim_and_leave_with(&relay, "owned", "alice").await;
    let id = queued_id(&relay.post("/t/owned/x", "kept").await);
    relay.stop().await;

    let relay = Relay::start_in(false, data_dir.clone(), |_| {}).await;
    // Known after the restart though no client connected since: queued, not 404.
    let second = queued_id(&relay.post("/t/owned/y", "also kept").await);
    assert_ne!(id, second);
    let (_ws, reply) = hello(&relay, Some("mallory"), PROTOCOL_VERSION, "owned").await;
    assert!(
        matches!(
            reply,
            RelayMessage::Refused {
                reason: Refusal::TunnelTaken,
                ..
            }
        ),
        "{reply:?}"
    );
    let (ws, queued, _) = welcome(&relay, Some("alice"), "owned").await;
    assert_eq!(queued, 3, "probe, kept, also kept");
    let mut events = spawn_client(ws, Behavior::Record);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_request(&mut events).await.body);
    }
    assert_eq!(got, [&b"probe"[..], b"kept", b"also kept"]);
    relay.stop().await;
}

async fn claim_and_leave_with(relay: &Relay, tunnel: &str, token: &str) {
    let (mut ws, _, _) = welcome(relay, Some(token), tunnel).await;
    ws.close(None).await.unwrap();
    while next_message(&mut ws).await.is_some() {}
    for _ in 0..200 {
        if relay
            .post(&format!("/t/{tunnel}/probe"), "probe")
            .await
            .status
            == StatusCode::ACCEPTED
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("tunnel {tunnel} never went offline");
}

#[tokio::test]
async fn a_full_queue_answers_503_naming_the_limit_and_counts_it() {
    let relay = Relay::start(false, |c| {
        c.queue.max_count = 3;
        c.metrics_tunnel_labels = true;
    })
    .await;
    claim_and_leave(&relay, "small").await;
    queued_id(&relay.post("/t/small/a", "a").await);
    queued_id(&relay.post("/t/small/b", "b").await);
    let full = relay.post("/t/small/c", "c").await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        full.error(),
        "the offline queue for tunnel small is full (3 deliveries); start `illumitunnel listen --tunnel small` to drain it, or raise the relay's --queue-max-count"
    );
    let metrics = relay
        .send(
            http::Request::get("/metrics")
                .header(http::header::HOST, "x")
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    for needle in [
        "illumitunnel_deliveries_total{outcome=\"rejected\"} 1",
        "illumitunnel_deliveries_total{outcome=\"queued\"} 3",
        "illumitunnel_queue_depth{tunnel=\"small\"} 3",
        "illumitunnel_queued_deliveries 3",
        "illumitunnel_queue_bytes{tunnel=\"small\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    relay.stop().await;

    let relay = Relay::start(false, |c| c.queue.max_bytes = 2000).await;
    claim_and_leave(&relay, "bytes").await;
    let full = relay.post("/t/bytes/big", vec![b'x'; 3000]).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.error().contains("(2000 bytes)"), "{}", full.error());
    assert!(
        full.error().contains("--queue-max-bytes"),
        "{}",
        full.error()
    );
    relay.stop().await;
}

#[tokio::test]
async fn queues_together_cannot_pass_the_total_limit_and_names_stay_out_of_metrics() {
    let relay = Relay::start(false, |c| c.queue.max_total_bytes = 3000).await;
    claim_and_leave(&relay, "one").await;
    claim_and_leave(&relay, "two").await;
    queued_id(&relay.post("/t/one/a", vec![b'a'; 1200]).await);
    let full = relay.post("/t/two/b", vec![b'b'; 2000]).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        full.error().contains("--queue-max-total-bytes"),
        "{}",
        full.error()
    );
    queued_id(&relay.post("/t/two/c", vec![b'c'; 500]).await);
    let text = String::from_utf8(relay.get("/metrics").await.body.to_vec()).unwrap();
    assert!(text.contains("illumitunnel_queued_deliveries 4"), "{text}");
    assert!(!text.contains("tunnel=\"one\""), "{text}");
    relay.stop().await;
}

#[tokio::test]
async fn a_sibling_listener_takes_over_the_backlog_in_order_when_the_first_dies_mid_way() {
    let relay = Relay::start(false, |c| c.keepalive = Duration::from_millis(100)).await;
    claim_and_leave(&relay, "pair").await;
    for i in 0..10 {
        queued_id(&relay.post(&format!("/t/pair/{i}"), format!("{i}")).await);
    }
    // The first listener records four, then dies holding the fifth (no close frame).
    let (mut first, _) = hello(&relay, None, PROTOCOL_VERSION, "pair").await;
    let (second_ws, _) = hello(&relay, None, PROTOCOL_VERSION, "pair").await;
    let mut seen = Vec::new();
    while seen.len() < 6 {
        if let Some(RelayMessage::Request { id, body, .. }) = next_message(&mut first).await {
            seen.push(String::from_utf8(body.to_vec()).unwrap());
            if seen.len() < 6 {
                let recorded = ClientMessage::Recorded { id };
                first
                    .send(Message::Binary(recorded.encode()))
                    .await
                    .unwrap();
            }
        }
    }
    drop(first);
    let mut second = spawn_client(second_ws, Behavior::Record);
    let mut rest = Vec::new();
    while rest.len() < 5 {
        rest.push(String::from_utf8(next_request(&mut second).await.body).unwrap());
    }
    assert_eq!(seen, ["probe", "0", "1", "2", "3", "4"]);
    assert_eq!(
        rest,
        ["4", "5", "6", "7", "8"],
        "from the one in flight, in order"
    );
    assert_eq!(next_request(&mut second).await.body, b"9");
    relay.stop().await;
}

fn is_taken(reply: &RelayMessage) -> bool {
    matches!(
        reply,
        RelayMessage::Refused {
            reason: Refusal::TunnelTaken,
            ..
        }
    )
}

#[tokio::test]
async fn a_name_unused_for_the_tunnel_ttl_forgets_its_queue_but_never_its_owner() {
    let now = Arc::new(AtomicI64::new(illumitunnel::now_ms()));
    let relay = Relay::start(false, |c| {
        c.tokens = vec![
            illumitunnel::Token::new("alpha"),
            illumitunnel::Token::new("beta"),
        ];
        c.clock = Clock::manual(now.clone());
        c.limits.tunnel_ttl = Duration::from_secs(3600);
        c.queue.max_age = Duration::from_secs(2);
    })
    .await;
    claim_and_leave_with(&relay, "stale", "alpha").await;
    claim_and_leave_with(&relay, "fresh", "alpha").await;
    // "fresh" keeps a listener; "stale" has none for over an hour.
    let _fresh = open_session(&relay, "fresh", "alpha").await;
    now.fetch_add(2 * 3600 * 1000, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let answer = relay.post("/t/stale/x", "x").await;
        if answer.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another token never gets the name IllumiChat may still post to; its owner takes it back,
    // with an empty queue.
    let (_ws, reply) = hello(&relay, Some("beta"), PROTOCOL_VERSION, "stale").await;
    assert!(is_taken(&reply), "{reply:?}");
    let (ws, queued, _) = welcome(&relay, Some("alpha"), "stale").await;
    assert_eq!(queued, 0);
    drop(ws);
    let (_ws, reply) = hello(&relay, Some("beta"), PROTOCOL_VERSION, "fresh").await;
    assert!(is_taken(&reply), "{reply:?}");
    relay.stop().await;
}

#[tokio::test]
async fn a_dormant_name_keeps_its_owner_across_a_restart_until_the_operator_releases_it() {
    let now = Arc::new(AtomicI64::new(illumitunnel::now_ms()));
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("relay");
    let tune = |c: &mut illumitunnel_relay::Config| {
        c.tokens = vec![
            illumitunnel::Token::new("alpha"),
            illumitunnel::Token::new("beta"),
        ];
        c.clock = Clock::manual(now.clone());
        c.limits.tunnel_ttl = Duration::from_secs(3600);
        c.queue.max_age = Duration::from_secs(2);
    };
    let relay = Relay::start_in(false, data_dir.clone(), tune).await;
    claim_and_leave_with(&relay, "kept", "alpha").await;
    now.fetch_add(2 * 3600 * 1000, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + WAIT;
    while relay.post("/t/kept/x", "x").await.status != StatusCode::NOT_FOUND {
        assert!(std::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;

    // After a restart the dormant name is still unknown to senders and still alpha's.
    let relay = Relay::start_in(false, data_dir.clone(), tune).await;
    assert_eq!(
        relay.post("/t/kept/x", "x").await.status,
        StatusCode::NOT_FOUND
    );
    let (_ws, reply) = hello(&relay, Some("beta"), PROTOCOL_VERSION, "kept").await;
    assert!(is_taken(&reply), "{reply:?}");

    // `tunnel release` (another process on the same relay.db) frees it; the running relay
    // forgets the idle name within 5 s and beta may claim it.
    claim_and_leave_with(&relay, "kept", "alpha").await;
    let mut store =
        QueueStore::open(&data_dir, QueueLimits::default(), QueueGauges::default()).unwrap();
    store.begin().unwrap();
    let released = store.release("kept", illumitunnel::now_ms()).unwrap();
    store.commit().unwrap();
    assert_eq!(released, Some(1), "the probe was queued");
    assert_eq!(store.release("nope", 0).unwrap(), None);
    drop(store);
    let started = std::time::Instant::now();
    while relay.post("/t/kept/x", "x").await.status != StatusCode::NOT_FOUND {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the running relay did not apply the release"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ws, queued, _) = welcome(&relay, Some("beta"), "kept").await;
    assert_eq!(queued, 0, "nothing of alpha's reaches beta");
    drop(ws);
    relay.stop().await;
}

#[tokio::test]
async fn a_name_released_while_its_client_is_connected_is_forgotten_once_the_client_leaves() {
    let relay = Relay::start(false, |c| {
        c.tokens = vec![
            illumitunnel::Token::new("alpha"),
            illumitunnel::Token::new("beta"),
        ];
    })
    .await;
    let ws = open_session(&relay, "busy", "alpha").await;
    let mut store = QueueStore::open(
        &relay.data_dir,
        QueueLimits::default(),
        QueueGauges::default(),
    )
    .unwrap();
    store.begin().unwrap();
    assert_eq!(
        store.release("busy", illumitunnel::now_ms()).unwrap(),
        Some(0)
    );
    store.commit().unwrap();
    drop(store);
    // The connected client keeps being served; once it leaves, the name goes within 5 s.
    let mut events = spawn_client(ws, Behavior::Echo);
    let answer = relay.post("/t/busy/live", "still served").await;
    assert!(answer.status.is_success(), "{:?}", answer.body);
    assert_eq!(next_request(&mut events).await.body, b"still served");
    drop(events);
    let started = std::time::Instant::now();
    while relay.post("/t/busy/x", "x").await.status != StatusCode::NOT_FOUND {
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "the released name was never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ws, queued, _) = welcome(&relay, Some("beta"), "busy").await;
    assert_eq!(queued, 0, "nothing of alpha's reaches beta");
    drop(ws);
    relay.stop().await;
}

#[tokio::test]
async fn at_the_total_cap_a_tunnel_over_its_fair_share_is_refused_and_one_under_it_queues() {
    let relay = Relay::start(false, |c| c.queue.max_total_bytes = 20_000).await;
    for name in ["hog", "small"] {
        claim_and_leave(&relay, name).await;
    }
    let mut hogged = 0;
    loop {
        let answer = relay.post("/t/hog/fill", vec![b'h'; 2_000]).await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                answer.error().contains("--queue-max-total-bytes"),
                "{}",
                answer.error()
            );
            break;
        }
        queued_id(&answer);
        hogged += 1;
        assert!(hogged < 20, "the cap never applied");
    }
    // The hog filled the cap; a tunnel under its share (half of it) still queues...
    for _ in 0..3 {
        queued_id(&relay.post("/t/small/hook", vec![b's'; 2_000]).await);
    }
    // ...while the hog, over its share, stays refused.
    let answer = relay.post("/t/hog/more", vec![b'h'; 100]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.error(),
        "the relay's offline queues are full (20000 bytes across all tunnels, --queue-max-total-bytes); send again later"
    );
    // Past its share the small tunnel is refused too.
    let mut small = 3;
    while relay.post("/t/small/hook", vec![b's'; 2_000]).await.status == StatusCode::ACCEPTED {
        small += 1;
        assert!(small < 10, "the small tunnel passed its share");
    }
    assert!(
        small <= 5,
        "{small} deliveries of 2,000 bytes fit a 10,000-byte share"
    );
    relay.stop().await;
}

async fn open_session(relay: &Relay, tunnel: &str, token: &str) -> Ws {
    let (ws, reply) = hello(relay, Some(token), PROTOCOL_VERSION, tunnel).await;
    assert!(matches!(reply, RelayMessage::Welcome { .. }), "{reply:?}");
    ws
}

#[tokio::test]
async fn aged_deliveries_expire_and_the_next_session_is_told() {
    let now = Arc::new(AtomicI64::new(illumitunnel::now_ms()));
    let relay = Relay::start(false, |c| {
        c.queue.max_age = Duration::from_secs(1);
        c.clock = Clock::manual(now.clone());
    })
    .await;
    claim_and_leave(&relay, "slow-app").await;
    queued_id(&relay.post("/t/slow-app/a", "a").await);
    // Deliveries carry the wall-clock millisecond they arrived in: once the wall clock is past
    // the one `a` arrived in, the queue's clock jumps a second past it, so what is queued so far
    // is over the one-second age limit and what arrives from now on is not.
    let after_a = illumitunnel::now_ms();
    let deadline = std::time::Instant::now() + WAIT;
    while illumitunnel::now_ms() <= after_a {
        assert!(
            std::time::Instant::now() < deadline,
            "the wall clock stands still"
        );
        tokio::task::yield_now().await;
    }
    now.store(illumitunnel::now_ms() + 1000, Ordering::SeqCst);
    queued_id(&relay.post("/t/slow-app/b", "fresh").await);
    let (ws, queued, expired) = welcome(&relay, None, "slow-app").await;
    assert_eq!((queued, expired), (1, 2), "probe and a expired");
    let mut events = spawn_client(ws, Behavior::Record);
    assert_eq!(next_request(&mut events).await.body, b"fresh");
    drop(events);
    let (_ws, _, expired) = welcome(&relay, None, "slow-app").await;
    assert_eq!(expired, 0, "reported once");
    relay.stop().await;
}

/// Sends `body` to `path` on its own task, so the test can act while it waits for an answer.
fn send_later(
    relay: &Relay,
    path: &'static str,
    body: &'static str,
) -> tokio::task::JoinHandle<Answer> {
    let addr = relay.addr;
    tokio::spawn(async move {
        let io = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .unwrap();
        tokio::spawn(conn);
        let response = send.send_request(post(addr, path, body)).await.unwrap();
        Answer::read(response).await
    })
}

#[tokio::test]
async fn a_delivery_in_flight_follows_to_the_next_session_when_its_session_leaves() {
    // Short pings, so the fake client notices its receiver is gone and closes its socket.
    let relay = Relay::start(false, |c| c.keepalive = Duration::from_millis(50)).await;
    let mut first = spawn_client(connect(&relay, "pair").await, Behavior::Silent);
    let mut second = spawn_client(connect(&relay, "pair").await, Behavior::Record);
    let sender = send_later(&relay, "/t/pair/x", "in flight");
    let to_first = next_request(&mut first).await;
    assert!(to_first.answer && !to_first.queued);
    let copy = next_request(&mut second).await;
    assert!(!copy.answer, "a fan-out copy");
    drop(first);
    let again = next_request(&mut second).await;
    assert_eq!(again.id, to_first.id, "the same delivery, same id");
    assert!(again.answer && again.queued, "marked as a redelivery");
    let answer = within("the sender's answer", sender).await.unwrap();
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body.as_ref(), b"in flight");

    drop(second);

    // With no session left, a delivery in flight is queued and answered 202.
    let mut solo = spawn_client(connect(&relay, "solo").await, Behavior::Silent);
    let sender = send_later(&relay, "/t/solo/y", "queued instead");
    let r = next_request(&mut solo).await;
    drop(solo);
    let answer = within("the sender's answer", sender).await.unwrap();
    assert_eq!(queued_id(&answer), r.id.as_str());
    let (ws, queued, _) = welcome(&relay, None, "solo").await;
    assert_eq!(queued, 1);
    let mut events = spawn_client(ws, Behavior::Record);
    let again = next_request(&mut events).await;
    assert_eq!((again.id, again.body), (r.id, b"queued instead".to_vec()));
    relay.stop().await;
}

#[tokio::test]
async fn shutdown_queues_what_was_not_answered_and_a_restart_delivers_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("relay");
    let relay = Relay::start_in(false, data_dir.clone(), |c| {
        c.response_timeout = Duration::from_secs(1)
    })
    .await;
    let mut silent = spawn_client(connect(&relay, "stopping").await, Behavior::Silent);
    let sender = send_later(&relay, "/t/stopping/x", "unanswered");
    next_request(&mut silent).await;
    relay.shutdown.cancel();
    let answer = within("the sender's answer", sender).await.unwrap();
    queued_id(&answer);
    within("relay shutdown", relay.task).await.unwrap().unwrap();

    let relay = Relay::start_in(false, data_dir, |_| {}).await;
    let (ws, queued, _) = welcome(&relay, None, "stopping").await;
    assert_eq!(queued, 1);
    let mut events = spawn_client(ws, Behavior::Record);
    assert_eq!(next_request(&mut events).await.body, b"unanswered");
    relay.stop().await;
}

fn delivery(n: usize, size: usize) -> QueuedDelivery {
    QueuedDelivery {
        id: DeliveryId::parse(&format!("d{n}")).unwrap(),
        received_at_ms: illumitunnel::now_ms() as u64,
        method: "POST".into(),
        path: "/hook".into(),
        query: format!("n={n}"),
        headers: vec![("x-raw".into(), vec![0xff, n as u8])],
        body: Bytes::from(vec![n as u8; size]),
    }
}

#[test]
fn the_store_streams_pages_acks_and_reopens_with_its_depth() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let limits = QueueLimits::default();
    let now = illumitunnel::now_ms();
    {
        let mut store = QueueStore::open(&data, limits, QueueGauges::default()).unwrap();
        let (alice, bob) = (Owner::Token([7; 32]), Owner::Token([8; 32]));
        assert_eq!(
            store.claim("my-app", Some(alice), alice, now).unwrap(),
            Claim::Claimed(alice)
        );
        assert_eq!(
            store.claim("my-app", Some(bob), bob, now).unwrap(),
            Claim::Taken
        );
        for n in 0..10 {
            store.push("my-app", &delivery(n, 1000), now).unwrap();
        }
        store.push("my-app", &delivery(3, 1000), now).unwrap();
        assert_eq!(store.depth("my-app").count, 10, "an id is queued once");
        // A page stops at its byte budget but always holds at least one row.
        let page = store.page("my-app", 0, 64, 2500).unwrap();
        assert_eq!(page.len(), 3);
        let page = store.page("my-app", 0, 64, 1).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(
            page[0].delivery,
            delivery(0, 1000).with_time(page[0].delivery.received_at_ms)
        );
        let all = store.page("my-app", page[0].seq, 64, usize::MAX).unwrap();
        assert_eq!(all.len(), 9);
        assert!(store
            .ack("my-app", &DeliveryId::parse("d0").unwrap())
            .unwrap());
        assert!(!store
            .ack("my-app", &DeliveryId::parse("d0").unwrap())
            .unwrap());
        assert!(!store
            .ack("other", &DeliveryId::parse("d1").unwrap())
            .unwrap());
    }
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("relay.db")), 0o600);

    let mut store = QueueStore::open(&data, limits, QueueGauges::default()).unwrap();
    assert_eq!(store.depth("my-app").count, 9);
    assert_eq!(
        store.owners().unwrap(),
        vec![("my-app".to_string(), Owner::Token([7; 32]))]
    );
    let first = store.page("my-app", 0, 1, usize::MAX).unwrap();
    assert_eq!(first[0].delivery.id.as_str(), "d1");
    // A new row never reuses a deleted sequence number, so a cursor never skips it.
    let last = store
        .page("my-app", 0, 64, usize::MAX)
        .unwrap()
        .last()
        .unwrap()
        .seq;
    assert!(store
        .ack("my-app", &DeliveryId::parse("d9").unwrap())
        .unwrap());
    store.push("my-app", &delivery(10, 10), now).unwrap();
    assert_eq!(store.page("my-app", last, 64, usize::MAX).unwrap().len(), 1);

    // Expiry is counted until a session hears about it.
    let later = now + limits.max_age.as_millis() as i64 + 60_000;
    let heard = |queued, expired| Backlog {
        queued,
        expired,
        dead_letters: 0,
    };
    assert_eq!(store.connect("my-app", later).unwrap(), heard(0, 9));
    assert_eq!(store.connect("my-app", later).unwrap(), heard(0, 0));
}

#[test]
fn failed_attempts_are_kept_and_a_dead_letter_leaves_the_queue_for_its_own_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let limits = QueueLimits::default();
    let now = illumitunnel::now_ms();
    let seq_of_head = |store: &QueueStore| store.head("my-app").unwrap().unwrap();
    {
        let mut store = QueueStore::open(&data, limits, QueueGauges::default()).unwrap();
        for n in 0..3 {
            store.push("my-app", &delivery(n, 100), now).unwrap();
        }
        let head = seq_of_head(&store);
        assert_eq!((head.delivery.id.as_str(), head.attempts), ("d0", 0));
        assert_eq!(store.attempt_failed("my-app", head.seq).unwrap(), 1);
        assert_eq!(store.attempt_failed("my-app", head.seq).unwrap(), 2);
        assert_eq!(store.attempt_failed("other", head.seq).unwrap(), 0);
    }
    let mut store = QueueStore::open(&data, limits, QueueGauges::default()).unwrap();
    let head = seq_of_head(&store);
    assert_eq!(head.attempts, 2, "attempts survive a restart");
    assert!(store
        .dead_letter("my-app", head.seq, "it ended the client's session", now)
        .unwrap());
    assert!(!store.dead_letter("my-app", head.seq, "twice", now).unwrap());
    assert_eq!(
        seq_of_head(&store).delivery.id.as_str(),
        "d1",
        "the rest flows"
    );
    assert_eq!(store.depth("my-app").count, 2);
    assert_eq!(
        store.connect("my-app", now).unwrap(),
        Backlog {
            queued: 2,
            expired: 0,
            dead_letters: 1
        }
    );
    assert!(store.remove("my-app", seq_of_head(&store).seq).unwrap());
    assert_eq!(seq_of_head(&store).delivery.id.as_str(), "d2");
    // Dead letters are kept as long as queued deliveries are.
    let later = now + limits.max_age.as_millis() as i64 + 60_000;
    assert_eq!(store.connect("my-app", later).unwrap().dead_letters, 0);
}

trait WithTime {
    fn with_time(self, ms: u64) -> Self;
}

impl WithTime for QueuedDelivery {
    fn with_time(mut self, ms: u64) -> Self {
        self.received_at_ms = ms;
        self
    }
}
