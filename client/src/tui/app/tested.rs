//! The inspector's `t`: the selected delivery replayed as a test, and its answer compared with
//! the recorded one (`crate::regression`), for the details pane to show above the tab.

use illumitunnel::{Delivery, DeliveryId};

use super::effect::Effect;
use super::state::{App, Pending, TestView};
use crate::regression::{self, Outcome};

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
        let outcome = match (&replay.response, &replay.error) {
            (Some(r), _) => Outcome::Answered {
                status: r.status,
                body: &r.body,
            },
            (None, error) => Outcome::NoAnswer(error.as_deref().unwrap_or("no answer")),
        };
        let report = regression::compare(pending.status, &pending.body, &outcome, &[]);
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
        });
        self.set_details(true)
    }
}
