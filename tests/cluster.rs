//! The relay cluster end to end: one JetStream-enabled nats-server, three relay nodes with
//! `--cluster`, real clients, a local server, and a TCP load balancer in front of the nodes.
//! The promise under test is the single relay's, across nodes: every webhook answered 2xx or
//! 202 by any node reaches the local server, in order for a tunnel's backlog.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::cluster::{metric, Balancer, Nats, NatsCluster, Node};
use support::sender::Request;
use support::sink::Sink;
use support::target::{Reply, Target};
use support::{command, runtime, temp_dir, ChildGuard, Listen, Stream};

const HOOK: &str = "/webhooks/illumichat";
/// Short keepalive on both sides, so dead connections are found in well under a second.
const KEEPALIVE_MS: &str = "300";
/// How long a test waits for queued deliveries to reach the local server.
const DRAIN: Duration = Duration::from_secs(60);

fn body(n: usize) -> Vec<u8> {
    format!(
        r#"{{"event":"ticket.created","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_abc123","data":{{"id":"tkt_{n:05}"}}}}"#
    )
    .into_bytes()
}

fn three_nodes(nats: &Nats) -> Vec<Node> {
    ["a", "b", "c"]
        .iter()
        .map(|id| Node::start(id, nats, &["--keepalive-ms", KEEPALIVE_MS]))
        .collect()
}

fn addr(node: &Node) -> SocketAddr {
    node.listen.parse().expect("node address")
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

/// The node whose `/metrics` shows a session.
fn holder(rt: &tokio::runtime::Runtime, nodes: &[Node]) -> usize {
    let mut found = None;
    eventually(Duration::from_secs(10), "a session on some node", || {
        found = nodes.iter().position(|n| {
            n.relay.is_some() && metric(rt, &n.url(), "illumitunnel_sessions") == Some(1.0)
        });
        found.is_some()
    });
    found.expect("a holder")
}

#[test]
fn a_webhook_on_one_node_reaches_a_client_on_another_byte_exact() {
    let rt = runtime();
    let nats = Nats::start();
    let nodes = three_nodes(&nats);
    let target = Target::start(&rt, |req| {
        Reply::status(201)
            .header("x-handler", "seen")
            .body(req.body.clone())
    });
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let _listen = Listen::start(Some(&nodes[2].url()), &target.url(HOOK), "crossing", &extra);

    let small: Vec<u8> = b"\x00\xff not UTF-8 \xc3\x28 {\"event\":\"ticket.created\"}".to_vec();
    let response = Request::post(&format!(
        "{}/deep/path?x=1",
        nodes[0].tunnel_url("crossing")
    ))
    .header("x-illumichat-signature", "sha256=abc")
    .body(small.clone())
    .send(&rt);
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.header("x-handler").as_deref(), Some("seen"));
    assert_eq!(response.body, small);

    // Larger than NATS's 1 MiB payload limit both ways: through the object store.
    let large: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let response = Request::post(&nodes[1].tunnel_url("crossing"))
        .body(large.clone())
        .send(&rt);
    assert_eq!(response.status, 201, "{}", response.text());
    assert!(
        response.body == large,
        "the 3 MiB answer came back different"
    );

    let seen = target.wait_for_requests(2);
    assert_eq!(seen[0].body, small);
    assert_eq!(seen[0].path, format!("{HOOK}/deep/path"));
    assert_eq!(seen[0].query.as_deref(), Some("x=1"));
    assert_eq!(
        seen[0].header("x-illumichat-signature").as_deref(),
        Some("sha256=abc")
    );
    assert!(
        seen[1].body == large,
        "the 3 MiB body reached the handler different"
    );
    // Each delivery is counted once, by the node the sender reached.
    let answered = |n: &Node| {
        metric(
            &rt,
            &n.url(),
            "illumitunnel_deliveries_total{outcome=\"answered\"}",
        )
        .unwrap_or(0.0)
    };
    assert_eq!(answered(&nodes[0]), 1.0);
    assert_eq!(answered(&nodes[1]), 1.0);
    assert_eq!(answered(&nodes[2]), 0.0);
}

#[test]
fn listeners_of_one_tunnel_on_two_nodes_both_see_a_delivery_sent_to_a_third() {
    let rt = runtime();
    let nats = Nats::start();
    let nodes = three_nodes(&nats);
    let first = Target::start(&rt, |_| Reply::status(200).body("from the first listener"));
    let second = Target::start(&rt, |_| Reply::status(500).body("from the copy"));
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let listen = Listen::start(Some(&nodes[0].url()), &first.url(HOOK), "fanout", &extra);
    let _copy = listen.sibling(&nodes[1].url(), &second.url(HOOK), "fanout", &extra);

    let response = Request::post(&nodes[2].tunnel_url("fanout"))
        .body(body(7))
        .send(&rt);
    // The oldest session answers; the other node's listener gets a copy.
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "from the first listener");
    assert_eq!(first.wait_for_requests(1)[0].body, body(7));
    assert_eq!(second.wait_for_requests(1)[0].body, body(7));
}

#[test]
fn deliveries_queued_on_any_node_drain_in_order_through_another() {
    let rt = runtime();
    let nats = Nats::start();
    let nodes = three_nodes(&nats);
    let target = Target::ok(&rt);
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let mut listen = Listen::start(Some(&nodes[0].url()), &target.url(HOOK), "backlog", &extra);
    listen.guard.kill_now();
    eventually(Duration::from_secs(10), "the session to end", || {
        metric(&rt, &nodes[0].url(), "illumitunnel_sessions") == Some(0.0)
    });

    const TOTAL: usize = 30;
    for n in 0..TOTAL {
        let node = &nodes[n % 3];
        let response = Request::post(&node.tunnel_url("backlog"))
            .body(body(n))
            .send(&rt);
        assert_eq!(
            response.status,
            202,
            "delivery {n} via {}: {}",
            node.id,
            response.text()
        );
    }
    let mut args = vec!["--json"];
    args.extend_from_slice(&extra);
    listen.respawn(Some(&nodes[2].url()), &target.url(HOOK), "backlog", &args);
    let connected = listen
        .guard
        .wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    assert!(
        connected.contains("30 queued deliveries follow"),
        "{connected}"
    );
    let seen = target.wait_for_requests(TOTAL);
    let bodies: Vec<Vec<u8>> = seen.iter().map(|r| r.body.clone()).collect();
    let want: Vec<Vec<u8>> = (0..TOTAL).map(body).collect();
    assert_eq!(bodies, want, "the backlog reached the handler out of order");
    // The next one, through yet another node, follows the backlog (live, or queued behind
    // the last acknowledgement).
    let response = Request::post(&nodes[1].tunnel_url("backlog"))
        .body(body(99))
        .send(&rt);
    assert!(matches!(response.status, 200 | 202), "{}", response.text());
    let seen = target.wait_for_requests(TOTAL + 1);
    assert_eq!(seen[TOTAL].body, body(99));
}

#[test]
fn ownership_holds_across_nodes() {
    let rt = runtime();
    let nats = Nats::start();
    let nodes = three_nodes(&nats);
    let target = Target::ok(&rt);
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let _owner = Listen::start(Some(&nodes[0].url()), &target.url(HOOK), "mine", &extra);
    // Another client (its own home, no claim key) through another node is refused.
    let home = temp_dir();
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["listen", "--relay", &nodes[1].url(), "--tunnel", "mine"])
        .args(["--forward-to", &target.url(HOOK), "--no-tui", "--store"])
        .arg(home.path().join("captures.db"));
    let mut other = ChildGuard::spawn(cmd);
    assert_eq!(other.wait_for_exit().code(), Some(1), "{}", other.stderr());
    assert!(
        other
            .stderr()
            .contains("tunnel mine belongs to another client"),
        "{}",
        other.stderr()
    );
    // Every node knows the tunnel: 200 through each, not 404.
    for node in &nodes {
        let response = Request::post(&node.tunnel_url("mine")).body("x").send(&rt);
        assert_eq!(response.status, 200, "via {}: {}", node.id, response.text());
    }
    let response = Request::post(&nodes[2].tunnel_url("nobody-claimed"))
        .body("x")
        .send(&rt);
    assert_eq!(response.status, 404, "{}", response.text());
}

#[test]
fn sigkill_of_the_session_node_mid_burst_loses_nothing() {
    let rt = runtime();
    let nats = Nats::start();
    let mut nodes = three_nodes(&nats);
    let sink = Sink::start(&rt);
    let balancer = Balancer::start(&rt, nodes.iter().map(addr).collect());
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let _listen = Listen::start(Some(&balancer.url), &sink.url(HOOK), "burst", &extra);
    let victim = holder(&rt, &nodes);
    let senders: Vec<String> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n.tunnel_url("burst"))
        .collect();

    const TOTAL: usize = 1_000;
    const KILL_AT: usize = 300;
    let (answered, mut progress) = tokio::sync::watch::channel(0usize);
    let burst = rt.spawn(async move {
        let mut outcomes = Vec::with_capacity(TOTAL);
        for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(16) {
            let sends: Vec<_> = chunk
                .iter()
                .map(|&n| {
                    let url = senders[n % senders.len()].clone();
                    tokio::spawn(
                        async move { (n, Request::post(&url).body(body(n)).try_send().await) },
                    )
                })
                .collect();
            for send in sends {
                let (n, result) = send.await.expect("sender task");
                outcomes.push((n, result.map(|r| r.status)));
                answered.send_modify(|a| *a += 1);
            }
        }
        outcomes
    });
    rt.block_on(async {
        let wait = progress.wait_for(|n| *n >= KILL_AT);
        tokio::time::timeout(DRAIN, wait)
            .await
            .expect("the burst stalled")
            .ok();
    });
    nodes[victim].kill();
    let outcomes = rt.block_on(burst).expect("senders");

    let accepted: Vec<Vec<u8>> = outcomes
        .iter()
        .filter(|(_, s)| matches!(s, Ok(200 | 202)))
        .map(|(n, _)| body(*n))
        .collect();
    let refused: Vec<String> = outcomes
        .iter()
        .filter(|(_, s)| !matches!(s, Ok(200 | 202)))
        .map(|(n, s)| format!("{n}: {s:?}"))
        .collect();
    // The senders never talked to the killed node: at most the deliveries it was forwarding
    // when it died are answered otherwise.
    assert!(
        refused.len() <= 16,
        "{} refused: {refused:?}",
        refused.len()
    );
    let missing = sink.received.wait_for_all(&accepted, DRAIN);
    assert!(
        missing.is_empty(),
        "lost {} of {} accepted deliveries, e.g. {}",
        missing.len(),
        accepted.len(),
        String::from_utf8_lossy(&missing[0])
    );
    eprintln!(
        "accepted {}, refused {}, lost 0, duplicates {}",
        accepted.len(),
        refused.len(),
        sink.received.counts().values().filter(|&&c| c > 1).count()
    );
}

#[test]
fn a_rolling_restart_under_load_loses_nothing() {
    let rt = runtime();
    let nats = Nats::start();
    let mut nodes = three_nodes(&nats);
    let sink = Sink::start(&rt);
    let balancer = Balancer::start(&rt, nodes.iter().map(addr).collect());
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let _listen = Listen::start(Some(&balancer.url), &sink.url(HOOK), "rolling", &extra);
    let url = format!("{}/t/rolling", balancer.url);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (answered, mut progress) = tokio::sync::watch::channel(0usize);
    let load = rt.spawn(async move {
        let mut outcomes = Vec::new();
        let mut n = 0;
        // Bounded: stops when told, or after 20,000 deliveries.
        while !*stop_rx.borrow() && n < 20_000 {
            let sends: Vec<_> = (n..n + 8)
                .map(|k| {
                    let url = url.clone();
                    tokio::spawn(
                        async move { (k, Request::post(&url).body(body(k)).try_send().await) },
                    )
                })
                .collect();
            for send in sends {
                let (k, result) = send.await.expect("sender task");
                outcomes.push((k, result.map(|r| r.status)));
                answered.send_modify(|a| *a += 1);
            }
            n += 8;
        }
        outcomes
    });
    // Each node goes down and comes back with 150 more deliveries answered in between.
    for node in nodes.iter_mut() {
        let next = *progress.borrow() + 150;
        rt.block_on(async {
            let wait = progress.wait_for(|a| *a >= next);
            tokio::time::timeout(DRAIN, wait)
                .await
                .expect("the load stalled")
                .ok();
        });
        node.stop();
        node.resume();
    }
    let next = *progress.borrow() + 150;
    rt.block_on(async {
        let wait = progress.wait_for(|a| *a >= next);
        tokio::time::timeout(DRAIN, wait)
            .await
            .expect("the load stalled")
            .ok();
    });
    stop_tx.send(true).expect("stop the load");
    let outcomes = rt.block_on(load).expect("senders");
    let accepted: Vec<Vec<u8>> = outcomes
        .iter()
        .filter(|(_, s)| matches!(s, Ok(200 | 202)))
        .map(|(n, _)| body(*n))
        .collect();
    assert!(
        accepted.len() >= 500,
        "only {} deliveries accepted",
        accepted.len()
    );
    let missing = sink.received.wait_for_all(&accepted, DRAIN);
    assert!(
        missing.is_empty(),
        "lost {} of {} accepted deliveries during the rolling restart",
        missing.len(),
        accepted.len()
    );
    eprintln!(
        "sent {}, accepted {}, lost 0",
        outcomes.len(),
        accepted.len()
    );
}

#[test]
fn without_nats_held_sessions_keep_working_and_queueing_resumes_after() {
    let rt = runtime();
    let mut nats = Nats::start();
    let nodes = three_nodes(&nats);
    let target = Target::ok(&rt);
    let extra = ["--keepalive-ms", KEEPALIVE_MS];
    let mut listen = Listen::start(Some(&nodes[0].url()), &target.url(HOOK), "steady", &extra);
    let _other = Listen::start(Some(&nodes[1].url()), &target.url(HOOK), "parked", &extra);
    let health = |node: &Node| {
        Request::new("GET", &format!("{}/healthz", node.url()))
            .send(&rt)
            .status
    };
    assert_eq!(health(&nodes[0]), 200);

    nats.stop();
    eventually(
        Duration::from_secs(10),
        "healthz to report NATS gone on every node",
        || nodes.iter().all(|n| health(n) == 503),
    );
    let response = Request::post(&nodes[0].tunnel_url("steady"))
        .body(body(1))
        .send(&rt);
    assert_eq!(
        response.status,
        200,
        "a session held here: {}",
        response.text()
    );
    // Another node cannot reach the holder, nor queue: 503, never a 202 it cannot keep.
    // (A publish the NATS client buffered may still land once NATS is back: a duplicate
    // after the sender's retry, never a loss.)
    let response = Request::post(&nodes[2].tunnel_url("steady"))
        .body(body(2))
        .send(&rt);
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(
        response.error().contains("send again later"),
        "{}",
        response.text()
    );

    nats.resume();
    eventually(
        Duration::from_secs(20),
        "healthz to report NATS back",
        || nodes.iter().all(|n| health(n) == 200),
    );
    listen.guard.kill_now();
    eventually(Duration::from_secs(10), "the session to end", || {
        metric(&rt, &nodes[0].url(), "illumitunnel_sessions") == Some(0.0)
    });
    let response = Request::post(&nodes[2].tunnel_url("steady"))
        .body(body(3))
        .send(&rt);
    assert_eq!(
        response.status,
        202,
        "queueing resumed: {}",
        response.text()
    );
    listen.respawn(
        Some(&nodes[1].url()),
        &target.url(HOOK),
        "steady",
        &["--json"],
    );
    eventually(
        DRAIN,
        "the delivery queued after the outage to arrive",
        || target.requests().iter().any(|r| r.body == body(3)),
    );
}

/// `illumitunnel-relay token ARGS --cluster URL`, to completion.
fn cluster_token(nats: &Nats, args: &[&str]) -> support::Finished {
    let home = temp_dir();
    let mut cmd = command("illumitunnel-relay", home.path());
    cmd.arg("token").args(args).args(["--cluster", &nats.url]);
    ChildGuard::run(cmd)
}

fn listen_with_token(node: &Node, tunnel: &str, token: &str, forward_to: &str) -> ChildGuard {
    let home = temp_dir();
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["listen", "--relay", &node.url(), "--tunnel", tunnel])
        .args(["--token", token, "--forward-to", forward_to])
        .args([
            "--no-tui",
            "--json",
            "--keepalive-ms",
            KEEPALIVE_MS,
            "--store",
        ])
        .arg(home.path().join("captures.db"));
    // The home holds only the store; the guard outlives it harmlessly.
    std::mem::forget(home);
    ChildGuard::spawn(cmd)
}

#[test]
fn tokens_stored_in_nats_admit_and_revoke_on_every_node() {
    let rt = runtime();
    let nats = Nats::start();
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|id| Node::start_with(id, &nats.url, &["--keepalive-ms", KEEPALIVE_MS]))
        .collect();
    let target = Target::ok(&rt);

    let empty = cluster_token(&nats, &["list"]);
    assert_eq!(empty.code(), 0, "{empty:?}");
    assert!(
        empty.stderr.contains(
            "no stored tokens; add one with `illumitunnel-relay token add NAME --cluster"
        ),
        "{empty:?}"
    );
    let added = cluster_token(&nats, &["add", "laptop"]);
    assert_eq!(added.code(), 0, "{added:?}");
    let token = added.stdout.trim().to_string();
    assert!(token.starts_with("itr_"), "{added:?}");
    // A second token keeps the loopback nodes closed to strangers once laptop is revoked.
    assert_eq!(cluster_token(&nats, &["add", "ci"]).code(), 0);
    let again = cluster_token(&nats, &["add", "laptop"]);
    assert_eq!(again.code(), 2, "{again:?}");
    assert!(
        again.stderr.contains("a token named laptop already exists"),
        "{again:?}"
    );
    for node in &nodes {
        node.relay()
            .guard
            .wait_for_text(Stream::Stderr, "stored client tokens changed");
    }
    let list = cluster_token(&nats, &["list"]);
    let names: Vec<&str> = list
        .stdout
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(names, ["laptop", "ci"], "{list:?}");
    assert!(!list.stdout.contains(&token));

    // Accepted through either node; a wrong token is refused.
    let client = listen_with_token(&nodes[1], "tokened", &token, &target.url(HOOK));
    client.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    let on_a = listen_with_token(&nodes[0], "tokened-a", &token, &target.url(HOOK));
    on_a.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    drop(on_a);
    let mut wrong = listen_with_token(&nodes[0], "other", "itr_wrong", &target.url(HOOK));
    assert!(!wrong.wait_for_exit().success(), "{}", wrong.stderr());
    assert!(
        wrong.stderr().contains("relay refused the token"),
        "{}",
        wrong.stderr()
    );

    // Revoked in NATS: the session on node b closes within a poll or two.
    let revoked = cluster_token(&nats, &["revoke", "laptop"]);
    assert_eq!(revoked.code(), 0, "{revoked:?}");
    nodes[1]
        .relay()
        .guard
        .wait_for_text(Stream::Stderr, "client token revoked; closing its session");
    // And node a, which held no session of it, refuses it once its next poll has run.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let late = listen_with_token(&nodes[0], "late", &token, &target.url(HOOK));
        let line = late.wait_for_line(Stream::Stderr, |l| {
            l.trim_start().starts_with("connected") || l.contains("relay refused the token")
        });
        if line.contains("relay refused the token") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node a still admits a revoked token"
        );
    }
    let unknown = cluster_token(&nats, &["revoke", "laptop"]);
    assert_eq!(unknown.code(), 2, "{unknown:?}");
    assert!(
        unknown.stderr.contains("no token named laptop"),
        "{unknown:?}"
    );
}

#[test]
fn a_node_that_cannot_reach_nats_says_so_and_exits_1() {
    let dir = temp_dir();
    let unreachable = format!("nats://127.0.0.1:{}", support::closed_port());
    let mut cmd = command("illumitunnel-relay", dir.path());
    cmd.args(["--http", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("relay"))
        .args(["--cluster", &unreachable, "--node-id", "a"]);
    let finished = ChildGuard::run(cmd);
    assert_eq!(finished.code(), 1, "{finished:?}");
    assert!(
        finished
            .stderr
            .contains(&format!("error: could not reach NATS at {unreachable}"))
            && finished
                .stderr
                .contains("start nats-server with JetStream (-js) or fix --cluster"),
        "{finished:?}"
    );

    let mut cmd = command("illumitunnel-relay", dir.path());
    cmd.args(["--http", "--cluster", &unreachable]);
    let finished = ChildGuard::run(cmd);
    assert_eq!(finished.code(), 2, "{finished:?}");
    assert!(
        finished.stderr.contains("--cluster needs --node-id NAME"),
        "{finished:?}"
    );

    let mut cmd = command("illumitunnel-relay", dir.path());
    cmd.args(["token", "list", "--cluster", &unreachable]);
    let finished = ChildGuard::run(cmd);
    assert_eq!(finished.code(), 1, "{finished:?}");
    assert!(
        finished
            .stderr
            .contains("could not reach the cluster's tokens in NATS"),
        "{finished:?}"
    );
}

#[test]
fn losing_one_of_three_nats_servers_loses_nothing_queued() {
    let rt = runtime();
    let mut nats = NatsCluster::start(3);
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
        "sturdy",
        &listen_extra,
    );
    listen.guard.kill_now();
    eventually(Duration::from_secs(10), "the session to end", || {
        metric(&rt, &nodes[0].url(), "illumitunnel_sessions") == Some(0.0)
    });

    // Each delivery is sent until a node accepts it (202); a 503 while the nodes move to
    // another NATS server is a refusal the sender repeats.
    let accept = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        for attempt in 0.. {
            if Instant::now() > deadline {
                break;
            }
            let node = &nodes[(n + attempt) % 2];
            let response = Request::post(&node.tunnel_url("sturdy"))
                .body(body(n))
                .send(&rt);
            match response.status {
                202 => return,
                503 => std::thread::sleep(Duration::from_millis(100)),
                other => panic!("delivery {n}: {other} {}", response.text()),
            }
        }
        panic!("delivery {n} was never accepted");
    };
    (0..20).for_each(accept);
    nats.servers[0].kill();
    (20..40).for_each(accept);

    let mut args = vec!["--json"];
    args.extend_from_slice(&listen_extra);
    listen.respawn(Some(&nodes[1].url()), &target.url(HOOK), "sturdy", &args);
    // A 503 whose publish JetStream stored after all may arrive twice (the sender repeated
    // it); what counts is that every body arrives, first arrivals in order.
    let first_arrivals = || {
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for request in target.requests() {
            if !bodies.contains(&request.body) {
                bodies.push(request.body);
            }
        }
        bodies
    };
    eventually(DRAIN, "all 40 deliveries to arrive", || {
        first_arrivals().len() >= 40
    });
    let want: Vec<Vec<u8>> = (0..40).map(body).collect();
    assert_eq!(
        first_arrivals(),
        want,
        "lost or reordered after a NATS server died"
    );
}
