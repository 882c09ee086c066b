//! What the offline queue keeps: a [`QueuedDelivery`], its [`Row`] in a tunnel's queue, the
//! [`Backlog`] a connecting session hears, and the [`QueueLimits`] every backend enforces.

use std::time::Duration;

use bytes::Bytes;
use illumitunnel::headers::Header;
use illumitunnel::DeliveryId;

/// Default `--queue-max-count`: deliveries kept per tunnel.
pub const DEFAULT_MAX_COUNT: u64 = 10_000;
/// Default `--queue-max-bytes`: bytes (bodies and headers) kept per tunnel.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default `--queue-max-total-bytes`: bytes kept across every tunnel.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 1024 * 1024 * 1024;
/// Default `--queue-max-age`: how long a queued delivery is kept.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(72 * 3600);
/// Per-tunnel limits of the offline queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most deliveries queued for one tunnel.
    pub max_count: u64,
    /// Most bytes queued for one tunnel.
    pub max_bytes: u64,
    /// Queued deliveries older than this are dropped and reported to the next session.
    pub max_age: Duration,
    /// Most bytes queued across every tunnel, so no set of tunnels can fill the disk.
    pub max_total_bytes: u64,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_count: DEFAULT_MAX_COUNT,
            max_bytes: DEFAULT_MAX_BYTES,
            max_age: DEFAULT_MAX_AGE,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

/// A delivery as the queue keeps it: everything needed to send it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDelivery {
    /// Its id, the same on every redelivery.
    pub id: DeliveryId,
    /// When the relay received it, Unix ms.
    pub received_at_ms: u64,
    /// HTTP method.
    pub method: String,
    /// Path below the tunnel.
    pub path: String,
    /// Raw query without `?`.
    pub query: String,
    /// Headers as forwarded.
    pub headers: Vec<Header>,
    /// The body.
    pub body: Bytes,
}

/// A queued delivery and its place in the queue.
#[derive(Debug, Clone)]
pub struct Row {
    /// Arrival order within the relay.
    pub seq: i64,
    /// Sessions this delivery ended or was rejected by, in a row.
    pub attempts: u32,
    /// The delivery.
    pub delivery: QueuedDelivery,
}

/// What a connecting session hears about its tunnel's queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Deliveries waiting.
    pub queued: u64,
    /// Deliveries dropped for age since a session last heard it.
    pub expired: u64,
    /// Deliveries set aside as dead letters (kept in the data dir).
    pub dead_letters: u64,
}
