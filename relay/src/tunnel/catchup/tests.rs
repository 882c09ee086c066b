//! The catch-up against a fake queue and fake sessions, with paused time: the test plays the
//! client, answering each delivery it receives.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::queue::QueuedDelivery;

/// A delivery as the fake client receives it: which session, which row, and where to answer.
struct Got {
    session: u64,
    seq: i64,
    ack: oneshot::Sender<Ack>,
}

#[derive(Clone)]
struct FakeLink {
    id: u64,
    tx: mpsc::UnboundedSender<Got>,
    gone: Arc<AtomicBool>,
    notices: Arc<Mutex<Vec<(DeliveryId, String)>>>,
}

impl Link for FakeLink {
    type Pending = oneshot::Receiver<Ack>;

    fn id(&self) -> u64 {
        self.id
    }

    async fn send(&self, row: &Row) -> Result<Self::Pending, SessionGone> {
        if self.gone.load(Ordering::SeqCst) {
            return Err(SessionGone);
        }
        let (ack, rx) = oneshot::channel();
        let got = Got {
            session: self.id,
            seq: row.seq,
            ack,
        };
        self.tx.send(got).map_err(|_| SessionGone)?;
        Ok(rx)
    }

    async fn ack(pending: &mut Self::Pending) -> Result<Ack, SessionGone> {
        pending.await.map_err(|_| SessionGone)
    }

    fn dead_lettered(&self, id: DeliveryId, reason: String) {
        self.notices.lock().unwrap().push((id, reason));
    }
}

#[derive(Default)]
struct Fake {
    rows: Mutex<BTreeMap<i64, Row>>,
    removed: Mutex<Vec<i64>>,
    dead: Mutex<Vec<i64>>,
    sessions: Mutex<Vec<FakeLink>>,
    closing: CancellationToken,
    wake: Notify,
    window: usize,
    /// Whether the tunnel is live, and how often the catch-up made it queue again.
    live: AtomicBool,
    reopened: std::sync::atomic::AtomicUsize,
}

impl Host for Arc<Fake> {
    type Link = FakeLink;

    fn policy(&self) -> CatchUpPolicy {
        CatchUpPolicy {
            ack_timeout: Duration::from_secs(10),
            retry: Duration::from_secs(1),
            window: self.window,
        }
    }

    fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    async fn target(&self, skip: &[u64]) -> Option<FakeLink> {
        let sessions = self.sessions.lock().unwrap();
        let next = sessions.iter().find(|s| !skip.contains(&s.id));
        next.or(sessions.first()).cloned()
    }

    fn pushes(&self) -> u64 {
        0
    }

    fn go_live(&self, _seen: u64) -> bool {
        self.live.store(true, Ordering::SeqCst);
        true
    }

    fn retire(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    fn reopen(&self) {
        if self.live.swap(false, Ordering::SeqCst) {
            self.reopened.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn woken(&self) {
        self.wake.notified().await;
    }

    async fn rows_after(&self, seq: i64, max: usize) -> Result<Vec<Row>, QueueError> {
        let rows = self.rows.lock().unwrap();
        Ok(rows
            .range(seq + 1..)
            .take(max)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn remove(&self, seq: i64) -> Result<bool, QueueError> {
        self.removed.lock().unwrap().push(seq);
        Ok(self.rows.lock().unwrap().remove(&seq).is_some())
    }

    async fn attempt_failed(&self, seq: i64) -> Result<u32, QueueError> {
        let mut rows = self.rows.lock().unwrap();
        Ok(rows.get_mut(&seq).map_or(0, |r| {
            r.attempts += 1;
            r.attempts
        }))
    }

    async fn dead_letter(&self, seq: i64, _reason: String) -> Result<bool, QueueError> {
        self.dead.lock().unwrap().push(seq);
        Ok(self.rows.lock().unwrap().remove(&seq).is_some())
    }

    fn sent_one(&self) {}
}

fn row(seq: i64) -> Row {
    Row {
        seq,
        attempts: 0,
        delivery: QueuedDelivery {
            id: DeliveryId::parse(&format!("d{seq:04}")).unwrap(),
            received_at_ms: 0,
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: Vec::new(),
            body: bytes::Bytes::new(),
        },
    }
}

/// A fake tunnel with rows 1..=n queued and a catch-up of `window`.
fn fake(n: i64, window: usize) -> Arc<Fake> {
    let fake = Fake {
        window,
        ..Fake::default()
    };
    fake.rows
        .lock()
        .unwrap()
        .extend((1..=n).map(|s| (s, row(s))));
    Arc::new(fake)
}

/// Adds a session; returns what it receives.
fn connect(fake: &Arc<Fake>, id: u64) -> (mpsc::UnboundedReceiver<Got>, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let gone = Arc::new(AtomicBool::new(false));
    fake.sessions.lock().unwrap().push(FakeLink {
        id,
        tx,
        gone: gone.clone(),
        notices: Arc::default(),
    });
    (rx, gone)
}

fn start(fake: &Arc<Fake>) -> JoinHandle<()> {
    tokio::spawn(run(fake.clone()))
}

/// Everything the session received until the catch-up went quiet (paused time moves on only
/// when every task waits, so 2 s of silence, longer than the retry pause and shorter than the
/// ack timeout, means nothing more is coming yet).
async fn settle(rx: &mut mpsc::UnboundedReceiver<Got>) -> Vec<Got> {
    let mut got = Vec::new();
    while let Ok(Some(g)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        got.push(g);
    }
    got
}

fn seqs(got: &[Got]) -> Vec<i64> {
    got.iter().map(|g| g.seq).collect()
}

fn attempts(fake: &Fake, seq: i64) -> u32 {
    fake.rows
        .lock()
        .unwrap()
        .get(&seq)
        .map_or(0, |r| r.attempts)
}

#[tokio::test(start_paused = true)]
async fn the_window_fills_and_rows_leave_in_order_as_they_are_recorded() {
    let fake = fake(20, 4);
    let (mut rx, _) = connect(&fake, 1);
    let drain = start(&fake);
    let mut got = settle(&mut rx).await;
    assert_eq!(seqs(&got), [1, 2, 3, 4], "a full window, no more");
    let mut order = Vec::new();
    while !got.is_empty() {
        // Acknowledge the oldest: the window refills once half of it is free.
        let g = got.remove(0);
        order.push(g.seq);
        g.ack.send(Ack::Recorded).unwrap();
        got.extend(settle(&mut rx).await);
        assert!(
            got.len() <= 4,
            "never more than the window out: {}",
            got.len()
        );
    }
    assert_eq!(order, (1..=20).collect::<Vec<_>>());
    assert_eq!(
        *fake.removed.lock().unwrap(),
        order,
        "removed in queue order"
    );
    tokio::time::timeout(Duration::from_secs(1), drain)
        .await
        .expect("the catch-up ends once the queue is empty")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_window_of_one_sends_the_next_only_after_the_previous_is_recorded() {
    let fake = fake(3, 1);
    let (mut rx, _) = connect(&fake, 1);
    let drain = start(&fake);
    for seq in 1..=3 {
        let mut got = settle(&mut rx).await;
        assert_eq!(seqs(&got), [seq]);
        got.remove(0).ack.send(Ack::Recorded).unwrap();
    }
    drain.await.unwrap();
    assert!(fake.rows.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_break_mid_window_sends_again_from_the_first_unrecorded_row() {
    let fake = fake(10, 4);
    let (mut rx, _) = connect(&fake, 1);
    let drain = start(&fake);
    let mut got = settle(&mut rx).await.into_iter();
    got.next().unwrap().ack.send(Ack::Recorded).unwrap();
    got.next().unwrap().ack.send(Ack::Recorded).unwrap();
    // Half the window free: it refills.
    let refill = settle(&mut rx).await;
    assert_eq!(seqs(&refill), [5, 6]);
    let third = got.next().unwrap();
    // The client records the fourth, but could not commit the third.
    got.next().unwrap().ack.send(Ack::Recorded).unwrap();
    third
        .ack
        .send(Ack::NotRecorded("disk full".into()))
        .unwrap();
    // After the pause, from row 3 on: the fourth again too (the client answers it from its store).
    let again = settle(&mut rx).await;
    assert_eq!(seqs(&again)[..2], [3, 4]);
    assert_eq!(
        attempts(&fake, 3),
        0,
        "the store's failure is not the delivery's"
    );
    assert_eq!(*fake.removed.lock().unwrap(), [1, 2]);
    for g in again {
        g.ack.send(Ack::Recorded).unwrap();
    }
    let mut rest = settle(&mut rx).await;
    while !rest.is_empty() {
        for g in rest {
            g.ack.send(Ack::Recorded).unwrap();
        }
        rest = settle(&mut rx).await;
    }
    drain.await.unwrap();
    let removed = fake.removed.lock().unwrap().clone();
    assert_eq!(removed, (1..=10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_session_that_breaks_costs_the_front_one_attempt_and_the_next_session_resumes_there() {
    let fake = fake(6, 4);
    let (mut first, gone) = connect(&fake, 1);
    let drain = start(&fake);
    let mut got = settle(&mut first).await.into_iter();
    got.next().unwrap().ack.send(Ack::Recorded).unwrap();
    // The session breaks with rows 2..=4 out.
    gone.store(true, Ordering::SeqCst);
    fake.sessions.lock().unwrap().remove(0);
    let (mut second, _) = connect(&fake, 2);
    drop(got);
    let again = settle(&mut second).await;
    assert_eq!(seqs(&again), [2, 3, 4, 5]);
    assert_eq!(attempts(&fake, 2), 1, "the front counts the failed attempt");
    assert_eq!(attempts(&fake, 3), 0, "the rows behind it do not");
    for g in again {
        g.ack.send(Ack::Recorded).unwrap();
    }
    for g in settle(&mut second).await {
        g.ack.send(Ack::Recorded).unwrap();
    }
    drain.await.unwrap();
    assert!(fake.dead.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_silent_session_moves_the_catch_up_to_the_next_one_and_counts_once() {
    let fake = fake(3, 4);
    let (mut wedged, _) = connect(&fake, 1);
    let (mut other, _) = connect(&fake, 2);
    let drain = start(&fake);
    let held = settle(&mut wedged).await;
    assert_eq!(seqs(&held), [1, 2, 3], "the first session gets the backlog");
    // Nothing from the first session: past the ack timeout, the second gets it from the front.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let got = settle(&mut other).await;
    assert_eq!(seqs(&got), [1, 2, 3]);
    assert_eq!(attempts(&fake, 1), 1);
    for g in got {
        g.ack.send(Ack::Recorded).unwrap();
    }
    drain.await.unwrap();
    assert!(fake.rows.lock().unwrap().is_empty());
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn a_single_wedged_session_is_tried_again_without_dead_lettering_the_backlog() {
    let fake = fake(2, 4);
    let (mut wedged, _) = connect(&fake, 1);
    let drain = start(&fake);
    let mut held = Vec::new();
    for round in 0..5 {
        // Each ack timeout (10 s) sends the backlog to the same session again.
        let first = tokio::time::timeout(Duration::from_secs(11), wedged.recv()).await;
        let mut got = vec![first.unwrap().unwrap()];
        got.extend(settle(&mut wedged).await);
        assert_eq!(seqs(&got), [1, 2], "round {round}");
        held.extend(got);
    }
    assert_eq!(attempts(&fake, 1), 1, "once per session");
    assert!(fake.dead.lock().unwrap().is_empty());
    fake.closing.cancel();
    drain.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_delivery_rejected_three_times_becomes_a_dead_letter_and_the_rest_flow() {
    let fake = fake(3, 4);
    let (mut rx, _) = connect(&fake, 1);
    let notices = fake.sessions.lock().unwrap()[0].notices.clone();
    let drain = start(&fake);
    for attempt in 1..=MAX_ATTEMPTS {
        let mut got = settle(&mut rx).await;
        assert_eq!(got[0].seq, 1, "attempt {attempt} starts at the front");
        got.remove(0)
            .ack
            .send(Ack::Rejected("too large".into()))
            .unwrap();
    }
    let got = settle(&mut rx).await;
    assert_eq!(seqs(&got), [2, 3], "the rows behind the dead letter flow");
    assert_eq!(*fake.dead.lock().unwrap(), [1]);
    let notices = notices.lock().unwrap().clone();
    assert_eq!(notices.len(), 1);
    assert!(
        notices[0].1.contains("3 times in a row"),
        "{}",
        notices[0].1
    );
    for g in got {
        g.ack.send(Ack::Recorded).unwrap();
    }
    drain.await.unwrap();
    assert_eq!(*fake.removed.lock().unwrap(), [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_row_that_already_failed_too_often_is_set_aside_before_it_is_sent() {
    let fake = fake(2, 4);
    fake.rows.lock().unwrap().get_mut(&1).unwrap().attempts = MAX_ATTEMPTS;
    let (mut rx, _) = connect(&fake, 1);
    let drain = start(&fake);
    let got = settle(&mut rx).await;
    assert_eq!(seqs(&got), [2]);
    assert_eq!(*fake.dead.lock().unwrap(), [1]);
    for g in got {
        assert_eq!(g.session, 1);
        g.ack.send(Ack::Recorded).unwrap();
    }
    drain.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_tunnel_goes_live_once_everything_is_sent_and_the_drain_ends_once_it_is_recorded() {
    let fake = fake(3, 4);
    let (mut rx, _) = connect(&fake, 1);
    let drain = start(&fake);
    let got = settle(&mut rx).await;
    assert_eq!(seqs(&got), [1, 2, 3]);
    assert!(
        fake.live.load(Ordering::SeqCst),
        "live before anything is recorded"
    );
    assert!(!drain.is_finished(), "the catch-up waits for what it sent");
    for g in got {
        g.ack.send(Ack::Recorded).unwrap();
    }
    drain.await.unwrap();
    assert_eq!(*fake.removed.lock().unwrap(), [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_break_after_going_live_queues_again_and_sends_from_the_front() {
    let fake = fake(3, 4);
    let (mut rx, _) = connect(&fake, 1);
    let drain = start(&fake);
    let mut got = settle(&mut rx).await.into_iter();
    got.next().unwrap().ack.send(Ack::Recorded).unwrap();
    got.next()
        .unwrap()
        .ack
        .send(Ack::NotRecorded("disk full".into()))
        .unwrap();
    let again = settle(&mut rx).await;
    assert_eq!(seqs(&again), [2, 3]);
    assert_eq!(fake.reopened.load(Ordering::SeqCst), 1, "queued again");
    for g in again {
        g.ack.send(Ack::Recorded).unwrap();
    }
    drain.await.unwrap();
    assert!(fake.rows.lock().unwrap().is_empty());
    drop(got);
}

#[tokio::test(start_paused = true)]
async fn silent_sessions_are_tried_in_turn_and_each_counts_once() {
    let fake = fake(1, 4);
    let (mut a, _) = connect(&fake, 1);
    let (mut b, _) = connect(&fake, 2);
    let drain = start(&fake);
    let mut order = Vec::new();
    let mut held = Vec::new();
    for _ in 0..4 {
        // Whichever session gets row 1 next, within one ack timeout (10 s).
        let got = tokio::time::timeout(Duration::from_secs(11), async {
            tokio::select! {
                Some(g) = a.recv() => g,
                Some(g) = b.recv() => g,
            }
        })
        .await
        .expect("row 1 sent again within the ack timeout");
        order.push(got.session);
        held.push(got);
    }
    assert_eq!(order, [1, 2, 1, 2]);
    assert_eq!(attempts(&fake, 1), 2, "once per session");
    assert!(fake.dead.lock().unwrap().is_empty());
    fake.closing.cancel();
    drain.await.unwrap();
}
