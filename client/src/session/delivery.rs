//! What happens to a delivery once its body is complete: it is forwarded to the local server,
//! the relay is answered, and the capture store records it.
//!
//! Live deliveries are forwarded concurrently (bounded by a semaphore). Redeliveries (the
//! relay's offline backlog, or a failover) go through one worker per connection, in the order
//! they arrived, one at a time: the next starts only after the previous one is committed to
//! the capture store, and the relay hears `Recorded` for it then, or `NotRecorded` with the
//! store's sentence when the commit failed (the relay keeps it and sends it again later).

use std::sync::Arc;
use std::time::Duration;

use illumitunnel::delivery::{RequestRecord, ResponseRecord};
use illumitunnel::protocol::{split_body, ClientMessage};
use illumitunnel::DeliveryId;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::link::Outbound;
use crate::forward::Forwarder;
use crate::recorder::{Capture, RecorderHandle};
use crate::status::ListenEvent;

/// Live deliveries forwarded at the same time; the reader waits for a slot beyond this.
const MAX_IN_FLIGHT: usize = 256;
/// Redeliveries waiting for the in-order worker before the reader waits for it.
const REDELIVERY_QUEUE: usize = 64;
/// How long shutdown waits for deliveries still being forwarded.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
        Arc::new(Deliveries {
            forwarder,
            recorder,
            tunnel,
            outbound,
            screen,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            tracker: TaskTracker::new(),
        })
    }

    /// Starts a connection's in-order redelivery worker.
    pub fn connection(self: &Arc<Self>, generation: u64) -> Connection {
        let ended = CancellationToken::new();
        let (tx, rx) = mpsc::channel(REDELIVERY_QUEUE);
        let worker = redeliver_in_order(rx, self.clone(), generation, ended.clone());
        self.tracker
            .spawn(worker.instrument(tracing::info_span!("redeliveries", connection = generation)));
        Connection {
            deliveries: self.clone(),
            generation,
            redeliveries: tx,
            ended,
        }
    }

    /// Lets deliveries already being forwarded finish and reach the recorder, for a while.
    pub async fn drain(&self) {
        self.tracker.close();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait()).await;
    }

    /// Forwards one delivery, answers the relay, then records it. A redelivery is committed
    /// before this returns, and the relay told whether it was.
    async fn handle(&self, arrived: Arrived, generation: u64) {
        let Arrived {
            id,
            received_at_ms,
            answer,
            redelivery,
            request,
        } = arrived;
        if redelivery {
            if let Some(known) = self.recorder.answer(id.clone()).await {
                // Already recorded: neither forwarded nor shown again. A sender may still wait
                // for it (its first session vanished before answering), so it gets the
                // recorded answer; then the relay may drop it from its queue, once it is
                // committed (it comes again later when it is only in memory so far).
                if answer {
                    answer_relay(&self.outbound, generation, &id, &known.answer).await;
                }
                let ack = if known.committed {
                    ClientMessage::Recorded { id }
                } else {
                    ClientMessage::NotRecorded {
                        id,
                        message: "the capture store has not committed it yet".into(),
                    }
                };
                self.acknowledge(ack).await;
                return;
            }
        }
        let forwarded = self.forwarder.forward(&request).await;
        if answer {
            answer_relay(&self.outbound, generation, &id, &forwarded.result).await;
        }
        // The capture store keeps the request as the local server saw it.
        let mut request = request;
        request.path = forwarded.uri.path().to_string();
        request.query = forwarded.uri.query().unwrap_or_default().to_string();
        let capture = Capture {
            id: id.clone(),
            received_at_ms,
            tunnel: self.tunnel.clone(),
            queued: redelivery,
            target: forwarded.uri.to_string(),
            request,
            result: forwarded.result,
            duration_us: forwarded.duration.as_micros() as i64,
            source: forwarded.source,
            skipped: forwarded.skipped,
        };
        if !redelivery {
            self.recorder.record(capture).await;
            return;
        }
        let ack = match self.recorder.record_committed(capture).await {
            Ok(()) => ClientMessage::Recorded { id },
            Err(message) => ClientMessage::NotRecorded { id, message },
        };
        self.acknowledge(ack).await;
    }

    async fn acknowledge(&self, message: ClientMessage) {
        // Valid on any connection: the relay keeps the delivery until it hears `Recorded`.
        let _ = self.outbound.send(Outbound::any(message)).await;
    }
}

/// One connection's view: where its deliveries go and how its answers are tagged. Dropping
/// it (and the `ended` token firing) stops its redelivery worker after the current one.
pub struct Connection {
    deliveries: Arc<Deliveries>,
    generation: u64,
    redeliveries: mpsc::Sender<Arrived>,
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

    /// Hands a complete delivery on: redeliveries to the in-order worker, live ones to a task
    /// of their own. Waiting here slows reading, which is the backpressure the relay should see.
    pub async fn dispatch(&self, arrived: Arrived) {
        if arrived.redelivery {
            let _ = self.redeliveries.send(arrived).await;
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

/// Forwards a connection's redeliveries one at a time, in arrival order, each committed before
/// the next starts. Those still waiting when the connection ends are left to the relay, which
/// sends them again in order.
async fn redeliver_in_order(
    mut rx: mpsc::Receiver<Arrived>,
    deliveries: Arc<Deliveries>,
    generation: u64,
    ended: CancellationToken,
) {
    loop {
        // Both branches are cancel-safe; `biased` so nothing starts after the connection ended.
        let next = tokio::select! {
            biased;
            _ = ended.cancelled() => None,
            next = rx.recv() => next,
        };
        let Some(arrived) = next else { break };
        let span = tracing::debug_span!("redelivery", id = %arrived.id);
        deliveries
            .handle(arrived, generation)
            .instrument(span)
            .await;
    }
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
