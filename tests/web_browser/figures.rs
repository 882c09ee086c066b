//! Figures for the benchmark notes, printed and never asserted: how long after the local
//! handler answers a delivery its row shows in the browser (p50/p99 of 200, one at a time), the
//! page's first render with 100,000 stored deliveries, and the memory `listen` adds with the
//! inspector and a page open. Run by hand:
//! `cargo test -p illumitunnel --test web_browser figures -- --ignored --nocapture`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::support::sender::Request;
use super::support::store::fill_store;
use super::support::target::{Reply, Target};
use super::support::webdriver::Browser;
use super::support::{closed_port, poll_until, runtime, Listen, Relay};

const DELIVERIES: usize = 200;
const STORED: usize = 100_000;

/// Wall-clock milliseconds, as `performance.timeOrigin + performance.now()` counts them.
fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// VmRSS and VmHWM of `pid`, KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentiles(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: usize| ms[(ms.len() * q / 100).min(ms.len() - 1)];
    format!(
        "n={} p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        at(50),
        at(90),
        at(99),
        ms[ms.len() - 1]
    )
}

/// Sends `DELIVERIES` webhooks one after the other to `url` + `/bench/N`.
fn send_all(rt: &tokio::runtime::Runtime, url: &str) {
    for i in 0..DELIVERIES {
        let sent = Request::post(&format!("{url}/bench/{i}"))
            .header("content-type", "application/json")
            .body(format!(
                "{{\"event\":\"ticket.updated\",\"data\":{{\"id\":\"tkt_{i}\",\"status\":\"open\"}}}}"
            ))
            .send(rt);
        assert_eq!(sent.status, 200, "{}", sent.text());
    }
}

#[test]
#[ignore = "prints figures; run by hand"]
fn figures() {
    let rt = runtime();
    let relay = Relay::http(&[]);

    // Without the inspector: the baseline memory for the same deliveries.
    let quiet_target = Target::ok(&rt);
    let quiet = Listen::start(
        Some(&relay.url),
        &quiet_target.url("/hooks"),
        "web-figures-quiet",
        &["--no-inspect"],
    );
    send_all(&rt, &quiet.url);
    quiet.deliveries(DELIVERIES);
    let (quiet_rss, quiet_hwm) = memory_kib(quiet.guard.pid());
    drop(quiet);

    // With the inspector and a page following it: the handler notes when it answered each path.
    let answered: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let notes = Arc::clone(&answered);
    let target = Target::start(&rt, move |req| {
        notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req.path.clone(), wall_ms());
        Reply::ok()
    });
    let port = closed_port();
    let addr = format!("127.0.0.1:{port}");
    let mut listen = Listen::start(
        Some(&relay.url),
        &target.url("/hooks"),
        "web-figures",
        &["--inspect", &addr],
    );
    let page = format!("http://{addr}/");
    let (idle_rss, _) = memory_kib(listen.guard.pid());
    let browser = Browser::start(false);
    browser.goto(&page);
    browser.find("#live.on");
    // Each row's arrival time, by the path it shows.
    browser.js(
        "window.rowAt = {}; new MutationObserver(ms => { const t = performance.timeOrigin + \
         performance.now(); for (const m of ms) for (const n of m.addedNodes) { \
         const r = n.querySelector && n.querySelector('.req'); \
         if (r) window.rowAt[r.textContent] = t; } }).observe(document.getElementById('list'), \
         {childList: true});",
        vec![],
    );
    // A plain stream client beside the browser: when each event leaves the server's stream.
    let streamed: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let follower = rt.spawn(follow_stream(addr.clone(), Arc::clone(&streamed)));
    poll_until("the stream client", Duration::from_secs(10), || {
        if streamed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key("")
        {
            Ok(())
        } else {
            Err("not connected".into())
        }
    });
    send_all(&rt, &listen.url);
    let rows = browser.wait_js(
        "every row",
        "return Object.keys(window.rowAt).length >= arguments[0] && window.rowAt;",
        vec![json!(DELIVERIES)],
    );
    poll_until(
        "every event on the stream client",
        Duration::from_secs(10),
        || {
            let n = streamed.lock().unwrap_or_else(|e| e.into_inner()).len();
            if n > DELIVERIES {
                Ok(())
            } else {
                Err(format!("{n} events"))
            }
        },
    );
    follower.abort();
    let answered = answered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let streamed = streamed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (mut delays, mut to_stream, mut stream_to_row) = (Vec::new(), Vec::new(), Vec::new());
    for (shown, at) in rows.as_object().expect("an object") {
        let path = shown.trim_start_matches("POST ").to_string();
        if let (Some(answer), Some(event), Some(row)) =
            (answered.get(&path), streamed.get(&path), at.as_f64())
        {
            delays.push(row - answer);
            to_stream.push(event - answer);
            stream_to_row.push(row - event);
        }
    }
    let (open_rss, open_hwm) = memory_kib(listen.guard.pid());
    eprintln!(
        "handler answered → row in the browser, {DELIVERIES} one at a time: {}",
        percentiles(delays)
    );
    eprintln!(
        "  of which handler answered → event read by a plain stream client: {}",
        percentiles(to_stream)
    );
    eprintln!(
        "  and event at the plain client → row in the browser: {}",
        percentiles(stream_to_row)
    );
    eprintln!(
        "listen after {DELIVERIES} deliveries: --no-inspect VmRSS {:.1} MiB (VmHWM {:.1}); \
         inspector idle before the page {:.1} MiB; page open and following {:.1} MiB (VmHWM {:.1})",
        quiet_rss as f64 / 1024.0,
        quiet_hwm as f64 / 1024.0,
        idle_rss as f64 / 1024.0,
        open_rss as f64 / 1024.0,
        open_hwm as f64 / 1024.0
    );

    // 100,000 stored: the same listen restarted on a full capture store.
    listen.guard.kill_now();
    let filling = Instant::now();
    // Older than everything live, in the order filled.
    fill_store(&listen.store, STORED, "/hooks", 3_600_000);
    eprintln!(
        "filled the store with {STORED} more in {:.1?}",
        filling.elapsed()
    );
    listen.respawn(
        Some(&relay.url),
        &target.url("/hooks"),
        "web-figures",
        &["--json", "--inspect", &addr],
    );
    listen.wait_connected();
    let mut renders = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        browser.goto(&page);
        let mark = browser.wait_js(
            "the first rows",
            "const m = performance.getEntriesByName('rows-rendered')[0]; return m && m.startTime;",
            vec![],
        );
        let rows = browser.js(
            "return document.querySelectorAll('#list .row').length;",
            vec![],
        );
        assert_eq!(rows, json!(100), "one page of rows, not the store");
        renders.push(mark.as_f64().unwrap_or(f64::NAN));
        eprintln!(
            "  navigation to first rows {:.0?} (WebDriver round trips included)",
            start.elapsed()
        );
    }
    eprintln!(
        "first render with {} stored (navigation start → first 100 rows): {}",
        STORED + DELIVERIES,
        percentiles(renders)
    );
    // Scrolling to the end of the loaded rows fetches the next page only.
    let before = browser.js(
        "return document.querySelectorAll('#list .row').length;",
        vec![],
    );
    browser.js(
        "const l = document.getElementById('list'); l.scrollTop = l.scrollHeight;",
        vec![],
    );
    let after = poll_until(
        "the second page",
        Duration::from_secs(10),
        || match browser.js(
            "return document.querySelectorAll('#list .row').length;",
            vec![],
        ) {
            Value::Number(n) if n.as_u64() > before.as_u64() => Ok(n),
            other => Err(other.to_string()),
        },
    );
    let (full_rss, full_hwm) = memory_kib(listen.guard.pid());
    eprintln!(
        "rows after one scroll: {before} → {after}; listen with {STORED} stored and the page open: \
         VmRSS {:.1} MiB (VmHWM {:.1})",
        full_rss as f64 / 1024.0,
        full_hwm as f64 / 1024.0
    );
}

/// Reads `GET /api/stream` on `addr` and notes when each delivery's event arrived, by path
/// (the key "" once the stream is open).
async fn follow_stream(addr: String, seen: Arc<Mutex<HashMap<String, f64>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head =
        format!("GET /api/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let now = wall_ms();
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        if line.starts_with("retry:") {
            seen.insert(String::new(), now);
        }
        // Chunked framing lines are skipped: only `data:` lines are events.
        if let Some(json) = line.strip_prefix("data: ") {
            if let Ok(item) = serde_json::from_str::<Value>(json) {
                if let Some(path) = item["path"].as_str() {
                    seen.entry(path.to_string()).or_insert(now);
                }
            }
        }
    }
}
