//! A tunnel's drain: while the tunnel is [`Draining`](super::Phase::Draining), it sends the
//! oldest queued delivery to the tunnel's first session, waits for the client's word, and only
//! then moves on, so the local server sees the backlog one delivery at a time in arrival order.
//!
//! - `Recorded`: the row leaves the queue.
//! - `NotRecorded` (the client's capture store fails): the same row is sent again after a
//!   pause that doubles up to 30 s; it does not count against the delivery.
//! - The client closes its session cleanly (a close frame) while the row is out: the next
//!   session gets it; nobody's fault.
//! - `Rejected`, or the session breaks (or stays silent past the ack timeout) while the row is
//!   out: one failed attempt, kept in the database. The third in a row sets the delivery aside
//!   as a dead letter, tells the client, and the rows behind it keep flowing.

use std::sync::Arc;
use std::time::Duration;

use illumitunnel::protocol::RelayMessage;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::Tunnels;
use crate::metrics::Outcome;
use crate::queue::Row;
use crate::session::handle::{Ack, OutgoingDelivery, SessionGone, SessionHandle};

/// Failed attempts in a row after which a queued delivery becomes a dead letter.
pub const MAX_ATTEMPTS: u32 = 3;
/// Longest pause before re-sending a delivery the client could not record.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// How one queued delivery fared on one session.
enum Sent {
    Recorded,
    NotRecorded(String),
    Failed(String),
    /// The relay is closing: nobody's fault.
    Closing,
    /// The client closed its session cleanly: nobody's fault; the next session gets it.
    Left,
}

pub(super) async fn run(tunnels: Arc<Tunnels>, tunnel: String, wake: Arc<Notify>) {
    let mut retry = tunnels.policy.retry;
    let mut sent = 0u64;
    loop {
        let Some((session, seen)) = tunnels.drain_target(&tunnel) else {
            debug!(sent, "drain stopped: no session");
            return;
        };
        {
            // On a cluster only the tunnel's authority drains; this node waits until it is
            // one (the older session elsewhere leaves, or its node dies).
            if !tunnels.placement.is_authority(&tunnel) {
                let mut changes = tunnels.placement.changes();
                // All three are cancel-safe.
                tokio::select! {
                    _ = tunnels.closing.cancelled() => return,
                    _ = changes.changed() => {}
                    _ = wake.notified() => {}
                }
                continue;
            }
        }
        let head = tokio::select! {
            _ = tunnels.closing.cancelled() => return,
            head = tunnels.queue.head(&tunnel) => head,
        };
        let row = match head {
            Ok(Some(row)) => row,
            Ok(None) => {
                if tunnels.finish_drain(&tunnel, seen) {
                    if sent > 0 {
                        info!(sent, "backlog sent; the tunnel is live");
                    }
                    return;
                }
                // A push is in flight: its ticket wakes us when it lands.
                tokio::select! {
                    _ = tunnels.closing.cancelled() => return,
                    _ = wake.notified() => continue,
                }
            }
            Err(err) => {
                warn!(%err, "could not read the offline queue; trying again");
                if !pause(&tunnels, retry).await {
                    return;
                }
                continue;
            }
        };
        if row.attempts >= MAX_ATTEMPTS {
            let reason = format!("it failed {} times in a row on the client", row.attempts);
            set_aside(&tunnels, &tunnel, &session, &row, reason).await;
            continue;
        }
        match send(&tunnels, &session, &row).await {
            Sent::Recorded => {
                retry = tunnels.policy.retry;
                sent += 1;
                if let Err(err) = tunnels.queue.remove(&tunnel, row.seq).await {
                    warn!(%err, delivery = %row.delivery.id, "could not drop a recorded delivery; it will be sent again");
                    if !pause(&tunnels, retry).await {
                        return;
                    }
                }
            }
            Sent::NotRecorded(why) => {
                warn!(delivery = %row.delivery.id, %why, ?retry, "the client could not record a queued delivery; sending it again later");
                if !pause(&tunnels, retry).await {
                    return;
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
            Sent::Failed(why) => attempt_failed(&tunnels, &tunnel, &session, &row, why).await,
            Sent::Left => {
                debug!(delivery = %row.delivery.id, "the client left before recording a queued delivery")
            }
            Sent::Closing => return,
        }
    }
}

/// Sends `row` to `session` and waits for the client's word on it.
async fn send(tunnels: &Tunnels, session: &SessionHandle, row: &Row) -> Sent {
    let outgoing = OutgoingDelivery::new(row.delivery.clone(), true);
    let gone = |tunnels: &Tunnels| {
        if tunnels.closing.is_cancelled() {
            Sent::Closing
        } else {
            Sent::Failed("it ended the client's session".into())
        }
    };
    let mut pending = tokio::select! {
        _ = tunnels.closing.cancelled() => return Sent::Closing,
        pending = session.send_queued(&outgoing) => match pending {
            Ok(pending) => pending,
            Err(SessionGone) => return gone(tunnels),
        },
    };
    tunnels
        .metrics
        .delivery(Outcome::redelivered, Duration::ZERO);
    let timeout = tunnels.policy.ack_timeout;
    // `PendingAck::ack` is cancel-safe; so is a token wait.
    let ack = tokio::select! {
        _ = tunnels.closing.cancelled() => return Sent::Closing,
        ack = tokio::time::timeout(timeout, pending.ack()) => ack,
    };
    match ack {
        Ok(Ok(Ack::Recorded)) => Sent::Recorded,
        Ok(Ok(Ack::NotRecorded(why))) => Sent::NotRecorded(why),
        Ok(Ok(Ack::Rejected(why))) => Sent::Failed(format!("the client rejected it: {why}")),
        Ok(Ok(Ack::Left)) => Sent::Left,
        Ok(Err(SessionGone)) => gone(tunnels),
        Err(_) => Sent::Failed(format!(
            "the client did not record it within {} s",
            timeout.as_secs()
        )),
    }
}

/// Counts a failed attempt; the third in a row makes the delivery a dead letter.
async fn attempt_failed(
    tunnels: &Tunnels,
    tunnel: &str,
    session: &SessionHandle,
    row: &Row,
    why: String,
) {
    match tunnels.queue.attempt_failed(tunnel, row.seq).await {
        Ok(attempts) if attempts >= MAX_ATTEMPTS => {
            let reason = format!("{why} ({attempts} times in a row)");
            set_aside(tunnels, tunnel, session, row, reason).await;
        }
        Ok(attempts) => {
            warn!(delivery = %row.delivery.id, attempts, %why, "a queued delivery failed on the client; it will be sent again");
        }
        Err(err) => warn!(%err, delivery = %row.delivery.id, "could not count a failed attempt"),
    }
}

/// Moves `row` to the dead letters and tells the client, if it is still there.
async fn set_aside(
    tunnels: &Tunnels,
    tunnel: &str,
    session: &SessionHandle,
    row: &Row,
    reason: String,
) {
    let id = row.delivery.id.clone();
    match tunnels
        .queue
        .dead_letter(tunnel, row.seq, reason.clone())
        .await
    {
        Ok(true) => {
            warn!(delivery = %id, %reason, "set a queued delivery aside as a dead letter; the deliveries behind it keep flowing");
            let notice = RelayMessage::DeadLettered { id, reason };
            session.notify(notice.encode());
        }
        Ok(false) => {}
        Err(err) => {
            warn!(%err, delivery = %id, "could not set a queued delivery aside");
            pause(tunnels, tunnels.policy.retry).await;
        }
    }
}

/// Waits `delay`; `false` when the relay started closing first.
async fn pause(tunnels: &Tunnels, delay: Duration) -> bool {
    tokio::select! {
        _ = tunnels.closing.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}
