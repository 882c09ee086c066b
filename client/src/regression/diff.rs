//! A [`Report`] as the lines a person reads under a failed delivery: the status change, then a
//! jest-style line diff of the bodies (`- expected`, `+ actual`, five lines of context; JSON
//! pretty-printed with keys sorted, so key order never shows up as a change), then the changed
//! JSON pointers with the `--ignore` that leaves one out. Text from the handler goes through the
//! shared escaper, so a body cannot drive the terminal.

use std::fmt::Write as _;
use std::time::Duration;

use illumitunnel::escape;
use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use super::report::{BodyDiff, Report};

/// Most diff lines shown for one delivery; the rest are counted.
const MAX_DIFF_LINES: usize = 200;
/// Unchanged lines shown around each change (jest's default).
const CONTEXT_LINES: usize = 5;
/// Longest the line diff may search before it settles for a coarser one (10 MiB bodies).
const DIFF_DEADLINE: Duration = Duration::from_millis(500);

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The report's lines, each starting with `indent`, ANSI-coloured when `colour`; empty when it
/// passed.
pub fn render(report: &Report, indent: &str, colour: bool) -> String {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    if let Some(why) = &report.no_answer {
        let _ = writeln!(
            out,
            "{indent}no answer (expected {}): {}",
            report.expected_status,
            escape::escape(why)
        );
        return out;
    }
    if let Some(actual) = report
        .actual_status
        .filter(|s| *s != report.expected_status)
    {
        let _ = writeln!(
            out,
            "{indent}status: {} {}",
            paint(RED, &format!("- {}", report.expected_status)),
            paint(GREEN, &format!("+ {actual}")),
        );
    }
    let Some(body) = &report.body else {
        return out;
    };
    match body {
        BodyDiff::Json {
            expected,
            actual,
            changed,
        } => {
            let _ = writeln!(
                out,
                "{indent}body (JSON, keys sorted): {} {}",
                paint(RED, "- expected"),
                paint(GREEN, "+ actual")
            );
            lines(&mut out, &pretty(expected), &pretty(actual), indent, &paint);
            let _ = writeln!(
                out,
                "{indent}changed: {}; leave a field out with --ignore {}",
                escape::escape(&changed_list(changed)),
                escape::escape(changed.first().map_or("/", String::as_str)),
            );
        }
        BodyDiff::Text { expected, actual } => {
            let _ = writeln!(
                out,
                "{indent}body (bytes): {} {}",
                paint(RED, "- expected"),
                paint(GREEN, "+ actual")
            );
            lines(&mut out, expected, actual, indent, &paint);
        }
        BodyDiff::Binary {
            expected_len,
            actual_len,
            first_difference,
        } => {
            let _ = writeln!(
                out,
                "{indent}body (binary): {} {}; first difference at byte {first_difference}",
                paint(RED, &format!("- {expected_len} bytes")),
                paint(GREEN, &format!("+ {actual_len} bytes")),
            );
        }
    }
    out
}

/// The line diff of two texts, with context, capped at [`MAX_DIFF_LINES`].
/// Most changed pointers named in one line; the rest are counted.
pub const SHOWN_CHANGES: usize = 10;

/// `/a, /b and 3 more`: the first [`SHOWN_CHANGES`] pointers of a change.
pub fn changed_list(changed: &[String]) -> String {
    let shown = changed[..changed.len().min(SHOWN_CHANGES)].join(", ");
    match changed.len().saturating_sub(SHOWN_CHANGES) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn lines(
    out: &mut String,
    expected: &str,
    actual: &str,
    indent: &str,
    paint: &dyn Fn(&str, &str) -> String,
) {
    let diff = TextDiff::configure()
        .timeout(DIFF_DEADLINE)
        .diff_lines(expected, actual);
    let mut shown = 0usize;
    let mut hidden = 0usize;
    for (i, group) in diff.grouped_ops(CONTEXT_LINES).iter().enumerate() {
        if i > 0 && shown < MAX_DIFF_LINES {
            let _ = writeln!(out, "{indent}{}", paint(DIM, "  ..."));
        }
        for op in group {
            for change in diff.iter_changes(op) {
                if shown >= MAX_DIFF_LINES {
                    hidden += 1;
                    continue;
                }
                let text =
                    escape::escape_keeping(change.value().trim_end_matches(['\n', '\r']), &['\t']);
                let line = match change.tag() {
                    ChangeTag::Delete => paint(RED, &format!("- {text}")),
                    ChangeTag::Insert => paint(GREEN, &format!("+ {text}")),
                    ChangeTag::Equal => paint(DIM, &format!("  {text}")),
                };
                let _ = writeln!(out, "{indent}{line}");
                shown += 1;
            }
        }
    }
    if hidden > 0 {
        let _ = writeln!(out, "{indent}  … {hidden} more diff lines");
    }
}

/// Pretty JSON with every object's keys sorted, ending in a newline.
fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(value)).unwrap_or_default();
    text.push('\n');
    text
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_long_list_of_changes_names_ten_and_counts_the_rest() {
        let changed: Vec<String> = (0..13).map(|i| format!("/items/{i}")).collect();
        let line = super::changed_list(&changed);
        assert!(line.starts_with("/items/0, /items/1,"), "{line}");
        assert!(line.ends_with("/items/9 and 3 more"), "{line}");
        assert_eq!(super::changed_list(&changed[..2]), "/items/0, /items/1");
    }

    use super::super::{compare, Outcome};
    use super::*;

    #[test]
    fn a_json_change_reads_like_a_jest_diff() {
        let report = compare(
            200,
            br#"{"received":true,"status":"created","id":"t1"}"#,
            &Outcome::Answered {
                status: 202,
                body: br#"{"id":"t1","received":true,"status":"queued"}"#,
            },
            &[],
        );
        let text = render(&report, "  ", false);
        assert_eq!(
            text,
            concat!(
                "  status: - 200 + 202\n",
                "  body (JSON, keys sorted): - expected + actual\n",
                "    {\n",
                "      \"id\": \"t1\",\n",
                "      \"received\": true,\n",
                "  -   \"status\": \"created\"\n",
                "  +   \"status\": \"queued\"\n",
                "    }\n",
                "  changed: /status; leave a field out with --ignore /status\n",
            )
        );
        let coloured = render(&report, "", true);
        assert!(coloured.contains("\x1b[31m-   \"status\": \"created\"\x1b[0m"));
    }

    #[test]
    fn handler_text_cannot_drive_the_terminal() {
        let report = compare(
            200,
            b"plain\n",
            &Outcome::Answered {
                status: 200,
                body: b"pl\x1b[2Jain\n",
            },
            &[],
        );
        let text = render(&report, "", false);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("+ pl^[[2Jain"), "{text}");
    }

    #[test]
    fn long_diffs_are_cut() {
        let expected: String = (0..1000).map(|i| format!("a{i}\n")).collect();
        let actual: String = (0..1000).map(|i| format!("b{i}\n")).collect();
        let report = compare(
            200,
            expected.as_bytes(),
            &Outcome::Answered {
                status: 200,
                body: actual.as_bytes(),
            },
            &[],
        );
        let text = render(&report, "", false);
        assert_eq!(text.lines().count(), 1 + MAX_DIFF_LINES + 1, "{text}");
        assert!(text.ends_with("… 1800 more diff lines\n"), "{text}");
    }
}
