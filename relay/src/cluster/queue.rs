//! The offline queue and tunnel ownership in JetStream: the same operations as `relay.db`,
//! so the tunnel's drain does not know which one it talks to.
//!
//! - A queued delivery is a message on `illumitunnel.queue.{tunnel}` in [`QUEUE_STREAM`]
//!   (file storage), published with an acknowledgement before the sender hears 202. Its
//!   stream sequence is its place in the queue; the head is the first message on the subject.
//! - It leaves only when the client says `Recorded` (the drain deletes the message), so a node
//!   that dies mid-drain leaves it for the next authority: at least once, in order.
//! - Failed attempts are counted in `illumitunnel-attempts` under `{tunnel}.{seq}`; the third
//!   moves the message to `illumitunnel.dead.{tunnel}` in [`DEAD_STREAM`].
//! - Limits: `--queue-max-count` is the stream's per-subject limit, `--queue-max-age` its age
//!   limit. `--queue-max-total-bytes` counts the stream and the large-body object store and is
//!   shared fairly before a message is published (see [`over_fair_share`]); the stream's and
//!   the object store's byte limits, twice it each, are the hard ceilings.
//! - A delivery is published with its id as `Nats-Msg-Id`: the stream keeps one copy of it
//!   within [`DEDUPE_WINDOW`], so a node that wakes from a pause and queues what another node
//!   already queued for it adds nothing.
//! - Only a delivery that failed at least once leaves a purge marker in the attempts bucket.
//!
//! [`QUEUE_STREAM`]: super::QUEUE_STREAM
//! [`DEAD_STREAM`]: super::DEAD_STREAM

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::RawMessageErrorKind;
use std::sync::Arc;

use futures_util::StreamExt;
use illumitunnel::DeliveryId;
use tracing::debug;

use super::codec::{decode_delivery, encode_delivery};
use super::node::Cluster;
use super::{DEAD_SUBJECT, PUSHED_SUBJECT, QUEUE_SUBJECT};
use crate::auth::{decide, Claim, Owner};
use crate::queue::{
    Backlog, Limit, Queue, QueueError, QueueLimits, QueuedDelivery, Row, PAGE_BYTES,
};

/// Header of a dead letter: why it was set aside.
const REASON_HEADER: &str = "Illumitunnel-Reason";
/// Most times a claim retries after losing a race for the same name.
const CLAIM_RACES: usize = 3;

fn queue_subject(tunnel: &str) -> String {
    format!("{QUEUE_SUBJECT}.{tunnel}")
}

fn unavailable(err: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(format!("NATS: {err}"))
}

impl Cluster {
    /// Claims `tunnel` by the one ownership rule, against the owners bucket: a free name is
    /// created atomically, so two nodes cannot both grant it.
    pub async fn claim(
        &self,
        tunnel: &str,
        presented: Option<Owner>,
        fresh: Owner,
    ) -> Result<Claim, QueueError> {
        for _ in 0..CLAIM_RACES {
            let entry = self.owners.entry(tunnel).await.map_err(unavailable)?;
            let current = entry.as_ref().filter(|e| !e.value.is_empty());
            let owner = match current {
                None => None,
                Some(e) => match std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(Owner::parse_key)
                {
                    Some(owner) => Some(owner),
                    // An owner this relay cannot read is nobody it could hand the tunnel to.
                    None => return Ok(Claim::Taken),
                },
            };
            let claim = decide(owner, presented, fresh);
            let Claim::Claimed(new) = claim else {
                return Ok(claim);
            };
            let written = match entry {
                None => self
                    .owners
                    .create(tunnel, new.key().into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.kind() == CreateErrorKind::AlreadyExists),
                Some(e) => self
                    .owners
                    .update(tunnel, new.key().into(), e.revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.kind() == UpdateErrorKind::WrongLastRevision),
            };
            match written {
                Ok(_) => return Ok(claim),
                // Another node wrote first: decide again against what it wrote.
                Err(true) => continue,
                Err(false) => return Err(unavailable("could not record the tunnel's owner")),
            }
        }
        Ok(Claim::Taken)
    }

    /// Queues a delivery; returns once JetStream has stored it, then wakes the authority.
    pub async fn push(
        &self,
        tunnel: &str,
        delivery: QueuedDelivery,
        limits: QueueLimits,
    ) -> Result<(), QueueError> {
        if !self.is_reachable() {
            // A publish buffered until NATS is back would be queued after the sender heard
            // 503; refuse before anything leaves instead.
            return Err(unavailable("not connected"));
        }
        let size = delivery.body.len() as u64;
        if self.over_cap(tunnel, size, limits.max_total_bytes).await? {
            return Err(QueueError::Full {
                tunnel: tunnel.to_owned(),
                limit: Limit::TotalBytes(limits.max_total_bytes),
            });
        }
        let body_ref = if self.fits(delivery.body.len()) {
            None
        } else {
            let name = queued_body_name(&delivery.id, &DeliveryId::generate());
            self.put_body(&name, &delivery.body)
                .await
                .map_err(QueueError::Storage)?;
            Some(name)
        };
        let message = encode_delivery(&delivery, body_ref.clone());
        let jetstream = self.jetstream();
        let publish = PublishMessage::build()
            .payload(message)
            .message_id(dedupe_id(&delivery.id));
        let acked = match jetstream.send_publish(queue_subject(tunnel), publish).await {
            Ok(ack) => ack.await,
            Err(err) => {
                // Never sent: its body must not outlive the refusal.
                self.forget_body(body_ref.as_deref()).await;
                return Err(unavailable(err));
            }
        };
        let err = match acked {
            Ok(ack) if ack.duplicate => {
                // A second copy (a node woke from a pause and queued what another node had
                // queued for it already): JetStream kept the first; this body is nobody's.
                debug!(delivery = %delivery.id, "second copy of a queued delivery dropped");
                self.forget_body(body_ref.as_deref()).await;
                return Ok(());
            }
            Ok(_) => None,
            Err(err) => Some(err),
        };
        if let Some(err) = err {
            let refusal = Refusal::of(&err.to_string(), err.kind() == PublishErrorKind::TimedOut);
            if refusal.never_stored() {
                // Refused by the stream's limits: nothing refers to the stored body.
                self.forget_body(body_ref.as_deref()).await;
            }
            // A timeout may still have been stored, so its body stays for the redelivery.
            return Err(match refusal {
                Refusal::FullCount => QueueError::Full {
                    tunnel: tunnel.to_owned(),
                    limit: Limit::Count(limits.max_count),
                },
                Refusal::FullBytes => QueueError::Full {
                    tunnel: tunnel.to_owned(),
                    limit: Limit::TotalBytes(limits.max_total_bytes),
                },
                Refusal::TimedOut => unavailable("JetStream did not confirm in time"),
                Refusal::Other => unavailable(err),
            });
        }
        // Fire and forget: a lost notice is made good by the authority's periodic look at
        // the queue (`super::wake`).
        let _ = self
            .client()
            .publish(format!("{PUSHED_SUBJECT}.{tunnel}"), Default::default())
            .await;
        Ok(())
    }

    /// Whether `size` more bytes for `tunnel` must be refused at `cap`
    /// (`--queue-max-total-bytes`), counting the queue stream and the large-body object store;
    /// see [`over_fair_share`].
    async fn over_cap(&self, tunnel: &str, size: u64, cap: u64) -> Result<bool, QueueError> {
        let (info, stored) = tokio::join!(self.queue.get_info(), self.stored_bytes());
        let state = info.map_err(unavailable)?.state;
        let stored = stored.map_err(unavailable)?;
        let mut usage = Usage {
            bytes: state.bytes.saturating_add(stored),
            messages: state.messages,
            queues: state.subjects_count,
            mine: 0,
        };
        if !usage.at_cap(size, cap) {
            return Ok(false);
        }
        usage.mine = count(&self.queue, &queue_subject(tunnel)).await?;
        Ok(over_fair_share(&usage, size, cap))
    }

    /// What a connecting session hears: how many wait, and how many were set aside.
    pub async fn backlog(&self, tunnel: &str) -> Result<Backlog, QueueError> {
        Ok(Backlog {
            queued: count(&self.queue, &queue_subject(tunnel)).await?,
            // JetStream drops aged messages by itself and does not say how many.
            expired: 0,
            dead_letters: count(&self.dead, &format!("{DEAD_SUBJECT}.{tunnel}")).await?,
        })
    }

    /// The oldest delivery in `tunnel`'s queue.
    pub async fn head(&self, tunnel: &str) -> Result<Option<Row>, QueueError> {
        self.first_from(tunnel, 1).await
    }

    /// Up to `max` deliveries of `tunnel`'s queue after `seq`, oldest first, stopping once
    /// `max_bytes` of bodies are read (at least one when any is left).
    pub async fn rows_after(
        &self,
        tunnel: &str,
        seq: i64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Row>, QueueError> {
        let mut rows = Vec::new();
        let mut after = seq.max(0) as u64;
        let mut bytes = 0;
        while rows.len() < max && bytes < max_bytes {
            let Some(row) = self.first_from(tunnel, after + 1).await? else {
                break;
            };
            after = row.seq.max(0) as u64;
            bytes += row.delivery.body.len();
            rows.push(row);
        }
        Ok(rows)
    }

    /// The first delivery in `tunnel`'s queue at stream sequence `from` or later.
    async fn first_from(&self, tunnel: &str, from: u64) -> Result<Option<Row>, QueueError> {
        let message = match self
            .queue
            .get_first_raw_message_by_subject(queue_subject(tunnel), from)
            .await
        {
            Ok(message) => message,
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(err) => return Err(unavailable(err)),
        };
        let seq = message.sequence;
        let frame = decode_delivery(&message.payload)
            .map_err(|e| QueueError::Storage(format!("queued delivery {seq}: {e}")))?;
        let mut delivery = frame.delivery;
        if let Some(name) = frame.body_ref {
            delivery.body = self.get_body(&name).await.map_err(QueueError::Storage)?;
            self.stored_bodies().insert(seq, name);
        }
        let attempts = match self.attempts.get(attempts_key(tunnel, seq)).await {
            Ok(Some(v)) => std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            Ok(None) => 0,
            Err(err) => return Err(unavailable(err)),
        };
        if attempts > 0 {
            self.note_attempted(seq);
        }
        Ok(Some(Row {
            seq: i64::try_from(seq).unwrap_or(i64::MAX),
            attempts,
            delivery,
        }))
    }

    /// Drops the recorded delivery at `seq` (and its stored body and attempt count).
    pub async fn remove(&self, tunnel: &str, seq: i64) -> Result<bool, QueueError> {
        let seq = seq.max(0) as u64;
        let body_ref = self.stored_bodies().remove(&seq);
        let removed = self.queue.delete_message(seq).await.map_err(unavailable)?;
        self.forget_attempts(tunnel, seq).await;
        if let Some(name) = body_ref {
            self.drop_body(&name).await;
        }
        Ok(removed)
    }

    /// Counts a failed attempt of the delivery at `seq`; returns the count.
    pub async fn attempt_failed(&self, tunnel: &str, seq: i64) -> Result<u32, QueueError> {
        let key = attempts_key(tunnel, seq.max(0) as u64);
        let before: u32 = match self.attempts.get(&key).await.map_err(unavailable)? {
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            None => 0,
        };
        let after = before + 1;
        self.attempts
            .put(&key, after.to_string().into())
            .await
            .map_err(unavailable)?;
        self.note_attempted(seq.max(0) as u64);
        Ok(after)
    }

    /// Purges the attempt count of the delivery at `seq` if it had one: a purge leaves a
    /// marker until the bucket's age limit, so only deliveries that failed at least once
    /// (at most three times each, then dead-lettered) leave one; a clean drain leaves none.
    async fn forget_attempts(&self, tunnel: &str, seq: u64) {
        if self.take_attempted(seq) {
            let _ = self.attempts.purge(attempts_key(tunnel, seq)).await;
        }
    }

    /// Deletes a large body a refused delivery had stored, if it had one.
    async fn forget_body(&self, name: Option<&str>) {
        if let Some(name) = name {
            self.drop_body(name).await;
        }
    }

    /// Moves the delivery at `seq` to the dead letters with `reason`.
    pub async fn dead_letter(
        &self,
        tunnel: &str,
        seq: i64,
        reason: String,
    ) -> Result<bool, QueueError> {
        let seq = seq.max(0) as u64;
        let message = match self.queue.get_raw_message(seq).await {
            Ok(message) => message,
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => return Ok(false),
            Err(err) => return Err(unavailable(err)),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(REASON_HEADER, reason.as_str());
        self.jetstream()
            .publish_with_headers(format!("{DEAD_SUBJECT}.{tunnel}"), headers, message.payload)
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        // The stored body, if any, stays with the dead letter until the bucket's age limit.
        let removed = self.queue.delete_message(seq).await.map_err(unavailable)?;
        self.forget_attempts(tunnel, seq).await;
        self.stored_bodies().remove(&seq);
        Ok(removed)
    }

    fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.js
    }
}

fn attempts_key(tunnel: &str, seq: u64) -> String {
    format!("{tunnel}.{seq}")
}

/// The `Nats-Msg-Id` a queued delivery is published with: its delivery id, so the stream
/// stores one copy of it within [`DEDUPE_WINDOW`].
pub fn dedupe_id(id: &DeliveryId) -> String {
    id.as_str().to_owned()
}

/// The object name of a queued delivery's large body: unique per publish, so a second copy
/// dropped as a duplicate can delete its own body without touching the first copy's.
pub fn queued_body_name(id: &DeliveryId, nonce: &DeliveryId) -> String {
    format!("queued-{id}-{nonce}")
}

/// Why JetStream did not store a queued delivery, as the sender and the stored body see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The tunnel's queue is at `--queue-max-count` (the stream's per-subject limit).
    FullCount,
    /// The stream is at its byte limit.
    FullBytes,
    /// No acknowledgement in time: the message may have been stored all the same.
    TimedOut,
    /// Anything else (NATS away, a permission refused).
    Other,
}

impl Refusal {
    /// Reads a failed publish: its error `text`, and whether it timed out.
    pub fn of(text: &str, timed_out: bool) -> Refusal {
        if text.contains("maximum messages per subject") {
            Refusal::FullCount
        } else if text.contains("maximum bytes") {
            Refusal::FullBytes
        } else if timed_out {
            Refusal::TimedOut
        } else {
            Refusal::Other
        }
    }

    /// Whether the message was certainly not stored, so its large body is nobody's.
    pub fn never_stored(self) -> bool {
        matches!(self, Refusal::FullCount | Refusal::FullBytes)
    }
}

/// What JetStream says about the queue when a delivery is about to be queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in the queue stream plus the large-body object store.
    pub bytes: u64,
    /// Messages in the queue stream.
    pub messages: u64,
    /// Tunnels with a queue.
    pub queues: u64,
    /// Messages in this tunnel's queue (read only when [`at_cap`](Self::at_cap)).
    pub mine: u64,
}

impl Usage {
    /// Whether `size` more bytes would pass `cap`: only then is the fair share asked.
    pub fn at_cap(&self, size: u64, cap: u64) -> bool {
        self.bytes.saturating_add(size) > cap
    }
}

/// Whether `size` more bytes for a tunnel must be refused at `cap` (`--queue-max-total-bytes`):
/// under the cap nothing is; at the cap a tunnel over its fair share (the cap ÷ tunnels with a
/// queue, itself included) is. JetStream tells bytes per stream and messages per subject, so a
/// tunnel's bytes are its messages times the average message size (large bodies included).
/// The stream's own byte limit, twice the cap, is the hard ceiling.
pub fn over_fair_share(usage: &Usage, size: u64, cap: u64) -> bool {
    if !usage.at_cap(size, cap) {
        return false;
    }
    let queues = usage.queues + u64::from(usage.mine == 0);
    let average = usage.bytes / usage.messages.max(1);
    usage.mine.saturating_mul(average).saturating_add(size) > cap / queues.max(1)
}

/// Messages on `subject` in `stream`.
async fn count(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> Result<u64, QueueError> {
    let mut info = stream
        .info_with_subjects(subject)
        .await
        .map_err(unavailable)?;
    let mut total = 0;
    while let Some(entry) = info.next().await {
        match entry {
            Ok((_, n)) => total += n as u64,
            Err(err) => {
                debug!(%err, subject, "could not count queued messages");
                return Err(unavailable(err));
            }
        }
    }
    Ok(total)
}

/// The cluster's queue as the core's [`Queue`]: JetStream, with `limits` for its refusals.
pub struct NatsQueue {
    /// The node's connection and buckets.
    pub cluster: Arc<Cluster>,
    /// The limits pushes are checked against.
    pub limits: QueueLimits,
}

#[async_trait::async_trait]
impl Queue for NatsQueue {
    async fn claim(
        &self,
        tunnel: &str,
        presented: Option<Owner>,
        fresh: Owner,
    ) -> Result<Claim, QueueError> {
        self.cluster.claim(tunnel, presented, fresh).await
    }

    async fn push(&self, tunnel: &str, delivery: QueuedDelivery) -> Result<(), QueueError> {
        self.cluster.push(tunnel, delivery, self.limits).await
    }

    async fn connect(&self, tunnel: &str) -> Result<Backlog, QueueError> {
        self.cluster.backlog(tunnel).await
    }

    async fn head(&self, tunnel: &str) -> Result<Option<Row>, QueueError> {
        self.cluster.head(tunnel).await
    }

    async fn rows_after(&self, tunnel: &str, seq: i64, max: usize) -> Result<Vec<Row>, QueueError> {
        self.cluster.rows_after(tunnel, seq, max, PAGE_BYTES).await
    }

    async fn remove(&self, tunnel: &str, seq: i64) -> Result<bool, QueueError> {
        self.cluster.remove(tunnel, seq).await
    }

    async fn attempt_failed(&self, tunnel: &str, seq: i64) -> Result<u32, QueueError> {
        self.cluster.attempt_failed(tunnel, seq).await
    }

    async fn dead_letter(
        &self,
        tunnel: &str,
        seq: i64,
        reason: String,
    ) -> Result<bool, QueueError> {
        self.cluster.dead_letter(tunnel, seq, reason).await
    }

    // The catch-up removes what was recorded; a stray ack means a redelivery.
    async fn ack(&self, _tunnel: &str, _id: illumitunnel::DeliveryId) {}
}

#[cfg(test)]
mod tests;
