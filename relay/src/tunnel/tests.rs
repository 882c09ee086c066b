//! The tunnel state machine (idle → catching up → live) with an in-memory queue and paused
//! time: which route a delivery takes in each phase, and when the phase changes.

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;

use bytes::Bytes;
use illumitunnel::DeliveryId;
use tokio::sync::mpsc;

use super::*;
use crate::placement::Single;
use crate::queue::{Backlog, Queue, QueueError, QueuedDelivery, Row};

/// A queue in memory: pushes append, `remove` drops by seq.
#[derive(Default)]
struct MemoryQueue {
    rows: StdMutex<VecDeque<Row>>,
    next: StdMutex<i64>,
}

#[async_trait::async_trait]
impl Queue for MemoryQueue {
    async fn claim(&self, _: &str, _: Option<Owner>, fresh: Owner) -> Result<Claim, QueueError> {
        Ok(Claim::Claimed(fresh))
    }
    async fn push(&self, _: &str, delivery: QueuedDelivery) -> Result<(), QueueError> {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let row = Row {
            seq: *next,
            attempts: 0,
            delivery,
        };
        self.rows.lock().unwrap().push_back(row);
        Ok(())
    }
    async fn connect(&self, _: &str) -> Result<Backlog, QueueError> {
        Ok(Backlog::default())
    }
    async fn head(&self, _: &str) -> Result<Option<Row>, QueueError> {
        Ok(self.rows.lock().unwrap().front().cloned())
    }
    async fn rows_after(&self, _: &str, seq: i64, max: usize) -> Result<Vec<Row>, QueueError> {
        let rows = self.rows.lock().unwrap();
        Ok(rows
            .iter()
            .filter(|r| r.seq > seq)
            .take(max)
            .cloned()
            .collect())
    }
    async fn remove(&self, _: &str, seq: i64) -> Result<bool, QueueError> {
        let mut rows = self.rows.lock().unwrap();
        let before = rows.len();
        rows.retain(|r| r.seq != seq);
        Ok(rows.len() < before)
    }
    async fn attempt_failed(&self, _: &str, _: i64) -> Result<u32, QueueError> {
        Ok(1)
    }
    async fn dead_letter(&self, _: &str, _: i64, _: String) -> Result<bool, QueueError> {
        Ok(true)
    }
    async fn ack(&self, _: &str, _: DeliveryId) {}
}

fn delivery(n: u8) -> QueuedDelivery {
    QueuedDelivery {
        id: DeliveryId::parse(&format!("id{n}")).unwrap(),
        received_at_ms: 0,
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![],
        body: Bytes::from_static(b"{}"),
    }
}

fn tunnels(queue: Arc<MemoryQueue>) -> Arc<Tunnels> {
    Tunnels::new(
        queue,
        Arc::new(Metrics::new()),
        CatchUpPolicy::default(),
        TaskTracker::new(),
        CancellationToken::new(),
        Arc::new(Single::new()),
    )
}

fn session(tunnels: &Tunnels) -> (SessionHandle, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel(64);
    (SessionHandle::new(tunnels.next_session_id(), tx), rx)
}

fn name(text: &str) -> TunnelName {
    TunnelName::parse(text).unwrap()
}

const OWNER: Owner = Owner::Token([7; 32]);

/// Lets spawned tasks run until `phase` is reached, for at most 100 turns (paused time).
async fn until_phase(tunnels: &Tunnels, tunnel: &str, phase: Phase) {
    for _ in 0..100 {
        if tunnels.phase(tunnel) == Some(phase) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "{tunnel} never reached {phase:?}: {:?}",
        tunnels.phase(tunnel)
    );
}

#[tokio::test(start_paused = true)]
async fn an_unknown_tunnel_routes_nowhere_and_a_preloaded_idle_one_queues() {
    let tunnels = tunnels(Arc::default());
    assert!(matches!(tunnels.route("nobody"), Route::Unknown));
    tunnels.preload("shop".into(), OWNER);
    assert_eq!(tunnels.phase("shop"), Some(Phase::Idle));
    let Route::Queue(ticket) = tunnels.route("shop") else {
        panic!("an idle tunnel queues");
    };
    assert_eq!(ticket.tunnel(), "shop");
    ticket.pushed();
    assert_eq!(tunnels.pushes("shop"), 1);
    assert_eq!(
        tunnels.phase("shop"),
        Some(Phase::Idle),
        "no session: stays idle"
    );
}

#[tokio::test(start_paused = true)]
async fn a_session_joining_an_empty_queue_goes_live_at_once_and_leaving_makes_it_idle() {
    let tunnels = tunnels(Arc::default());
    let (handle, _rx) = session(&tunnels);
    let id = handle.id();
    tunnels
        .join(&name("shop"), OWNER, handle, false, Some(0))
        .unwrap();
    assert_eq!(tunnels.phase("shop"), Some(Phase::Live));
    assert!(matches!(tunnels.route("shop"), Route::Live(s, 1) if s.len() == 1));
    tunnels.leave("shop", id);
    assert_eq!(tunnels.phase("shop"), Some(Phase::Idle));
    assert!(tunnels.is_known("shop"), "the name stays known");
}

#[tokio::test(start_paused = true)]
async fn a_push_the_session_did_not_see_makes_it_catch_up_first_then_live() {
    let queue = Arc::new(MemoryQueue::default());
    let tunnels = tunnels(queue.clone());
    tunnels.preload("shop".into(), OWNER);
    // A push lands after the session looked at the queue (it saw 0 pushes).
    let Route::Queue(ticket) = tunnels.route("shop") else {
        panic!("idle tunnels queue");
    };
    ticket.pushed();
    let (handle, _rx) = session(&tunnels);
    tunnels
        .join(&name("shop"), OWNER, handle, false, Some(0))
        .unwrap();
    assert_eq!(tunnels.phase("shop"), Some(Phase::CatchingUp));
    assert!(
        matches!(tunnels.route("shop"), Route::Queue(_)),
        "while catching up, new deliveries queue behind the backlog"
    );
    // The in-memory queue is empty and the ticket above was dropped unpushed: live.
    until_phase(&tunnels, "shop", Phase::Live).await;
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_does_not_go_live_while_a_queue_ticket_is_out() {
    let queue = Arc::new(MemoryQueue::default());
    let tunnels = tunnels(queue.clone());
    tunnels.preload("shop".into(), OWNER);
    let Route::Queue(ticket) = tunnels.route("shop") else {
        panic!("idle tunnels queue");
    };
    let (handle, mut rx) = session(&tunnels);
    tunnels
        .join(&name("shop"), OWNER, handle, false, Some(0))
        .unwrap();
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tunnels.phase("shop"),
        Some(Phase::CatchingUp),
        "a push in flight keeps the tunnel catching up"
    );
    queue.push("shop", delivery(1)).await.unwrap();
    ticket.pushed();
    // The backlog goes to the session first; once all of it is sent the tunnel is live.
    until_phase(&tunnels, "shop", Phase::Live).await;
    assert!(
        rx.try_recv().is_ok(),
        "the queued delivery was sent before going live"
    );
}

#[tokio::test(start_paused = true)]
async fn a_live_tunnel_that_had_to_queue_catches_up_again() {
    let tunnels = tunnels(Arc::default());
    let (handle, _rx) = session(&tunnels);
    tunnels
        .join(&name("shop"), OWNER, handle, false, Some(0))
        .unwrap();
    assert_eq!(tunnels.phase("shop"), Some(Phase::Live));
    // A delivery whose session vanished is queued again, whatever the phase.
    tunnels.requeue("shop").pushed();
    assert_eq!(tunnels.phase("shop"), Some(Phase::CatchingUp));
    until_phase(&tunnels, "shop", Phase::Live).await;
}

#[tokio::test(start_paused = true)]
async fn another_owner_cannot_join_a_held_tunnel_and_released_idle_names_are_forgotten() {
    let tunnels = tunnels(Arc::default());
    let (first, _rx1) = session(&tunnels);
    let first_id = first.id();
    tunnels
        .join(&name("shop"), OWNER, first, false, Some(0))
        .unwrap();
    let (second, _rx2) = session(&tunnels);
    let stranger = Owner::Token([9; 32]);
    assert_eq!(
        tunnels.join(&name("shop"), stranger, second, false, Some(0)),
        Err(Taken)
    );
    assert!(
        tunnels.release(&["shop".into()]).is_empty(),
        "a held tunnel is not forgotten"
    );
    tunnels.leave("shop", first_id);
    assert_eq!(tunnels.release(&["shop".into()]), vec!["shop".to_string()]);
    assert!(matches!(tunnels.route("shop"), Route::Unknown));
}

/// The ids of `tunnel`'s sessions in the order pushes and the catch-up see them.
fn order(tunnels: &Tunnels, tunnel: &str) -> Vec<u64> {
    tunnels.sessions(tunnel).iter().map(|s| s.id()).collect()
}

#[tokio::test(start_paused = true)]
async fn forwarding_sessions_come_first_so_pushes_never_go_to_an_observer() {
    let tunnels = tunnels(Arc::default());
    let (observer_old, _o1) = session(&tunnels);
    let (forward_a, _f1) = session(&tunnels);
    let (observer_new, _o2) = session(&tunnels);
    let (forward_b, _f2) = session(&tunnels);
    let ids = [
        observer_old.id(),
        forward_a.id(),
        observer_new.id(),
        forward_b.id(),
    ];
    let shop = name("shop");
    tunnels
        .join(&shop, OWNER, observer_old, true, Some(0))
        .unwrap();
    tunnels
        .join(&shop, OWNER, forward_a, false, Some(0))
        .unwrap();
    tunnels
        .join(&shop, OWNER, observer_new, true, Some(0))
        .unwrap();
    tunnels
        .join(&shop, OWNER, forward_b, false, Some(0))
        .unwrap();
    // Forwarding first, connect order within each group.
    assert_eq!(
        order(&tunnels, "shop"),
        vec![ids[1], ids[3], ids[0], ids[2]]
    );
    let Route::Live(sessions, 2) = tunnels.route("shop") else {
        panic!("a forwarding session on an empty queue is live");
    };
    assert_eq!(sessions[0].id(), ids[1], "the oldest forwarder answers");
    assert_eq!(
        tunnels.catch_up_target("shop", &[]).map(|s| s.id()),
        None,
        "a live tunnel has no catch-up"
    );
    // The oldest forwarder restarts: the other forwarder answers, observers stay behind.
    tunnels.leave("shop", ids[1]);
    assert_eq!(order(&tunnels, "shop"), vec![ids[3], ids[0], ids[2]]);
    assert_eq!(tunnels.held().len(), 1);
    tunnels.leave("shop", ids[3]);
    assert_eq!(order(&tunnels, "shop"), vec![ids[0], ids[2]]);
    assert_eq!(
        tunnels.phase("shop"),
        Some(Phase::Idle),
        "observers alone: idle"
    );
    assert!(tunnels.held().is_empty(), "observers do not hold a tunnel");
    assert!(matches!(tunnels.route("shop"), Route::Queue(_)));
}

#[tokio::test(start_paused = true)]
async fn with_only_observers_deliveries_queue_and_the_next_forwarder_gets_them() {
    let queue = Arc::new(MemoryQueue::default());
    let tunnels = tunnels(queue.clone());
    let (observer, mut observer_rx) = session(&tunnels);
    let observer_id = observer.id();
    let shop = name("shop");
    tunnels.join(&shop, OWNER, observer, true, Some(0)).unwrap();
    assert_eq!(tunnels.phase("shop"), Some(Phase::Idle));
    let Route::Queue(ticket) = tunnels.route("shop") else {
        panic!("an observer alone does not make the tunnel live");
    };
    queue.push("shop", delivery(1)).await.unwrap();
    ticket.pushed();
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(tunnels.phase("shop"), Some(Phase::Idle));
    assert!(
        tunnels.catch_up_target("shop", &[observer_id]).is_none(),
        "the catch-up never targets an observer"
    );
    assert!(observer_rx.try_recv().is_err(), "the observer saw nothing");
    // A forwarding session joins after the observer: it gets the backlog, the observer does not.
    let (forward, mut forward_rx) = session(&tunnels);
    let forward_id = forward.id();
    tunnels.join(&shop, OWNER, forward, false, None).unwrap();
    assert_eq!(order(&tunnels, "shop"), vec![forward_id, observer_id]);
    until_phase(&tunnels, "shop", Phase::Live).await;
    assert!(
        forward_rx.try_recv().is_ok(),
        "the queued delivery went to the forwarder"
    );
    assert!(observer_rx.try_recv().is_err(), "the observer got no push");
}
