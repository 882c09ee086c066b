//! The session's side that others hold: [`SessionHandle`] sends deliveries into the session
//! writer's bounded queue (a large body chunk by chunk, so other deliveries interleave),
//! [`PendingAnswer`] waits for the client's [`Reply`], sending `Cancel` if it is dropped first,
//! and [`PendingAck`] waits for the client to say whether it recorded a queued delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use illumitunnel::headers::Header;
use illumitunnel::protocol::{self, RelayMessage};
use illumitunnel::DeliveryId;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::queue::QueuedDelivery;

/// Body chunks encoded before the sending task lets others run (4 × 64 KiB).
const CHUNKS_PER_SLICE: usize = 4;

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

/// What the client said about a queued delivery it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Committed to its capture store: the relay may drop it.
    Recorded,
    /// Its capture store failed; send it again later.
    NotRecorded(String),
    /// It cannot take this delivery.
    Rejected(String),
    /// It closed its session cleanly (a close frame) before saying: nobody's fault.
    Left,
}

/// The session ended (or was never reachable) before the operation completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionGone;

#[derive(Default)]
struct Waiters {
    replies: HashMap<DeliveryId, oneshot::Sender<Reply>>,
    acks: HashMap<DeliveryId, oneshot::Sender<Ack>>,
}

/// Deliveries waiting for this session's answer or acknowledgement; `None` once the session
/// has ended, so no new delivery can wait on a dead session.
#[derive(Default)]
pub(super) struct Pending(Mutex<Option<Waiters>>);

impl Pending {
    pub(super) fn open() -> Self {
        Pending(Mutex::new(Some(Waiters::default())))
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
            // Another delivery with this id already waits here (52 random bits make that
            // vanishingly rare, but a clash must cost one retry, not a lost waiter): never drop
            // its waiter; this one goes to the next session or the queue.
            Some(waiters) if waiters.replies.contains_key(&id) => Err(SessionGone),
            Some(waiters) => {
                waiters.replies.insert(id, tx);
                Ok(())
            }
            None => Err(SessionGone),
        }
    }

    fn insert_ack(&self, id: DeliveryId, tx: oneshot::Sender<Ack>) -> Result<(), SessionGone> {
        match self.lock().as_mut() {
            Some(waiters) if waiters.acks.contains_key(&id) => Err(SessionGone),
            Some(waiters) => {
                waiters.acks.insert(id, tx);
                Ok(())
            }
            None => Err(SessionGone),
        }
    }

    pub(super) fn contains(&self, id: &DeliveryId) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|w| w.replies.contains_key(id))
    }

    pub(super) fn remove(&self, id: &DeliveryId) -> Option<oneshot::Sender<Reply>> {
        self.lock().as_mut().and_then(|w| w.replies.remove(id))
    }

    fn remove_ack(&self, id: &DeliveryId) -> Option<oneshot::Sender<Ack>> {
        self.lock().as_mut().and_then(|w| w.acks.remove(id))
    }

    pub(super) fn settle(&self, id: &DeliveryId, reply: Reply) {
        if let Some(tx) = self.remove(id) {
            let _ = tx.send(reply);
        }
    }

    /// Hands the client's word on a queued delivery to whoever waits for it; `false` when
    /// nobody does.
    pub(super) fn acknowledge(&self, id: &DeliveryId, ack: Ack) -> bool {
        match self.remove_ack(id) {
            Some(tx) => tx.send(ack).is_ok(),
            None => false,
        }
    }

    /// Ends the session's waits: every waiting sender sees [`SessionGone`], and every wait
    /// for an acknowledgement sees [`Ack::Left`] when the client closed `cleanly`, else
    /// [`SessionGone`]. Returns how many senders were waiting.
    pub(super) fn close(&self, cleanly: bool) -> usize {
        let Some(waiters) = self.lock().take() else {
            return 0;
        };
        if cleanly {
            for (_, tx) in waiters.acks {
                let _ = tx.send(Ack::Left);
            }
        }
        waiters.replies.len()
    }
}

/// A delivery ready to send: its head message and the body slices that follow it.
pub struct OutgoingDelivery {
    id: DeliveryId,
    head: RelayMessage,
    chunks: Vec<Bytes>,
}

impl OutgoingDelivery {
    /// Splits the body into the head's first slice and [`protocol::MAX_CHUNK`] slices.
    /// `redelivery` marks one the client may have seen (from the offline queue, or re-sent
    /// after its session vanished): it forwards those in order and answers one it already
    /// recorded from its store.
    pub fn new(delivery: QueuedDelivery, redelivery: bool) -> Self {
        let (first, chunks) = protocol::split_body(&delivery.body);
        let head = RelayMessage::Request {
            id: delivery.id.clone(),
            received_at_ms: delivery.received_at_ms,
            answer: true,
            redelivery,
            method: delivery.method,
            path: delivery.path,
            query: delivery.query,
            headers: delivery.headers,
            body: first,
            end: chunks.is_empty(),
        };
        OutgoingDelivery {
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
        OutgoingDelivery {
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
    pub(super) tx: mpsc::Sender<Vec<u8>>,
    pub(super) pending: Arc<Pending>,
}

impl SessionHandle {
    /// A handle over `tx`, the session writer's queue.
    pub fn new(id: u64, tx: mpsc::Sender<Vec<u8>>) -> Self {
        SessionHandle {
            id,
            tx,
            pending: Arc::new(Pending::open()),
        }
    }

    /// Queues a notice for the client without waiting; dropped when the session is gone or
    /// its queue is full (notices are informational).
    pub fn notify(&self, message: Vec<u8>) {
        if self.tx.try_send(message).is_err() {
            debug!(
                session = self.id,
                "notice not sent: session queue full or closed"
            );
        }
    }

    /// The session's id, unique within this relay.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends a delivery this session must answer; the returned [`PendingAnswer`] yields the
    /// reply, and dropping it unanswered sends `Cancel`.
    pub async fn deliver(&self, delivery: &OutgoingDelivery) -> Result<PendingAnswer, SessionGone> {
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

    /// Sends a delivery from the offline queue, which nobody waits to answer; the returned
    /// [`PendingAck`] yields whether the client recorded it.
    pub async fn send_queued(
        &self,
        delivery: &OutgoingDelivery,
    ) -> Result<PendingAck, SessionGone> {
        let (tx, rx) = oneshot::channel();
        self.pending.insert_ack(delivery.id.clone(), tx)?;
        let pending = PendingAck {
            rx,
            id: delivery.id.clone(),
            pending: self.pending.clone(),
        };
        self.send(delivery, false).await?;
        Ok(pending)
    }

    /// Sends a fan-out copy (`answer: false`) of a delivery.
    pub async fn copy(&self, delivery: &OutgoingDelivery) -> Result<(), SessionGone> {
        self.send(delivery, false).await
    }

    async fn send(&self, delivery: &OutgoingDelivery, answer: bool) -> Result<(), SessionGone> {
        self.enqueue(delivery.head(answer)).await?;
        let count = delivery.chunks.len();
        for (i, data) in delivery.chunks.iter().enumerate() {
            let chunk = RelayMessage::RequestChunk {
                id: delivery.id.clone(),
                data: data.clone(),
                end: i + 1 == count,
            };
            self.enqueue(chunk.encode()).await?;
            if (i + 1) % CHUNKS_PER_SLICE == 0 {
                // Encoding copies each chunk: other tunnels' deliveries run between slices.
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    async fn enqueue(&self, message: Vec<u8>) -> Result<(), SessionGone> {
        self.tx.send(message).await.map_err(|_| SessionGone)
    }
}

/// A queued delivery waiting for the client's acknowledgement.
pub struct PendingAck {
    rx: oneshot::Receiver<Ack>,
    id: DeliveryId,
    pending: Arc<Pending>,
}

impl PendingAck {
    /// Waits for the client's word; [`SessionGone`] when the session ended first.
    /// Cancel-safe: dropping the future keeps the wait.
    pub async fn ack(&mut self) -> Result<Ack, SessionGone> {
        (&mut self.rx).await.map_err(|_| SessionGone)
    }
}

impl Drop for PendingAck {
    fn drop(&mut self) {
        self.pending.remove_ack(&self.id);
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
            if self.session.tx.try_send(cancel).is_err() {
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
        let mut partial = crate::session::Partials::new(10, 4);
        on_message(
            ClientMessage::Failed {
                id: id(9),
                message: "x".into(),
            },
            &pending,
            &mut partial,
        );
        let (tx, mut rx) = oneshot::channel();
        pending.insert(id(1), tx).unwrap();
        assert_eq!(pending.close(false), 1);
        assert!(
            rx.try_recv().is_err(),
            "sender dropped: the waiter sees the session gone"
        );
        let (tx, _rx) = oneshot::channel();
        assert_eq!(pending.insert(id(2), tx), Err(SessionGone));
    }

    /// `POST /` with a body of `len` bytes.
    fn post(len: usize) -> QueuedDelivery {
        QueuedDelivery {
            id: id(1),
            received_at_ms: 0,
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![],
            body: Bytes::from(vec![7u8; len]),
        }
    }

    #[tokio::test]
    async fn a_large_body_is_encoded_in_slices_with_other_tasks_running_between() {
        let (tx, mut rx) = mpsc::channel(crate::session::OUTBOUND_CAPACITY);
        let handle = SessionHandle::new(1, tx);
        let chunks = 4 * CHUNKS_PER_SLICE;
        let delivery = post(protocol::MAX_CHUNK * (chunks + 1));
        let (turns, other) = crate::turns::count_turns();
        handle
            .copy(&OutgoingDelivery::new(delivery, false))
            .await
            .unwrap();
        other.abort();
        let mut sent = 0;
        while rx.try_recv().is_ok() {
            sent += 1;
        }
        assert_eq!(sent, chunks + 1, "the head and every chunk");
        let turns = turns.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            turns >= 3,
            "the other task ran {turns} times while {chunks} chunks were encoded"
        );
    }

    #[tokio::test]
    async fn large_bodies_are_enqueued_chunk_by_chunk_and_cancel_on_drop() {
        let (tx, mut rx) = mpsc::channel(crate::session::OUTBOUND_CAPACITY);
        let handle = SessionHandle::new(1, tx);
        let delivery = post(protocol::MAX_CHUNK * 3 + 1);
        let outbound = OutgoingDelivery::new(delivery.clone(), false);
        assert_eq!(outbound.to_queued(), Some(delivery));
        assert!(matches!(
            outbound.redelivery().head,
            RelayMessage::Request {
                redelivery: true,
                ..
            }
        ));
        let pending = handle.deliver(&outbound).await.unwrap();
        let mut received = Vec::new();
        while let Ok(b) = rx.try_recv() {
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
        let Ok(b) = rx.try_recv() else {
            panic!("no cancel")
        };
        assert_eq!(
            RelayMessage::decode(&b).unwrap(),
            RelayMessage::Cancel { id: id(1) }
        );

        handle.copy(&outbound).await.unwrap();
        let Ok(b) = rx.try_recv() else {
            panic!("no copy")
        };
        assert!(matches!(
            RelayMessage::decode(&b).unwrap(),
            RelayMessage::Request { answer: false, .. }
        ));
    }
}
