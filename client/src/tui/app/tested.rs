//! The inspector's `t`: the selected delivery replayed as a test, and its answer compared with
//! the recorded one (`crate::regression`), for the details pane to show above the tab.

use illumitunnel::{Delivery, DeliveryId};

use super::effect::Effect;
use super::state::{Answers, App, Pending, TestView};
use crate::regression::{self, BodyDiff, Outcome, Pointer, Report};

impl App {
    /// `t`: test the selected delivery, which needs a recorded answer to compare with.
    pub(super) fn start_test(&mut self) -> Option<Effect> {
        let d = self.selected_delivery()?;
        let id = d.id.clone();
        let Some(response) = &d.response else {
            self.say_error(format!(
                "{id} has no recorded answer to compare with; r replays it"
            ));
            return None;
        };
        self.testing = Some(Pending {
            original: id.clone(),
            status: response.status,
            body: response.body.clone(),
        });
        self.say(format!("testing {id}…"));
        Some(Effect::Test { original: id })
    }

    /// The test replay came back: compare, keep the result, stay on the delivery tested.
    pub(super) fn on_tested(
        &mut self,
        original: DeliveryId,
        result: Result<Box<Delivery>, String>,
    ) -> Option<Effect> {
        let pending = self.testing.take().filter(|p| p.original == original);
        let (replay, pending) = match (result, pending) {
            (Ok(replay), Some(pending)) => (replay, pending),
            (Err(err), _) => {
                self.say_error(format!("test of {original} failed: {err}"));
                return None;
            }
            // A later `t` replaced this one.
            (Ok(_), None) => return None,
        };
        let answers = Answers {
            expected_status: pending.status,
            expected_body: pending.body,
            actual: match (&replay.response, &replay.error) {
                (Some(r), _) => Ok((r.status, r.body.clone())),
                (None, error) => Err(error.as_deref().unwrap_or("no answer").to_string()),
            },
        };
        let report = self.compare(&answers);
        if report.passed() {
            self.say(format!("test of {original}: the answer matches"));
        } else {
            self.say_error(format!(
                "test of {original}: the answer differs; see the details"
            ));
        }
        self.test = Some(TestView {
            original,
            replay: replay.id.clone(),
            report,
            answers,
        });
        self.set_details(true)
    }

    /// `i`: the first changed field of the test shown is left out of this and every later
    /// test this session; the diff is compared again at once.
    pub(super) fn ignore_changed(&mut self) -> Option<Effect> {
        let selected = self.selected_delivery().map(|d| d.id.clone());
        let shown = self
            .test
            .as_ref()
            .filter(|t| selected.is_some_and(|id| id == t.original || id == t.replay));
        let Some(test) = shown else {
            self.say_error("i ignores a changed field of a test: press t first".into());
            return None;
        };
        let first = match &test.report.body {
            Some(BodyDiff::Json { changed, .. }) => changed.first().cloned(),
            _ => None,
        };
        let answers = test.answers.clone();
        let Some(pointer) = first else {
            self.say_error("no changed JSON field to ignore in this test".into());
            return None;
        };
        self.ignored.push(pointer.clone());
        let report = self.compare(&answers);
        if let Some(test) = &mut self.test {
            test.report = report;
        }
        self.say(format!(
            "ignoring {} this session; for illumitunnel test: {}",
            pointer,
            self.ignore_flags()
        ));
        None
    }

    /// The session's ignored fields as `illumitunnel test` takes them: `--ignore /a --ignore /b`.
    pub fn ignore_flags(&self) -> String {
        self.ignored
            .iter()
            .map(|p| format!("--ignore {}", shell_word(p)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn compare(&self, answers: &Answers) -> Report {
        let ignore: Vec<Pointer> = self
            .ignored
            .iter()
            .filter_map(|p| Pointer::parse(p).ok())
            .collect();
        let outcome = match &answers.actual {
            Ok((status, body)) => Outcome::Answered {
                status: *status,
                body,
            },
            Err(why) => Outcome::NoAnswer(why),
        };
        regression::compare(
            answers.expected_status,
            &answers.expected_body,
            &outcome,
            &ignore,
        )
    }
}

/// A pointer as one shell word: quoted when it holds anything a shell would read.
fn shell_word(p: &str) -> String {
    let plain = p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/_-.~*".contains(c));
    if plain && !p.contains('*') {
        p.to_string()
    } else {
        format!("'{}'", p.replace('\'', "'\\''"))
    }
}
