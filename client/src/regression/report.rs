//! What a comparison found: a [`Report`] per delivery and how the bodies differ.

use serde_json::Value;

/// How the two bodies differ.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyDiff {
    /// Both JSON, unequal as values once the ignored pointers are gone.
    Json {
        /// The recorded body, ignored pointers removed.
        expected: Value,
        /// The new body, ignored pointers removed.
        actual: Value,
        /// Pointers to the values that differ (added, removed or changed), in document order.
        changed: Vec<String>,
    },
    /// Not both JSON, unequal bytes, both UTF-8.
    Text {
        /// The recorded body.
        expected: String,
        /// The new body.
        actual: String,
    },
    /// Unequal bytes, at least one side not UTF-8.
    Binary {
        /// Recorded length.
        expected_len: usize,
        /// New length.
        actual_len: usize,
        /// Offset of the first byte that differs (or where the shorter one ends).
        first_difference: usize,
    },
}

/// The comparison of one delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The recorded status.
    pub expected_status: u16,
    /// The status now, if the handler answered.
    pub actual_status: Option<u16>,
    /// Why the handler did not answer.
    pub no_answer: Option<String>,
    /// How the bodies differ, if they do.
    pub body: Option<BodyDiff>,
}

impl Report {
    /// Whether the handler answered as recorded.
    pub fn passed(&self) -> bool {
        self.no_answer.is_none()
            && self.actual_status == Some(self.expected_status)
            && self.body.is_none()
    }
}
