//! Tunnels and the order of their deliveries: which tunnels are known, who owns each (the
//! SHA-256 of the claiming token, or of the claim key an anonymous claimer was given), which
//! sessions serve it in connect order, and one small state machine per tunnel that decides
//! where each delivery goes.
//!
//! ```text
//!            first session joins                 queue sent, no push in flight
//!   Idle ─────────────────────────▶ CatchingUp ─────────────────────────────────▶ Live
//!    ▲   (a catch-up task starts)         │  ▲                                        │
//!    └──── last session leaves ────────┘  └──── a delivery had to be queued ───────┘
//! ```
//! - **Idle**: no forwarding session. Deliveries are queued (202); observers (`listen
//!   --fan-out`) connected meanwhile see nothing until a forwarding session joins.
//! - **CatchingUp**: the tunnel's catch-up task sends the offline queue to a session, a window of
//!   deliveries in flight (to a forwarding session, never an observer), each row leaving on the
//!   client's `Recorded`; new deliveries are
//!   queued behind the backlog, so the local server sees them in arrival order.
//! - **Live**: everything queued was sent; deliveries go straight to the sessions (the first
//!   answers, the others get copies). Sessions are kept forwarding-first (connect order within
//!   forwarders and within observers), so the first is always a forwarding session. The client forwards a live delivery that arrives behind
//!   queued ones after them, and concurrently once none is waiting. The catch-up keeps running
//!   until the client recorded what it sent, and queues again (CatchingUp) if it must send it
//!   again.
//!
//! A delivery that must be queued takes a [`QueueTicket`] first; the catch-up goes live only when
//! no ticket is out and no push completed since it last looked at the queue, so a delivery can
//! never be stranded behind a tunnel that went live.
//!
//! Lookups hand out an `Arc<[SessionHandle]>` snapshot: the lock is held for a hash lookup and
//! never across an `.await`.

mod catchup;
mod catchup_host;
pub mod release;

pub use catchup::{CatchUpPolicy, DEFAULT_WINDOW};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use illumitunnel::TunnelName;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::{decide, Claim, Owner};
use crate::metrics::Metrics;
use crate::placement::Placement;
use crate::queue::QueueHandle;
use crate::session::handle::SessionHandle;

/// How often a running relay reads the names `tunnel release` freed (applied within 5 s).
pub const RELEASE_POLL: Duration = Duration::from_secs(2);

/// A tunnel's part in the delivery order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No session: deliveries are queued.
    Idle,
    /// The backlog is being sent; new deliveries queue behind it.
    CatchingUp,
    /// No backlog: deliveries go straight to the sessions.
    Live,
}

/// Where a delivery for a tunnel goes.
pub enum Route {
    /// No client ever claimed the tunnel.
    Unknown,
    /// Straight to these sessions, forwarding ones first, and how many of them forward (at
    /// least one): only those take the push, the rest get copies.
    Live(Arc<[SessionHandle]>, usize),
    /// Into the offline queue, behind the backlog.
    Queue(QueueTicket),
}

/// Another owner holds the tunnel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken;

struct Tunnel {
    owner: Owner,
    /// Forwarding sessions first, then observers, each group in connect order.
    sessions: Arc<[SessionHandle]>,
    /// How many of `sessions` (the first ones) forward; the rest only observe.
    forwarders: usize,
    /// When the forwarding sessions last went from none to one (Unix ms): on a cluster, the
    /// node whose forwarding sessions are oldest is the tunnel's authority.
    since_ms: u64,
    phase: Phase,
    /// Whether a catch-up task runs for this tunnel (at most one does).
    catching_up: bool,
    /// Queue tickets out: deliveries on their way into the queue.
    pushing: u32,
    /// Deliveries pushed so far; the catch-up compares it to see whether it missed one.
    pushed: u64,
    /// Wakes the catch-up when a push completes or the sessions change.
    wake: Arc<Notify>,
    /// `tunnel release` freed the name while a client was connected: forgotten once idle,
    /// unless a client claims it again first.
    released: bool,
}

impl Tunnel {
    fn new(owner: Owner) -> Self {
        Tunnel {
            owner,
            sessions: Arc::from(Vec::new()),
            forwarders: 0,
            since_ms: 0,
            phase: Phase::Idle,
            catching_up: false,
            pushing: 0,
            pushed: 0,
            wake: Arc::new(Notify::new()),
            released: false,
        }
    }

    fn is_idle(&self) -> bool {
        self.sessions.is_empty() && !self.catching_up && self.pushing == 0
    }
}

/// Every tunnel the relay knows, with its sessions and delivery order.
pub struct Tunnels {
    map: Mutex<HashMap<String, Tunnel>>,
    queue: QueueHandle,
    metrics: Arc<Metrics>,
    policy: CatchUpPolicy,
    next_session: AtomicU64,
    tracker: TaskTracker,
    /// Cancelled when sessions close; ends every catch-up.
    closing: CancellationToken,
    /// Who decides which tunnel: a catch-up runs only where the tunnel is decided.
    placement: Arc<dyn Placement>,
    /// Wakes the cluster's presence when a tunnel gains its first session or loses its last.
    held_changed: Arc<Notify>,
}

impl Tunnels {
    /// No tunnels yet; catch-ups run on `tracker` until `closing` is cancelled.
    pub fn new(
        queue: QueueHandle,
        metrics: Arc<Metrics>,
        policy: CatchUpPolicy,
        tracker: TaskTracker,
        closing: CancellationToken,
        placement: Arc<dyn Placement>,
    ) -> Arc<Self> {
        Arc::new(Tunnels {
            map: Mutex::new(HashMap::new()),
            queue,
            metrics,
            policy,
            next_session: AtomicU64::new(1),
            tracker,
            closing,
            placement,
            held_changed: Arc::new(Notify::new()),
        })
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes a tunnel owned in the relay's database known, with no session, so deliveries to
    /// it are queued rather than unknown after a restart.
    pub fn preload(&self, tunnel: String, owner: Owner) {
        self.lock()
            .entry(tunnel)
            .or_insert_with(|| Tunnel::new(owner));
    }

    /// A tunnel another cluster node granted (or handed over): known from now on; its owner
    /// follows the bucket while no session of this node holds it.
    pub fn learn(&self, tunnel: &str, owner: Owner) {
        let mut map = self.lock();
        let t = map
            .entry(tunnel.to_owned())
            .or_insert_with(|| Tunnel::new(owner));
        if t.sessions.is_empty() {
            t.owner = owner;
        }
    }

    /// Tunnels with a forwarding session on this relay, and since when (Unix ms).
    pub fn held(&self) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .filter(|(_, t)| t.forwarders > 0)
            .map(|(name, t)| (name.clone(), t.since_ms))
            .collect()
    }

    /// Notified when a tunnel gains its first forwarding session or loses its last.
    pub fn held_changed(&self) -> Arc<Notify> {
        self.held_changed.clone()
    }

    /// This relay's sessions of `tunnel`: forwarding ones first, each group in connect order.
    pub fn sessions(&self, tunnel: &str) -> Arc<[SessionHandle]> {
        self.lock()
            .get(tunnel)
            .map_or_else(|| Arc::from(Vec::new()), |t| t.sessions.clone())
    }

    /// Another cluster node queued a delivery for `tunnel`: a live tunnel catches up again, as
    /// after a push of its own.
    pub fn pushed_elsewhere(self: &Arc<Self>, tunnel: &str) {
        let mut map = self.lock();
        let Some(t) = map.get_mut(tunnel) else {
            return;
        };
        t.pushed += 1;
        if t.phase == Phase::Live {
            t.phase = Phase::CatchingUp;
        }
        if t.phase == Phase::CatchingUp {
            self.ensure_catch_up(tunnel, t);
        }
    }

    /// Whether any client ever claimed `tunnel`.
    pub fn is_known(&self, tunnel: &str) -> bool {
        self.lock().contains_key(tunnel)
    }

    /// The tunnel's phase, `None` when unknown.
    pub fn phase(&self, tunnel: &str) -> Option<Phase> {
        self.lock().get(tunnel).map(|t| t.phase)
    }

    /// How many deliveries were pushed to `tunnel`'s queue so far; read it before looking at
    /// the queue, and [`join`](Self::join) can tell whether what it saw is still true.
    pub fn pushes(&self, tunnel: &str) -> u64 {
        self.lock().get(tunnel).map_or(0, |t| t.pushed)
    }

    /// Forgets those of `names` that are idle (no session, no catch-up, no push in flight), so
    /// they answer 404 from now on; returns the names forgotten, for the queue to release.
    pub fn release(&self, names: &[String]) -> Vec<String> {
        let mut map = self.lock();
        let mut released = Vec::new();
        for name in names {
            if map.get(name).is_some_and(Tunnel::is_idle) {
                map.remove(name);
                released.push(name.clone());
            }
        }
        released
    }

    /// Reads the names `tunnel release` frees every [`RELEASE_POLL`] until `closing`, and
    /// forgets each once it is idle (a connected client keeps serving until it leaves), so it
    /// answers 404 until the next claim.
    pub fn spawn_release_watch(self: &Arc<Self>) {
        let tunnels = self.clone();
        self.tracker.spawn(async move {
            let Ok((_, mut cursor)) = tunnels.queue.released_since(None).await else {
                return;
            };
            let mut pending: Vec<String> = Vec::new();
            let mut tick = tokio::time::interval(RELEASE_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // Both branches are cancel-safe: a token wait and `Interval::tick`.
                tokio::select! {
                    _ = tunnels.closing.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match tunnels.queue.released_since(Some(cursor)).await {
                    Ok((names, last)) => {
                        cursor = last;
                        tunnels.mark_released(&names);
                        pending.extend(names);
                    }
                    Err(err) => tracing::warn!(%err, "could not read released tunnel names"),
                }
                if !pending.is_empty() {
                    let forgotten = tunnels.forget_released(&mut pending);
                    if !forgotten.is_empty() {
                        tunnels.queue.drop_unowned(forgotten).await;
                    }
                }
            }
        });
    }

    fn mark_released(&self, names: &[String]) {
        let mut map = self.lock();
        for name in names {
            if let Some(t) = map.get_mut(name) {
                t.released = true;
            }
        }
    }

    /// Forgets the released names of `pending` that are idle, and returns them; drops from
    /// `pending` those gone or claimed again since (a claim clears the mark).
    fn forget_released(&self, pending: &mut Vec<String>) -> Vec<String> {
        let mut map = self.lock();
        let mut forgotten = Vec::new();
        pending.retain(|name| match map.get(name) {
            Some(t) if t.released && t.is_idle() => {
                map.remove(name);
                tracing::info!(tunnel = %name, "tunnel name released by the operator");
                forgotten.push(name.clone());
                false
            }
            Some(t) => t.released,
            None => false,
        });
        forgotten
    }

    /// Where a new delivery for `tunnel` goes.
    pub fn route(self: &Arc<Self>, tunnel: &str) -> Route {
        let mut map = self.lock();
        let Some(t) = map.get_mut(tunnel) else {
            return Route::Unknown;
        };
        if t.phase == Phase::Live {
            return Route::Live(t.sessions.clone(), t.forwarders);
        }
        t.pushing += 1;
        Route::Queue(QueueTicket::new(self.clone(), tunnel))
    }

    /// A ticket to queue a delivery that was already sent to a session that vanished (or
    /// that the relay stops before it is answered), whatever the phase; a live tunnel then
    /// catches up again once the push completes.
    pub fn requeue(self: &Arc<Self>, tunnel: &str) -> QueueTicket {
        if let Some(t) = self.lock().get_mut(tunnel) {
            t.pushing += 1;
        }
        QueueTicket::new(self.clone(), tunnel)
    }

    /// Adds `session` to `tunnel`, claiming the name for `owner` (which the database already
    /// granted it) when it is new. A forwarding session goes after the other forwarding ones
    /// and before every `observer`, so pushes and the catch-up never go to an observer. The
    /// first forwarding session of an idle tunnel starts its catch-up, unless the queue was
    /// seen empty after `empty_after` pushes and none happened since (then the tunnel goes live
    /// at once); an observer alone leaves the tunnel idle. The caller has already queued its
    /// `Welcome`, so it precedes every delivery.
    pub fn join(
        self: &Arc<Self>,
        tunnel: &TunnelName,
        owner: Owner,
        session: SessionHandle,
        observer: bool,
        empty_after: Option<u64>,
    ) -> Result<(), Taken> {
        let mut map = self.lock();
        let t = map
            .entry(tunnel.as_str().to_owned())
            .or_insert_with(|| Tunnel::new(owner));
        // The database already granted the claim; this keeps the map in step with it (a
        // tunnel preloaded as anonymous from before claim keys changes hands here, and a
        // tunnel an operator released and another owner claimed changes hands here too).
        match decide(Some(t.owner), Some(owner), owner) {
            Claim::Joined(_) => {}
            _ if t.sessions.is_empty() => t.owner = owner,
            Claim::Claimed(_) | Claim::Taken => return Err(Taken),
        }
        t.released = false;
        if t.sessions.is_empty() {
            self.metrics.tunnels_connected.inc();
        }
        if !observer && t.forwarders == 0 {
            t.since_ms = illumitunnel::now_ms().max(0) as u64;
            self.held_changed.notify_one();
        }
        let mut sessions = t.sessions.to_vec();
        if observer {
            sessions.push(session);
        } else {
            sessions.insert(t.forwarders, session);
            t.forwarders += 1;
        }
        t.sessions = sessions.into();
        self.metrics.sessions.inc();
        if t.phase == Phase::Idle && t.forwarders > 0 {
            if t.pushing == 0 && empty_after == Some(t.pushed) && !t.catching_up {
                t.phase = Phase::Live;
            } else {
                t.phase = Phase::CatchingUp;
                self.ensure_catch_up(tunnel.as_str(), t);
            }
        }
        Ok(())
    }

    /// Removes a session; the tunnel stays known. The last forwarding session leaving makes it
    /// idle (observers left behind see nothing until a forwarding session joins).
    pub fn leave(&self, tunnel: &str, session_id: u64) {
        let mut map = self.lock();
        let Some(t) = map.get_mut(tunnel) else {
            return;
        };
        let Some(index) = t.sessions.iter().position(|s| s.id() == session_id) else {
            return;
        };
        if index < t.forwarders {
            t.forwarders -= 1;
            if t.forwarders == 0 {
                t.phase = Phase::Idle;
                self.held_changed.notify_one();
            }
        }
        let sessions: Vec<SessionHandle> = t
            .sessions
            .iter()
            .filter(|s| s.id() != session_id)
            .cloned()
            .collect();
        t.sessions = sessions.into();
        self.metrics.sessions.dec();
        if t.sessions.is_empty() {
            self.metrics.tunnels_connected.dec();
        }
        // A catch-up sending to this session moves on to the next one, or stops.
        t.wake.notify_one();
    }

    /// Starts the tunnel's catch-up unless one runs (then wakes it).
    fn ensure_catch_up(self: &Arc<Self>, name: &str, t: &mut Tunnel) {
        if t.catching_up {
            t.wake.notify_one();
            return;
        }
        t.catching_up = true;
        let span = tracing::info_span!("catch_up", tunnel = %name);
        let scope = catchup::Scope {
            tunnels: self.clone(),
            tunnel: name.to_owned(),
            wake: t.wake.clone(),
        };
        self.tracker.spawn(catchup::run(scope).instrument(span));
    }

    /// The forwarding session the catch-up sends the backlog to (the first not in `skip`, or
    /// the first when every one is); never an observer. `None` stops the catch-up (no
    /// forwarding session left, or the relay is closing).
    fn catch_up_target(&self, tunnel: &str, skip: &[u64]) -> Option<SessionHandle> {
        let mut map = self.lock();
        let t = map.get_mut(tunnel)?;
        let forwarding = &t.sessions[..t.forwarders.min(t.sessions.len())];
        let next = forwarding.iter().find(|s| !skip.contains(&s.id()));
        match next.or(forwarding.first()) {
            Some(session) if t.phase == Phase::CatchingUp && !self.closing.is_cancelled() => {
                Some(session.clone())
            }
            _ => {
                t.catching_up = false;
                None
            }
        }
    }

    /// The catch-up has sent everything queued: goes live unless a push is in flight or
    /// completed since `seen` (then the catch-up looks again). The catch-up keeps running until the
    /// client has recorded what it sent ([`retire_catch_up`](Self::retire_catch_up)).
    fn finish_catch_up(&self, tunnel: &str, seen: u64) -> bool {
        let mut map = self.lock();
        let Some(t) = map.get_mut(tunnel) else {
            return true;
        };
        if t.phase != Phase::CatchingUp || t.pushing > 0 || t.pushed != seen {
            return false;
        }
        t.phase = Phase::Live;
        true
    }

    /// The catch-up has nothing out any more: it ends unless the tunnel is catching up again.
    fn retire_catch_up(&self, tunnel: &str) -> bool {
        let mut map = self.lock();
        let Some(t) = map.get_mut(tunnel) else {
            return true;
        };
        if t.phase == Phase::CatchingUp {
            return false;
        }
        t.catching_up = false;
        true
    }

    /// The catch-up must send what it had out again: a live tunnel queues new deliveries again,
    /// behind it.
    fn reopen_catch_up(&self, tunnel: &str) {
        if let Some(t) = self.lock().get_mut(tunnel) {
            if t.phase == Phase::Live {
                t.phase = Phase::CatchingUp;
            }
        }
    }

    /// A queue ticket is done; `pushed` when its delivery is now in the queue.
    fn ticket_done(self: &Arc<Self>, tunnel: &str, pushed: bool) {
        let mut map = self.lock();
        let Some(t) = map.get_mut(tunnel) else {
            return;
        };
        t.pushing = t.pushing.saturating_sub(1);
        if pushed {
            t.pushed += 1;
            if t.phase == Phase::Live {
                t.phase = Phase::CatchingUp;
            }
        }
        if t.phase == Phase::CatchingUp {
            self.ensure_catch_up(tunnel, t);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Tunnel>> {
        // Every update under this lock is a few assignments that cannot panic half-way.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Permission to put one delivery into a tunnel's queue; the tunnel does not go live while a
/// ticket is out. Call [`pushed`](Self::pushed) once the queue committed it; dropping the
/// ticket otherwise means the delivery was not queued.
pub struct QueueTicket {
    tunnels: Arc<Tunnels>,
    tunnel: String,
    done: bool,
}

impl QueueTicket {
    fn new(tunnels: Arc<Tunnels>, tunnel: &str) -> Self {
        QueueTicket {
            tunnels,
            tunnel: tunnel.to_owned(),
            done: false,
        }
    }

    /// The tunnel this ticket is for.
    pub fn tunnel(&self) -> &str {
        &self.tunnel
    }

    /// The queue handle to push with.
    pub fn queue(&self) -> &QueueHandle {
        &self.tunnels.queue
    }

    /// The delivery is committed to the queue: the catch-up will send it.
    pub fn pushed(mut self) {
        self.done = true;
        self.tunnels.ticket_done(&self.tunnel, true);
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        if !self.done {
            self.tunnels.ticket_done(&self.tunnel, false);
        }
    }
}

#[cfg(test)]
mod tests;
