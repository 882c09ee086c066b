//! The cluster's seams under chaos, end to end: a real nats-server, three real relay nodes,
//! real clients and a local server. Each test holds one promise of `docs/cluster.md`:
//!
//! - a node restarted again and again under load never answers `404` for a live tunnel (it
//!   answers `503` with `Retry-After` until it has read owners, presence and heartbeats);
//! - a delivery queued while the tunnel is live, whose wake-up never came, reaches the handler
//!   within the periodic check;
//! - a node that wakes from SIGSTOP queues no second copy of a delivery;
//! - large bodies of refused, timed-out and abandoned deliveries leave no object behind.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::cluster::{metric, stored_objects, Nats, Node, QueueAudit};
use support::sender::Request;
use support::sink::Sink;
use support::target::{Reply, Target};
use support::{runtime, Listen};

const HOOK: &str = "/webhooks/illumichat";
/// Short keepalive on both sides, so dead connections are found in well under a second.
const KEEPALIVE_MS: &str = "300";
/// How long a test waits for queued deliveries to reach the local server.
const DRAIN: Duration = Duration::from_secs(45);
/// The nodes' periodic look for deliveries queued elsewhere (`cluster::QUEUE_CHECK`).
const QUEUE_CHECK: Duration = Duration::from_secs(1);
/// A body above NATS's payload limit less its slack: it goes through the object store.
const LARGE: usize = 1536 * 1024;

fn body(n: usize) -> Vec<u8> {
    format!(
        r#"{{"event":"ticket.created","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_abc123","data":{{"id":"tkt_{n:05}"}}}}"#
    )
    .into_bytes()
}

/// A large body whose first bytes say which one it is.
fn large_body(n: usize) -> Vec<u8> {
    let mut body = format!("large-{n:04}-").into_bytes();
    body.resize(LARGE, b'x');
    body
}

fn three_nodes(nats: &Nats, extra: &[&str]) -> Vec<Node> {
    let mut args = vec!["--keepalive-ms", KEEPALIVE_MS];
    args.extend_from_slice(extra);
    ["a", "b", "c"]
        .iter()
        .map(|id| Node::start(id, nats, &args))
        .collect()
}

/// Polls `check` every 20 ms until it holds, for at most `within`.
fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `progress` has moved `by` past where it is now.
fn advance(
    rt: &tokio::runtime::Runtime,
    progress: &mut tokio::sync::watch::Receiver<usize>,
    by: usize,
) {
    let next = *progress.borrow() + by;
    rt.block_on(async {
        let wait = progress.wait_for(|a| *a >= next);
        tokio::time::timeout(DRAIN, wait)
            .await
            .expect("the load stalled")
            .ok();
    });
}

/// Outcome of one delivery of the load: its number and status (`None`: no answer).
type Outcomes = Vec<(usize, Option<u16>)>;

/// Sends `body(n)` with `width` senders at a time to `urls` (in turn) until `stop`; every
/// answer moves `answered`.
fn load(
    rt: &tokio::runtime::Runtime,
    urls: Vec<String>,
    width: usize,
    stop: tokio::sync::watch::Receiver<bool>,
    answered: tokio::sync::watch::Sender<usize>,
) -> tokio::task::JoinHandle<Outcomes> {
    rt.spawn(async move {
        let mut outcomes = Vec::new();
        let mut n = 0;
        // Bounded: stops when told, or after 30,000 deliveries.
        while !*stop.borrow() && n < 30_000 {
            let sends: Vec<_> = (n..n + width)
                .map(|k| {
                    let url = urls[k % urls.len()].clone();
                    tokio::spawn(async move {
                        let sent = Request::post(&url).body(body(k)).try_send().await;
                        if let Some(r) = sent.as_ref().ok().filter(|r| r.status == 404) {
                            eprintln!("404 from {url} for delivery {k}: {}", r.text());
                        }
                        (k, sent.ok().map(|r| r.status))
                    })
                })
                .collect();
            let mut refused = false;
            for send in sends {
                let (k, status) = send.await.expect("sender task");
                refused |= status.is_none();
                outcomes.push((k, status));
                answered.send_modify(|a| *a += 1);
            }
            if refused {
                // A node that is down refuses at once; do not spin on it.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n += width;
        }
        outcomes
    })
}

#[test]
fn a_node_restarted_in_a_loop_under_load_never_answers_404() {
    let rt = runtime();
    let nats = Nats::start();
    let mut nodes = three_nodes(&nats, &[]);
    let sink = Sink::start(&rt);
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let _listen = Listen::start(Some(&nodes[0].url()), &sink.url(HOOK), "restarts", &extra);
    // Most of the load goes to the node that restarts, the rest to one that stays.
    let restarting = nodes[2].tunnel_url("restarts");
    let urls = vec![
        restarting.clone(),
        restarting,
        nodes[1].tunnel_url("restarts"),
    ];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (answered, mut progress) = tokio::sync::watch::channel(0usize);
    let load = load(&rt, urls, 8, stop_rx, answered);
    advance(&rt, &mut progress, 100);
    let mut ready_after = Vec::new();
    for _ in 0..5 {
        let node = &mut nodes[2];
        node.stop();
        node.resume();
        // `/healthz` says 200 only once the node answers deliveries.
        let started = Instant::now();
        eventually(
            Duration::from_secs(20),
            "the restarted node to be ready",
            || {
                rt.block_on(Request::new("GET", &format!("{}/healthz", node.url())).try_send())
                    .is_ok_and(|r| r.status == 200)
            },
        );
        ready_after.push(started.elapsed());
        advance(&rt, &mut progress, 150);
    }
    stop_tx.send(true).expect("stop the load");
    let outcomes = rt.block_on(load).expect("senders");
    let mut statuses: HashMap<Option<u16>, usize> = HashMap::new();
    for (_, status) in &outcomes {
        *statuses.entry(*status).or_default() += 1;
    }
    eprintln!("statuses {statuses:?}; ready after the joined line: {ready_after:?}");
    assert_eq!(
        statuses.get(&Some(404)),
        None,
        "a restarted node answered 404 for a live tunnel"
    );
    let accepted: Vec<Vec<u8>> = outcomes
        .iter()
        .filter(|(_, s)| matches!(s, Some(200 | 202)))
        .map(|(n, _)| body(*n))
        .collect();
    assert!(accepted.len() >= 500, "only {} accepted", accepted.len());
    let missing = sink.received.wait_for_all(&accepted, DRAIN);
    assert!(
        missing.is_empty(),
        "lost {} of {} accepted deliveries",
        missing.len(),
        accepted.len()
    );
}

#[test]
fn a_node_that_has_not_read_the_cluster_answers_503_with_retry_after() {
    let rt = runtime();
    let nats = Nats::start();
    let mut nodes = three_nodes(&nats, &[]);
    let target = Target::ok(&rt);
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let _listen = Listen::start(Some(&nodes[0].url()), &target.url(HOOK), "early", &extra);
    // Right after the restart, before anything else: every answer is the handler's 200 or the
    // documented 503 with `Retry-After`, never 404.
    let node = &mut nodes[1];
    node.stop();
    node.resume();
    let mut seen = HashMap::new();
    for _ in 0..200 {
        let response = rt
            .block_on(
                Request::post(&node.tunnel_url("early"))
                    .body(body(1))
                    .try_send(),
            )
            .expect("the node answers");
        if response.status == 503 {
            assert_eq!(response.header("retry-after").as_deref(), Some("1"));
            assert!(
                response.error().contains("starting"),
                "{}",
                response.error()
            );
        }
        *seen.entry(response.status).or_insert(0usize) += 1;
        if response.status == 200 {
            break;
        }
    }
    assert_eq!(seen.get(&404), None, "{seen:?}");
    assert!(seen.contains_key(&200), "{seen:?}");
}

#[test]
fn a_delivery_queued_elsewhere_without_a_wake_up_is_found_by_the_periodic_check() {
    let rt = runtime();
    let nats = Nats::start();
    let nodes = three_nodes(&nats, &[]);
    let sink = Sink::start(&rt);
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let _listen = Listen::start(Some(&nodes[0].url()), &sink.url(HOOK), "woken", &extra);
    let live = Request::post(&nodes[1].tunnel_url("woken"))
        .body(body(0))
        .send(&rt);
    assert_eq!(live.status, 200, "{}", live.text());
    // Another node queued a delivery while the tunnel was live and its "pushed" notice was
    // lost: the message is in the queue stream and nobody said so.
    let client = rt
        .block_on(async_nats::connect(&nats.url))
        .expect("connect to NATS");
    let queued_at = Instant::now();
    rt.block_on(support::cluster::queue_directly(&client, "woken", &body(1)));
    let missing = sink.received.wait_for_all(&[body(1)], QUEUE_CHECK * 5);
    let took = queued_at.elapsed();
    assert!(
        missing.is_empty(),
        "a delivery queued without a wake-up was not found within {:?}",
        QUEUE_CHECK * 5
    );
    eprintln!("found by the periodic check after {took:?}");
    assert!(took <= QUEUE_CHECK * 3, "took {took:?}");
}

#[test]
fn a_node_woken_from_sigstop_queues_no_second_copies() {
    let rt = runtime();
    let nats = Nats::start();
    let mut nodes = three_nodes(&nats, &[]);
    let sink = Sink::start(&rt);
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let _listen = Listen::start(Some(&nodes[0].url()), &sink.url(HOOK), "paused", &extra);
    let audit = rt.block_on(QueueAudit::start(&nats.url));
    // Deliveries enter the other two nodes and are handed to node a.
    let urls = vec![nodes[1].tunnel_url("paused"), nodes[2].tunnel_url("paused")];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (answered, mut progress) = tokio::sync::watch::channel(0usize);
    let load = load(&rt, urls, 16, stop_rx, answered);
    advance(&rt, &mut progress, 200);
    let paused = nodes[0].relay().guard.pid();
    nodes[0].relay().guard.signal("STOP");
    // The other nodes give up on node a once its heartbeat stops, and queue what they had
    // handed to it; the client reconnects elsewhere.
    advance(&rt, &mut progress, 200);
    nodes[0].relay().guard.signal("CONT");
    eprintln!("SIGSTOP/SIGCONT of node a (pid {paused})");
    advance(&rt, &mut progress, 300);
    stop_tx.send(true).expect("stop the load");
    let outcomes = rt.block_on(load).expect("senders");
    let accepted: Vec<Vec<u8>> = outcomes
        .iter()
        .filter(|(_, s)| matches!(s, Some(200 | 202)))
        .map(|(n, _)| body(*n))
        .collect();
    let missing = sink.received.wait_for_all(&accepted, DRAIN);
    assert!(missing.is_empty(), "lost {} deliveries", missing.len());
    let copies = rt.block_on(audit.copies());
    let queued = copies.len();
    let extra: usize = copies.values().map(|n| n - 1).sum();
    eprintln!(
        "sent {}, accepted {}, queued {queued} distinct, {extra} extra copies",
        outcomes.len(),
        accepted.len()
    );
    assert!(queued > 0, "nothing was queued while node a was paused");
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(extra, 0, "second copies entered the queue: {twice:?}");
    nodes[0].kill();
}

#[test]
fn large_bodies_of_refused_timed_out_and_abandoned_deliveries_leave_no_object() {
    let rt = runtime();
    let nats = Nats::start();
    let cap = 4 * LARGE;
    let cap_text = cap.to_string();
    let mut nodes = three_nodes(&nats, &["--queue-max-total-bytes", &cap_text]);
    let client = rt
        .block_on(async_nats::connect(&nats.url))
        .expect("connect to NATS");
    let sink = Sink::start(&rt);
    let refused = refuse_large_bodies_at_the_cap(&rt, &nodes, &sink, cap);
    let abandoned = abandon_a_large_answer(&rt, &nodes);
    let timed_out = time_out_a_large_delivery(&rt, &mut nodes, &sink);
    let start = Instant::now();
    let mut left = rt.block_on(stored_objects(&client));
    while left != (Vec::new(), 0) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        left = rt.block_on(stored_objects(&client));
    }
    assert_eq!(
        left,
        (Vec::new(), 0),
        "stored bodies left behind (names, chunks)"
    );
    drop((refused, abandoned, timed_out));
}

/// Refused: the tunnel's client is away; large bodies queue until the cap refuses them, then
/// the client comes back and drains them. Returns the client.
fn refuse_large_bodies_at_the_cap(
    rt: &tokio::runtime::Runtime,
    nodes: &[Node],
    sink: &Sink,
    cap: usize,
) -> Listen {
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let mut listen = Listen::start(Some(&nodes[0].url()), &sink.url(HOOK), "big", &extra);
    listen.guard.kill_now();
    eventually(Duration::from_secs(10), "the session to end", || {
        metric(rt, &nodes[0].url(), "illumitunnel_sessions") == Some(0.0)
    });
    let mut queued = Vec::new();
    let mut refused = 0;
    for n in 0..12 {
        let response = Request::post(&nodes[1].tunnel_url("big"))
            .body(large_body(n))
            .send(rt);
        match response.status {
            202 => queued.push(large_body(n)),
            503 => refused += 1,
            other => panic!("{other}: {}", response.text()),
        }
    }
    eprintln!(
        "queued {}, refused {refused} at a cap of {cap} bytes",
        queued.len()
    );
    assert!(
        queued.len() <= cap / LARGE,
        "{} large bodies queued under a cap of {} of them",
        queued.len(),
        cap / LARGE
    );
    assert!(refused > 0 && !queued.is_empty());
    let args = ["--json", "--keepalive-ms", KEEPALIVE_MS];
    listen.respawn(Some(&nodes[0].url()), &sink.url(HOOK), "big", &args);
    let missing = sink.received.wait_for_all(&queued, DRAIN);
    assert!(
        missing.is_empty(),
        "{} queued large bodies lost",
        missing.len()
    );
    listen
}

/// Abandoned: the sender hangs up while the local server takes its time with a large answer.
/// Returns the local server and its client.
fn abandon_a_large_answer(rt: &tokio::runtime::Runtime, nodes: &[Node]) -> (Target, Listen) {
    let slow = Target::start(rt, |_| {
        Reply::status(200)
            .body(vec![b'a'; LARGE])
            .delay(Duration::from_millis(1500))
    });
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let listen = Listen::start(Some(&nodes[0].url()), &slow.url(HOOK), "slow", &extra);
    let gave_up = rt.block_on(async {
        let send = Request::post(&nodes[1].tunnel_url("slow"))
            .body(large_body(100))
            .try_send();
        tokio::time::timeout(Duration::from_millis(500), send).await
    });
    assert!(gave_up.is_err(), "the slow answer came early");
    slow.wait_for_requests(1);
    (slow, listen)
}

/// Timed out: the node holding the session stops answering with a large delivery out; the
/// ingress node queues it as a redelivery and the paused node (node c) is killed before it
/// reads it. The client comes back through node a, which drains it. Returns the client.
fn time_out_a_large_delivery(
    rt: &tokio::runtime::Runtime,
    nodes: &mut [Node],
    sink: &Sink,
) -> Listen {
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let mut held = Listen::start(Some(&nodes[2].url()), &sink.url(HOOK), "held", &extra);
    let ok = Request::post(&nodes[1].tunnel_url("held"))
        .body(body(7))
        .send(rt);
    assert_eq!(ok.status, 200, "{}", ok.text());
    nodes[2].relay().guard.signal("STOP");
    let redelivered = Request::post(&nodes[1].tunnel_url("held"))
        .body(large_body(200))
        .send(rt);
    assert_eq!(redelivered.status, 202, "{}", redelivered.text());
    nodes[2].kill();
    let args = ["--json", "--keepalive-ms", KEEPALIVE_MS];
    held.respawn(Some(&nodes[0].url()), &sink.url(HOOK), "held", &args);
    let missing = sink.received.wait_for_all(&[large_body(200)], DRAIN);
    assert!(missing.is_empty(), "the redelivered large body was lost");
    held
}

#[test]
fn a_clean_drain_leaves_no_marker_in_the_attempts_bucket() {
    let rt = runtime();
    let nats = Nats::start();
    let nodes = three_nodes(&nats, &[]);
    let client = rt
        .block_on(async_nats::connect(&nats.url))
        .expect("connect to NATS");
    let sink = Sink::start(&rt);
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let mut listen = Listen::start(Some(&nodes[0].url()), &sink.url(HOOK), "clean", &extra);
    listen.guard.kill_now();
    eventually(Duration::from_secs(10), "the session to end", || {
        metric(&rt, &nodes[0].url(), "illumitunnel_sessions") == Some(0.0)
    });
    let queued: Vec<Vec<u8>> = (0..30).map(body).collect();
    for (n, body) in queued.iter().enumerate() {
        let response = Request::post(&nodes[n % 3].tunnel_url("clean"))
            .body(body.clone())
            .send(&rt);
        assert_eq!(response.status, 202, "{}", response.text());
    }
    let mut args = vec!["--json"];
    args.extend_from_slice(&extra);
    listen.respawn(Some(&nodes[1].url()), &sink.url(HOOK), "clean", &args);
    let missing = sink.received.wait_for_all(&queued, DRAIN);
    assert!(
        missing.is_empty(),
        "{} queued deliveries lost",
        missing.len()
    );
    eventually(Duration::from_secs(10), "the queue to empty", || {
        rt.block_on(support::cluster::stream_messages(
            &client,
            "ILLUMITUNNEL_QUEUE",
        )) == 0
    });
    // Every delivery was recorded at the first attempt: nothing to purge, so no marker.
    let markers = rt.block_on(support::cluster::stream_messages(
        &client,
        "KV_illumitunnel-attempts",
    ));
    assert_eq!(
        markers, 0,
        "a clean drain left purge markers in the attempts bucket"
    );
}

/// A measurement more than a check (hence `#[ignore]`): how long a cluster refuses to queue
/// while JetStream elects a new leader for the queue stream. Run it with
/// `cargo test --test cluster_seams leader -- --ignored --nocapture`.
#[test]
#[ignore = "measurement: cargo test --test cluster_seams leader -- --ignored --nocapture"]
fn killing_the_queue_streams_leader_refuses_for_seconds_and_loses_nothing() {
    let rt = runtime();
    let mut nats = support::cluster::NatsCluster::start(3);
    let extra = [
        "--allow-anonymous",
        "--keepalive-ms",
        KEEPALIVE_MS,
        "--cluster-replicas",
        "3",
    ];
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|id| Node::start_with(id, &nats.urls, &extra))
        .collect();
    let target = Target::ok(&rt);
    let listen_extra = ["--keepalive-ms", KEEPALIVE_MS];
    let mut listen = Listen::start(
        Some(&nodes[0].url()),
        &target.url(HOOK),
        "elect",
        &listen_extra,
    );
    listen.guard.kill_now();
    eventually(Duration::from_secs(10), "the session to end", || {
        metric(&rt, &nodes[0].url(), "illumitunnel_sessions") == Some(0.0)
    });
    let leader = rt.block_on(queue_leader(&nats.servers[0].url));
    let index: usize = leader.trim_start_matches('n').parse().expect("server n{i}");
    let mut accepted = Vec::new();
    let send =
        |n: usize, attempts: &mut Vec<Attempt>| send_until_accepted(&rt, &nodes, n, attempts);
    let mut attempts = Vec::new();
    for n in 0..20 {
        send(n, &mut attempts);
        accepted.push(body(n));
    }
    let killed = Instant::now();
    nats.servers[index].kill();
    let mut first_after = None;
    for n in 20..60 {
        let at = send(n, &mut attempts);
        first_after.get_or_insert(at);
        accepted.push(body(n));
    }
    // Each attempt after the kill until the first 202: sent when, answered after, with what.
    let window: Vec<String> = attempts
        .iter()
        .filter(|(sent, _, _)| *sent >= killed)
        .take_while(|(_, _, status)| *status != Some(202))
        .map(|(sent, took, status)| {
            format!("+{:?} {status:?} in {took:?}", sent.duration_since(killed))
        })
        .collect();
    eprintln!(
        "queue stream leader {leader} killed: first 202 answered {:?} after it; refused before: {window:?}",
        first_after.map(|at| at.duration_since(killed)).unwrap_or_default()
    );
    let mut args = vec!["--json"];
    args.extend_from_slice(&listen_extra);
    listen.respawn(Some(&nodes[1].url()), &target.url(HOOK), "elect", &args);
    eventually(DRAIN, "every accepted delivery to arrive", || {
        let got: std::collections::HashSet<Vec<u8>> =
            target.requests().into_iter().map(|r| r.body).collect();
        accepted.iter().all(|b| got.contains(b))
    });
}

/// The server name of the queue stream's leader, asked of the NATS server at `url`.
async fn queue_leader(url: &str) -> String {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream("ILLUMITUNNEL_QUEUE")
        .await
        .expect("queue stream");
    let info = stream.info().await.expect("stream info");
    info.cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("a leader")
}

/// One sending: when it left, how long its answer took, and the status (`None`: no answer).
type Attempt = (Instant, Duration, Option<u16>);

/// Sends `body(n)` to the two nodes in turn until one answers 202; returns when. Every
/// attempt is added to `attempts`.
fn send_until_accepted(
    rt: &tokio::runtime::Runtime,
    nodes: &[Node],
    n: usize,
    attempts: &mut Vec<Attempt>,
) -> Instant {
    for attempt in 0..600 {
        let node = &nodes[(n + attempt) % 2];
        let sent = Instant::now();
        let response = rt.block_on(
            Request::post(&node.tunnel_url("elect"))
                .body(body(n))
                .try_send(),
        );
        let status = response.ok().map(|r| r.status);
        attempts.push((sent, sent.elapsed(), status));
        match status {
            Some(202) => return Instant::now(),
            Some(503) | None => std::thread::sleep(Duration::from_millis(20)),
            Some(other) => panic!("delivery {n}: {other}"),
        }
    }
    panic!("delivery {n} was never accepted");
}
