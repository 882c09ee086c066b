//! What happens to a delivery once its body is complete: it is forwarded to the local server,
//! the relay is answered, and the capture store records it.
//!
//! Live deliveries are forwarded concurrently (bounded by a semaphore), except one that arrives
//! while redeliveries wait for the worker below: it goes through the worker behind them, so the
//! local server sees deliveries in the order the relay sent them. Redeliveries (the
//! relay's offline backlog, or a failover) go through one worker for the whole session, in the
//! order they arrived, one at a time: the next is forwarded once the previous one is answered
//! and handed to the capture store. Its commit is waited for beside the worker, and the relay
//! hears `Recorded` for each, in order, once it is committed, or `NotRecorded` with the
//! store's sentence when the commit failed (the relay keeps it and sends it again later).
//!
//! The relay keeps a window of redeliveries in flight, and after a break sends again from the
//! first one it has no `Recorded` for: one already recorded is answered from the store, and
//! one still waiting for its commit waits for it, so the local server sees each once, in
//! order. Redeliveries still waiting when their connection ends are left to the relay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use illumitunnel::delivery::{RequestRecord, ResponseRecord};
use illumitunnel::protocol::{split_body, ClientMessage};
use illumitunnel::DeliveryId;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::forward::Forwarder;
use crate::recorder::{Capture, Committed, Known, RecorderHandle};
use crate::status::ListenEvent;

/// Live deliveries forwarded at the same time; the reader waits for a slot beyond this.
const MAX_IN_FLIGHT: usize = 256;
/// Redeliveries waiting for the in-order worker before the reader waits for it.
const REDELIVERY_QUEUE: usize = 64;
/// Redeliveries forwarded and waiting for their commit before the worker waits for them.
const COMMIT_QUEUE: usize = 256;
/// Ids of redeliveries this session committed, kept to answer a copy without asking the store.
const RECENT: usize = 4096;
/// How long shutdown waits for deliveries still being forwarded.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the tasks of abandoned deliveries get to end.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(1);

/// A message for the relay, tagged with the connection it belongs to.
#[derive(Debug)]
pub struct Outbound {
    /// Connection generation the message answers; `0` fits any connection.
    pub generation: u64,
    /// The message.
    pub message: ClientMessage,
}

impl Outbound {
    /// A message valid on whichever connection is up (e.g. `Recorded`).
    pub fn any(message: ClientMessage) -> Self {
        Outbound {
            generation: 0,
            message,
        }
    }
}

/// A delivery as it arrived, body complete.
pub struct Arrived {
    /// Delivery id from the relay.
    pub id: DeliveryId,
    /// When the relay received it, Unix ms.
    pub received_at_ms: i64,
    /// Whether a sender waits for the local answer.
    pub answer: bool,
    /// Whether the relay sent it before (offline backlog or failover): forwarded in order.
    pub redelivery: bool,
    /// The request.
    pub request: RequestRecord,
}

/// What every delivery of every connection shares; lives as long as the session.
pub struct Deliveries {
    forwarder: Forwarder,
    recorder: RecorderHandle,
    tunnel: String,
    outbound: mpsc::Sender<Outbound>,
    screen: mpsc::Sender<ListenEvent>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    /// The in-order worker's queue.
    redeliveries: mpsc::Sender<Queued>,
    /// Deliveries handed to the in-order worker and not forwarded yet.
    in_order: AtomicUsize,
    /// Redeliveries forwarded whose commit is not done yet: a copy the relay sends again
    /// waits for that commit instead of being forwarded twice.
    uncommitted: Mutex<HashMap<DeliveryId, watch::Receiver<Option<Committed>>>>,
    /// The last [`RECENT`] redeliveries this session committed.
    recent: Mutex<Recent>,
    /// Stops the in-order worker after the redelivery it is on.
    stop: CancellationToken,
    /// Drops whatever is still being forwarded, unrecorded: the relay has no `Recorded` for
    /// it and sends it again.
    abandon: CancellationToken,
}

/// A delivery waiting for the in-order worker: a redelivery, or a live one behind them.
struct Queued {
    arrived: Arrived,
    generation: u64,
    /// Fires when its connection ended: then it is left to the relay.
    ended: CancellationToken,
    /// For a redelivery, what the capture store knew of its id, asked for when it arrived so
    /// the answer is there by its turn (the store's writer may be busy committing the ones
    /// before it).
    known: Option<oneshot::Receiver<Option<Known>>>,
}

/// Ids recently committed, oldest first, bounded.
#[derive(Default)]
struct Recent {
    order: VecDeque<DeliveryId>,
    ids: HashSet<DeliveryId>,
}

impl Recent {
    fn insert(&mut self, id: DeliveryId) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// What the relay hears about a redelivery, in the worker's order.
enum Acknowledge {
    /// Known already.
    Now(ClientMessage),
    /// Once the capture store committed it (or failed to).
    After {
        id: DeliveryId,
        commit: oneshot::Receiver<Committed>,
        done: watch::Sender<Option<Committed>>,
    },
}

impl Deliveries {
    /// Deliveries for `tunnel`, forwarded with `forwarder`, recorded by `recorder`, answered
    /// through `outbound`; what the relay sets aside is shown on `screen`.
    pub fn new(
        forwarder: Forwarder,
        recorder: RecorderHandle,
        tunnel: String,
        outbound: mpsc::Sender<Outbound>,
        screen: mpsc::Sender<ListenEvent>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(REDELIVERY_QUEUE);
        let deliveries = Arc::new(Deliveries {
            forwarder,
            recorder,
            tunnel,
            outbound,
            screen,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            tracker: TaskTracker::new(),
            redeliveries: tx,
            in_order: AtomicUsize::new(0),
            uncommitted: Mutex::new(HashMap::new()),
            recent: Mutex::default(),
            stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
        });
        let (acks_tx, acks_rx) = mpsc::channel(COMMIT_QUEUE);
        let span = tracing::info_span!("redeliveries");
        let worker = redeliver_in_order(rx, acks_tx, deliveries.clone());
        deliveries.tracker.spawn(worker.instrument(span.clone()));
        let acks = acknowledge_in_order(acks_rx, deliveries.clone());
        deliveries.tracker.spawn(acks.instrument(span));
        deliveries
    }

    /// A connection's view of the deliveries.
    pub fn connection(self: &Arc<Self>, generation: u64) -> Connection {
        Connection {
            deliveries: self.clone(),
            generation,
            ended: CancellationToken::new(),
        }
    }

    /// Lets deliveries already being forwarded finish and reach the recorder, for a while.
    #[cfg(test)]
    pub async fn drain(&self) {
        self.drain_until(&CancellationToken::new()).await;
    }

    /// Like [`Deliveries::drain`], telling the screen how many it waits for and how long, and
    /// giving up at once when `give_up` fires. What is still being forwarded then is dropped
    /// unrecorded; the relay sends it again.
    pub async fn drain_until(&self, give_up: &CancellationToken) {
        self.stop.cancel();
        self.tracker.close();
        let live = MAX_IN_FLIGHT - self.slots.available_permits();
        let waiting = live + self.in_order.load(Ordering::SeqCst).min(1);
        if waiting > 0 {
            let draining = ListenEvent::Draining {
                deliveries: waiting,
                up_to: DRAIN_TIMEOUT,
            };
            let _ = self.screen.try_send(draining);
        }
        tokio::select! {
            _ = tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait()) => {}
            () = give_up.cancelled() => {}
        }
        self.abandon.cancel();
        let _ = tokio::time::timeout(ABANDON_TIMEOUT, self.tracker.wait()).await;
    }

    /// Forwards a live delivery, answers the relay, then queues it for the capture store;
    /// abandoned (unrecorded, so the relay sends it again) when shutdown stops waiting.
    async fn handle(&self, arrived: Arrived, generation: u64) {
        let capture = tokio::select! {
            capture = self.forward(arrived, generation) => capture,
            () = self.abandon.cancelled() => return,
        };
        self.recorder.record(capture).await;
    }

    /// Forwards one redelivery unless the client already has it; returns what the relay
    /// should hear, now or once its commit is done.
    async fn redeliver(&self, queued: Queued) -> Acknowledge {
        let Queued {
            arrived,
            generation,
            known,
            ..
        } = queued;
        let id = arrived.id.clone();
        let waiting = self.lock_uncommitted().get(&id).cloned();
        let ours = match waiting {
            // Forwarded on an earlier connection: its commit decides.
            Some(mut commit) => matches!(
                commit.wait_for(Option::is_some).await.as_deref(),
                Ok(Some(Ok(())))
            ),
            None => lock(&self.recent).ids.contains(&id),
        };
        let known = match (ours, arrived.answer) {
            (true, false) => return Acknowledge::Now(ClientMessage::Recorded { id }),
            (true, true) => self.recorder.answer(id.clone()).await,
            (false, _) => match known {
                Some(known) => known.await.ok().flatten(),
                None => self.recorder.answer(id.clone()).await,
            },
        };
        if let Some(known) = known {
            // Already recorded: neither forwarded nor shown again. A sender may still wait for
            // it (its first session vanished before answering), so it gets the recorded
            // answer; then the relay may drop it from its queue, once it is committed (it
            // comes again later when it is only in memory so far).
            if arrived.answer {
                answer_relay(&self.outbound, generation, &id, &known.answer).await;
            }
            return Acknowledge::Now(if known.committed {
                ClientMessage::Recorded { id }
            } else {
                ClientMessage::NotRecorded {
                    id,
                    message: "the capture store has not committed it yet".into(),
                }
            });
        }
        let capture = self.forward(arrived, generation).await;
        let commit = self.recorder.record_later(capture).await;
        let (done, waiting) = watch::channel(None);
        self.lock_uncommitted().insert(id.clone(), waiting);
        Acknowledge::After { id, commit, done }
    }

    /// Forwards a delivery and answers the relay if a sender waits; returns the capture.
    async fn forward(&self, arrived: Arrived, generation: u64) -> Capture {
        let Arrived {
            id,
            received_at_ms,
            answer,
            redelivery,
            request,
        } = arrived;
        let forwarded = self.forwarder.forward(&request).await;
        if answer {
            answer_relay(&self.outbound, generation, &id, &forwarded.result).await;
        }
        // The capture store keeps the request as the local server saw it.
        let mut request = request;
        request.path = forwarded.uri.path().to_string();
        request.query = forwarded.uri.query().unwrap_or_default().to_string();
        Capture {
            id,
            received_at_ms,
            tunnel: self.tunnel.clone(),
            queued: redelivery,
            target: forwarded.uri.to_string(),
            request,
            result: forwarded.result,
            duration_us: forwarded.duration.as_micros() as i64,
            source: forwarded.source,
            skipped: forwarded.skipped,
        }
    }

    fn lock_uncommitted(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, watch::Receiver<Option<Committed>>>> {
        lock(&self.uncommitted)
    }

    async fn acknowledge(&self, message: ClientMessage) {
        // Valid on any connection: the relay keeps the delivery until it hears `Recorded`.
        let _ = self.outbound.send(Outbound::any(message)).await;
    }
}

/// One connection's view: where its deliveries go and how its answers are tagged. When its
/// `ended` token fires, its redeliveries not yet started are left to the relay.
pub struct Connection {
    deliveries: Arc<Deliveries>,
    generation: u64,
    ended: CancellationToken,
}

impl Connection {
    /// The connection's generation, which its answers carry.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Fires when the connection ends.
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }

    /// Sends a message for the relay on this connection.
    pub async fn send(&self, message: ClientMessage) {
        let _ = self
            .deliveries
            .outbound
            .send(Outbound {
                generation: self.generation,
                message,
            })
            .await;
    }

    /// Shows that the relay set a queued delivery aside.
    pub async fn dead_lettered(&self, id: DeliveryId, reason: String) {
        tracing::warn!(delivery = %id, %reason, "the relay set a queued delivery aside");
        let _ = self
            .deliveries
            .screen
            .send(ListenEvent::DeadLettered { id, reason })
            .await;
    }

    /// Hands a complete delivery on: redeliveries, and live ones behind redeliveries not yet
    /// forwarded, to the in-order worker; other live ones to a task of their own. Waiting here
    /// slows reading, which is the backpressure the relay should see.
    pub async fn arrive(&self, arrived: Arrived) {
        let deliveries = &self.deliveries;
        if arrived.redelivery {
            // Counted on arrival, as the relay counts it sent: one recorded already is never
            // shown again, and the screen's catch-up must still reach the announced number.
            let _ = deliveries.screen.send(ListenEvent::QueuedArrived).await;
        }
        if arrived.redelivery || deliveries.in_order.load(Ordering::SeqCst) > 0 {
            let known = match arrived.redelivery {
                true => Some(deliveries.recorder.answer_later(arrived.id.clone()).await),
                false => None,
            };
            let queued = Queued {
                arrived,
                generation: self.generation,
                ended: self.ended.clone(),
                known,
            };
            deliveries.in_order.fetch_add(1, Ordering::SeqCst);
            if deliveries.redeliveries.send(queued).await.is_err() {
                deliveries.in_order.fetch_sub(1, Ordering::SeqCst);
            }
            return;
        }
        let Ok(slot) = self.deliveries.slots.clone().acquire_owned().await else {
            return;
        };
        let deliveries = self.deliveries.clone();
        let generation = self.generation;
        let span = tracing::debug_span!("delivery", id = %arrived.id);
        self.deliveries.tracker.spawn(
            async move {
                deliveries.handle(arrived, generation).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// Forwards the session's redeliveries one at a time, in arrival order; each one's commit is
/// waited for by [`acknowledge_in_order`]. Those whose connection ended before their turn are
/// left to the relay, which sends them again in order.
async fn redeliver_in_order(
    mut rx: mpsc::Receiver<Queued>,
    acks: mpsc::Sender<Acknowledge>,
    deliveries: Arc<Deliveries>,
) {
    loop {
        // Both branches are cancel-safe; `biased` so nothing starts after shutdown.
        let next = tokio::select! {
            biased;
            _ = deliveries.stop.cancelled() => None,
            next = rx.recv() => next,
        };
        let Some(queued) = next else { break };
        let ack = if queued.ended.is_cancelled() {
            None
        } else if queued.arrived.redelivery {
            let span = tracing::debug_span!("redelivery", id = %queued.arrived.id);
            tokio::select! {
                ack = deliveries.redeliver(queued).instrument(span) => Some(ack),
                // Left to the relay, which has no `Recorded` for it.
                () = deliveries.abandon.cancelled() => None,
            }
        } else {
            let span = tracing::debug_span!("delivery", id = %queued.arrived.id);
            let handled = deliveries.handle(queued.arrived, queued.generation);
            handled.instrument(span).await;
            None
        };
        // Forwarded (or left to the relay): live deliveries behind it may go concurrently.
        deliveries.in_order.fetch_sub(1, Ordering::SeqCst);
        if let Some(ack) = ack {
            if acks.send(ack).await.is_err() {
                break;
            }
        }
    }
}

/// Tells the relay about each redelivery in the worker's order: `Recorded` once committed.
async fn acknowledge_in_order(mut rx: mpsc::Receiver<Acknowledge>, deliveries: Arc<Deliveries>) {
    while let Some(ack) = rx.recv().await {
        let message = match ack {
            Acknowledge::Now(message) => message,
            Acknowledge::After { id, commit, done } => {
                let committed = commit
                    .await
                    .unwrap_or_else(|_| Err("the capture store writer stopped".into()));
                let message = match &committed {
                    Ok(()) => ClientMessage::Recorded { id: id.clone() },
                    Err(message) => ClientMessage::NotRecorded {
                        id: id.clone(),
                        message: message.clone(),
                    },
                };
                if committed.is_ok() {
                    lock(&deliveries.recent).insert(id.clone());
                }
                done.send_replace(Some(committed));
                deliveries.lock_uncommitted().remove(&id);
                message
            }
        };
        deliveries.acknowledge(message).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Updates under these locks are single map operations that cannot panic half-way.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn answer_relay(
    outbound: &mpsc::Sender<Outbound>,
    generation: u64,
    id: &DeliveryId,
    result: &Result<ResponseRecord, String>,
) {
    let send = |message| {
        outbound.send(Outbound {
            generation,
            message,
        })
    };
    match result {
        Ok(response) => {
            let (first, rest) = split_body(&response.body);
            let last = rest.len();
            let head = ClientMessage::Response {
                id: id.clone(),
                status: response.status,
                headers: response.headers.clone(),
                body: first,
                end: last == 0,
            };
            if send(head).await.is_err() {
                return;
            }
            for (i, data) in rest.into_iter().enumerate() {
                let chunk = ClientMessage::ResponseChunk {
                    id: id.clone(),
                    data,
                    end: i + 1 == last,
                };
                if send(chunk).await.is_err() {
                    return;
                }
            }
        }
        Err(message) => {
            let _ = send(ClientMessage::Failed {
                id: id.clone(),
                message: message.clone(),
            })
            .await;
        }
    }
}
