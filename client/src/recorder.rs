//! The capture store writer: one thread owns the [`CaptureStore`] and commits everything that
//! is waiting in one transaction, so recording never sits on the forwarding path. Only after a
//! commit does a delivery reach the screen, and only then does whoever waits for it (the
//! session, to tell the relay `Recorded`; a replay) hear that it is stored.
//!
//! When a commit fails (disk full, file made read-only), nothing is acknowledged: waiters hear
//! the failing sentence, live deliveries are kept in memory (bounded) and retried, the screen
//! gets [`StoreHealth::Failing`] once and [`StoreHealth::Recovered`] after the next good commit.
//! The same thread prunes the store to its retention limits after commits.

use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use illumitunnel::store::{CaptureStore, StoreError};
use illumitunnel::{Delivery, DeliveryId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::status::{ListenEvent, StoreHealth};

mod capture;
mod known;

pub use self::capture::Capture;
use self::known::recorded_answer;
pub use self::known::Known;

/// Deliveries waiting for the writer before forwarders wait for it.
const QUEUE: usize = 4096;
/// Most deliveries committed in one transaction.
const MAX_BATCH: usize = 1024;
/// How long the writer waits for more deliveries before committing a batch.
const GATHER: Duration = Duration::from_millis(5);
/// Live deliveries kept in memory while the store fails; older ones are dropped beyond this.
const MAX_RETAINED: usize = 1024;
/// Bytes of bodies kept in memory while the store fails.
const MAX_RETAINED_BYTES: usize = 64 * 1024 * 1024;
/// How often kept deliveries are retried (and a lagging inspector nudged) when nothing arrives.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How often deliveries older than `--store-max-age` are looked for.
const AGE_CHECK_EVERY: Duration = Duration::from_secs(60);
/// Nice value of the writer thread. Its work can wait; the forwarding path cannot: on two
/// cores a commit that held a core when a forwarding thread woke added 0.3–0.6 ms to the c=1
/// p99 (docs/benchmarks.md, issue 14). 10 helped as much as 19 and still leaves the writer about a
/// tenth of a core beside a normal-priority job (a build) that wants all of it; 19 left ~1.5 %.
#[cfg(target_os = "linux")]
const WRITER_NICE: i32 = 10;

/// Whether a delivery is stored: `Err` carries the sentence the store failed with.
pub type Committed = Result<(), String>;

/// How long deliveries stay in the capture store and how large it may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Oldest deliveries are deleted once the deliveries take more than this.
    pub max_bytes: u64,
    /// Deliveries received longer ago than this are deleted.
    pub max_age: Duration,
}

impl Retention {
    /// No pruning at all.
    #[cfg(test)]
    pub const UNLIMITED: Retention = Retention {
        max_bytes: u64::MAX,
        max_age: Duration::MAX,
    };
}

enum Command {
    Record(Box<Capture>, Option<oneshot::Sender<Committed>>),
    /// A finished delivery (a replay), answered with itself once committed.
    Insert(Box<Delivery>, oneshot::Sender<Result<Delivery, String>>),
    Answer(DeliveryId, oneshot::Sender<Option<Known>>),
}

/// Who hears about a delivery's commit.
enum Waiter {
    /// Nobody: a live delivery, kept and retried when its commit fails.
    Nobody,
    /// The session, which tells the relay `Recorded` or `NotRecorded`.
    Session(oneshot::Sender<Committed>),
    /// A replay, answered with the stored delivery.
    Replay(oneshot::Sender<Result<Delivery, String>>),
}

/// Whether a batch's commit must be on disk before its waiters hear of it: when the session
/// waits, to tell the relay `Recorded`, after which the relay drops its copy. Live deliveries
/// and replays have no other copy to lose, so their commits skip the fsync.
fn needs_durable_commit(waiters: &[Waiter]) -> bool {
    waiters.iter().any(|w| matches!(w, Waiter::Session(_)))
}

/// A waiter of a committed delivery, told once the screen has the commit.
enum Stored {
    Session(oneshot::Sender<Committed>),
    Replay(oneshot::Sender<Result<Delivery, String>>, Box<Delivery>),
}

impl Stored {
    fn tell(self) {
        match self {
            Stored::Session(tx) => {
                let _ = tx.send(Ok(()));
            }
            Stored::Replay(tx, d) => {
                let _ = tx.send(Ok(*d));
            }
        }
    }
}

/// A delivery waiting for the next commit.
struct Pending {
    delivery: Delivery,
    waiter: Waiter,
}

/// Where committed deliveries are shown.
pub struct ScreenSink {
    /// The screen's channel.
    pub events: mpsc::Sender<ListenEvent>,
    /// Line and JSON output must show every delivery (wait for the screen); the inspector
    /// re-reads the store instead (drop the event, send `StoreChanged`).
    pub lossless: bool,
}

/// Sends work to the writer thread; the thread ends when every handle is dropped.
#[derive(Clone)]
pub struct RecorderHandle {
    tx: mpsc::Sender<Command>,
    committed: watch::Receiver<i64>,
}

impl RecorderHandle {
    /// The `seq` of the newest delivery committed so far (at first, the newest in the store; 0
    /// for an empty one), changed as soon as each commit is done: the web inspector's live
    /// stream waits on it.
    pub fn committed(&self) -> watch::Receiver<i64> {
        self.committed.clone()
    }

    /// Queues a live delivery for the next commit; waits only when the writer is far behind.
    pub async fn record(&self, capture: Capture) {
        if self
            .tx
            .send(Command::Record(Box::new(capture), None))
            .await
            .is_err()
        {
            tracing::error!("the capture store writer stopped; a delivery was not recorded");
        }
    }

    /// Records a delivery and waits until it is committed, or the commit failed.
    #[cfg(test)]
    pub async fn record_committed(&self, capture: Capture) -> Committed {
        let stopped = || "the capture store writer stopped".to_string();
        self.record_later(capture)
            .await
            .await
            .map_err(|_| stopped())?
    }

    /// Queues a delivery for the next commit and returns the wait for it, so the caller can go
    /// on meanwhile; the wait ends in an error when the writer stopped.
    pub async fn record_later(&self, capture: Capture) -> oneshot::Receiver<Committed> {
        let (tx, rx) = oneshot::channel();
        // A writer that stopped drops `tx` with the command: the wait then ends at once.
        let _ = self
            .tx
            .send(Command::Record(Box::new(capture), Some(tx)))
            .await;
        rx
    }

    /// Commits a finished delivery (a replay) and returns it as stored (`seq` set), after it
    /// reached the screen; the sentence when it could not be stored.
    pub async fn insert(&self, delivery: Delivery) -> Result<Delivery, String> {
        let stopped = || "the capture store writer stopped; the replay was not recorded";
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Insert(Box::new(delivery), tx))
            .await
            .map_err(|_| stopped().to_string())?;
        rx.await.map_err(|_| stopped().to_string())?
    }

    /// The recorded answer to a delivery with this id, if it is stored (or about to be), after
    /// everything queued before; a redelivery is answered with it instead of forwarding again.
    pub async fn answer(&self, id: DeliveryId) -> Option<Known> {
        self.answer_later(id).await.await.ok().flatten()
    }

    /// Asks for [`answer`](Self::answer) now and returns the wait for it, so a redelivery's
    /// lookup is done by its turn; the wait ends in an error when the writer stopped.
    pub async fn answer_later(&self, id: DeliveryId) -> oneshot::Receiver<Option<Known>> {
        let (tx, rx) = oneshot::channel();
        // A writer that stopped drops `tx` with the command: the wait then ends at once.
        let _ = self.tx.send(Command::Answer(id, tx)).await;
        rx
    }
}

/// Starts the writer thread.
pub fn spawn(
    store: CaptureStore,
    screen: ScreenSink,
    retention: Retention,
) -> std::io::Result<(RecorderHandle, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    // Deliveries stored by earlier runs count as committed: a stream opened now starts after them.
    let newest = store.newest_seq().unwrap_or(0);
    let (committed_tx, committed) = watch::channel(newest);
    let thread = std::thread::Builder::new()
        .name("capture-store".into())
        .spawn(move || {
            yield_cores_to_forwarding();
            if retention.max_bytes != u64::MAX {
                if let Err(err) = store.limit_wal(retention.max_bytes) {
                    tracing::warn!(%err, "could not size the capture store's log to its cap");
                }
            }
            Writer {
                store,
                screen,
                committed: committed_tx,
                retention,
                screen_behind: false,
                retained: VecDeque::new(),
                failing: None,
                last_age_check: None,
            }
            .run(rx)
        })?;
    Ok((RecorderHandle { tx, committed }, thread))
}

/// Lowers this thread's scheduling priority so that the forwarding threads get a shared core
/// first; best effort (a refusal leaves it as it was).
fn yield_cores_to_forwarding() {
    // On Linux the "process" priority of a thread id is that thread's alone.
    #[cfg(target_os = "linux")]
    if let Err(err) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), WRITER_NICE)
    {
        tracing::debug!(%err, "could not lower the capture store writer's priority");
    }
}

struct Writer {
    store: CaptureStore,
    screen: ScreenSink,
    /// The newest committed `seq`, for [`RecorderHandle::committed`].
    committed: watch::Sender<i64>,
    retention: Retention,
    screen_behind: bool,
    /// Live deliveries whose commit failed, oldest first, retried with every commit.
    retained: VecDeque<Delivery>,
    /// The sentence the store is failing with, while it is.
    failing: Option<String>,
    last_age_check: Option<Instant>,
}

/// What the writer's queue gave.
enum Next {
    Command(Command),
    /// Nothing within the wait: time to retry kept deliveries or nudge the screen.
    Idle,
    /// Every handle is gone.
    Closed,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch: Vec<Pending> = Vec::new();
        loop {
            let first = match self.next(&mut rx) {
                Next::Command(c) => c,
                Next::Idle => {
                    self.commit(&mut batch);
                    continue;
                }
                Next::Closed => break,
            };
            let mut next = Some(first);
            let mut gathered = false;
            loop {
                while let Some(command) = next.take() {
                    self.take(command, &mut batch);
                    if batch.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if gathered || batch.is_empty() || batch.len() >= MAX_BATCH {
                    break;
                }
                // Let a burst gather: one transaction and one wake-up of this thread (and of the
                // screen) for many deliveries instead of one each. Nobody waits on this: the
                // senders were answered before their deliveries got here.
                std::thread::sleep(GATHER);
                gathered = true;
                next = rx.try_recv().ok();
                if next.is_none() {
                    break;
                }
            }
            self.commit(&mut batch);
        }
        self.commit(&mut batch);
    }

    /// The next command; while deliveries are kept or the screen lags, waits at most
    /// [`RETRY_EVERY`] so they are retried even when no traffic comes.
    fn next(&mut self, rx: &mut mpsc::Receiver<Command>) -> Next {
        if self.retained.is_empty() && !self.screen_behind {
            return rx.blocking_recv().map_or(Next::Closed, Next::Command);
        }
        let deadline = Instant::now() + RETRY_EVERY;
        loop {
            match rx.try_recv() {
                Ok(c) => return Next::Command(c),
                Err(mpsc::error::TryRecvError::Disconnected) => return Next::Closed,
                Err(mpsc::error::TryRecvError::Empty) if Instant::now() >= deadline => {
                    return Next::Idle
                }
                Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(GATHER),
            }
        }
    }

    fn take(&mut self, command: Command, batch: &mut Vec<Pending>) {
        match command {
            Command::Record(capture, waiter) => batch.push(Pending {
                delivery: capture.into_delivery(),
                waiter: waiter.map_or(Waiter::Nobody, Waiter::Session),
            }),
            Command::Insert(delivery, reply) => batch.push(Pending {
                delivery: *delivery,
                waiter: Waiter::Replay(reply),
            }),
            Command::Answer(id, reply) => {
                let waiting = batch
                    .iter()
                    .map(|p| &p.delivery)
                    .chain(self.retained.iter())
                    .find(|d| d.id == id);
                let found = match waiting {
                    Some(d) => Some(Known {
                        answer: recorded_answer(d),
                        committed: false,
                    }),
                    // `contains` first: `get` would also accept another id with this prefix.
                    // Committed, perhaps at `synchronous = NORMAL` (live): the relay may drop
                    // its copy only once that commit is on disk.
                    None if self.store.contains(&id).unwrap_or(false) => {
                        self.store.get(id.as_str()).ok().flatten().map(|d| Known {
                            answer: recorded_answer(&d),
                            committed: self.store.sync().is_ok(),
                        })
                    }
                    None => None,
                };
                let _ = reply.send(found);
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<Pending>) {
        // Kept deliveries go first: they arrived earlier.
        let mut pending: Vec<Pending> = self
            .retained
            .drain(..)
            .map(|delivery| Pending {
                delivery,
                waiter: Waiter::Nobody,
            })
            .collect();
        pending.append(batch);
        if pending.is_empty() {
            self.nudge_screen();
            return;
        }
        let (mut deliveries, waiters): (Vec<Delivery>, Vec<Waiter>) =
            pending.into_iter().map(|p| (p.delivery, p.waiter)).unzip();
        let outcomes = self.insert(&mut deliveries, needs_durable_commit(&waiters));
        self.note_committed(&deliveries, &outcomes);
        let mut failure = None;
        // Shown after the StoreChanged nudge, which covers them when it gets through.
        let covered = self.nudge_screen();
        let mut shown = Vec::new();
        // Whoever waits hears of a commit once the screen has the batch.
        let mut stored = Vec::new();
        for ((d, outcome), waiter) in deliveries.into_iter().zip(outcomes).zip(waiters) {
            match outcome {
                Ok(is_new) => {
                    let show = is_new && !covered;
                    // Only a replay needs the delivery back; every other one moves to the screen
                    // instead of being copied (headers and strings are a dozen allocations).
                    match waiter {
                        Waiter::Replay(tx) => {
                            if show {
                                shown.push(d.clone());
                            }
                            stored.push(Stored::Replay(tx, Box::new(d)));
                        }
                        Waiter::Session(tx) => {
                            if show {
                                shown.push(d);
                            }
                            stored.push(Stored::Session(tx));
                        }
                        Waiter::Nobody if show => shown.push(d),
                        Waiter::Nobody => {}
                    }
                }
                Err(sentence) => {
                    match waiter {
                        Waiter::Nobody => self.retain(d),
                        Waiter::Session(tx) => {
                            let _ = tx.send(Err(sentence.clone()));
                        }
                        Waiter::Replay(tx) => {
                            let _ = tx.send(Err(sentence.clone()));
                        }
                    }
                    failure.get_or_insert(sentence);
                }
            }
        }
        self.show(shown);
        stored.into_iter().for_each(Stored::tell);
        self.set_health(failure);
        if self.failing.is_none() {
            self.prune();
        }
    }

    /// Moves [`RecorderHandle::committed`] to the newest delivery this commit stored.
    fn note_committed(&self, deliveries: &[Delivery], outcomes: &[Result<bool, String>]) {
        let newest = deliveries
            .iter()
            .zip(outcomes)
            .filter(|(_, outcome)| matches!(outcome, Ok(true)))
            .map(|(d, _)| d.seq)
            .max();
        if let Some(newest) = newest {
            self.committed.send_if_modified(|seq| {
                let newer = newest > *seq;
                *seq = (*seq).max(newest);
                newer
            });
        }
    }

    /// Commits in one transaction; when that fails, each delivery alone, so one that cannot be
    /// stored does not hold back the others. Per delivery: new or already stored, or the sentence.
    /// `durable`: the commit is on disk before this returns (see [`needs_durable_commit`]).
    fn insert(&mut self, deliveries: &mut [Delivery], durable: bool) -> Vec<Result<bool, String>> {
        match self.insert_batch(deliveries, durable) {
            Ok(inserted) => inserted.into_iter().map(Ok).collect(),
            Err(err) if deliveries.len() == 1 => {
                deliveries[0].seq = 0;
                vec![Err(err.failing_sentence())]
            }
            Err(_) => deliveries
                .iter_mut()
                .map(|d| {
                    d.seq = 0;
                    self.insert_batch(std::slice::from_mut(d), durable)
                        .map(|inserted| inserted.first().copied().unwrap_or(false))
                        .map_err(|err| {
                            d.seq = 0;
                            err.failing_sentence()
                        })
                })
                .collect(),
        }
    }

    fn insert_batch(
        &mut self,
        deliveries: &mut [Delivery],
        durable: bool,
    ) -> Result<Vec<bool>, StoreError> {
        if durable {
            self.store.durably(|store| store.insert_batch(deliveries))
        } else {
            self.store.insert_batch(deliveries)
        }
    }

    /// Keeps a live delivery for the next commit, dropping the oldest beyond the bounds.
    fn retain(&mut self, d: Delivery) {
        self.retained.push_back(d);
        let body_bytes =
            |d: &Delivery| d.request.body.len() + d.response.as_ref().map_or(0, |r| r.body.len());
        let mut bytes: usize = self.retained.iter().map(body_bytes).sum();
        while self.retained.len() > MAX_RETAINED || bytes > MAX_RETAINED_BYTES {
            let Some(lost) = self.retained.pop_front() else {
                break;
            };
            bytes -= body_bytes(&lost);
            tracing::error!(delivery = %lost.id, "the capture store is failing and too many deliveries wait for it; this one is not recorded");
        }
    }

    fn set_health(&mut self, failure: Option<String>) {
        let event = match (&self.failing, &failure) {
            (None, Some(sentence)) => StoreHealth::Failing(sentence.clone()),
            (Some(before), Some(now)) if before != now => StoreHealth::Failing(now.clone()),
            (Some(_), None) => StoreHealth::Recovered,
            _ => return,
        };
        match &event {
            StoreHealth::Failing(sentence) => {
                tracing::error!(%sentence, "could not record deliveries")
            }
            StoreHealth::Recovered => tracing::info!("the capture store records again"),
        }
        self.failing = failure;
        // Rare and important: waits for the screen even when deliveries would be dropped.
        let _ = self.screen.events.blocking_send(ListenEvent::Store(event));
    }

    /// Deletes what `--store-max-bytes` and `--store-max-age` no longer allow.
    fn prune(&mut self) {
        let max_bytes = self.retention.max_bytes;
        let over_size = max_bytes != u64::MAX
            && (self.store.used_bytes().is_ok_and(|used| used > max_bytes)
                || self.store.disk_bytes() > max_bytes);
        let age_due = self.retention.max_age != Duration::MAX
            && self
                .last_age_check
                .is_none_or(|t| t.elapsed() >= AGE_CHECK_EVERY);
        if !over_size && !age_due {
            return;
        }
        if age_due {
            self.last_age_check = Some(Instant::now());
        }
        let max_age_ms = i64::try_from(self.retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = illumitunnel::now_ms().saturating_sub(max_age_ms);
        match self.store.prune(self.retention.max_bytes, cutoff) {
            Ok(pruned) if pruned.deliveries > 0 => {
                tracing::info!(
                    deliveries = pruned.deliveries,
                    released_bytes = pruned.released_bytes,
                    "pruned the capture store"
                );
                if !self.screen.lossless {
                    self.screen_behind = true;
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "could not prune the capture store"),
        }
    }

    /// Tells a lagging inspector to re-read the store; whether it got through.
    fn nudge_screen(&mut self) -> bool {
        if self.screen_behind
            && self
                .screen
                .events
                .try_send(ListenEvent::StoreChanged)
                .is_ok()
        {
            self.screen_behind = false;
            return true;
        }
        false
    }

    /// Hands a commit's deliveries to the screen as one event.
    fn show(&mut self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        let event = ListenEvent::Deliveries(deliveries);
        if self.screen.lossless {
            let _ = self.screen.events.blocking_send(event);
        } else if let Err(mpsc::error::TrySendError::Full(_)) = self.screen.events.try_send(event) {
            self.screen_behind = true;
        }
    }
}

#[cfg(test)]
mod tests;
