//! `test --junit FILE`: the run as JUnit XML, the report format CI systems (GitHub Actions
//! reporters, GitLab, Jenkins) show per test. One `<testcase>` a delivery: a `<failure>` when
//! the handler answered differently (the plain diff inside), an `<error>` when it did not answer.
//! The shape follows the widely used Jenkins `junit-10.xsd` (`tests/fixtures/junit-10.xsd`).

use std::fmt::Write as _;

use illumitunnel::escape::xml;

/// One delivery's result.
#[derive(Debug, Clone)]
pub struct Case {
    /// `ticket.created tkt_1 (0196…)`.
    pub name: String,
    /// The event type, as CI reporters group by class name.
    pub classname: String,
    /// Seconds from sending to the answer.
    pub seconds: f64,
    /// Why it did not pass.
    pub outcome: Outcome,
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered as recorded.
    Passed,
    /// Answered differently: a one-line message and the plain diff.
    Failed {
        /// One line.
        message: String,
        /// The diff.
        details: String,
    },
    /// Did not answer.
    Error {
        /// One line.
        message: String,
    },
}

/// The whole run as a JUnit XML document; `timestamp` is ISO 8601 without a zone offset, as the
/// schema wants it.
pub fn document(suite: &str, timestamp: &str, cases: &[Case]) -> String {
    let failures = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed { .. }))
        .count();
    let errors = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Error { .. }))
        .count();
    let time: f64 = cases.iter().map(|c| c.seconds).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"illumitunnel\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">",
        cases.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{time:.3}\" timestamp=\"{}\" hostname=\"localhost\" id=\"0\" package=\"illumitunnel\">",
        xml(suite),
        cases.len(),
        xml(timestamp),
    );
    for case in cases {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            xml(&case.name),
            xml(&case.classname),
            case.seconds
        );
        match &case.outcome {
            Outcome::Passed => out.push_str("/>\n"),
            Outcome::Failed { message, details } => {
                let _ = write!(
                    out,
                    ">\n      <failure message=\"{}\" type=\"mismatch\">{}</failure>\n    </testcase>\n",
                    xml(message),
                    xml(details)
                );
            }
            Outcome::Error { message } => {
                let _ = write!(
                    out,
                    ">\n      <error message=\"{}\" type=\"no-answer\">{}</error>\n    </testcase>\n",
                    xml(message),
                    xml(message)
                );
            }
        }
    }
    out.push_str("    <system-out/>\n    <system-err/>\n  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_escapes() {
        let cases = [
            Case {
                name: "ticket.created tkt_1 (a1)".into(),
                classname: "ticket.created".into(),
                seconds: 0.0125,
                outcome: Outcome::Passed,
            },
            Case {
                name: "lead.captured <l&1> (a2)".into(),
                classname: "lead.captured".into(),
                seconds: 0.5,
                outcome: Outcome::Failed {
                    message: "status 200 → 500".into(),
                    details: "- \"a\"\n+ \"b\u{1b}\"".into(),
                },
            },
            Case {
                name: "x (a3)".into(),
                classname: "-".into(),
                seconds: 0.0,
                outcome: Outcome::Error {
                    message: "connection refused".into(),
                },
            },
        ];
        let doc = document("suite.jsonl", "2025-06-15T14:30:00", &cases);
        assert!(
            doc.contains(
                r#"<testsuites name="illumitunnel" tests="3" failures="1" errors="1" time="0.512">"#
            ),
            "{doc}"
        );
        assert!(doc.contains(r#"<testcase name="ticket.created tkt_1 (a1)" classname="ticket.created" time="0.013"/>"#), "{doc}");
        assert!(
            doc.contains(r#"name="lead.captured &lt;l&amp;1&gt; (a2)""#),
            "{doc}"
        );
        assert!(
            doc.contains("- &quot;a&quot;\n+ &quot;b^[&quot;</failure>"),
            "{doc}"
        );
        assert!(
            doc.contains(r#"<error message="connection refused" type="no-answer">"#),
            "{doc}"
        );
    }
}
