//! Faults, end to end with real processes: a client killed mid-burst, a relay killed and
//! restarted on its data dir, a local server that goes down and comes back, a client frozen
//! past the keepalive (a sleeping laptop), a full queue, expiry, failover between two
//! listeners, and ownership after a relay restart. The promise under test: every webhook the
//! relay accepted (200 from the local server, or 202 queued) reaches the local server.

mod support;

use std::time::{Duration, Instant};

use support::sender::Request;
use support::sink::Sink;
use support::target::{Reply, Target};
use support::{
    closed_port, command, runtime, temp_dir, wait_for_metric, ChildGuard, Listen, Relay, Stream,
};

const HOOK: &str = "/webhooks/illumichat";
/// How long a test waits for queued deliveries to drain to the local server.
const DRAIN: Duration = Duration::from_secs(30);
/// Short keepalive on both sides, so dead connections are found in well under a second.
const KEEPALIVE_MS: &str = "300";

fn body(n: usize) -> Vec<u8> {
    format!(
        r#"{{"event":"ticket.created","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_abc123","data":{{"id":"tkt_{n:05}"}}}}"#
    )
    .into_bytes()
}

/// A free loopback port, for a relay that must come back on the same address.
fn fixed_listen() -> String {
    format!("127.0.0.1:{}", closed_port())
}

fn queued_id(response: &support::sender::Response) -> String {
    assert_eq!(response.status, 202, "{}", response.text());
    let json = response.json();
    assert_eq!(json["queued"], true, "{json}");
    json["id"].as_str().expect("a delivery id").to_string()
}

#[test]
fn client_killed_three_times_during_a_burst_loses_nothing() {
    let rt = runtime();
    let sink = Sink::start(&rt);
    let relay = Relay::http(&["--keepalive-ms", KEEPALIVE_MS]);
    let extra = ["--json", "--keepalive-ms", KEEPALIVE_MS];
    let forward = sink.url(HOOK);
    let mut listen = Listen::start(Some(&relay.url), &forward, "burst", &extra[1..]);
    let url = listen.url.clone();

    const TOTAL: usize = 300;
    // How many senders have their answer; the kills below wait on it instead of on a clock.
    let (answered, mut progress) = tokio::sync::watch::channel(0usize);
    let statuses = {
        let url = url.clone();
        rt.spawn(async move {
            let mut statuses = Vec::with_capacity(TOTAL);
            // Sixteen senders at a time, in order of delivery number.
            for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(16) {
                let sends: Vec<_> = chunk
                    .iter()
                    .map(|n| tokio::spawn(Request::post(&url).body(body(*n)).send_async()))
                    .collect();
                for send in sends {
                    let response = send.await.expect("sender task");
                    statuses.push(response.status);
                    answered.send_modify(|n| *n += 1);
                }
            }
            statuses
        })
    };
    for kill_at in [60, 140, 220] {
        let reached = rt.block_on(async {
            let wait = progress.wait_for(|n| *n >= kill_at);
            matches!(tokio::time::timeout(DRAIN, wait).await, Ok(Ok(_)))
        });
        assert!(
            reached,
            "the burst stalled before {kill_at} answers (at {})",
            *progress.borrow()
        );
        listen.respawn(Some(&relay.url), &forward, "burst", &extra);
    }
    let statuses = rt.block_on(statuses).expect("senders");
    assert_eq!(statuses.len(), TOTAL);
    let bad: Vec<&u16> = statuses
        .iter()
        .filter(|s| !matches!(s, 200 | 202))
        .collect();
    assert!(bad.is_empty(), "senders got {bad:?}");
    assert!(
        statuses.contains(&202),
        "no delivery was queued: the kills missed the burst"
    );

    let want: Vec<Vec<u8>> = (0..TOTAL).map(body).collect();
    let missing = sink.received.wait_for_all(&want, DRAIN);
    assert!(
        missing.is_empty(),
        "{} of {TOTAL} bodies never reached the local server, e.g. {}",
        missing.len(),
        String::from_utf8_lossy(&missing[0])
    );
}

#[test]
fn the_queue_survives_a_relay_sigkill_and_restart() {
    let rt = runtime();
    let sink = Sink::start(&rt);
    let data = temp_dir();
    let listen_addr = fixed_listen();
    let args = ["--http", "--allow-anonymous"];
    let mut relay = Relay::start_at(data.path(), &listen_addr, &args);
    let forward = sink.url(HOOK);
    let mut listen = Listen::start(Some(&relay.url), &forward, "survivor", &[]);
    listen.guard.kill_now();

    let ids: Vec<String> = (0..5)
        .map(|n| queued_id(&Request::post(&listen.url).body(body(n)).send(&rt)))
        .collect();
    relay.guard.kill_now();

    let relay = Relay::start_at(data.path(), &listen_addr, &args);
    // Known after the restart with no client since: queued, not "unknown tunnel".
    let last = queued_id(&Request::post(&listen.url).body(body(5)).send(&rt));
    assert!(!ids.contains(&last));
    listen.respawn(Some(&relay.url), &forward, "survivor", &["--json"]);
    let connected = listen
        .guard
        .wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    assert!(
        connected.contains("6 queued deliveries follow"),
        "{connected}"
    );
    let want: Vec<Vec<u8>> = (0..6).map(body).collect();
    assert!(sink.received.wait_for_all(&want, DRAIN).is_empty());
    let shown = listen.deliveries(6);
    assert!(shown.iter().all(|d| d["id"].is_string()));
    let mut shown_ids: Vec<&str> = shown.iter().filter_map(|d| d["id"].as_str()).collect();
    shown_ids.sort_unstable();
    let mut sent: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .chain([last.as_str()])
        .collect();
    sent.sort_unstable();
    assert_eq!(shown_ids, sent, "the relay's ids are the recorded ids");
}

#[test]
fn a_local_server_down_then_up_gets_502s_recorded_then_deliveries() {
    let rt = runtime();
    let mut sink = Sink::start(&rt);
    let relay = Relay::http(&[]);
    let listen = Listen::start(Some(&relay.url), &sink.url(HOOK), "flaky", &[]);
    sink.stop();
    for n in 0..3 {
        let response = Request::post(&listen.url).body(body(n)).send(&rt);
        assert_eq!(response.status, 502, "{}", response.text());
        assert!(
            response.error().contains("connection refused"),
            "{}",
            response.error()
        );
    }
    sink.resume(&rt);
    for n in 3..6 {
        let response = Request::post(&listen.url).body(body(n)).send(&rt);
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let shown = listen.deliveries(6);
    let failed = shown.iter().filter(|d| d["error"].is_string()).count();
    assert_eq!(
        failed, 3,
        "the 502s are recorded with their error: {shown:?}"
    );
    let counts = sink.received.counts();
    assert_eq!(counts.len(), 3);
    let events = listen.client(&["events", "--json"]);
    assert_eq!(events.code(), 0, "{}", events.stderr);
    assert_eq!(events.stdout.lines().count(), 6, "{}", events.stdout);
}

#[test]
fn a_client_frozen_past_the_keepalive_reconnects_on_resume_and_gets_what_was_queued() {
    let rt = runtime();
    let sink = Sink::start(&rt);
    let relay = Relay::http(&["--keepalive-ms", KEEPALIVE_MS]);
    let listen = Listen::start(
        Some(&relay.url),
        &sink.url(HOOK),
        "sleepy",
        &["--keepalive-ms", KEEPALIVE_MS],
    );
    listen.guard.signal("STOP");
    // The freeze lasts until the relay has given up on the silent session, which its metrics
    // show, rather than for a guessed time.
    wait_for_metric(&rt, &relay, "illumitunnel_sessions 0");
    let started = Instant::now();
    let ids: Vec<String> = (0..3)
        .map(|n| queued_id(&Request::post(&listen.url).body(body(n)).send(&rt)))
        .collect();
    assert!(started.elapsed() < Duration::from_secs(5));

    let resumed = Instant::now();
    listen.guard.signal("CONT");
    let lines = listen.guard.wait_for_lines(Stream::Stderr, 2, |l| {
        l.trim_start().starts_with("connected")
    });
    let reconnected = resumed.elapsed();
    assert!(
        lines[1].contains("3 queued deliveries follow"),
        "{}",
        lines[1]
    );
    // One keepalive interval plus the handshake, with room for a loaded 2-core machine.
    assert!(
        reconnected < Duration::from_millis(300 + 700),
        "reconnected {reconnected:?} after resuming"
    );
    let want: Vec<Vec<u8>> = (0..3).map(body).collect();
    assert!(sink.received.wait_for_all(&want, DRAIN).is_empty());
    // The relay sends them in arrival order; the client forwards deliveries concurrently.
    let mut shown: Vec<String> = listen
        .deliveries(3)
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect();
    shown.sort_unstable();
    let mut ids = ids;
    ids.sort_unstable();
    assert_eq!(shown, ids);
}

#[test]
fn a_full_queue_answers_503_and_aged_deliveries_expire() {
    let rt = runtime();
    let sink = Sink::start(&rt);
    let relay = Relay::http(&["--queue-max-count", "2"]);
    let mut listen = Listen::start(Some(&relay.url), &sink.url(HOOK), "capped", &[]);
    listen.guard.kill_now();
    queued_id(&Request::post(&listen.url).body(body(0)).send(&rt));
    queued_id(&Request::post(&listen.url).body(body(1)).send(&rt));
    let full = Request::post(&listen.url).body(body(2)).send(&rt);
    assert_eq!(full.status, 503);
    assert!(
        full.error()
            .starts_with("the offline queue for tunnel capped is full (2 deliveries)"),
        "{}",
        full.error()
    );
    assert!(
        full.error().contains("--queue-max-count"),
        "{}",
        full.error()
    );
    let metrics = Request::new("GET", &format!("{}/metrics", relay.url)).send(&rt);
    assert!(
        metrics
            .text()
            .contains("illumitunnel_deliveries_total{outcome=\"rejected\"} 1"),
        "{}",
        metrics.text()
    );

    let relay = Relay::http(&["--queue-max-age", "1s"]);
    let forward = sink.url(HOOK);
    let mut listen = Listen::start(Some(&relay.url), &forward, "aging", &[]);
    listen.guard.kill_now();
    queued_id(&Request::post(&listen.url).body(body(10)).send(&rt));
    queued_id(&Request::post(&listen.url).body(body(11)).send(&rt));
    // The relay's own expiry pass drops them once they are older than a second; wait for its
    // count, so the client connects only after they have aged out.
    wait_for_metric(
        &rt,
        &relay,
        "illumitunnel_deliveries_total{outcome=\"expired\"} 2",
    );
    listen.respawn(Some(&relay.url), &forward, "aging", &[]);
    let connected = listen
        .guard
        .wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    assert!(
        connected.contains("2 queued deliveries expired"),
        "{connected}"
    );
    assert!(!sink.received.counts().contains_key(&body(10)));
}

#[test]
fn fan_out_then_failover_when_the_first_listener_leaves() {
    let rt = runtime();
    let first_target = Target::start(&rt, |_| Reply::ok().body("first"));
    let second_target = Target::start(&rt, |_| Reply::ok().body("second"));
    // Two listeners share a tunnel only as one owner (anonymous clients on separate machines
    // never do): the same token here.
    let dir = temp_dir();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "token-pair-33-b5e0c4a9f1d7\n").expect("write tokens");
    let tokens = tokens.to_str().expect("UTF-8 path");
    let relay = Relay::start(&["--http", "--tokens-file", tokens]);
    let token = ["--token", "token-pair-33-b5e0c4a9f1d7"];
    let mut first = Listen::start(Some(&relay.url), &first_target.url(HOOK), "pair", &token);
    let second = Listen::start(Some(&relay.url), &second_target.url(HOOK), "pair", &token);

    let response = Request::post(&first.url).body(body(0)).send(&rt);
    assert_eq!((response.status, response.text().as_str()), (200, "first"));
    first_target.wait_for_requests(1);
    second_target.wait_for_requests(1);

    first.guard.kill_now();
    let response = Request::post(&second.url).body(body(1)).send(&rt);
    assert_eq!((response.status, response.text().as_str()), (200, "second"));
    let got = second_target.wait_for_requests(2);
    assert_eq!(got[1].body, body(1));
    assert_eq!(first_target.requests().len(), 1);
}

#[test]
fn another_token_cannot_claim_an_owned_name_after_a_relay_restart() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let dir = temp_dir();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "token-alpha-11-c3f8a2e6d9b0\ntoken-bravo-22-e7a1d5c0b4f9\n",
    )
    .expect("write tokens");
    let tokens = tokens.to_str().expect("UTF-8 path").to_string();
    let data = dir.path().join("relay-data");
    let listen_addr = fixed_listen();
    let args = ["--http", "--tokens-file", tokens.as_str()];
    let mut relay = Relay::start_at(&data, &listen_addr, &args);
    let listen = |relay: &Relay, token: &str| {
        let home = temp_dir();
        let mut cmd = command("illumitunnel", home.path());
        cmd.args(["listen", "--relay", &relay.url, "--tunnel", "claimed"])
            .args(["--token", token, "--forward-to", &target.url(HOOK)])
            .args(["--no-tui", "--json", "--store"])
            .arg(home.path().join("captures.db"));
        (ChildGuard::spawn(cmd), home)
    };
    let (owner, _owner_home) = listen(&relay, "token-alpha-11-c3f8a2e6d9b0");
    owner.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    drop(owner);
    relay.guard.kill_now();

    let relay = Relay::start_at(&data, &listen_addr, &args);
    let (mut other, _other_home) = listen(&relay, "token-bravo-22-e7a1d5c0b4f9");
    assert_eq!(other.wait_for_exit().code(), Some(1), "{}", other.stderr());
    let stderr = other.stderr();
    assert!(
        stderr.contains("tunnel claimed belongs to another token"),
        "{stderr}"
    );
    // The owner's deliveries are still kept for it.
    let response = Request::post(&relay.tunnel_url("claimed"))
        .body(body(0))
        .send(&rt);
    queued_id(&response);
    let (owner, _owner_home) = listen(&relay, "token-alpha-11-c3f8a2e6d9b0");
    let connected =
        owner.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    assert!(
        connected.contains("1 queued deliveries follow"),
        "{connected}"
    );
    target.wait_for_requests(1);
}
