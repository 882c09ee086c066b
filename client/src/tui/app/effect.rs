//! What goes in and out of `App`: the events it applies and the effects it asks the loop to run.

use bytes::Bytes;
use crossterm::event::{KeyEvent, MouseEvent};
use illumitunnel::store::{Counts, Filter};
use illumitunnel::{Delivery, DeliveryId};

use crate::status::ListenEvent;

/// Which rows a store query returns (always handed back oldest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// No rows, only counts.
    Nothing,
    /// The newest `n`.
    Newest(usize),
    /// The oldest `n`.
    Oldest(usize),
    /// Up to `limit` right before `seq`.
    Before {
        /// Exclusive bound.
        seq: i64,
        /// Most rows.
        limit: usize,
    },
    /// Up to `limit` right after `seq`.
    After {
        /// Exclusive bound.
        seq: i64,
        /// Most rows.
        limit: usize,
    },
}

/// A capture store read the loop runs for the app.
#[derive(Debug, Clone)]
pub struct Query {
    /// The filter the rows and total obey.
    pub filter: Filter,
    /// Which rows.
    pub rows: Rows,
    /// Whether to count the matching deliveries.
    pub total: bool,
    /// Whether to count all deliveries by outcome.
    pub counts: bool,
    /// Whether to look up the store's newest delivery first and read up to it (after a start or
    /// dropped events); otherwise reads stop at `seen_seq`.
    pub sync: bool,
    /// The newest delivery the app has accounted for; later ones arrive as events.
    pub seen_seq: i64,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone)]
pub struct Page {
    /// Which rows were asked for.
    pub rows_kind: Rows,
    /// The rows, oldest first.
    pub rows: Vec<Delivery>,
    /// Matching deliveries, if asked.
    pub total: Option<u64>,
    /// Outcome counts, if asked.
    pub counts: Option<Counts>,
    /// The newest delivery the rows and counts may include: the store's head when `sync` was
    /// asked, else the query's `seen_seq`.
    pub bound: i64,
}

/// Work the loop does for the app.
#[derive(Debug)]
pub enum Effect {
    /// Read the capture store, answer with `AppEvent::Loaded`.
    Load(Query),
    /// Ask `listen` to replay a delivery, answer with `AppEvent::Replayed`.
    Replay {
        /// Delivery to replay.
        original: DeliveryId,
        /// Replacement body.
        body: Option<Bytes>,
    },
    /// Ask `listen` to replay a delivery as a test, answer with `AppEvent::Tested`.
    Test {
        /// Delivery to test.
        original: DeliveryId,
    },
    /// Open the body in `$VISUAL`/`$EDITOR`, answer with `AppEvent::Edited`.
    Edit {
        /// Delivery being edited.
        original: DeliveryId,
        /// Its body.
        body: Bytes,
    },
    /// Put text on the clipboard with OSC 52, answer with `AppEvent::Copied`.
    Copy {
        /// Delivery copied.
        id: DeliveryId,
        /// The curl command.
        text: String,
    },
    /// Stop `listen`: the inspector stays up while deliveries being forwarded finish.
    Stop,
    /// Leave the inspector now; deliveries still being forwarded are left to the relay.
    Quit,
}

/// Everything that can change the app.
#[derive(Debug)]
pub enum AppEvent {
    /// A key press.
    Key(KeyEvent),
    /// A mouse event.
    Mouse(MouseEvent),
    /// The terminal's new size.
    Resize(u16, u16),
    /// The clock, Unix ms.
    Tick(i64),
    /// Something from `listen`.
    Listen(ListenEvent),
    /// A store query's answer.
    Loaded(Page),
    /// A store query failed.
    LoadFailed(String),
    /// A replay's answer.
    Replayed {
        /// The delivery replayed.
        original: DeliveryId,
        /// The committed replay, or why it failed.
        result: Result<Box<Delivery>, String>,
    },
    /// A test replay's answer.
    Tested {
        /// The delivery tested.
        original: DeliveryId,
        /// The committed replay, or why it failed.
        result: Result<Box<Delivery>, String>,
    },
    /// The editor closed.
    Edited {
        /// The delivery edited.
        original: DeliveryId,
        /// The body before.
        before: Bytes,
        /// The body after, or why the editor failed.
        after: Result<Vec<u8>, String>,
    },
    /// The clipboard write finished.
    Copied {
        /// The delivery copied.
        id: DeliveryId,
        /// Bytes written, or why it failed.
        result: Result<usize, String>,
    },
}
