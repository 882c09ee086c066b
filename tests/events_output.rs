//! `events` line output against the real `illumitunnel` binary: a header row, fixed columns that
//! hold for `chat.*` event names, dates for deliveries not from today, the inspector's marks and
//! durations; `--json` keeps its field names. And IllumiChat's retries through a tunnel (a relay,
//! `listen`, a handler that fails twice, `trigger --retries illumichat`) read `retry N`, while a
//! true duplicate stays `dup`.

// Helpers here are test code too; `allow-unwrap-in-tests` only covers `#[test]` functions.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::store::CaptureStore;
use illumitunnel::{now_ms, Delivery, DeliveryId};
use serde_json::Value;
use support::{after, command, temp_dir, ChildGuard, Finished, Listen, Relay, Stream};

fn run(home: &Path, args: &[&str]) -> Finished {
    let mut cmd = command("illumitunnel", home);
    cmd.args(args).env("TZ", "UTC");
    ChildGuard::run(cmd)
}

fn delivery(event: &str, resource: &str, at_ms: i64, status: u16, duration_us: i64) -> Delivery {
    let body = format!(
        r#"{{"event":"{event}","timestamp":"{at_ms}","workspaceId":"ws_1","data":{{"id":"{resource}"}}}}"#
    );
    let mut d = Delivery::new(
        DeliveryId::generate(),
        at_ms,
        Source::Tunnel,
        RequestRecord {
            method: "POST".into(),
            path: "/webhooks/illumichat".into(),
            query: String::new(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Bytes::from(body),
        },
    );
    d.target = "http://127.0.0.1:3000/webhooks/illumichat".into();
    d.response = Some(ResponseRecord {
        status,
        headers: vec![],
        body: Bytes::from_static(b"ok"),
    });
    d.duration_us = duration_us;
    d
}

/// Byte offsets where each column of `header` starts (two spaces before a name).
fn column_starts(header: &str) -> Vec<usize> {
    let mut starts = vec![0];
    let bytes = header.as_bytes();
    for i in 2..bytes.len() {
        if bytes[i - 1] == b' ' && bytes[i - 2] == b' ' && bytes[i] != b' ' {
            starts.push(i);
        }
    }
    starts
}

#[test]
fn events_lines_have_a_header_dates_marks_and_fixed_columns() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    let now = now_ms();
    let yesterday = now - 26 * 3_600_000;
    let mut rows = vec![
        // Oldest first: yesterday's ticket, answered in 312 ms.
        delivery("ticket.created", "tkt_1", yesterday, 200, 312_000),
        // Today: a chat event answered after 15 s, so a failure IllumiChat retries.
        delivery(
            "chat.message.created",
            "msg_0123456789abcdef",
            now,
            200,
            15_004_000,
        ),
        delivery(
            "chat.message.created",
            "msg_0123456789abcdef",
            now,
            200,
            2_000,
        ),
        delivery("chat.session.created", "ses_1", now, 200, 1_500),
        delivery("chat.session.created", "ses_1", now, 200, 1_500),
    ];
    rows[3].source = Source::Trigger;
    let mut replay = delivery("lead.captured", "lead_1", now, 500, 40_000);
    replay.source = Source::Replay;
    replay.replay_of = Some(rows[0].id.clone());
    rows.push(replay);
    CaptureStore::open(&store)
        .unwrap()
        .insert_batch(&mut rows)
        .unwrap();
    let store = store.to_str().unwrap();

    let out = run(home.path(), &["events", "--store", store]);
    assert_eq!(out.code(), 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "a header and six rows:\n{}", out.stdout);
    let header = lines[0];
    let names: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        names,
        ["ID", "TIME", "EVENT", "RESOURCE", "REQUEST", "STATUS", "LATENCY", "MARKS"],
        "{header}"
    );
    // Every row's cells start where the header's names do (LATENCY is right-aligned, so it and
    // MARKS are checked by their ends), whatever the event name's length.
    let starts = column_starts(header);
    for line in &lines[1..] {
        let cells: Vec<char> = line.chars().collect();
        let at = |from: usize, to: usize| -> String {
            cells[from.min(cells.len())..to.min(cells.len())]
                .iter()
                .collect()
        };
        for (n, &start) in starts.iter().enumerate().take(6) {
            assert!(
                start == 0 || at(start - 2, start) == "  " && at(start, start + 1) != " ",
                "column {} does not start at {start} in\n{header}\n{line}",
                names[n]
            );
        }
        let latency_end = starts[6] + "LATENCY".len();
        assert!(
            cells.len() == latency_end || at(latency_end, latency_end + 2) == "  ",
            "LATENCY does not end at {latency_end} in\n{header}\n{line}"
        );
        assert_ne!(at(latency_end - 1, latency_end), " ", "{line}");
    }
    let newest_first: Vec<&str> = lines[1..].to_vec();
    let (replayed, dup_chat, chat_trigger, chat_retry, chat_first, ticket) = (
        newest_first[0],
        newest_first[1],
        newest_first[2],
        newest_first[3],
        newest_first[4],
        newest_first[5],
    );
    let day = time::OffsetDateTime::from_unix_timestamp(yesterday / 1000)
        .unwrap()
        .date()
        .to_string();
    assert!(
        ticket.contains(&format!("  {day} ")),
        "yesterday's delivery shows its date:\n{ticket}"
    );
    for today in &newest_first[..5] {
        assert!(!today.contains(&day), "today shows the time only:\n{today}");
    }
    assert!(ticket.contains("  312ms"), "{ticket}");
    assert!(
        chat_first
            .contains("  chat.message.created  msg_0123456789a…  POST /webhooks/illumichat  "),
        "{chat_first}"
    );
    assert!(
        chat_first.contains("  15.0s"),
        "the inspector's format: {chat_first}"
    );
    assert!(!chat_first.contains("15004ms"), "{chat_first}");
    assert!(chat_retry.ends_with("  retry 1"), "{chat_retry}");
    assert!(chat_trigger.ends_with("  trigger"), "{chat_trigger}");
    assert!(dup_chat.ends_with("  dup"), "{dup_chat}");
    assert!(
        replayed.ends_with(&format!("  replay  replay of {}", rows[0].id)),
        "{replayed}"
    );

    // `--json` keeps its field names (and adds `retry`).
    let json = run(home.path(), &["events", "--json", "--store", store]);
    assert_eq!(json.code(), 0, "{json:?}");
    let objects: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 6);
    let keys: Vec<&str> = objects[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "received_at",
            "event",
            "resource_id",
            "method",
            "path",
            "status",
            "duration_ms",
            "duplicate",
            "retry",
            "skipped",
            "queued",
            "source",
            "replay_of",
            "target",
            "error"
        ]
    );
    assert_eq!(objects[3]["retry"], 1);
    assert_eq!(objects[3]["duplicate"], false);
    assert_eq!(objects[1]["duplicate"], true);
    assert_eq!(objects[1]["retry"], Value::Null);
}

/// The test handler, running.
fn handler(args: &[&str]) -> (ChildGuard, String) {
    let mut cmd = Command::new(support::bin("illumitunnel-test-handler"));
    cmd.args(args);
    let guard = ChildGuard::spawn(cmd);
    let line = guard.wait_for_text(Stream::Stdout, "listening on ");
    let url = after(&line, "listening on ").to_string();
    (guard, url)
}

#[test]
fn retries_through_a_tunnel_read_retry_n_and_a_true_duplicate_stays_dup() {
    let relay = Relay::http(&[]);
    let (_handler, url) = handler(&["--fail-first", "2"]);
    let to = format!("{url}/webhooks/illumichat");
    let listen = Listen::start(Some(&relay.url), &to, "retries", &[]);

    // Two failures, then a 2xx: the first attempt and two retries, 1 s and 5 s apart (--speed 60).
    let mut cmd = command("illumitunnel", listen.home());
    cmd.args([
        "trigger",
        "ticket.created",
        "--url",
        &listen.url,
        "--retries",
        "illumichat",
        "--speed",
        "60",
    ]);
    let out = ChildGuard::run(cmd);
    assert_eq!(out.code(), 0, "{out:?}");
    // The same delivery twice, both answered 200: the second is a true duplicate.
    let mut cmd = command("illumitunnel", listen.home());
    cmd.args([
        "trigger",
        "lead.captured",
        "--url",
        &listen.url,
        "--duplicate",
    ]);
    let out = ChildGuard::run(cmd);
    assert_eq!(out.code(), 0, "{out:?}");
    let seen = listen.deliveries(5);
    let statuses: Vec<&Value> = seen.iter().map(|d| &d["status"]).collect();
    assert_eq!(statuses, [500, 500, 200, 200, 200], "{seen:?}");

    let events = listen.client(&["events", "--json"]);
    assert_eq!(events.code(), 0, "{events:?}");
    let mut rows: Vec<Value> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.reverse();
    let marks: Vec<(Value, Value)> = rows
        .iter()
        .map(|d| (d["retry"].clone(), d["duplicate"].clone()))
        .collect();
    assert_eq!(
        marks,
        [
            (Value::Null, false.into()),
            (1.into(), false.into()),
            (2.into(), false.into()),
            (Value::Null, false.into()),
            (Value::Null, true.into()),
        ],
        "{rows:?}"
    );

    let lines = listen.client(&["events"]);
    assert_eq!(lines.code(), 0, "{lines:?}");
    let rows: Vec<&str> = lines.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{}", lines.stdout);
    assert!(rows[0].ends_with("  trigger dup"), "{}", lines.stdout);
    assert!(rows[1].ends_with("  trigger"), "{}", lines.stdout);
    assert!(rows[2].ends_with("  trigger retry 2"), "{}", lines.stdout);
    assert!(rows[3].ends_with("  trigger retry 1"), "{}", lines.stdout);
    assert!(rows[4].ends_with("  trigger"), "{}", lines.stdout);
    assert!(!lines.stdout.contains("retry 1 dup"), "{}", lines.stdout);
}
