//! The offline queue and tunnel ownership, kept in `{data_dir}/relay.db`. A delivery for a
//! tunnel with no session is committed here before its sender hears 202; when a session of the
//! tunnel connects, the tunnel's drain (see [`tunnel`](crate::tunnel)) sends the queue to it
//! one delivery at a time in arrival order, and each row leaves only when the client says
//! `Recorded` (at-least-once). A row that ends or is rejected by three sessions in a row moves
//! to the dead letters.
//!
//! SQLite calls block, so one thread owns the database ([`QueueStore`]) and everyone else holds
//! a cloneable [`QueueHandle`] over a bounded channel, with answers on `oneshot`s. The thread
//! groups whatever is waiting into one transaction, so a burst costs one fsync. Connected
//! tunnels never touch it: a live delivery reads and writes no disk.

mod clock;
mod error;
mod schema;
pub mod store;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use illumitunnel::headers::Header;
use illumitunnel::DeliveryId;
use tokio::sync::{mpsc, oneshot};

pub use clock::Clock;
pub use error::{Limit, QueueError};
pub use store::{Depth, QueueStore};

use crate::auth::{Claim, Owner};
use crate::cluster::Cluster;

/// Default `--queue-max-count`: deliveries kept per tunnel.
pub const DEFAULT_MAX_COUNT: u64 = 10_000;
/// Default `--queue-max-bytes`: bytes (bodies and headers) kept per tunnel.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default `--queue-max-total-bytes`: bytes kept across every tunnel.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 1024 * 1024 * 1024;
/// Default `--queue-max-age`: how long a queued delivery is kept.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(72 * 3600);
/// Commands waiting for the queue thread before callers wait for it.
const COMMANDS: usize = 1024;
/// Most commands grouped into one transaction.
const MAX_BATCH: usize = 512;
/// Bytes [`QueueHandle::rows_after`] reads at once (at least one row when any is left).
const PAGE_BYTES: usize = 8 * 1024 * 1024;

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

enum Command {
    Claim {
        tunnel: String,
        presented: Option<Owner>,
        fresh: Owner,
        reply: oneshot::Sender<Result<Claim, QueueError>>,
    },
    Push {
        tunnel: String,
        delivery: QueuedDelivery,
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
    Connect {
        tunnel: String,
        reply: oneshot::Sender<Result<Backlog, QueueError>>,
    },
    Head {
        tunnel: String,
        reply: oneshot::Sender<Result<Option<Row>, QueueError>>,
    },
    Page {
        tunnel: String,
        seq: i64,
        max: usize,
        reply: oneshot::Sender<Result<Vec<Row>, QueueError>>,
    },
    Remove {
        tunnel: String,
        seq: i64,
        reply: oneshot::Sender<Result<bool, QueueError>>,
    },
    AttemptFailed {
        tunnel: String,
        seq: i64,
        reply: oneshot::Sender<Result<u32, QueueError>>,
    },
    DeadLetter {
        tunnel: String,
        seq: i64,
        reason: String,
        reply: oneshot::Sender<Result<bool, QueueError>>,
    },
    Ack {
        tunnel: String,
        id: DeliveryId,
    },
    Expire {
        reply: oneshot::Sender<Result<u64, QueueError>>,
    },
    Stale {
        ttl: Duration,
        reply: oneshot::Sender<Result<Vec<String>, QueueError>>,
    },
    ReleaseStale {
        ttl: Duration,
        names: Vec<String>,
        reply: oneshot::Sender<Result<Vec<String>, QueueError>>,
    },
    DropUnowned {
        names: Vec<String>,
    },
    ReleasedSince {
        after: Option<i64>,
        reply: oneshot::Sender<Result<(Vec<String>, i64), QueueError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Talks to the queue: the thread that owns `relay.db`, or JetStream on a cluster node;
/// cloneable.
#[derive(Clone)]
pub struct QueueHandle {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Local(mpsc::Sender<Command>),
    Cluster(Arc<Cluster>, QueueLimits),
}

impl QueueHandle {
    /// The queue of a cluster node: JetStream, with `limits` for its refusals.
    pub fn cluster(cluster: Arc<Cluster>, limits: QueueLimits) -> Self {
        QueueHandle {
            backend: Backend::Cluster(cluster, limits),
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, QueueError>>) -> Command,
    ) -> Result<T, QueueError> {
        let Backend::Local(tx) = &self.backend else {
            return Err(QueueError::Stopped);
        };
        let (tx_reply, rx) = oneshot::channel();
        let tx_reply = make(tx_reply);
        tx.send(tx_reply).await.map_err(|_| QueueError::Stopped)?;
        rx.await.unwrap_or(Err(QueueError::Stopped))
    }

    /// Claims `tunnel` (see [`QueueStore::claim`]); `Claimed` is committed when it returns.
    pub async fn claim(
        &self,
        tunnel: &str,
        presented: Option<Owner>,
        fresh: Owner,
    ) -> Result<Claim, QueueError> {
        if let Backend::Cluster(cluster, _) = &self.backend {
            return cluster.claim(tunnel, presented, fresh).await;
        }
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Claim {
            tunnel,
            presented,
            fresh,
            reply,
        })
        .await
    }

    /// Queues a delivery; returns once it is committed to disk.
    pub async fn push(&self, tunnel: &str, delivery: QueuedDelivery) -> Result<(), QueueError> {
        if let Backend::Cluster(cluster, limits) = &self.backend {
            return cluster.push(tunnel, delivery, *limits).await;
        }
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Push {
            tunnel,
            delivery,
            reply,
        })
        .await
    }

    /// A session connects: expires aged rows; returns what the session should hear.
    pub async fn connect(&self, tunnel: &str) -> Result<Backlog, QueueError> {
        if let Backend::Cluster(cluster, _) = &self.backend {
            return cluster.backlog(tunnel).await;
        }
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Connect { tunnel, reply }).await
    }

    /// The oldest delivery in `tunnel`'s queue.
    pub async fn head(&self, tunnel: &str) -> Result<Option<Row>, QueueError> {
        if let Backend::Cluster(cluster, _) = &self.backend {
            return cluster.head(tunnel).await;
        }
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Head { tunnel, reply }).await
    }

    /// Up to `max` rows of `tunnel`'s queue after `seq`, oldest first (see [`PAGE_BYTES`]).
    pub async fn rows_after(
        &self,
        tunnel: &str,
        seq: i64,
        max: usize,
    ) -> Result<Vec<Row>, QueueError> {
        if let Backend::Cluster(cluster, _) = &self.backend {
            return cluster.rows_after(tunnel, seq, max, PAGE_BYTES).await;
        }
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Page {
            tunnel,
            seq,
            max,
            reply,
        })
        .await
    }

    /// Drops the recorded delivery at `seq`; returns once that is committed.
    pub async fn remove(&self, tunnel: &str, seq: i64) -> Result<bool, QueueError> {
        if let Backend::Cluster(cluster, _) = &self.backend {
            return cluster.remove(tunnel, seq).await;
        }
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Remove { tunnel, seq, reply })
            .await
    }

    /// Counts a session the delivery at `seq` ended or was rejected by; returns the count.
    pub async fn attempt_failed(&self, tunnel: &str, seq: i64) -> Result<u32, QueueError> {
        if let Backend::Cluster(cluster, _) = &self.backend {
            return cluster.attempt_failed(tunnel, seq).await;
        }
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::AttemptFailed { tunnel, seq, reply })
            .await
    }

    /// Sets the delivery at `seq` aside as a dead letter.
    pub async fn dead_letter(
        &self,
        tunnel: &str,
        seq: i64,
        reason: String,
    ) -> Result<bool, QueueError> {
        if let Backend::Cluster(cluster, _) = &self.backend {
            return cluster.dead_letter(tunnel, seq, reason).await;
        }
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::DeadLetter {
            tunnel,
            seq,
            reason,
            reply,
        })
        .await
    }

    /// Drops a recorded delivery from the queue (no answer: a lost ack means a redelivery).
    pub async fn ack(&self, tunnel: &str, id: DeliveryId) {
        // On a cluster the drain deletes what was recorded; a stray ack means a redelivery.
        if let Backend::Local(tx) = &self.backend {
            let tunnel = tunnel.to_owned();
            let _ = tx.send(Command::Ack { tunnel, id }).await;
        }
    }

    /// Expires aged rows of every tunnel (one bounded pass); returns how many.
    pub async fn expire(&self) -> Result<u64, QueueError> {
        if matches!(self.backend, Backend::Cluster(..)) {
            return Ok(0);
        }
        self.call(|reply| Command::Expire { reply }).await
    }

    /// Tunnels whose owner has not connected for `ttl`.
    pub async fn stale(&self, ttl: Duration) -> Result<Vec<String>, QueueError> {
        if matches!(self.backend, Backend::Cluster(..)) {
            return Ok(Vec::new());
        }
        self.call(|reply| Command::Stale { ttl, reply }).await
    }

    /// Releases those of `names` still unused for `ttl`; returns the names released.
    pub async fn release_stale(
        &self,
        ttl: Duration,
        names: Vec<String>,
    ) -> Result<Vec<String>, QueueError> {
        if matches!(self.backend, Backend::Cluster(..)) {
            return Ok(Vec::new());
        }
        self.call(|reply| Command::ReleaseStale { ttl, names, reply })
            .await
    }

    /// Names `tunnel release` freed after the `released` sequence number `after`, and the last
    /// number read; with `None`, no names and the newest number (where a relay starts reading).
    /// A cluster node learns releases from the owners bucket instead: always none here.
    pub async fn released_since(
        &self,
        after: Option<i64>,
    ) -> Result<(Vec<String>, i64), QueueError> {
        if matches!(self.backend, Backend::Cluster(..)) {
            return Ok((Vec::new(), 0));
        }
        self.call(|reply| Command::ReleasedSince { after, reply })
            .await
    }

    /// Drops what was queued for these released names while they had no owner.
    pub async fn drop_unowned(&self, names: Vec<String>) {
        if let Backend::Local(tx) = &self.backend {
            let _ = tx.send(Command::DropUnowned { names }).await;
        }
    }

    /// Commits what is waiting, checkpoints and stops the thread.
    pub async fn close(&self) {
        let Backend::Local(tx) = &self.backend else {
            return;
        };
        let (reply, rx) = oneshot::channel();
        if tx.send(Command::Close { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the queue thread over `store`, reading the time from `clock`.
pub fn spawn(store: QueueStore, clock: Clock) -> std::io::Result<(QueueHandle, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(COMMANDS);
    let thread = std::thread::Builder::new()
        .name("relay-queue".into())
        .spawn(move || run(store, clock, rx))?;
    Ok((
        QueueHandle {
            backend: Backend::Local(tx),
        },
        thread,
    ))
}

/// A reply to send once the batch it belongs to is committed.
enum Done {
    Claim(
        oneshot::Sender<Result<Claim, QueueError>>,
        Result<Claim, QueueError>,
    ),
    Push(
        oneshot::Sender<Result<(), QueueError>>,
        Result<(), QueueError>,
    ),
    Connect(
        oneshot::Sender<Result<Backlog, QueueError>>,
        Result<Backlog, QueueError>,
    ),
    Changed(
        oneshot::Sender<Result<bool, QueueError>>,
        Result<bool, QueueError>,
    ),
    Attempts(
        oneshot::Sender<Result<u32, QueueError>>,
        Result<u32, QueueError>,
    ),
    Expire(
        oneshot::Sender<Result<u64, QueueError>>,
        Result<u64, QueueError>,
    ),
    Released(
        oneshot::Sender<Result<Vec<String>, QueueError>>,
        Result<Vec<String>, QueueError>,
    ),
    ReleasedSince(
        oneshot::Sender<Result<(Vec<String>, i64), QueueError>>,
        Result<(Vec<String>, i64), QueueError>,
    ),
}

impl Done {
    fn send(self, failed: Option<&str>) {
        fn fail<T>(failed: Option<&str>, r: Result<T, QueueError>) -> Result<T, QueueError> {
            match (failed, r) {
                (Some(cause), Ok(_)) => Err(QueueError::Storage(cause.to_owned())),
                (_, r) => r,
            }
        }
        match self {
            Done::Claim(tx, r) => drop(tx.send(fail(failed, r))),
            Done::Push(tx, r) => drop(tx.send(fail(failed, r))),
            Done::Connect(tx, r) => drop(tx.send(fail(failed, r))),
            Done::Changed(tx, r) => drop(tx.send(fail(failed, r))),
            Done::Attempts(tx, r) => drop(tx.send(fail(failed, r))),
            Done::Expire(tx, r) => drop(tx.send(fail(failed, r))),
            Done::Released(tx, r) => drop(tx.send(fail(failed, r))),
            Done::ReleasedSince(tx, r) => drop(tx.send(fail(failed, r))),
        }
    }
}

fn run(mut store: QueueStore, clock: Clock, mut rx: mpsc::Receiver<Command>) {
    let mut done: Vec<Done> = Vec::new();
    let mut closing: Option<oneshot::Sender<()>> = None;
    while let Some(first) = rx.blocking_recv() {
        if let Err(err) = store.begin() {
            tracing::error!(%err, "could not start a queue transaction");
        }
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(command) = next.take() {
            handled += 1;
            if let Some(reply) = execute(&mut store, clock.now_ms(), command, &mut done) {
                closing = Some(reply);
                break;
            }
            if handled < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let failed = if store.in_batch() {
            store.commit().err().map(|e| e.to_string())
        } else {
            None
        };
        if let Some(cause) = &failed {
            tracing::error!(%cause, "could not commit the offline queue");
        }
        for d in done.drain(..) {
            d.send(failed.as_deref());
        }
        if closing.is_some() {
            break;
        }
    }
    if let Err(err) = store.checkpoint() {
        tracing::warn!(%err, "could not checkpoint the relay database");
    }
    drop(store);
    if let Some(reply) = closing {
        let _ = reply.send(());
    }
}

/// Runs one command inside the open transaction; returns `Close`'s reply to stop.
fn execute(
    store: &mut QueueStore,
    now: i64,
    command: Command,
    done: &mut Vec<Done>,
) -> Option<oneshot::Sender<()>> {
    match command {
        Command::Claim {
            tunnel,
            presented,
            fresh,
            reply,
        } => done.push(Done::Claim(
            reply,
            store.claim(&tunnel, presented, fresh, now),
        )),
        Command::Push {
            tunnel,
            delivery,
            reply,
        } => done.push(Done::Push(reply, store.push(&tunnel, &delivery, now))),
        Command::Connect { tunnel, reply } => {
            done.push(Done::Connect(reply, store.connect(&tunnel, now)))
        }
        Command::Head { tunnel, reply } => {
            // Reads need no commit: answer at once.
            let _ = reply.send(store.head(&tunnel));
        }
        Command::Page {
            tunnel,
            seq,
            max,
            reply,
        } => {
            let _ = reply.send(store.page(&tunnel, seq, max, PAGE_BYTES));
        }
        Command::Remove { tunnel, seq, reply } => {
            done.push(Done::Changed(reply, store.remove(&tunnel, seq)))
        }
        Command::AttemptFailed { tunnel, seq, reply } => {
            done.push(Done::Attempts(reply, store.attempt_failed(&tunnel, seq)))
        }
        Command::DeadLetter {
            tunnel,
            seq,
            reason,
            reply,
        } => done.push(Done::Changed(
            reply,
            store.dead_letter(&tunnel, seq, &reason, now),
        )),
        Command::Ack { tunnel, id } => {
            if let Err(err) = store.ack(&tunnel, &id) {
                tracing::warn!(%err, delivery = %id, "could not drop a recorded delivery from the queue");
            }
        }
        Command::Expire { reply } => {
            let expired = store
                .expire(None, now)
                .map(|per| per.iter().map(|(_, n)| n).sum());
            done.push(Done::Expire(reply, expired));
        }
        Command::Stale { ttl, reply } => {
            let _ = reply.send(store.stale_tunnels(ttl, now));
        }
        Command::ReleaseStale { ttl, names, reply } => {
            done.push(Done::Released(reply, store.release_stale(ttl, &names, now)))
        }
        Command::DropUnowned { names } => {
            for name in names {
                if let Err(err) = store.drop_unowned(&name) {
                    tracing::warn!(%err, tunnel = %name, "could not drop deliveries queued for a released name");
                }
            }
        }
        Command::ReleasedSince { after, reply } => {
            let read = match after {
                None => store.last_released().map(|last| (Vec::new(), last)),
                Some(after) => store.released_since(after),
            };
            done.push(Done::ReleasedSince(reply, read));
        }
        Command::Close { reply } => return Some(reply),
    }
    None
}
