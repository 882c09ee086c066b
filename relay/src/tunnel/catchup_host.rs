//! The relay's side of a tunnel's catch-up: [`Host`] over the relay's tunnels and queue, and
//! [`Link`] over a session, so the catch-up itself knows neither.

use std::sync::Arc;

use illumitunnel::protocol::RelayMessage;
use illumitunnel::DeliveryId;
use tokio_util::sync::CancellationToken;

use super::catchup::{CatchUpPolicy, Host, Link, Scope};
use super::Tunnels;
use crate::metrics::Outcome;
use crate::queue::{QueueError, Row};
use crate::session::handle::{Ack, OutgoingDelivery, PendingAck, SessionGone, SessionHandle};

impl Host for Scope<Arc<Tunnels>> {
    type Link = SessionHandle;

    fn policy(&self) -> CatchUpPolicy {
        self.tunnels.policy
    }

    fn closing(&self) -> &CancellationToken {
        &self.tunnels.closing
    }

    async fn target(&self, skip: &[u64]) -> Option<SessionHandle> {
        let tunnels = &self.tunnels;
        loop {
            let target = tunnels.catch_up_target(&self.tunnel, skip)?;
            // On a cluster only the tunnel's authority catch-ups; this node waits until it is
            // one (the older session elsewhere leaves, or its node dies).
            if tunnels.placement.is_authority(&self.tunnel) {
                return Some(target);
            }
            let mut changes = tunnels.placement.changes();
            // All three are cancel-safe.
            tokio::select! {
                _ = tunnels.closing.cancelled() => return None,
                _ = changes.changed() => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    fn pushes(&self) -> u64 {
        self.tunnels.pushes(&self.tunnel)
    }

    fn go_live(&self, seen: u64) -> bool {
        self.tunnels.finish_catch_up(&self.tunnel, seen)
    }

    fn retire(&self) -> bool {
        self.tunnels.retire_catch_up(&self.tunnel)
    }

    fn reopen(&self) {
        self.tunnels.reopen_catch_up(&self.tunnel);
    }

    async fn woken(&self) {
        self.wake.notified().await;
    }

    async fn rows_after(&self, seq: i64, max: usize) -> Result<Vec<Row>, QueueError> {
        self.tunnels.queue.rows_after(&self.tunnel, seq, max).await
    }

    async fn remove(&self, seq: i64) -> Result<bool, QueueError> {
        self.tunnels.queue.remove(&self.tunnel, seq).await
    }

    async fn attempt_failed(&self, seq: i64) -> Result<u32, QueueError> {
        self.tunnels.queue.attempt_failed(&self.tunnel, seq).await
    }

    async fn dead_letter(&self, seq: i64, reason: String) -> Result<bool, QueueError> {
        self.tunnels
            .queue
            .dead_letter(&self.tunnel, seq, reason)
            .await
    }

    fn sent_one(&self) {
        self.tunnels
            .metrics
            .delivery(Outcome::redelivered, std::time::Duration::ZERO);
    }
}

impl Link for SessionHandle {
    type Pending = PendingAck;

    fn id(&self) -> u64 {
        SessionHandle::id(self)
    }

    async fn send(&self, row: &Row) -> Result<PendingAck, SessionGone> {
        let outgoing = OutgoingDelivery::new(row.delivery.clone(), true);
        self.send_queued(&outgoing).await
    }

    async fn ack(pending: &mut PendingAck) -> Result<Ack, SessionGone> {
        pending.ack().await
    }

    fn dead_lettered(&self, id: DeliveryId, reason: String) {
        self.notify(RelayMessage::DeadLettered { id, reason }.encode());
    }
}
