//! Handler regression tests: a delivery's recorded answer compared with what the handler
//! answers now, for `test` and the inspector's `t`. Pure: status and body in, a [`Report`] out,
//! and the report rendered as a jest-style diff (`- expected`, `+ actual`), coloured or plain.
//!
//! Bodies that parse as JSON on both sides are compared as values (keys in any order), with the
//! `--ignore` JSON pointers left out of both; any other body is compared byte for byte.

mod diff;
pub mod junit;
mod report;

use illumitunnel::Delivery;
use serde_json::{json, Value};

pub use diff::{changed_list, render, SHOWN_CHANGES};
pub use report::{BodyDiff, Report};

/// A `--ignore` JSON pointer: `/data/updatedAt`, where a `*` segment matches any key or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer(Vec<String>);

impl Pointer {
    /// Parses an RFC 6901 pointer (`~1` is `/`, `~0` is `~`); the empty pointer is refused, as
    /// it would leave the whole body out.
    pub fn parse(text: &str) -> Result<Pointer, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "invalid --ignore {text:?}: a JSON pointer starts with /; write one such as /data/updatedAt"
            ));
        };
        Ok(Pointer(
            rest.split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect(),
        ))
    }

    /// Removes every value this pointer reaches in `value`.
    fn remove_from(&self, value: &mut Value) {
        remove(value, &self.0);
    }
}

fn remove(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let last = rest.is_empty();
    match value {
        Value::Object(map) if first == "*" => {
            if last {
                map.clear();
            } else {
                map.values_mut().for_each(|v| remove(v, rest));
            }
        }
        Value::Object(map) => {
            if last {
                map.remove(first.as_str());
            } else if let Some(v) = map.get_mut(first.as_str()) {
                remove(v, rest);
            }
        }
        Value::Array(items) if first == "*" => {
            if last {
                items.clear();
            } else {
                items.iter_mut().for_each(|v| remove(v, rest));
            }
        }
        Value::Array(items) => {
            let Ok(i) = first.parse::<usize>() else {
                return;
            };
            if last {
                if i < items.len() {
                    items.remove(i);
                }
            } else if let Some(v) = items.get_mut(i) {
                remove(v, rest);
            }
        }
        _ => {}
    }
}

/// What the handler did this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// It answered.
    Answered {
        /// Status.
        status: u16,
        /// Body bytes.
        body: &'a [u8],
    },
    /// It did not answer: the forwarder's sentence (refused, timed out, …).
    NoAnswer(&'a str),
}

/// Compares the recorded answer with `outcome`, leaving the `ignore` pointers out of JSON bodies.
pub fn compare(
    expected_status: u16,
    expected_body: &[u8],
    outcome: &Outcome<'_>,
    ignore: &[Pointer],
) -> Report {
    let (actual_status, actual_body) = match outcome {
        Outcome::Answered { status, body } => (*status, *body),
        Outcome::NoAnswer(why) => {
            return Report {
                expected_status,
                actual_status: None,
                no_answer: Some((*why).to_string()),
                body: None,
            }
        }
    };
    Report {
        expected_status,
        actual_status: Some(actual_status),
        no_answer: None,
        body: compare_bodies(expected_body, actual_body, ignore),
    }
}

fn compare_bodies(expected: &[u8], actual: &[u8], ignore: &[Pointer]) -> Option<BodyDiff> {
    let json = |b: &[u8]| serde_json::from_slice::<Value>(b).ok();
    if let (Some(mut e), Some(mut a)) = (json(expected), json(actual)) {
        for p in ignore {
            p.remove_from(&mut e);
            p.remove_from(&mut a);
        }
        if e == a {
            return None;
        }
        let mut changed = Vec::new();
        changes(&e, &a, &mut String::new(), &mut changed);
        return Some(BodyDiff::Json {
            expected: e,
            actual: a,
            changed,
        });
    }
    if expected == actual {
        return None;
    }
    match (std::str::from_utf8(expected), std::str::from_utf8(actual)) {
        (Ok(e), Ok(a)) => Some(BodyDiff::Text {
            expected: e.to_string(),
            actual: a.to_string(),
        }),
        _ => Some(BodyDiff::Binary {
            expected_len: expected.len(),
            actual_len: actual.len(),
            first_difference: expected
                .iter()
                .zip(actual)
                .position(|(e, a)| e != a)
                .unwrap_or(expected.len().min(actual.len())),
        }),
    }
}

/// Collects the pointers where `e` and `a` differ, descending into objects and arrays.
fn changes(e: &Value, a: &Value, at: &mut String, out: &mut Vec<String>) {
    let mut visit = |key: &str, e: Option<&Value>, a: Option<&Value>, out: &mut Vec<String>| {
        let len = at.len();
        at.push('/');
        at.push_str(&key.replace('~', "~0").replace('/', "~1"));
        match (e, a) {
            (Some(e), Some(a)) => changes(e, a, at, out),
            _ => out.push(at.clone()),
        }
        at.truncate(len);
    };
    match (e, a) {
        (Value::Object(em), Value::Object(am)) => {
            for (k, ev) in em {
                visit(k, Some(ev), am.get(k), out);
            }
            for (k, av) in am.iter().filter(|(k, _)| !em.contains_key(*k)) {
                visit(k, None, Some(av), out);
            }
        }
        (Value::Array(ev), Value::Array(av)) => {
            for i in 0..ev.len().max(av.len()) {
                visit(&i.to_string(), ev.get(i), av.get(i), out);
            }
        }
        (e, a) if e != a => out.push(if at.is_empty() {
            "/".into()
        } else {
            at.clone()
        }),
        _ => {}
    }
}

/// How a replay's answer compares with the recorded one (`test`, and the web inspector's
/// `POST /api/test`).
pub fn replay_report(original: &Delivery, replayed: &Delivery, ignore: &[Pointer]) -> Report {
    let (status, body) = original
        .response
        .as_ref()
        .map(|r| (r.status, &r.body[..]))
        .unwrap_or((0, &[]));
    let outcome = match (&replayed.response, &replayed.error) {
        (Some(r), _) => Outcome::Answered {
            status: r.status,
            body: &r.body,
        },
        (None, error) => Outcome::NoAnswer(error.as_deref().unwrap_or("no answer")),
    };
    compare(status, body, &outcome, ignore)
}

/// One `test --json` line (also an item of the web inspector's `POST /api/test`).
pub fn case_json(
    original: &Delivery,
    replayed: &Delivery,
    report: &Report,
    recorded: bool,
) -> Value {
    // The first pointers and a count: a reshaped array can change thousands of them.
    let (changed, changed_count) = match &report.body {
        Some(BodyDiff::Json { changed, .. }) => (
            json!(changed[..changed.len().min(SHOWN_CHANGES)]),
            changed.len(),
        ),
        _ => (json!([]), 0),
    };
    json!({
        "id": original.id,
        "event": original.event,
        "resource_id": original.resource_id,
        "method": original.request.method,
        "path": replayed.request.path,
        "passed": report.passed(),
        "expected_status": report.expected_status,
        "status": report.actual_status,
        "duration_ms": replayed.duration_ms(),
        "error": report.no_answer,
        "changed": changed,
        "changed_count": changed_count,
        "diff": (!report.passed()).then(|| render(report, "", false)),
        "replay_id": recorded.then(|| replayed.id.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, body: &[u8]) -> Outcome<'_> {
        Outcome::Answered { status, body }
    }

    #[test]
    fn json_bodies_compare_as_values_in_any_key_order() {
        let r = compare(
            200,
            br#"{"a":1,"b":{"c":[1,2]}}"#,
            &answered(200, br#"{ "b": {"c": [1, 2]}, "a": 1 }"#),
            &[],
        );
        assert!(r.passed(), "{r:?}");
    }

    #[test]
    fn changed_fields_are_named_by_pointer_and_can_be_ignored() {
        let expected = br#"{"ok":true,"data":{"updatedAt":"1","id":"x","tags":["a"]}}"#;
        let actual = br#"{"ok":true,"data":{"updatedAt":"2","id":"x","tags":["a","b"]},"new":1}"#;
        let r = compare(200, expected, &answered(200, actual), &[]);
        let Some(BodyDiff::Json { changed, .. }) = &r.body else {
            panic!("{r:?}")
        };
        assert_eq!(changed, &["/data/updatedAt", "/data/tags/1", "/new"]);
        let ignore: Vec<Pointer> = ["/data/updatedAt", "/data/tags/*", "/new"]
            .iter()
            .map(|p| Pointer::parse(p).unwrap())
            .collect();
        assert!(compare(200, expected, &answered(200, actual), &ignore).passed());
    }

    #[test]
    fn pointers_unescape_and_must_start_with_a_slash() {
        let p = Pointer::parse("/a~1b/c~0d").unwrap();
        let mut v = serde_json::json!({"a/b": {"c~d": 1, "e": 2}});
        p.remove_from(&mut v);
        assert_eq!(v, serde_json::json!({"a/b": {"e": 2}}));
        let err = Pointer::parse("data.updatedAt").unwrap_err();
        assert!(err.contains("starts with /"), "{err}");
        assert!(Pointer::parse("").is_err());
    }

    #[test]
    fn other_bodies_compare_byte_for_byte() {
        assert!(compare(200, b"ok\n", &answered(200, b"ok\n"), &[]).passed());
        let r = compare(200, b"ok\n", &answered(200, b"ok \n"), &[]);
        assert!(matches!(r.body, Some(BodyDiff::Text { .. })), "{r:?}");
        let r = compare(
            200,
            &[1, 2, 0xff, 4],
            &answered(200, &[1, 2, 0xfe, 4, 5]),
            &[],
        );
        assert_eq!(
            r.body,
            Some(BodyDiff::Binary {
                expected_len: 4,
                actual_len: 5,
                first_difference: 2
            })
        );
        // JSON on one side only is a byte comparison too.
        let r = compare(200, b"{}", &answered(200, b"not json"), &[]);
        assert!(matches!(r.body, Some(BodyDiff::Text { .. })));
    }

    #[test]
    fn status_and_silence_fail() {
        let r = compare(200, b"", &answered(500, b""), &[]);
        assert!(!r.passed());
        assert_eq!(r.actual_status, Some(500));
        let r = compare(200, b"", &Outcome::NoAnswer("connection refused"), &[]);
        assert!(!r.passed());
        assert_eq!(r.no_answer.as_deref(), Some("connection refused"));
    }
}
