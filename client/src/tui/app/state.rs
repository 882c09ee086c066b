//! The inspector's state, as data: the `App` the transitions in `app.rs` (and its siblings)
//! change and the view draws, and the small types it is made of. No behaviour lives here, so
//! the view and the transitions both import it and neither imports the other.

use bytes::Bytes;
use illumitunnel::store::{Counts, Filter};
use illumitunnel::{Delivery, DeliveryId};
use time::UtcOffset;

use crate::regression::Report;
use crate::status::ConnectionState;

/// A details tab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// The request body.
    Payload,
    /// Request line, headers and delivery facts.
    RequestHeaders,
    /// The local server's status, headers and body.
    Response,
    /// The request as it arrived on the wire.
    Raw,
}

impl Tab {
    /// Every tab, in display order.
    pub const ALL: [Tab; 4] = [Tab::Payload, Tab::RequestHeaders, Tab::Response, Tab::Raw];

    /// The tab's title.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Payload => "Payload",
            Tab::RequestHeaders => "Request headers",
            Tab::Response => "Response",
            Tab::Raw => "Raw",
        }
    }

    pub(super) fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    pub(super) fn step(self, by: usize) -> Tab {
        Tab::ALL[(self.index() + by) % Tab::ALL.len()]
    }
}

/// Who has the keyboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The list and details.
    Normal,
    /// The filter prompt, with what has been typed.
    Filter(String),
    /// "Body unchanged; replay as is?" for this delivery.
    Confirm(DeliveryId),
    /// The key help.
    Help,
}

/// A footer message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// What to say.
    pub text: String,
    /// Whether it reports a failure.
    pub is_error: bool,
    pub(super) until_ms: i64,
}

/// Deliveries from the relay's offline queue since the last connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueProgress {
    /// Announced by the relay.
    pub expected: u32,
    /// Arrived so far.
    pub arrived: u32,
    /// Expired before they could be delivered.
    pub expired: u32,
}

/// `listen` stopping while deliveries are still being forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopping {
    /// Deliveries still being forwarded.
    pub deliveries: usize,
    /// When the wait ends, Unix ms.
    pub until_ms: i64,
}

/// The inspector's whole state.
pub struct App {
    /// The public webhook URL.
    pub public_url: String,
    /// Where deliveries are forwarded.
    pub forward_to: String,
    /// The web inspector's URL, when `listen` serves one (shown in the header).
    pub web_inspector: Option<String>,
    /// The relay connection.
    pub connection: ConnectionState,
    /// Why the capture store fails, while it does.
    pub store_failing: Option<String>,
    /// Queued deliveries the relay has set aside as dead letters.
    pub dead_letters: u32,
    pub(super) reconnect_at_ms: i64,
    /// All deliveries in the capture store by outcome.
    pub counts: Counts,
    /// The store's counts when the inspector opened: `counts` less these is this run.
    pub baseline: Option<Counts>,
    /// Set once `listen` stops: deliveries still being forwarded, and until when it waits.
    pub stopping: Option<Stopping>,
    /// Whether `q` or Ctrl-C asked `listen` to stop: the next one quits at once.
    pub stop_asked: bool,
    /// The offline queue catching up, after a connect that announced some.
    pub queue: Option<QueueProgress>,
    /// The clock, Unix ms.
    pub now_ms: i64,
    /// Offset the list's times are shown in.
    pub utc_offset: UtcOffset,
    /// Terminal size.
    pub size: (u16, u16),
    pub(super) rows: Vec<Delivery>,
    pub(super) offset: u64,
    /// Deliveries matching the filter.
    pub total: u64,
    /// Index of the selected delivery among the matching ones, oldest first.
    pub selected: u64,
    /// Index of the first visible row.
    pub top: u64,
    /// Whether following is paused with `p`.
    pub paused: bool,
    pub(super) follow: bool,
    /// Whether the details are open.
    pub details_open: bool,
    /// The details tab.
    pub tab: Tab,
    /// Lines the details are scrolled down.
    pub details_scroll: u16,
    /// The applied filter.
    pub filter: Filter,
    /// Who has the keyboard.
    pub mode: Mode,
    /// The footer message, if fresh.
    pub message: Option<Message>,
    /// The last `t` test's result, shown in the details of the delivery tested.
    pub test: Option<TestView>,
    pub(super) testing: Option<Pending>,
    /// JSON pointers `i` left out of every test this session, in the order they were added.
    pub ignored: Vec<String>,
    pub(super) select_seq: Option<i64>,
    pub(super) max_seq_seen: i64,
    pub(super) counted_through: i64,
    pub(super) totaled_through: i64,
    pub(super) recent: std::collections::BTreeSet<i64>,
    pub(super) sync_pending: bool,
    pub(super) last_sync_ms: i64,
    pub(super) dirty: bool,
}

/// A finished test, shown while its delivery is selected.
#[derive(Debug, Clone, PartialEq)]
pub struct TestView {
    /// The delivery tested.
    pub original: DeliveryId,
    /// The replay that carried the test.
    pub replay: DeliveryId,
    /// How the answers compare, with the session's ignored fields left out.
    pub report: Report,
    /// The recorded answer and the new one, to compare again when a field is ignored.
    pub(super) answers: Answers,
}

/// Both sides of a test, kept so `i` can compare them again without another replay.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Answers {
    pub(super) expected_status: u16,
    pub(super) expected_body: Bytes,
    /// The new status and body, or why there was no answer.
    pub(super) actual: Result<(u16, Bytes), String>,
}

/// A test on its way: what the answer must match.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) original: DeliveryId,
    pub(super) status: u16,
    pub(super) body: Bytes,
}
