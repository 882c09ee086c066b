//! `illumitunnel export` as a user runs it: a HAR file that validates against the HAR 1.2
//! schema (`tests/fixtures/har-1.2.schema.json`, written from the HAR 1.2 specification), a
//! JSON-lines file in `show --json`'s shape, filters, and its usage errors.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::store::CaptureStore;
use illumitunnel::{now_ms, Delivery, DeliveryId};
use serde_json::Value;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(home: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_illumitunnel"))
        .env("ILLUMITUNNEL_HOME", home)
        .args(args)
        .arg("--store")
        .arg(home.join("captures.db"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn delivery(id: &str, ms: i64, body: Vec<u8>, status: Option<u16>) -> Delivery {
    let mut d = Delivery::new(
        DeliveryId::parse(id).unwrap(),
        ms,
        Source::Tunnel,
        RequestRecord {
            method: "POST".into(),
            path: "/webhooks/illumichat".into(),
            query: "a=1&b=two".into(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Bytes::from(body),
        },
    );
    d.target = "http://127.0.0.1:3000/webhooks/illumichat?a=1&b=two".into();
    d.tunnel = Some("my-app".into());
    d.duration_us = 12_345;
    match status {
        Some(status) => {
            d.response = Some(ResponseRecord {
                status,
                headers: vec![("content-type".into(), b"application/json".to_vec())],
                body: Bytes::from_static(br#"{"received":true}"#),
            })
        }
        None => d.error = Some("connection refused to 127.0.0.1:3000".into()),
    }
    d
}

fn envelope(event: &str, id: &str) -> Vec<u8> {
    format!(r#"{{"event":"{event}","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_1","data":{{"id":"{id}"}}}}"#)
        .into_bytes()
}

fn filled(dir: &Path) -> PathBuf {
    let path = dir.join("captures.db");
    let mut store = CaptureStore::open(&path).unwrap();
    let now = now_ms();
    let mut batch = vec![
        // Two days old: left out by --since 1d.
        delivery(
            "aaaa0001",
            now - 2 * 86_400_000,
            envelope("ticket.created", "tkt_old"),
            Some(200),
        ),
        delivery(
            "aaaa0002",
            now - 1_000,
            envelope("lead.captured", "lead_1"),
            Some(500),
        ),
        delivery(
            "aaaa0003",
            now - 500,
            envelope("ticket.created", "tkt_new"),
            None,
        ),
        delivery("aaaa0004", now - 100, vec![0xff, 0x00, 0xfe], Some(204)),
    ];
    store.insert_batch(&mut batch).unwrap();
    path
}

fn schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/har-1.2.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn har_export_validates_against_the_har_1_2_schema() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    let har = dir.path().join("out.har");
    let out = run(dir.path(), &["export", "--har", har.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        format!("exported 4 deliveries to {}", har.display())
    );
    let log: Value = serde_json::from_str(&std::fs::read_to_string(&har).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let entries = log["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    // Oldest first, with request, response and timings.
    assert!(entries[0]["request"]["postData"]["text"]
        .as_str()
        .unwrap()
        .contains("tkt_old"));
    assert_eq!(entries[1]["response"]["status"], 500);
    assert_eq!(entries[2]["response"]["status"], 0);
    assert_eq!(
        entries[0]["request"]["url"],
        "http://127.0.0.1:3000/webhooks/illumichat?a=1&b=two"
    );
    assert_eq!(entries[0]["timings"]["wait"], 12.345);

    // The schema is not a rubber stamp: a broken entry fails it.
    let mut broken = log.clone();
    broken["log"]["entries"][0]["request"]
        .as_object_mut()
        .unwrap()
        .remove("headers");
    assert!(!validator.is_valid(&broken));

    // Filters.
    let out = run(
        dir.path(),
        &[
            "export",
            "--har",
            har.to_str().unwrap(),
            "--event",
            "ticket.created",
            "--since",
            "1d",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("exported 1 delivery to"),
        "{}",
        out.stderr
    );
    let log: Value = serde_json::from_str(&std::fs::read_to_string(&har).unwrap()).unwrap();
    assert!(validator.is_valid(&log));
    assert_eq!(log["log"]["entries"].as_array().unwrap().len(), 1);
}

#[test]
fn jsonl_export_is_show_json_one_a_line() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    let file = dir.path().join("out.jsonl");
    let out = run(
        dir.path(),
        &["export", "--jsonl", file.to_str().unwrap(), "--since", "1h"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], "aaaa0002");
    let shown = run(dir.path(), &["show", "aaaa0002", "--json"]);
    let shown: Value = serde_json::from_str(shown.stdout.trim()).unwrap();
    assert_eq!(lines[0], shown);
    assert_eq!(lines[2]["request"]["body_base64"], "/wD+");
}

#[test]
fn export_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (&["export"][..], "--har"),
        (
            &["export", "--har", "x.har", "--event", "ticket.nope"][..],
            "unknown event type",
        ),
        (
            &["export", "--jsonl", "x.jsonl", "--since", "a while"][..],
            "invalid --since",
        ),
    ] {
        let out = run(dir.path(), args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    let out = run(dir.path(), &["export", "--har", "/nonexistent-dir/x.har"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("error: could not write /nonexistent-dir/x.har"),
        "{}",
        out.stderr
    );
}

/// A delivery whose request and response carry secret headers beside ordinary ones.
fn with_secrets(dir: &Path) -> PathBuf {
    let path = dir.join("captures.db");
    let mut store = CaptureStore::open(&path).unwrap();
    let mut d = delivery(
        "bbbb0001",
        now_ms() - 100,
        envelope("ticket.created", "tkt_1"),
        Some(200),
    );
    d.request.headers.extend([
        (
            "authorization".to_string(),
            b"Bearer bearer-planted".to_vec(),
        ),
        ("cookie".to_string(), b"sid=cookie-planted".to_vec()),
        (
            "proxy-authorization".to_string(),
            b"Basic proxy-planted".to_vec(),
        ),
        ("x-api-key".to_string(), b"key-planted".to_vec()),
        (
            "x-illumichat-signature".to_string(),
            b"sig-planted".to_vec(),
        ),
    ]);
    if let Some(r) = d.response.as_mut() {
        r.headers
            .push(("set-cookie".to_string(), b"resp-planted".to_vec()));
    }
    store.insert_batch(&mut [d]).unwrap();
    path
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn exports_redact_secret_headers_unless_asked_and_are_private() {
    let dir = tempfile::tempdir().unwrap();
    with_secrets(dir.path());
    for flag in ["--har", "--jsonl"] {
        let file = dir.path().join(format!("out{flag}"));
        // An older export readable by others is tightened, not kept as it was.
        std::fs::write(&file, "old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let out = run(dir.path(), &["export", flag, file.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            out.stderr.trim(),
            format!(
                "exported 1 delivery to {}; 6 secret header values redacted (--include-secrets keeps them)",
                file.display()
            )
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("planted"), "{flag}: {text}");
        assert_eq!(text.matches("REDACTED").count(), 6, "{flag}: {text}");
        assert!(text.contains("application/json"), "{flag}: {text}");
        #[cfg(unix)]
        assert_eq!(mode(&file), 0o600, "{flag}");

        let kept = dir.path().join(format!("kept{flag}"));
        let out = run(
            dir.path(),
            &["export", flag, kept.to_str().unwrap(), "--include-secrets"],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            out.stderr.trim(),
            format!("exported 1 delivery to {}", kept.display())
        );
        let text = std::fs::read_to_string(&kept).unwrap();
        for value in [
            "Bearer bearer-planted",
            "sid=cookie-planted",
            "Basic proxy-planted",
            "key-planted",
            "sig-planted",
            "resp-planted",
        ] {
            assert!(
                text.contains(value),
                "{flag} --include-secrets lost {value}"
            );
        }
        assert!(!text.contains("REDACTED"), "{flag}: {text}");
        #[cfg(unix)]
        assert_eq!(mode(&kept), 0o600, "{flag}");
    }
}
