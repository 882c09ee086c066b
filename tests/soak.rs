//! Soak: 10,000 IllumiChat deliveries at a steady rate while the client is SIGKILLed and
//! restarted five times and the relay once (same data dir and port), then a count of what the
//! local server received. Run by hand (it takes about a minute):
//!
//! ```text
//! cargo build --release -p illumitunnel-relay -p illumitunnel-client
//! cargo test --release -p illumitunnel --test soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_TOTAL` (default 10000) and `SOAK_RATE` (deliveries a second, default 200) change the
//! load. The sender behaves like IllumiChat: a delivery that got no answer or a 5xx is sent
//! again (up to [`MAX_ATTEMPTS`] times). Lost = sent, never received by the local server, and
//! never refused with a 4xx; it must be 0.

#![allow(clippy::print_stdout)] // the figures are this test's output

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::sink::Sink;
use support::{closed_port, runtime, temp_dir, Listen, Relay};

/// Attempts per delivery before the sender gives up on it.
const MAX_ATTEMPTS: u32 = 50;
/// Pause between attempts.
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// Longest one attempt may take (the relay's response timeout is 25 s).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the queue may take to drain after the last send.
const DRAIN: Duration = Duration::from_secs(120);
const KEEPALIVE_MS: &str = "1000";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn body(n: usize) -> Vec<u8> {
    format!(
        r#"{{"event":"chat.message.created","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_abc123","data":{{"id":"msg_{n:06}","sessionId":"ses_q1w2e3","role":"visitor","content":"soak message {n}"}}}}"#
    )
    .into_bytes()
}

/// One attempt; `None` when the connection failed or no answer came.
async fn attempt(addr: &str, path: &str, body: Vec<u8>) -> Option<u16> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        let request = http::Request::post(path)
            .header(http::header::HOST, addr)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        response.into_body().collect().await.ok()?;
        Some(status)
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// Sends one delivery like IllumiChat: again after no answer or a 5xx. Returns the last status
/// (`None`: never answered) and the number of attempts.
async fn deliver(addr: String, path: String, body: Vec<u8>) -> (Option<u16>, u32) {
    let mut last = None;
    for n in 1..=MAX_ATTEMPTS {
        last = attempt(&addr, &path, body.clone()).await;
        if matches!(last, Some(s) if s < 500) {
            return (last, n);
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
    (last, MAX_ATTEMPTS)
}

#[test]
#[ignore = "soak: about a minute; run with --release -- --ignored --nocapture"]
fn soak_ten_thousand_deliveries_through_client_and_relay_kills() {
    let total = env_or("SOAK_TOTAL", 10_000);
    let rate = env_or("SOAK_RATE", 200).max(1);
    let rt = runtime();
    let sink = Sink::start(&rt);
    let data = temp_dir();
    let relay_addr = format!("127.0.0.1:{}", closed_port());
    let relay_args = [
        "--http",
        "--allow-anonymous",
        "--keepalive-ms",
        KEEPALIVE_MS,
    ];
    let mut relay = Relay::start_at(data.path(), &relay_addr, &relay_args);
    let forward = sink.url("/webhooks/illumichat");
    let listen_args = ["--json", "--keepalive-ms", KEEPALIVE_MS];
    let mut listen = Listen::start(Some(&relay.url), &forward, "soak", &listen_args[1..]);
    let path = "/t/soak/".to_string();

    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let sender = {
        let sent = Arc::clone(&sent);
        let addr = relay_addr.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::with_capacity(total);
            for n in 0..total {
                tick.tick().await;
                tasks.push(tokio::spawn(deliver(addr.clone(), path.clone(), body(n))));
                sent.fetch_add(1, Ordering::SeqCst);
            }
            let mut results = Vec::with_capacity(total);
            for task in tasks {
                results.push(task.await.unwrap_or((None, 0)));
            }
            results
        })
    };

    // Five client kills spread over the run, the relay kill in the middle.
    let mut kills: Vec<(usize, &str)> = [1, 3, 5, 7, 9]
        .iter()
        .map(|k| (total * k / 11, "client"))
        .collect();
    kills.push((total * 6 / 11, "relay"));
    kills.sort_unstable();
    for (at, what) in kills {
        while sent.load(Ordering::SeqCst) < at {
            assert!(
                started.elapsed() < Duration::from_secs(3600),
                "the sender stalled"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let kill = Instant::now();
        if what == "client" {
            listen.respawn(Some(&relay.url), &forward, "soak", &listen_args);
        } else {
            relay.guard.kill_now();
            relay = Relay::start_at(data.path(), &relay_addr, &relay_args);
        }
        println!(
            "killed the {what} after {at} sent; back in {:?}",
            kill.elapsed()
        );
    }

    let results = rt.block_on(sender).expect("sender");
    let sending = started.elapsed();
    let want: Vec<Vec<u8>> = (0..total).map(body).collect();
    let missing = sink.received.wait_for_all(&want, DRAIN);
    let drained = started.elapsed();
    let counts = sink.received.counts();

    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut attempts = 0u64;
    let mut lost = 0;
    for (n, (status, tries)) in results.iter().enumerate() {
        attempts += u64::from(*tries);
        let key = status.map_or("no answer".to_string(), |s| s.to_string());
        *by_status.entry(key).or_default() += 1;
        let refused = matches!(status, Some(s) if (400..500).contains(s));
        if !counts.contains_key(&body(n)) && !refused {
            lost += 1;
        }
    }
    let received = want.iter().filter(|b| counts.contains_key(*b)).count();
    let duplicates = want
        .iter()
        .filter(|b| counts.get(*b).is_some_and(|c| *c > 1))
        .count();
    let extra_copies: u32 = counts.values().map(|c| c.saturating_sub(1)).sum();
    println!("soak: {total} deliveries at {rate}/s, client killed 5 times, relay once");
    println!("  sent               {total} ({attempts} attempts)");
    println!("  answered by status {by_status:?} (last answer per delivery)");
    println!("  received           {received} unique bodies");
    println!("  duplicates         {duplicates} bodies received more than once ({extra_copies} extra copies)");
    println!("  lost               {lost}");
    println!(
        "  sending took {:.1} s; all received after {:.1} s",
        sending.as_secs_f64(),
        drained.as_secs_f64()
    );
    assert!(
        missing.is_empty() || lost == 0,
        "{} bodies never arrived",
        missing.len()
    );
    assert_eq!(lost, 0, "deliveries were lost");
    drop(listen);
}
