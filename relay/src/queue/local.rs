//! The queue of a single relay, in `{data_dir}/relay.db`. SQLite calls block, so one thread
//! owns the database ([`QueueStore`]) and the core holds a [`LocalQueue`] over a bounded
//! channel, with answers on `oneshot`s. The thread groups whatever is waiting into one
//! transaction, so a burst costs one fsync. Connected tunnels never touch it: a live delivery
//! reads and writes no disk.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use illumitunnel::DeliveryId;
use tokio::sync::{mpsc, oneshot};

use super::clock::Clock;
use super::delivery::{Backlog, QueuedDelivery, Row};
use super::error::QueueError;
use super::store::QueueStore;
use super::{Queue, QueueHandle, PAGE_BYTES};
use crate::auth::{Claim, Owner};

/// Commands waiting for the queue thread before callers wait for it.
const COMMANDS: usize = 1024;
/// Most commands grouped into one transaction.
const MAX_BATCH: usize = 512;

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

/// The queue of a single relay: talks to the thread that owns `relay.db`.
#[derive(Clone)]
pub struct LocalQueue {
    tx: mpsc::Sender<Command>,
}

impl LocalQueue {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, QueueError>>) -> Command,
    ) -> Result<T, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| QueueError::Stopped)?;
        rx.await.unwrap_or(Err(QueueError::Stopped))
    }
}

#[async_trait::async_trait]
impl Queue for LocalQueue {
    async fn claim(
        &self,
        tunnel: &str,
        presented: Option<Owner>,
        fresh: Owner,
    ) -> Result<Claim, QueueError> {
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Claim {
            tunnel,
            presented,
            fresh,
            reply,
        })
        .await
    }

    async fn push(&self, tunnel: &str, delivery: QueuedDelivery) -> Result<(), QueueError> {
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Push {
            tunnel,
            delivery,
            reply,
        })
        .await
    }

    async fn connect(&self, tunnel: &str) -> Result<Backlog, QueueError> {
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Connect { tunnel, reply }).await
    }

    async fn head(&self, tunnel: &str) -> Result<Option<Row>, QueueError> {
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Head { tunnel, reply }).await
    }

    async fn rows_after(&self, tunnel: &str, seq: i64, max: usize) -> Result<Vec<Row>, QueueError> {
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Page {
            tunnel,
            seq,
            max,
            reply,
        })
        .await
    }

    async fn remove(&self, tunnel: &str, seq: i64) -> Result<bool, QueueError> {
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::Remove { tunnel, seq, reply })
            .await
    }

    async fn attempt_failed(&self, tunnel: &str, seq: i64) -> Result<u32, QueueError> {
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::AttemptFailed { tunnel, seq, reply })
            .await
    }

    async fn dead_letter(
        &self,
        tunnel: &str,
        seq: i64,
        reason: String,
    ) -> Result<bool, QueueError> {
        let tunnel = tunnel.to_owned();
        self.call(|reply| Command::DeadLetter {
            tunnel,
            seq,
            reason,
            reply,
        })
        .await
    }

    async fn ack(&self, tunnel: &str, id: DeliveryId) {
        let tunnel = tunnel.to_owned();
        let _ = self.tx.send(Command::Ack { tunnel, id }).await;
    }

    async fn expire(&self) -> Result<u64, QueueError> {
        self.call(|reply| Command::Expire { reply }).await
    }

    async fn stale(&self, ttl: Duration) -> Result<Vec<String>, QueueError> {
        self.call(|reply| Command::Stale { ttl, reply }).await
    }

    async fn release_stale(
        &self,
        ttl: Duration,
        names: Vec<String>,
    ) -> Result<Vec<String>, QueueError> {
        self.call(|reply| Command::ReleaseStale { ttl, names, reply })
            .await
    }

    async fn released_since(&self, after: Option<i64>) -> Result<(Vec<String>, i64), QueueError> {
        self.call(|reply| Command::ReleasedSince { after, reply })
            .await
    }

    async fn drop_unowned(&self, names: Vec<String>) {
        let _ = self.tx.send(Command::DropUnowned { names }).await;
    }

    async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Close { reply }).await.is_ok() {
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
    Ok((Arc::new(LocalQueue { tx }), thread))
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
        Command::Close { reply } => return Some(reply),
        housekeeping => run_housekeeping(store, now, housekeeping, done),
    }
    None
}

/// Runs one of the housekeeping commands (expiry, `--tunnel-ttl`, `tunnel release`).
fn run_housekeeping(store: &mut QueueStore, now: i64, command: Command, done: &mut Vec<Done>) {
    match command {
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
        // `execute` runs the others.
        _ => {}
    }
}
