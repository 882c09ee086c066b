//! What `listen` tells its screen (line output or the inspector): connection state changes and
//! committed deliveries, plus the replay requests the inspector sends back. These types are the
//! only coupling between the tunnel side (session, forwarder, store writer) and the screen side.

use bytes::Bytes;
use illumitunnel::{Delivery, DeliveryId};
use tokio::sync::oneshot;

/// The relay connection as the user should see it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionState {
    /// First connection attempt in progress.
    Connecting,
    /// Session accepted; `queued` deliveries from the offline queue follow, `expired` were lost to age.
    Connected {
        /// Deliveries waiting in the relay's offline queue.
        queued: u32,
        /// Queued deliveries that expired before this session.
        expired: u32,
        /// Queued deliveries the relay set aside as dead letters (kept in its data dir).
        dead_letters: u32,
    },
    /// Connection lost or failed; next attempt after `in_secs`.
    Reconnecting {
        /// Seconds until the next attempt.
        in_secs: f64,
        /// One-sentence cause.
        cause: String,
    },
    /// The relay refused the session; `listen` exits after showing this.
    Refused(String),
}

/// One event for the screen.
#[derive(Debug, Clone)]
pub enum ListenEvent {
    /// The connection state changed.
    Connection(ConnectionState),
    /// Deliveries (or replays) committed to the capture store, in the order stored: one event a
    /// commit, so the screen's thread is woken once for many deliveries, not once for each.
    Deliveries(Vec<Delivery>),
    /// Deliveries were committed (or pruned) but their events were dropped because the screen
    /// fell behind; the screen should re-read the capture store.
    StoreChanged,
    /// The capture store started failing, or works again.
    Store(StoreHealth),
    /// A delivery from the relay's offline queue reached this client (before it is forwarded,
    /// and also when it was recorded already and is only acknowledged): the catch-up count the
    /// relay announced in `Welcome.queued` moves on, as the relay's does when it sends it.
    QueuedArrived,
    /// `listen` is stopping and waits for deliveries still being forwarded; those not done in
    /// time are left to the relay, which sends them again (nothing recorded, nothing lost).
    Draining {
        /// Deliveries still being forwarded.
        deliveries: usize,
        /// The longest it waits.
        up_to: std::time::Duration,
    },
    /// The relay set a queued delivery aside: it was rejected, or ended sessions, too often.
    DeadLettered {
        /// The delivery set aside.
        id: DeliveryId,
        /// Why, as the relay says it.
        reason: String,
    },
}

/// Whether the capture store takes writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Commits fail, with this sentence (cause; remedy); nothing is acknowledged to the relay.
    Failing(String),
    /// A commit succeeded after failures.
    Recovered,
}

/// A replay asked for by the inspector (`r`, or `e` with an edited body).
#[derive(Debug)]
pub struct ReplayRequest {
    /// Delivery to replay.
    pub original: DeliveryId,
    /// Replacement body (from `$EDITOR`), or `None` to resend the stored one.
    pub body: Option<Bytes>,
    /// Other changes (the web inspector's "edit and replay"); none from the terminal.
    pub edits: ReplayEdits,
    /// The committed replay delivery, or a one-sentence error.
    pub reply: oneshot::Sender<Result<Delivery, String>>,
}

/// Changes to a replayed request besides its body: a method, a path (with an optional `?query`),
/// and headers to set (`Some`) or remove (`None`), matched by name in any case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayEdits {
    /// Replacement method.
    pub method: Option<String>,
    /// Replacement path, optionally with `?query`, sent to the forward target's origin.
    pub path: Option<String>,
    /// Headers to set (replacing every header of that name) or, with `None`, remove.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}
