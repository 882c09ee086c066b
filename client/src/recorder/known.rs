//! What the recorder knows of a delivery it was asked about: its recorded answer, and whether it
//! is committed yet.

use illumitunnel::delivery::ResponseRecord;
use illumitunnel::Delivery;

/// The local server's answer to a delivery already recorded, or why there was none.
pub type Recorded = Result<ResponseRecord, String>;

/// A delivery the recorder already has.
#[derive(Debug)]
pub struct Known {
    /// Its recorded answer.
    pub answer: Recorded,
    /// Whether it is committed to the store (not just waiting for a commit, or kept in memory
    /// while the store fails): only then may the relay hear `Recorded`.
    pub committed: bool,
}

pub(crate) fn recorded_answer(d: &Delivery) -> Recorded {
    match (&d.response, &d.error) {
        (Some(response), _) => Ok(response.clone()),
        (None, Some(error)) => Err(error.clone()),
        (None, None) => Err("the local server's answer was not recorded".into()),
    }
}
