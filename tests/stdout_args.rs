//! `-` as a file argument means stdout, and `--json` says what was written, for `export` and
//! `suite save`, against the real `illumitunnel` binary (no file named `-` appears).

// Helpers here are test code too; `allow-unwrap-in-tests` only covers `#[test]` functions.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::store::CaptureStore;
use illumitunnel::{now_ms, Delivery, DeliveryId};
use serde_json::Value;
use support::{command, temp_dir, ChildGuard, Finished};

/// Runs the client in `dir` (its working directory and home) against `store`.
fn run(dir: &Path, store: &Path, args: &[&str]) -> Finished {
    let mut cmd = command("illumitunnel", dir);
    cmd.current_dir(dir).args(args).arg("--store").arg(store);
    ChildGuard::run(cmd)
}

/// Three answered deliveries, each with one secret header.
fn fill(store: &Path) {
    let mut rows: Vec<Delivery> = (0..3)
        .map(|i| {
            let body = format!(
                r#"{{"event":"ticket.created","timestamp":"2026-01-01T00:00:0{i}Z","workspaceId":"ws","data":{{"id":"tkt_{i}"}}}}"#
            );
            let mut d = Delivery::new(
                DeliveryId::generate(),
                now_ms() - 1_000 + i,
                Source::Tunnel,
                RequestRecord {
                    method: "POST".into(),
                    path: "/webhooks/illumichat".into(),
                    query: String::new(),
                    headers: vec![
                        ("content-type".into(), b"application/json".to_vec()),
                        ("authorization".into(), b"Bearer s3cret".to_vec()),
                    ],
                    body: Bytes::from(body),
                },
            );
            d.target = "http://127.0.0.1:3000/webhooks/illumichat".into();
            d.response = Some(ResponseRecord {
                status: 200,
                headers: vec![],
                body: Bytes::from_static(b"{\"ok\":true}"),
            });
            d.duration_us = 1_000;
            d
        })
        .collect();
    CaptureStore::open(store)
        .unwrap()
        .insert_batch(&mut rows)
        .unwrap();
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn a_dash_writes_exports_and_suites_to_stdout() {
    let dir = temp_dir();
    let store = dir.path().join("captures.db");
    fill(&store);

    let har = run(dir.path(), &store, &["export", "--har", "-"]);
    assert_eq!(har.code(), 0, "{har:?}");
    let log: Value = serde_json::from_str(&har.stdout).expect("stdout is the HAR");
    assert_eq!(log["log"]["entries"].as_array().unwrap().len(), 3);
    assert!(!har.stdout.contains("s3cret"), "secrets stay redacted");
    assert!(
        har.stderr.contains("exported 3 deliveries to stdout"),
        "{har:?}"
    );

    let jsonl = run(dir.path(), &store, &["export", "--jsonl", "-"]);
    assert_eq!(jsonl.code(), 0, "{jsonl:?}");
    let lines = json_lines(&jsonl.stdout);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["resource_id"], "tkt_0");

    let suite = run(dir.path(), &store, &["suite", "save", "-", "--last", "2"]);
    assert_eq!(suite.code(), 0, "{suite:?}");
    assert_eq!(json_lines(&suite.stdout).len(), 2, "{suite:?}");
    assert!(
        suite.stderr.contains("saved 2 deliveries to stdout"),
        "{suite:?}"
    );

    assert!(!dir.path().join("-").exists(), "a file named - was written");
}

#[test]
fn json_says_what_was_written() {
    let dir = temp_dir();
    let store = dir.path().join("captures.db");
    fill(&store);

    let out = run(
        dir.path(),
        &store,
        &["export", "--har", "bug.har", "--json"],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        json_lines(&out.stdout),
        [serde_json::json!({"path": "bug.har", "format": "har", "count": 3, "redacted": 3})],
        "{out:?}"
    );
    assert!(out.stderr.is_empty(), "{out:?}");
    assert!(dir.path().join("bug.har").is_file());

    let out = run(
        dir.path(),
        &store,
        &["suite", "save", "cases.jsonl", "--last", "2", "--json"],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        json_lines(&out.stdout),
        [serde_json::json!({"path": "cases.jsonl", "count": 2, "redacted": 2})],
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cases.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );

    // The export on stdout, the summary on stderr.
    let out = run(
        dir.path(),
        &store,
        &["export", "--jsonl", "-", "--json", "--include-secrets"],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(json_lines(&out.stdout).len(), 3);
    assert_eq!(
        json_lines(&out.stderr),
        [serde_json::json!({"path": "-", "format": "jsonl", "count": 3, "redacted": 0})],
        "{out:?}"
    );
}

/// Runs the client with `input` on its stdin; returns exit code, stdout and stderr.
fn run_with_stdin(dir: &Path, args: &[&str], input: &[u8]) -> (i32, String, String) {
    let mut cmd = command("illumitunnel", dir);
    cmd.current_dir(dir).args(args);
    let out = support::run_with_stdin(cmd, input);
    (out.code(), out.stdout, out.stderr)
}

#[test]
fn a_dash_reads_a_suite_and_a_trigger_payload_from_stdin() {
    let dir = temp_dir();
    let store = dir.path().join("captures.db");
    fill(&store);
    let suite = run(dir.path(), &store, &["suite", "save", "-", "--last", "2"]);
    assert_eq!(suite.code(), 0, "{suite:?}");

    // Nobody listens on the handler's port: both cases are read from stdin and fail (exit 1).
    let handler = format!("http://127.0.0.1:{}", support::closed_port());
    let args = ["test", "--suite", "-", "--forward-to", &handler, "--json"];
    let (code, stdout, stderr) = run_with_stdin(dir.path(), &args, suite.stdout.as_bytes());
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        json_lines(&stdout).len(),
        2,
        "one result per case: {stdout}"
    );
    assert!(!dir.path().join("-").exists());

    // A payload that is not JSON is named as coming from stdin (exit 2); a valid one is sent.
    let url = format!("{handler}/hook");
    let trigger = ["trigger", "ticket.created", "--file", "-", "--url", &url];
    let (code, _, stderr) = run_with_stdin(dir.path(), &trigger, b"not json");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--file stdin is not valid JSON"),
        "{stderr}"
    );
    let payload = br#"{"event":"ticket.created","data":{"id":"tkt_stdin"}}"#;
    let (code, _, stderr) = run_with_stdin(dir.path(), &trigger, payload);
    assert_eq!(code, 1, "read, sent, refused by the closed port: {stderr}");
    assert!(!stderr.contains("--file"), "{stderr}");
}
