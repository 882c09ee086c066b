//! The session's side that others hold: [`SessionHandle`] sends deliveries into the session
//! writer's bounded queue (a large body chunk by chunk, so other deliveries interleave), and
//! [`PendingAnswer`] waits for the client's [`Reply`], sending `Cancel` if it is dropped first.
//! The handle also wakes the session's backlog task when a delivery was queued for its tunnel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use illumitunnel::headers::Header;
use illumitunnel::protocol::{self, RelayMessage};
use illumitunnel::DeliveryId;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use crate::queue::QueuedDelivery;

/// The client's answer to one delivery.
#[derive(Debug)]
pub enum Reply {
    /// The local server's response, body assembled from its chunks.
    Answered {
        /// HTTP status.
        status: u16,
        /// Headers as the local server sent them.
        headers: Vec<Header>,
        /// The whole body.
        body: Bytes,
    },
    /// The client could not get an answer; a sentence naming the cause.
    Failed(String),
}

/// The session ended (or was never reachable) before the operation completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionGone;

type Waiters = HashMap<DeliveryId, oneshot::Sender<Reply>>;

/// Deliveries waiting for this session's answer; `None` once the session has ended, so no
/// new delivery can wait on a dead session.
#[derive(Default)]
pub(super) struct Pending(Mutex<Option<Waiters>>);

impl Pending {
    pub(super) fn open() -> Self {
        Pending(Mutex::new(Some(HashMap::new())))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Waiters>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn insert(
        &self,
        id: DeliveryId,
        tx: oneshot::Sender<Reply>,
    ) -> Result<(), SessionGone> {
        match self.lock().as_mut() {
            Some(waiters) => {
                waiters.insert(id, tx);
                Ok(())
            }
            None => Err(SessionGone),
        }
    }

    pub(super) fn contains(&self, id: &DeliveryId) -> bool {
        self.lock().as_ref().is_some_and(|w| w.contains_key(id))
    }

    pub(super) fn remove(&self, id: &DeliveryId) -> Option<oneshot::Sender<Reply>> {
        self.lock().as_mut().and_then(|w| w.remove(id))
    }

    pub(super) fn settle(&self, id: &DeliveryId, reply: Reply) {
        if let Some(tx) = self.remove(id) {
            let _ = tx.send(reply);
        }
    }

    /// Ends the session's waits: every waiting sender sees [`SessionGone`].
    pub(super) fn close(&self) -> usize {
        self.lock().take().map_or(0, |w| w.len())
    }
}

/// A delivery ready to send: its head message and the body slices that follow it.
pub struct Outbound {
    id: DeliveryId,
    head: RelayMessage,
    chunks: Vec<Bytes>,
}

impl Outbound {
    /// Splits the body into the head's first slice and [`protocol::MAX_CHUNK`] slices.
    /// `queued` marks a redelivery (from the offline queue, or re-sent after its session
    /// vanished), which a client that already recorded it answers from its store.
    pub fn new(delivery: QueuedDelivery, queued: bool) -> Self {
        let (first, chunks) = protocol::split_body(&delivery.body);
        let head = RelayMessage::Request {
            id: delivery.id.clone(),
            received_at_ms: delivery.received_at_ms,
            answer: true,
            redelivery: queued,
            method: delivery.method,
            path: delivery.path,
            query: delivery.query,
            headers: delivery.headers,
            body: first,
            end: chunks.is_empty(),
        };
        Outbound {
            id: delivery.id,
            head,
            chunks,
        }
    }

    /// The same delivery marked as a redelivery, for another session.
    pub fn redelivery(&self) -> Self {
        let mut head = self.head.clone();
        if let RelayMessage::Request { redelivery, .. } = &mut head {
            *redelivery = true;
        }
        Outbound {
            id: self.id.clone(),
            head,
            chunks: self.chunks.clone(),
        }
    }

    /// The delivery as the offline queue keeps it (the body reassembled: a rare path).
    pub fn to_queued(&self) -> Option<QueuedDelivery> {
        let RelayMessage::Request {
            id,
            received_at_ms,
            method,
            path,
            query,
            headers,
            body,
            ..
        } = &self.head
        else {
            return None;
        };
        let mut whole = bytes::BytesMut::with_capacity(
            body.len() + self.chunks.iter().map(Bytes::len).sum::<usize>(),
        );
        whole.extend_from_slice(body);
        for chunk in &self.chunks {
            whole.extend_from_slice(chunk);
        }
        Some(QueuedDelivery {
            id: id.clone(),
            received_at_ms: *received_at_ms,
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            headers: headers.clone(),
            body: whole.freeze(),
        })
    }

    /// The delivery's id.
    pub fn id(&self) -> &DeliveryId {
        &self.id
    }

    fn head(&self, answer: bool) -> Vec<u8> {
        if answer {
            return self.head.encode();
        }
        let mut copy = self.head.clone();
        if let RelayMessage::Request { answer, .. } = &mut copy {
            *answer = false;
        }
        copy.encode()
    }
}

/// A cloneable handle to a session; the session's writer ends when the last handle is dropped
/// or the session is cancelled.
#[derive(Clone)]
pub struct SessionHandle {
    id: u64,
    pub(super) tx: mpsc::Sender<Message>,
    pub(super) pending: Arc<Pending>,
    pub(super) backlog: Arc<Notify>,
    closed: Arc<AtomicBool>,
}

impl SessionHandle {
    /// A handle over `tx`, the session writer's queue.
    pub fn new(id: u64, tx: mpsc::Sender<Message>) -> Self {
        SessionHandle {
            id,
            tx,
            pending: Arc::new(Pending::open()),
            backlog: Arc::new(Notify::new()),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the session ended, before it leaves the registry, so it is never revealed again.
    pub(super) fn mark_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Tells the session's backlog task to look at the offline queue again.
    pub fn wake_backlog(&self) {
        self.backlog.notify_one();
    }

    /// The session's id, unique within this relay.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends a delivery this session must answer; the returned [`PendingAnswer`] yields the
    /// reply, and dropping it unanswered sends `Cancel`.
    pub async fn deliver(&self, delivery: &Outbound) -> Result<PendingAnswer, SessionGone> {
        let (tx, rx) = oneshot::channel();
        self.pending.insert(delivery.id.clone(), tx)?;
        let pending = PendingAnswer {
            rx,
            id: delivery.id.clone(),
            session: self.clone(),
            settled: false,
        };
        self.send(delivery, true).await?;
        Ok(pending)
    }

    /// Sends a delivery from the offline queue: the client answers it, but nobody waits.
    pub async fn redeliver(&self, delivery: &Outbound) -> Result<(), SessionGone> {
        self.send(delivery, true).await
    }

    /// Sends a fan-out copy (`answer: false`) of a delivery.
    pub async fn copy(&self, delivery: &Outbound) -> Result<(), SessionGone> {
        self.send(delivery, false).await
    }

    async fn send(&self, delivery: &Outbound, answer: bool) -> Result<(), SessionGone> {
        self.enqueue(delivery.head(answer)).await?;
        let count = delivery.chunks.len();
        for (i, data) in delivery.chunks.iter().enumerate() {
            let chunk = RelayMessage::RequestChunk {
                id: delivery.id.clone(),
                data: data.clone(),
                end: i + 1 == count,
            };
            self.enqueue(chunk.encode()).await?;
        }
        Ok(())
    }

    async fn enqueue(&self, message: Vec<u8>) -> Result<(), SessionGone> {
        self.tx
            .send(Message::Binary(message))
            .await
            .map_err(|_| SessionGone)
    }
}

/// A delivery waiting for its answer.
pub struct PendingAnswer {
    rx: oneshot::Receiver<Reply>,
    id: DeliveryId,
    session: SessionHandle,
    settled: bool,
}

impl PendingAnswer {
    /// Waits for the client's answer. Cancel-safe: dropping the future keeps the wait.
    pub async fn reply(&mut self) -> Result<Reply, SessionGone> {
        let reply = (&mut self.rx).await;
        self.settled = true;
        reply.map_err(|_| SessionGone)
    }
}

impl Drop for PendingAnswer {
    fn drop(&mut self) {
        if !self.settled && self.session.pending.remove(&self.id).is_some() {
            let cancel = RelayMessage::Cancel {
                id: self.id.clone(),
            }
            .encode();
            if self.session.tx.try_send(Message::Binary(cancel)).is_err() {
                debug!(delivery = %self.id, "cancel not sent: session queue full or closed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::on_message;
    use illumitunnel::protocol::ClientMessage;

    fn id(n: u8) -> DeliveryId {
        DeliveryId::parse(&format!("id{n}")).unwrap()
    }

    #[test]
    fn answers_for_unknown_or_closed_deliveries_are_ignored() {
        let pending = Pending::open();
        let mut partial = HashMap::new();
        on_message(
            ClientMessage::Failed {
                id: id(9),
                message: "x".into(),
            },
            &pending,
            &mut partial,
            10,
        );
        let (tx, mut rx) = oneshot::channel();
        pending.insert(id(1), tx).unwrap();
        assert_eq!(pending.close(), 1);
        assert!(
            rx.try_recv().is_err(),
            "sender dropped: the waiter sees the session gone"
        );
        let (tx, _rx) = oneshot::channel();
        assert_eq!(pending.insert(id(2), tx), Err(SessionGone));
    }

    #[tokio::test]
    async fn large_bodies_are_enqueued_chunk_by_chunk_and_cancel_on_drop() {
        let (tx, mut rx) = mpsc::channel(crate::session::OUTBOUND_CAPACITY);
        let handle = SessionHandle::new(1, tx);
        let body = Bytes::from(vec![7u8; protocol::MAX_CHUNK * 3 + 1]);
        let delivery = QueuedDelivery {
            id: id(1),
            received_at_ms: 0,
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![],
            body,
        };
        let outbound = Outbound::new(delivery.clone(), false);
        assert_eq!(outbound.to_queued(), Some(delivery));
        assert!(matches!(
            outbound.redelivery().head,
            RelayMessage::Request { redelivery: true, .. }
        ));
        let pending = handle.deliver(&outbound).await.unwrap();
        let mut received = Vec::new();
        while let Ok(Message::Binary(b)) = rx.try_recv() {
            received.push(RelayMessage::decode(&b).unwrap());
        }
        assert_eq!(received.len(), 4);
        assert!(matches!(
            &received[0],
            RelayMessage::Request {
                answer: true,
                end: false,
                ..
            }
        ));
        assert!(
            matches!(&received[3], RelayMessage::RequestChunk { end: true, data, .. } if data.len() == 1)
        );
        drop(pending);
        let Ok(Message::Binary(b)) = rx.try_recv() else {
            panic!("no cancel")
        };
        assert_eq!(
            RelayMessage::decode(&b).unwrap(),
            RelayMessage::Cancel { id: id(1) }
        );

        handle.copy(&outbound).await.unwrap();
        let Ok(Message::Binary(b)) = rx.try_recv() else {
            panic!("no copy")
        };
        assert!(matches!(
            RelayMessage::decode(&b).unwrap(),
            RelayMessage::Request { answer: false, .. }
        ));
    }
}
