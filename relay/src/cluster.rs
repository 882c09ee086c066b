//! The relay cluster (`--cluster nats://… --node-id NAME`): any number of relay nodes behind
//! one load balancer serve every tunnel, with their shared state in NATS JetStream instead of
//! `relay.db`. See `docs/cluster.md` for the whole picture; in short:
//!
//! | state | where | module |
//! |---|---|---|
//! | tunnel ownership | KV `illumitunnel-tunnels`: name → owner hash | [`queue`] |
//! | presence | KV `illumitunnel-nodes` (heartbeats) and `illumitunnel-presence` (`{tunnel}.{node}`) | [`presence`] |
//! | offline queue | stream `ILLUMITUNNEL_QUEUE`, subject `illumitunnel.queue.{tunnel}` | [`queue`] |
//! | dead letters | stream `ILLUMITUNNEL_DEAD`, subject `illumitunnel.dead.{tunnel}` | [`queue`] |
//! | large bodies | object store `illumitunnel-bodies` | [`Cluster::put_body`] |
//!
//! Each tunnel has one **authority**: the live node holding its oldest session. Every node
//! hands a tunnel's deliveries to its authority over NATS request/reply (subject
//! `illumitunnel.node.{node}.deliver.{tunnel}`), so one node decides the tunnel's order exactly
//! as a single relay does: straight to the sessions when live, into the queue behind the
//! backlog otherwise. With no authority (no session anywhere) the receiving node queues.

pub mod codec;
pub mod connect;
pub mod handover;
pub mod node;
pub mod presence;
pub mod queue;
pub mod ready;
pub mod release;
pub mod tokens;
pub mod view;
pub mod wake;

use std::time::Duration;

/// Longest a node waits for JetStream to confirm a write (a sender waits that long at most
/// before hearing 503 when NATS is away).
pub const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between attempts to set up JetStream while it elects its leader.
const SETUP_RETRY: Duration = Duration::from_millis(500);
/// Bytes kept free in a NATS message for its subject, headers and the head of a delivery.
const PAYLOAD_SLACK: usize = 64 * 1024;

/// How long dead letters are kept.
const DEAD_LETTER_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// KV bucket: tunnel name → owner (as `relay.db` keeps it).
pub const OWNERS_BUCKET: &str = "illumitunnel-tunnels";
/// KV bucket: node id → its last heartbeat.
pub const NODES_BUCKET: &str = "illumitunnel-nodes";
/// KV bucket: `{tunnel}.{node}` → when that node's first session of the tunnel joined.
pub const PRESENCE_BUCKET: &str = "illumitunnel-presence";
/// KV bucket: `{tunnel}.{seq}` → failed attempts of a queued delivery.
pub const ATTEMPTS_BUCKET: &str = "illumitunnel-attempts";
/// KV bucket: token hash → label, the tokens `token add --cluster` stored.
pub const TOKENS_BUCKET: &str = "illumitunnel-tokens";
/// Object store for bodies larger than a NATS message.
pub const BODIES_BUCKET: &str = "illumitunnel-bodies";
/// Stream of queued deliveries.
pub const QUEUE_STREAM: &str = "ILLUMITUNNEL_QUEUE";
/// Stream of dead letters.
pub const DEAD_STREAM: &str = "ILLUMITUNNEL_DEAD";

/// Subject prefix of queued deliveries.
pub const QUEUE_SUBJECT: &str = "illumitunnel.queue";
/// Subject prefix of dead letters.
pub const DEAD_SUBJECT: &str = "illumitunnel.dead";
/// Subject prefix a node publishes on after queueing, to wake the tunnel's authority.
pub const PUSHED_SUBJECT: &str = "illumitunnel.pushed";

/// How long the queue stream remembers a delivery id, so a second copy of a delivery (a node
/// that wakes from a pause and queues what another node already queued for it) is dropped.
/// JetStream's own default; NATS drops a paused node's buffered messages long before.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// The queue stream's duplicate window: [`DEDUPE_WINDOW`], or the queue's age limit
/// when that is shorter (JetStream refuses a window longer than the age limit).
pub fn dedupe_window(max_age: Duration) -> Duration {
    if max_age.is_zero() {
        DEDUPE_WINDOW
    } else {
        DEDUPE_WINDOW.min(max_age)
    }
}

/// Where a node's replies arrive: `_INBOX.{node}.…`, so a node's NATS user may be allowed to
/// read its own replies and no other node's.
pub fn inbox_prefix(node: &str) -> String {
    format!("_INBOX.{node}")
}
