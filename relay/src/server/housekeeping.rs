//! The relay's periodic housekeeping: aged deliveries out of the queue, and the memory and
//! queues of tunnel names unused for `--tunnel-ttl` forgotten (their owners stay).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::queue::QueueHandle;
use crate::tunnel::Tunnels;

/// Longest pause between two expiry passes over the offline queue.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// Now and then drops aged deliveries from every tunnel's queue, one bounded pass at a time,
/// and forgets the queues of tunnel names unused for `--tunnel-ttl` (their owners stay).
pub(super) async fn expire_periodically(
    queue: QueueHandle,
    tunnels: Arc<Tunnels>,
    max_age: Duration,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let every = (max_age.min(ttl) / 2).clamp(Duration::from_secs(1), EXPIRE_EVERY);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Both branches are cancel-safe: a token wait and `Interval::tick`.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match queue.expire().await {
            Ok(0) => {}
            Ok(expired) => info!(
                expired,
                "dropped queued deliveries older than the queue's age limit"
            ),
            Err(err) => warn!(%err, "could not expire the offline queue"),
        }
        // Memory first: once forgotten there, a name takes no new delivery while its rows go.
        let stale = match queue.stale(ttl).await {
            Ok(stale) => stale,
            Err(err) => {
                warn!(%err, "could not look for unused tunnel names");
                continue;
            }
        };
        let forgotten = tunnels.release(&stale);
        if forgotten.is_empty() {
            continue;
        }
        match queue.release_stale(ttl, forgotten).await {
            Ok(names) => info!(
                count = names.len(),
                "forgot the queues of tunnel names unused for --tunnel-ttl; their owners keep the names"
            ),
            Err(err) => warn!(%err, "could not release unused tunnel names"),
        }
    }
}
