//! The offline queue and tunnel ownership, as the relay core sees them: the [`Queue`] port.
//! A delivery for a tunnel with no session is committed to the queue before its sender hears
//! 202; when a session of the tunnel connects, the tunnel's catch-up (see
//! [`tunnel`](crate::tunnel)) sends the queue to it in arrival order, and each row leaves only
//! when the client says `Recorded` (at-least-once). A row that ends or is rejected by three
//! sessions in a row moves to the dead letters.
//!
//! Two backends implement [`Queue`]: [`local`] (`{data_dir}/relay.db`, one thread owning
//! SQLite) and, with the `cluster` feature, the NATS adapter (JetStream). The core holds a
//! [`QueueHandle`] and never knows which.

mod clock;
mod delivery;
mod error;
pub mod local;
mod schema;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use illumitunnel::DeliveryId;

pub use clock::Clock;
pub use delivery::{
    Backlog, QueueLimits, QueuedDelivery, Row, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES,
    DEFAULT_MAX_COUNT, DEFAULT_MAX_TOTAL_BYTES,
};
pub use error::{Limit, QueueError};
pub use store::{Depth, QueueStore};

use crate::auth::{Claim, Owner};

/// Bytes of bodies [`Queue::rows_after`] reads at once.
pub const PAGE_BYTES: usize = 8 * 1024 * 1024;

/// The queue as the core uses it; cloneable.
pub type QueueHandle = Arc<dyn Queue>;

/// What every queue backend does: tunnel ownership, the per-tunnel queue in arrival order, its
/// attempts and dead letters, and the housekeeping a single relay does (a cluster's JetStream
/// limits do it there, so those calls answer "nothing" on a cluster).
#[async_trait::async_trait]
pub trait Queue: Send + Sync {
    /// Claims `tunnel` for `presented` (or `fresh` when the client has no claim key yet);
    /// committed when it returns.
    async fn claim(
        &self,
        tunnel: &str,
        presented: Option<Owner>,
        fresh: Owner,
    ) -> Result<Claim, QueueError>;

    /// Queues a delivery; returns once it is committed.
    async fn push(&self, tunnel: &str, delivery: QueuedDelivery) -> Result<(), QueueError>;

    /// A session connects: expires aged rows; returns what the session should hear.
    async fn connect(&self, tunnel: &str) -> Result<Backlog, QueueError>;

    /// The oldest delivery in `tunnel`'s queue.
    async fn head(&self, tunnel: &str) -> Result<Option<Row>, QueueError>;

    /// Up to `max` rows of `tunnel`'s queue after `seq`, oldest first, stopping after
    /// [`PAGE_BYTES`] of bodies (at least one row when any is left).
    async fn rows_after(&self, tunnel: &str, seq: i64, max: usize) -> Result<Vec<Row>, QueueError>;

    /// Drops the recorded delivery at `seq`; returns once that is committed.
    async fn remove(&self, tunnel: &str, seq: i64) -> Result<bool, QueueError>;

    /// Counts a session the delivery at `seq` ended or was rejected by; returns the count.
    async fn attempt_failed(&self, tunnel: &str, seq: i64) -> Result<u32, QueueError>;

    /// Sets the delivery at `seq` aside as a dead letter.
    async fn dead_letter(&self, tunnel: &str, seq: i64, reason: String)
        -> Result<bool, QueueError>;

    /// Drops a recorded delivery from the queue (no answer: a lost ack means a redelivery).
    async fn ack(&self, tunnel: &str, id: DeliveryId);

    /// Expires aged rows of every tunnel (one bounded pass); returns how many.
    async fn expire(&self) -> Result<u64, QueueError> {
        Ok(0)
    }

    /// Tunnels whose owner has not connected for `ttl`.
    async fn stale(&self, _ttl: Duration) -> Result<Vec<String>, QueueError> {
        Ok(Vec::new())
    }

    /// Releases those of `names` still unused for `ttl`; returns the names released.
    async fn release_stale(
        &self,
        _ttl: Duration,
        _names: Vec<String>,
    ) -> Result<Vec<String>, QueueError> {
        Ok(Vec::new())
    }

    /// Names `tunnel release` freed after the `released` sequence number `after`, and the last
    /// number read; with `None`, no names and the newest number (where a relay starts reading).
    async fn released_since(&self, _after: Option<i64>) -> Result<(Vec<String>, i64), QueueError> {
        Ok((Vec::new(), 0))
    }

    /// Drops what was queued for these released names while they had no owner.
    async fn drop_unowned(&self, _names: Vec<String>) {}

    /// Commits what is waiting and stops.
    async fn close(&self) {}
}
