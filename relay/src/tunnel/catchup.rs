//! A tunnel's catch-up: while the tunnel is [`CatchingUp`](super::Phase::CatchingUp), it sends the
//! offline queue to one of the tunnel's sessions, oldest first, keeping up to a window of
//! deliveries in flight (`--catch-up-window`, default 32; 1 waits for each before the next). The
//! client forwards them to its local server one at a time in that order and says `Recorded` for
//! each after its capture store committed it; the row leaves the queue as that word arrives.
//! Once everything queued is sent (and no push is on its way), the tunnel goes live: new
//! deliveries go straight to the session, behind what the catch-up sent, and the client forwards
//! them after it. The catch-up ends once the client recorded everything it sent; if it must send
//! something again first, the tunnel queues new deliveries again (behind it) meanwhile.
//!
//! The catch-up waits for the client's word on the oldest delivery still out (the *front*):
//! - `Recorded`: the row leaves the queue and the next one becomes the front.
//! - `NotRecorded` (the client's capture store fails): the window is given up and sent again
//!   from the front after a pause that doubles up to 30 s; it does not count against the
//!   delivery.
//! - The client closes its session cleanly (a close frame) while rows are out: the next session
//!   gets them from the front; nobody's fault.
//! - `Rejected`, or the session breaks while rows are out: one failed attempt for the front,
//!   kept in the database, then the window is sent again from the front. The third in a row
//!   sets the delivery aside as a dead letter, tells the client, and the rows behind it keep
//!   flowing.
//! - The session stays silent past the ack timeout: the catch-up moves on to the tunnel's next
//!   session (back to the first once every one was tried). The silence counts one failed
//!   attempt for the front, at most once per session, so a wedged client cannot dead-letter
//!   the backlog.
//!
//! Whatever was sent after the front is sent again on the next pass; the client knows the ids
//! it already recorded and answers those from its store, so its local server sees each queued
//! delivery once, in queue order.
//!
//! The catch-up talks to its tunnel through [`Host`] and to a session through [`Link`], so its
//! unit tests run it against fakes with paused time.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use illumitunnel::DeliveryId;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::queue::{QueueError, Row};
use crate::session::handle::{Ack, SessionGone};

/// Failed attempts in a row after which a queued delivery becomes a dead letter.
pub const MAX_ATTEMPTS: u32 = 3;
/// Default `--catch-up-window`: queued deliveries in flight to the client at once.
pub const DEFAULT_WINDOW: usize = 32;
/// Longest pause before re-sending a delivery the client could not record.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// How a tunnel's catch-up treats its queued deliveries.
#[derive(Debug, Clone, Copy)]
pub struct CatchUpPolicy {
    /// Longest the catch-up waits for the client to record the oldest delivery it has out.
    pub ack_timeout: Duration,
    /// First pause before sending again a delivery the client could not record (doubles up to
    /// 30 s), and after a queue error.
    pub retry: Duration,
    /// Queued deliveries in flight to the client at once (`--catch-up-window`; 0 counts as 1).
    pub window: usize,
}

impl Default for CatchUpPolicy {
    fn default() -> Self {
        CatchUpPolicy {
            ack_timeout: Duration::from_secs(60),
            retry: Duration::from_secs(1),
            window: DEFAULT_WINDOW,
        }
    }
}

/// One tunnel's catch-up: the tunnels it belongs to, its name, and what wakes it.
pub struct Scope<T> {
    /// Whatever the [`Host`] implementation needs (the relay's tunnels).
    pub tunnels: T,
    /// The tunnel's name.
    pub tunnel: String,
    /// Notified when a push lands or the sessions change.
    pub wake: Arc<Notify>,
}

/// What the catch-up needs from its tunnel and the queue.
pub trait Host: Send + Sync {
    /// A session of the tunnel.
    type Link: Link;
    /// The catch-up's settings.
    fn policy(&self) -> CatchUpPolicy;
    /// Cancelled when the relay closes: the catch-up stops.
    fn closing(&self) -> &CancellationToken;
    /// The session to send to, in connect order, skipping those in `skip` unless every one is
    /// in it; waits while another node catches up on the tunnel. `None` stops the catch-up (no session
    /// left, the tunnel is not catching up, or the relay is closing).
    fn target(&self, skip: &[u64]) -> impl Future<Output = Option<Self::Link>> + Send;
    /// Deliveries pushed to the tunnel's queue so far; read before looking at the queue.
    fn pushes(&self) -> u64;
    /// Everything queued after `seen` pushes is sent: the tunnel goes live (new deliveries go
    /// straight to the sessions, behind what the catch-up sent) unless a push is in flight or
    /// landed since (then `false`).
    fn go_live(&self, seen: u64) -> bool;
    /// Nothing is out any more: the catch-up ends (`true`) unless the tunnel went back to
    /// catching up meanwhile.
    fn retire(&self) -> bool;
    /// What was sent is to be sent again: a live tunnel queues new deliveries again.
    fn reopen(&self);
    /// Waits until a push lands or the sessions change.
    fn woken(&self) -> impl Future<Output = ()> + Send;
    /// Up to `max` rows of the queue after `seq`, oldest first.
    fn rows_after(
        &self,
        seq: i64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Row>, QueueError>> + Send;
    /// Drops the recorded row at `seq`.
    fn remove(&self, seq: i64) -> impl Future<Output = Result<bool, QueueError>> + Send;
    /// Counts a failed attempt of the row at `seq`; returns the count.
    fn attempt_failed(&self, seq: i64) -> impl Future<Output = Result<u32, QueueError>> + Send;
    /// Sets the row at `seq` aside as a dead letter.
    fn dead_letter(
        &self,
        seq: i64,
        reason: String,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;
    /// Counts one queued delivery sent to a client.
    fn sent_one(&self);
}

/// What the catch-up needs from a session.
pub trait Link: Clone + Send + Sync {
    /// The wait for the client's word on one delivery; dropping it stops waiting.
    type Pending: Send;
    /// The session's id, unique within the relay.
    fn id(&self) -> u64;
    /// Sends a queued delivery; returns the wait for the client's word on it.
    fn send(&self, row: &Row) -> impl Future<Output = Result<Self::Pending, SessionGone>> + Send;
    /// The client's word on a delivery sent. Cancel-safe: dropping the future keeps the wait.
    fn ack(pending: &mut Self::Pending) -> impl Future<Output = Result<Ack, SessionGone>> + Send;
    /// Tells the client a queued delivery was set aside (best effort).
    fn dead_lettered(&self, id: DeliveryId, reason: String);
}

/// How one pass over one session ended.
enum Pass {
    /// The tunnel is live and everything sent was recorded and dropped.
    Done,
    /// Start again from the front, after this pause if any.
    Again(Option<Duration>),
    /// The session stayed silent: try the next one.
    Skip(u64),
    /// The relay is closing.
    Closing,
}

/// What the catch-up carries from one pass to the next.
struct State {
    retry: Duration,
    sent: u64,
    /// Sessions that stayed silent since the last delivery recorded.
    skip: Vec<u64>,
    /// (session, row) pairs whose silence was already counted against the row.
    counted: HashSet<(u64, i64)>,
}

/// Runs the catch-up until the tunnel is live with nothing out, loses its last session, or the
/// relay closes.
pub async fn run<H: Host>(host: H) {
    let mut state = State {
        retry: host.policy().retry,
        sent: 0,
        skip: Vec::new(),
        counted: HashSet::new(),
    };
    loop {
        let Some(link) = host.target(&state.skip).await else {
            debug!(sent = state.sent, "catch-up stopped: no session");
            return;
        };
        let end = pass(&host, &link, &mut state).await;
        if !matches!(end, Pass::Done | Pass::Closing) {
            // Rows still out go again from the front: nothing may overtake them meanwhile.
            host.reopen();
        }
        match end {
            Pass::Done => {
                if state.sent > 0 {
                    info!(sent = state.sent, "backlog sent; the tunnel is live");
                }
                return;
            }
            Pass::Again(None) => {}
            Pass::Again(Some(delay)) => {
                if !pause(&host, delay).await {
                    return;
                }
            }
            // Every session was tried: the rotation starts again after this one.
            Pass::Skip(session) if state.skip.contains(&session) => state.skip = vec![session],
            Pass::Skip(session) => state.skip.push(session),
            Pass::Closing => return,
        }
    }
}

/// A row sent and the wait for the client's word on it.
type Out<H> = (Row, <<H as Host>::Link as Link>::Pending);

/// Sends the queue to `link` from its oldest row, keeping up to the window in flight. Once
/// everything queued is sent (not yet recorded), the tunnel goes live: deliveries that arrive
/// from then on go straight to the session, behind what the catch-up sent, and the client keeps
/// them in that order. The pass ends when nothing is out any more, or the session stops
/// taking the queue; it returns once every removal it started is done, so the next pass reads
/// the queue as it is.
async fn pass<H: Host>(host: &H, link: &H::Link, state: &mut State) -> Pass {
    let mut window = Window::new(host, link);
    let end = loop {
        let step = match window.refill().await {
            Step::Go if window.out.is_empty() => window.nothing_out().await,
            Step::Go => window.next_word(state).await,
            other => other,
        };
        if let Step::End(end) = step {
            break end;
        }
    };
    // What is still out is sent again on the next pass; recorded rows must be gone by then.
    window.out.clear();
    window.removals_done().await;
    end
}

/// The removal of a recorded row, with its delivery's id for the log.
type Removal<'a> =
    Pin<Box<dyn Future<Output = (DeliveryId, Result<bool, QueueError>)> + Send + 'a>>;

/// What one step of a pass leads to.
enum Step {
    /// Wait for the client's word on the oldest row out (or for a push, when none is out).
    Go,
    /// Look at the queue again first.
    Again,
    /// The pass is over.
    End(Pass),
}

/// One pass's rows out, in order, and how far it has read the queue.
struct Window<'a, H: Host> {
    host: &'a H,
    link: &'a H::Link,
    size: usize,
    ack_timeout: Duration,
    out: VecDeque<Out<H>>,
    removing: FuturesUnordered<Removal<'a>>,
    /// Rows up to this one were sent (or set aside) in this pass.
    cursor: i64,
    /// When the client's word on the oldest row out is overdue.
    deadline: Instant,
    live: bool,
    /// Whether the last read found the end of the queue.
    caught_up: bool,
}

impl<'a, H: Host> Window<'a, H> {
    fn new(host: &'a H, link: &'a H::Link) -> Self {
        let ack_timeout = host.policy().ack_timeout;
        Window {
            host,
            link,
            size: host.policy().window.max(1),
            ack_timeout,
            out: VecDeque::new(),
            removing: FuturesUnordered::new(),
            cursor: 0,
            deadline: Instant::now() + ack_timeout,
            live: false,
            caught_up: false,
        }
    }

    /// Reads and sends more rows once half the window is free (so reads come in pages rather
    /// than one a row); at the end of the queue it looks again at once, to go live as soon as
    /// all is sent.
    async fn refill(&mut self) -> Step {
        let room = self.size - self.out.len();
        let due = self.out.is_empty() || room * 2 >= self.size || (self.caught_up && !self.live);
        if room == 0 || !due {
            return Step::Go;
        }
        let was_empty = self.out.is_empty();
        let seen = self.host.pushes();
        let read = tokio::select! {
            _ = self.host.closing().cancelled() => return Step::End(Pass::Closing),
            read = self.host.rows_after(self.cursor, room) => read,
        };
        match read {
            Ok(rows) if rows.is_empty() => {
                self.caught_up = true;
                // Everything queued is sent: unless a push is on its way, go live.
                if !self.live && self.host.go_live(seen) {
                    self.live = true;
                }
            }
            Ok(rows) => {
                self.caught_up = rows.len() < room;
                // A live tunnel that had to queue again catches up again.
                self.live = false;
                let (host, link) = (self.host, self.link);
                if let Some(end) =
                    send_rows(host, link, rows, &mut self.out, &mut self.cursor).await
                {
                    return Step::End(end);
                }
                if was_empty {
                    self.deadline = Instant::now() + self.ack_timeout;
                }
                if self.caught_up {
                    return Step::Again;
                }
            }
            Err(err) if self.out.is_empty() => {
                warn!(%err, "could not read the offline queue; trying again");
                return Step::End(Pass::Again(Some(self.host.policy().retry)));
            }
            // What is out is still waited for; the next refill reads again.
            Err(err) => warn!(%err, "could not read the offline queue"),
        }
        if was_empty {
            // The first row out: its wait starts now.
            self.deadline = Instant::now() + self.ack_timeout;
        }
        Step::Go
    }

    /// Nothing is out: a live tunnel ends the pass once its removals are done; otherwise a
    /// push is on its way and its wake-up brings the pass back.
    async fn nothing_out(&mut self) -> Step {
        if self.live {
            self.removals_done().await;
            if self.host.retire() {
                return Step::End(Pass::Done);
            }
            // The tunnel queued again since it went live: read again.
            self.live = false;
            return Step::Again;
        }
        tokio::select! {
            _ = self.host.closing().cancelled() => Step::End(Pass::Closing),
            _ = self.host.woken() => Step::Again,
        }
    }

    /// Waits for the client's word on the oldest row out, and acts on it.
    async fn next_word(&mut self, state: &mut State) -> Step {
        let Some((_, pending)) = self.out.front_mut() else {
            return Step::Again;
        };
        // All three are cancel-safe: a token wait, `FuturesUnordered::next`, and the ack wait
        // (`Link::ack`), whose timeout is a fixed deadline.
        let ack = tokio::select! {
            _ = self.host.closing().cancelled() => return Step::End(Pass::Closing),
            Some(removed) = self.removing.next(), if !self.removing.is_empty() => {
                log_removal(removed);
                return Step::Again;
            }
            ack = tokio::time::timeout_at(self.deadline, H::Link::ack(pending)) => ack,
        };
        let (host, link) = (self.host, self.link);
        let Some((front, _)) = self.out.front() else {
            return Step::End(Pass::Again(None));
        };
        let seq = front.seq;
        match ack {
            Ok(Ok(Ack::Recorded)) => {
                let Some((row, _)) = self.out.pop_front() else {
                    return Step::End(Pass::Again(None));
                };
                state.sent += 1;
                state.retry = host.policy().retry;
                state.skip.clear();
                let id = row.delivery.id;
                self.removing
                    .push(Box::pin(async move { (id, host.remove(seq).await) }));
                self.deadline = Instant::now() + self.ack_timeout;
                Step::Again
            }
            Ok(Ok(Ack::NotRecorded(why))) => {
                let delay = state.retry;
                warn!(delivery = %front.delivery.id, %why, ?delay, "the client could not record a queued delivery; sending it again later");
                state.retry = (state.retry * 2).min(MAX_RETRY);
                Step::End(Pass::Again(Some(delay)))
            }
            Ok(Ok(Ack::Rejected(why))) => {
                let why = format!("the client rejected it: {why}");
                attempt_failed(host, link, front, why).await;
                Step::End(Pass::Again(None))
            }
            Ok(Ok(Ack::Left)) => {
                debug!(delivery = %front.delivery.id, "the client left before recording a queued delivery");
                Step::End(Pass::Again(None))
            }
            Ok(Err(SessionGone)) => Step::End(gone(host, link, front).await),
            Err(_) => Step::End(silent(host, link, front, state, self.ack_timeout).await),
        }
    }

    /// Waits for every removal started.
    async fn removals_done(&mut self) {
        while let Some(removed) = self.removing.next().await {
            log_removal(removed);
        }
    }
}

/// The client said nothing about `front` within the ack timeout: counted once per session
/// (a wedged client moves the catch-up on, and does not turn the backlog into dead letters),
/// and the next session is tried.
async fn silent<H: Host>(
    host: &H,
    link: &H::Link,
    front: &Row,
    state: &mut State,
    ack_timeout: Duration,
) -> Pass {
    let why = format!(
        "the client did not record it within {} s",
        ack_timeout.as_secs()
    );
    if state.counted.insert((link.id(), front.seq)) {
        attempt_failed(host, link, front, why).await;
    } else {
        warn!(delivery = %front.delivery.id, %why, "a queued delivery is still not recorded; trying the next session");
    }
    Pass::Skip(link.id())
}

/// Sends `rows` to `link` in order, setting aside those that failed too often; `Some` ends the
/// pass (the session is gone or the relay closing).
async fn send_rows<H: Host>(
    host: &H,
    link: &H::Link,
    rows: Vec<Row>,
    out: &mut VecDeque<Out<H>>,
    cursor: &mut i64,
) -> Option<Pass> {
    for row in rows {
        *cursor = row.seq;
        if row.attempts >= MAX_ATTEMPTS {
            let reason = format!("it failed {} times in a row on the client", row.attempts);
            set_aside(host, link, &row, reason).await;
            continue;
        }
        let sent = tokio::select! {
            _ = host.closing().cancelled() => return Some(Pass::Closing),
            sent = link.send(&row) => sent,
        };
        match sent {
            Ok(pending) => {
                host.sent_one();
                out.push_back((row, pending));
            }
            Err(SessionGone) => {
                let front = out.front().map_or(&row, |(front, _)| front);
                return Some(gone(host, link, front).await);
            }
        }
    }
    None
}

/// The session ended while `front` was out: one failed attempt, unless the relay is closing.
async fn gone<H: Host>(host: &H, link: &H::Link, front: &Row) -> Pass {
    if host.closing().is_cancelled() {
        return Pass::Closing;
    }
    attempt_failed(host, link, front, "it ended the client's session".into()).await;
    Pass::Again(None)
}

fn log_removal((id, removed): (DeliveryId, Result<bool, QueueError>)) {
    if let Err(err) = removed {
        warn!(%err, delivery = %id, "could not drop a recorded delivery; it will be sent again");
    }
}

/// Counts a failed attempt; the third in a row makes the delivery a dead letter.
async fn attempt_failed<H: Host>(host: &H, link: &H::Link, row: &Row, why: String) {
    match host.attempt_failed(row.seq).await {
        Ok(attempts) if attempts >= MAX_ATTEMPTS => {
            let reason = format!("{why} ({attempts} times in a row)");
            set_aside(host, link, row, reason).await;
        }
        Ok(attempts) => {
            warn!(delivery = %row.delivery.id, attempts, %why, "a queued delivery failed on the client; it will be sent again");
        }
        Err(err) => warn!(%err, delivery = %row.delivery.id, "could not count a failed attempt"),
    }
}

/// Moves `row` to the dead letters and tells the client, if it is still there.
async fn set_aside<H: Host>(host: &H, link: &H::Link, row: &Row, reason: String) {
    let id = row.delivery.id.clone();
    match host.dead_letter(row.seq, reason.clone()).await {
        Ok(true) => {
            warn!(delivery = %id, %reason, "set a queued delivery aside as a dead letter; the deliveries behind it keep flowing");
            link.dead_lettered(id, reason);
        }
        Ok(false) => {}
        Err(err) => {
            warn!(%err, delivery = %id, "could not set a queued delivery aside");
            pause(host, host.policy().retry).await;
        }
    }
}

/// Waits `delay`; `false` when the relay started closing first.
async fn pause<H: Host>(host: &H, delay: Duration) -> bool {
    tokio::select! {
        _ = host.closing().cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests;
