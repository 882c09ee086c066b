//! Handler regression tests end to end, against a real handler process
//! (`illumitunnel-test-handler`) whose answers change between `--variant 1` and `2`: a suite is
//! saved from captured deliveries, `test --suite` passes, fails with the diff once the handler
//! changed, passes again with `--ignore`; JUnit XML validates against `tests/fixtures/junit-10.xsd`
//! (with `xmllint`, Debian package `libxml2-utils`); binary bodies compare byte for byte; a saved
//! suite holds no secret by default; `trigger --retries illumichat` follows IllumiChat's schedule.

// Helpers here are test code too; `allow-unwrap-in-tests` only covers `#[test]` functions.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::store::CaptureStore;
use illumitunnel::{now_ms, Delivery, DeliveryId};
use serde_json::Value;
use support::{after, command, temp_dir, ChildGuard, Finished, Stream};

/// The test handler, running.
struct Handler {
    guard: ChildGuard,
    url: String,
}

impl Handler {
    fn start(args: &[&str]) -> Handler {
        let mut cmd = Command::new(support::bin("illumitunnel-test-handler"));
        cmd.args(args);
        let guard = ChildGuard::spawn(cmd);
        let line = guard.wait_for_text(Stream::Stdout, "listening on ");
        let url = after(&line, "listening on ").to_string();
        Handler { guard, url }
    }

    /// The first `count` requests it logged.
    fn requests(&self, count: usize) -> Vec<Value> {
        self.guard
            .wait_for_lines(Stream::Stdout, count, |l| l.starts_with('{'))
            .iter()
            .map(|l| serde_json::from_str(l).expect("handler log line is JSON"))
            .collect()
    }
}

/// Runs the client with `args` in `home`, with the store at `store`.
fn client(home: &Path, store: &Path, args: &[&str]) -> Finished {
    let mut cmd = command("illumitunnel", home);
    cmd.args(args).arg("--store").arg(store);
    ChildGuard::run(cmd)
}

fn described(out: &Finished) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.code(),
        out.stdout,
        out.stderr
    )
}

/// Captures one delivery of each of three event types by triggering them at `handler`.
fn capture(home: &Path, store: &Path, handler: &Handler) {
    let to = format!("{}/webhooks/illumichat", handler.url);
    for event in ["ticket.created", "ticket.updated", "lead.captured"] {
        let out = client(home, store, &["trigger", event, "--forward-to", &to]);
        assert_eq!(out.code(), 0, "{}", described(&out));
    }
}

fn xmllint(xml: &Path) -> Finished {
    assert!(
        Command::new("xmllint").arg("--version").output().is_ok(),
        "xmllint is missing; install Debian's libxml2-utils (.ci/run does)"
    );
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/junit-10.xsd");
    let mut cmd = Command::new("xmllint");
    cmd.args(["--noout", "--schema"]).arg(schema).arg(xml);
    ChildGuard::run(cmd)
}

#[test]
fn a_saved_suite_catches_a_changed_handler_until_the_field_is_ignored() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    let v1 = Handler::start(&["--variant", "1"]);
    capture(home.path(), &store, &v1);
    let suite = home.path().join("handler.suite.jsonl");
    let suite_arg = suite.to_str().unwrap();
    let out = client(
        home.path(),
        &store,
        &["suite", "save", suite_arg, "--last", "3"],
    );
    assert_eq!(out.code(), 0, "{}", described(&out));
    let text = std::fs::read_to_string(&suite).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .all(|l| l.starts_with(r#"{"version":1,"id":""#)),
        "{text}"
    );

    // In CI: no store, no relay. Nothing is created where the store would be.
    let ci = temp_dir();
    let no_store = ci.path().join("never.db");
    let run = |handler: &Handler, extra: &[&str]| {
        let mut args = vec!["test", "--suite", suite_arg, "--forward-to", &handler.url];
        args.extend_from_slice(extra);
        client(ci.path(), &no_store, &args)
    };
    let out = run(&v1, &[]);
    assert_eq!(out.code(), 0, "{}", described(&out));
    assert!(
        out.stdout.ends_with("\n3 passed, 0 failed\n"),
        "{}",
        described(&out)
    );
    assert!(!no_store.exists());

    // The handler changes: ticket.updated answers "queued"; every answer's keys move around.
    drop(v1);
    let v2 = Handler::start(&["--variant", "2"]);
    let junit = ci.path().join("junit.xml");
    let out = run(&v2, &["--junit", junit.to_str().unwrap()]);
    assert_eq!(out.code(), 1, "{}", described(&out));
    let stdout = &out.stdout;
    assert!(stdout.contains("FAIL  ticket.updated"), "{stdout}");
    assert_eq!(stdout.matches("PASS  ").count(), 2, "{stdout}");
    assert!(stdout.contains("-   \"status\": \"processed\""), "{stdout}");
    assert!(stdout.contains("+   \"status\": \"queued\""), "{stdout}");
    assert!(
        stdout.contains("changed: /status; leave a field out with --ignore /status"),
        "{stdout}"
    );
    assert!(stdout.ends_with("\n2 passed, 1 failed\n"), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "no colour off a terminal: {stdout:?}"
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);

    let report = std::fs::read_to_string(&junit).unwrap();
    let valid = xmllint(&junit);
    assert_eq!(valid.code(), 0, "{}\n{report}", described(&valid));
    assert!(
        report.contains(r#"tests="3" failures="1" errors="0""#),
        "{report}"
    );
    assert!(
        report.contains("<failure message=\"body differs at /status\""),
        "{report}"
    );
    assert!(
        report.contains("+   &quot;status&quot;: &quot;queued&quot;"),
        "{report}"
    );
    // The schema is not a rubber stamp: a test case without a name fails it.
    let broken = ci.path().join("broken.xml");
    std::fs::write(
        &broken,
        report.replacen("<testcase name=", "<testcase title=", 1),
    )
    .unwrap();
    assert_ne!(xmllint(&broken).code(), 0);

    let out = run(&v2, &["--ignore", "/status"]);
    assert_eq!(out.code(), 0, "{}", described(&out));
    assert!(
        out.stdout.ends_with("\n3 passed, 0 failed\n"),
        "{}",
        described(&out)
    );

    let out = run(&v2, &["--json"]);
    assert_eq!(out.code(), 1, "{}", described(&out));
    let results: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 3);
    let failed: Vec<&Value> = results.iter().filter(|r| r["passed"] == false).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["event"], "ticket.updated");
    assert_eq!(failed[0]["changed"], serde_json::json!(["/status"]));
    assert_eq!(failed[0]["changed_count"], 1);
    assert_eq!(out.stderr.trim(), "2 passed, 1 failed");
}

#[test]
fn tests_from_the_store_are_recorded_as_replays_of_their_originals() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    let v1 = Handler::start(&["--variant", "1"]);
    capture(home.path(), &store, &v1);
    drop(v1);
    let v2 = Handler::start(&["--variant", "2"]);
    // The URL listen forwarded to works as --forward-to: paths are not doubled.
    let to = format!("{}/webhooks/illumichat", v2.url);
    let out = client(
        home.path(),
        &store,
        &["test", "--event", "ticket.updated", "--forward-to", &to],
    );
    assert_eq!(out.code(), 1, "{}", described(&out));
    assert!(
        out.stdout.contains("POST /webhooks/illumichat  200"),
        "{}",
        described(&out)
    );
    let sent = v2.requests(1);
    assert_eq!(sent[0]["path"], "/webhooks/illumichat");

    let all = CaptureStore::open(&store)
        .unwrap()
        .list_oldest(&Default::default(), 100)
        .unwrap();
    let original = all
        .iter()
        .find(|d| d.event.as_deref() == Some("ticket.updated") && d.replay_of.is_none())
        .unwrap();
    let replay = all
        .iter()
        .find(|d| d.source == Source::Replay)
        .expect("the run is recorded");
    assert_eq!(replay.replay_of.as_ref(), Some(&original.id));
    assert_eq!(replay.request.body, original.request.body);
    assert_eq!(replay.status(), Some(200));

    // A second run tests the original again, not the first run's replay.
    let out = client(
        home.path(),
        &store,
        &["test", "--event", "ticket.updated", "--forward-to", &to],
    );
    assert_eq!(out.stdout.matches("FAIL").count(), 1, "{}", described(&out));
}

fn binary_delivery(store: &Path, handler: &Handler, body: Vec<u8>) -> DeliveryId {
    let id = DeliveryId::generate();
    let mut d = Delivery::new(
        id.clone(),
        now_ms(),
        Source::Tunnel,
        RequestRecord {
            method: "POST".into(),
            path: "/upload".into(),
            query: "kind=raw".into(),
            headers: vec![("content-type".into(), b"application/octet-stream".to_vec())],
            body: Bytes::from(body.clone()),
        },
    );
    d.target = format!("{}/upload?kind=raw", handler.url);
    d.response = Some(ResponseRecord {
        status: 200,
        headers: vec![("content-type".into(), b"application/octet-stream".to_vec())],
        body: Bytes::from(body),
    });
    CaptureStore::open(store)
        .unwrap()
        .insert_batch(std::slice::from_mut(&mut d))
        .unwrap();
    id
}

#[test]
fn binary_bodies_are_compared_byte_for_byte() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    let v1 = Handler::start(&["--variant", "1"]);
    let body: Vec<u8> = (0..=255u8).collect();
    let id = binary_delivery(&store, &v1, body.clone());
    let out = client(home.path(), &store, &["test", id.as_str()]);
    assert_eq!(out.code(), 0, "{}", described(&out));
    let sent = v1.requests(1);
    assert_eq!(sent[0]["path"], "/upload");
    assert_eq!(
        sent[0]["body_base64"],
        base64_of(&body),
        "the same bytes went out"
    );

    let suite = home.path().join("binary.jsonl");
    let out = client(
        home.path(),
        &store,
        &["suite", "save", suite.to_str().unwrap(), id.as_str()],
    );
    assert_eq!(out.code(), 0, "{}", described(&out));
    assert!(std::fs::read_to_string(&suite)
        .unwrap()
        .contains("\"body_base64\":"));

    // Variant 2 flips the last byte of an echo.
    let v2 = Handler::start(&["--variant", "2"]);
    let out = client(
        home.path(),
        &store,
        &[
            "test",
            "--suite",
            suite.to_str().unwrap(),
            "--forward-to",
            &v2.url,
        ],
    );
    assert_eq!(out.code(), 1, "{}", described(&out));
    assert!(
        out.stdout
            .contains("body (binary): - 256 bytes + 256 bytes; first difference at byte 255"),
        "{}",
        described(&out)
    );
    let sent = v2.requests(1);
    assert_eq!(sent[0]["body_base64"], base64_of(&body));
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn a_saved_suite_holds_no_secret_unless_asked() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    let mut d = Delivery::new(
        DeliveryId::generate(),
        now_ms(),
        Source::Tunnel,
        RequestRecord {
            method: "POST".into(),
            path: "/webhooks/illumichat".into(),
            query: String::new(),
            headers: support::secrets::SENDER_HEADERS
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect(),
            body: Bytes::from_static(br#"{"event":"lead.captured","data":{"id":"lead_1"}}"#),
        },
    );
    d.target = "http://127.0.0.1:3000/webhooks/illumichat".into();
    d.response = Some(ResponseRecord {
        status: 200,
        headers: vec![(
            "set-cookie".into(),
            support::secrets::RESPONSE_HEADER.1.as_bytes().to_vec(),
        )],
        body: Bytes::from_static(b"{}"),
    });
    CaptureStore::open(&store)
        .unwrap()
        .insert_batch(std::slice::from_mut(&mut d))
        .unwrap();

    let suite = home.path().join("s.jsonl");
    let out = client(
        home.path(),
        &store,
        &[
            "suite",
            "save",
            suite.to_str().unwrap(),
            "--event",
            "lead.captured",
        ],
    );
    assert_eq!(out.code(), 0, "{}", described(&out));
    assert!(
        out.stderr
            .contains("6 secret header values redacted (--include-secrets keeps them)"),
        "{}",
        described(&out)
    );
    let text = std::fs::read_to_string(&suite).unwrap();
    support::secrets::assert_none_in("the saved suite", &text);
    assert_eq!(text.matches("REDACTED").count(), 6, "{text}");

    let out = client(
        home.path(),
        &store,
        &[
            "suite",
            "save",
            suite.to_str().unwrap(),
            "--last",
            "1",
            "--include-secrets",
        ],
    );
    assert_eq!(out.code(), 0, "{}", described(&out));
    assert!(std::fs::read_to_string(&suite)
        .unwrap()
        .contains("whsecret-planted-c44"));
}

#[test]
fn bad_usage_exits_2_with_one_sentence() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    let v1 = Handler::start(&["--variant", "1"]);
    capture(home.path(), &store, &v1);
    let suite = home.path().join("s.jsonl");
    let suite_arg = suite.to_str().unwrap();
    assert_eq!(
        client(
            home.path(),
            &store,
            &["suite", "save", suite_arg, "--last", "2"]
        )
        .code(),
        0
    );
    let mut text = std::fs::read_to_string(&suite).unwrap();
    text.push_str("{\"version\":1,\"id\":\"abc\"}\n");
    let broken = home.path().join("broken.jsonl");
    std::fs::write(&broken, text).unwrap();
    let broken = broken.to_str().unwrap().to_string();
    let missing: PathBuf = home.path().join("missing.jsonl");
    let missing_dir: PathBuf = home.path().join("no-such-dir").join("junit.xml");
    for (args, needle) in [
        (vec!["test", "zzzz"], "no delivery with id zzzz"),
        (
            vec!["test", "--suite", &broken, "--forward-to", &v1.url],
            "line 3: not a suite entry",
        ),
        (vec!["test", "--suite", suite_arg], "needs --forward-to URL"),
        (
            vec![
                "test",
                "--suite",
                missing.to_str().unwrap(),
                "--forward-to",
                &v1.url,
            ],
            "could not read suite",
        ),
        (
            vec![
                "test",
                "--suite",
                suite_arg,
                "--forward-to",
                &v1.url,
                "--ignore",
                "status",
            ],
            "a JSON pointer starts with /",
        ),
        (
            vec![
                "test",
                "--suite",
                suite_arg,
                "--forward-to",
                &v1.url,
                "--junit",
                missing_dir.to_str().unwrap(),
            ],
            "--junit: could not write",
        ),
        (vec!["test", "--event", "ticket.nope"], "unknown event type"),
        (
            vec!["test", "--event", "contact.created"],
            "no answered contact.created deliveries",
        ),
        (
            vec!["test", "abc", "--suite", suite_arg],
            "cannot be used with",
        ),
        (
            vec![
                "suite",
                "save",
                suite_arg,
                "--event",
                "lead.captured",
                "--last",
                "1",
            ],
            "cannot be used with",
        ),
    ] {
        let out = client(home.path(), &store, &args);
        assert_eq!(out.code(), 2, "{args:?}\n{}", described(&out));
        assert!(out.stderr.contains(needle), "{args:?}\n{}", described(&out));
        assert!(!out.stderr.contains("panicked"), "{}", described(&out));
    }
}

#[test]
fn retries_follow_illumichat_schedule_with_the_same_body() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    // Down for good: the first attempt and all three retries fail.
    let down = Handler::start(&["--fail-first", "100"]);
    let to = format!("{}/webhooks/illumichat", down.url);
    let args = [
        "trigger",
        "ticket.created",
        "--forward-to",
        &to,
        "--retries",
        "illumichat",
        "--speed",
        "600",
        "--json",
    ];
    let out = client(home.path(), &store, &args);
    assert_eq!(out.code(), 1, "{}", described(&out));
    let attempts: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(attempts.len(), 4, "{}", described(&out));
    let first = attempts[0]["id"].clone();
    assert_eq!(attempts[0]["replay_of"], Value::Null);
    for (n, attempt) in attempts.iter().enumerate().skip(1) {
        assert_eq!(attempt["retry"], n, "{attempt}");
        assert_eq!(attempt["replay_of"], first, "{attempt}");
        assert_eq!(attempt["status"], 500);
    }
    let waits: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("retry "))
        .collect();
    assert_eq!(
        waits,
        [
            "retry 1 of 3 in 100ms (IllumiChat waits 1m; --speed 600)",
            "retry 2 of 3 in 500ms (IllumiChat waits 5m; --speed 600)",
            "retry 3 of 3 in 3s (IllumiChat waits 30m; --speed 600)",
        ],
        "{}",
        described(&out)
    );
    assert!(
        out.stderr.ends_with("error: the handler answered none of 4 attempts of the ticket.created delivery with a 2xx, so IllumiChat would mark it failed; check the handler's log\n"),
        "{}",
        described(&out)
    );
    // What the handler got: four identical bodies, so one dedup key (same timestamp).
    let got = down.requests(4);
    assert!(
        got.iter()
            .all(|r| r["body_base64"] == got[0]["body_base64"]),
        "{got:?}"
    );
    let rows = CaptureStore::open(&store)
        .unwrap()
        .list_oldest(&Default::default(), 10)
        .unwrap();
    assert_eq!(rows.len(), 4);
    let keys: Vec<_> = rows.iter().map(|d| d.dedup_key.clone().unwrap()).collect();
    assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");
    // Retries share the first's dedup key; every earlier attempt failed, so they are numbered
    // retries, not duplicates.
    let retries: Vec<_> = rows.iter().map(|d| (d.retry, d.duplicate)).collect();
    assert_eq!(
        retries,
        [
            (None, false),
            (Some(1), false),
            (Some(2), false),
            (Some(3), false)
        ]
    );
    let listing = client(home.path(), &store, &["events"]);
    assert_eq!(
        listing
            .stdout
            .matches(&format!("retry of {}", first.as_str().unwrap()))
            .count(),
        3,
        "{}",
        listing.stdout
    );

    // Back after two failures: the second retry gets a 2xx and the schedule stops there.
    let flaky = Handler::start(&["--fail-first", "2"]);
    let to = format!("{}/webhooks/illumichat", flaky.url);
    let args = [
        "trigger",
        "lead.captured",
        "--forward-to",
        &to,
        "--retries",
        "illumichat",
        "--speed",
        "600",
    ];
    let out = client(home.path(), &store, &args);
    assert_eq!(out.code(), 0, "{}", described(&out));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", described(&out));
    assert!(
        lines[0].contains(" 500 ") && !lines[0].contains("retry of"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(" 500 ") && lines[1].contains("retry of"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(" 200 ") && lines[2].contains("retry of"),
        "{}",
        lines[2]
    );
    assert_eq!(flaky.requests(3).len(), 3);
}
