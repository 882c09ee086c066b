//! The periodic look at the queue that makes good a lost wake-up. A node that queues a
//! delivery publishes `illumitunnel.pushed.{tunnel}` so the tunnel's authority drains it; that
//! notice is a core-NATS publish, fire and forget, and may be lost (a reconnect, a slow
//! consumer). Every [`QUEUE_CHECK`] each node lists the tunnels with queued deliveries (one
//! JetStream request for all of them) and wakes the drain of those it is the authority of and
//! holds sessions of, as the notice would have: a delivery queued while the tunnel is live is
//! found within one period even when its notice never came.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use super::node::Cluster;
use super::QUEUE_SUBJECT;
use crate::tunnel::Tunnels;

/// How often a node looks for deliveries queued for the tunnels it is the authority of.
pub const QUEUE_CHECK: Duration = Duration::from_secs(1);

/// Starts the periodic look on `tracker`; it runs until `shutdown`.
pub fn spawn(
    cluster: &Arc<Cluster>,
    tunnels: &Arc<Tunnels>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let span = tracing::info_span!("cluster", node = %cluster.node());
    tracker.spawn(run(cluster.clone(), tunnels.clone(), shutdown.clone()).instrument(span));
}

async fn run(cluster: Arc<Cluster>, tunnels: Arc<Tunnels>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(QUEUE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Both cancel-safe: a token wait and `Interval::tick`.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !cluster.is_reachable() {
            continue;
        }
        let queued = match queued_tunnels(&cluster).await {
            Ok(queued) => queued,
            Err(err) => {
                debug!(%err, "could not list the queued tunnels; looking again next period");
                continue;
            }
        };
        let view = cluster.view();
        let wake = to_wake(&queued, |tunnel| {
            view.is_authority(tunnel) && !tunnels.sessions(tunnel).is_empty()
        });
        for tunnel in wake {
            tunnels.pushed_elsewhere(&tunnel);
        }
    }
}

/// Tunnel → queued deliveries, for every tunnel with a queue.
async fn queued_tunnels(cluster: &Cluster) -> Result<Vec<(String, u64)>, async_nats::Error> {
    let prefix = format!("{QUEUE_SUBJECT}.");
    let mut subjects = cluster
        .queue
        .info_with_subjects(format!("{QUEUE_SUBJECT}.>"))
        .await?;
    let mut queued = Vec::new();
    while let Some(entry) = subjects.next().await {
        let (subject, count) = entry?;
        if let Some(tunnel) = subject.strip_prefix(&prefix) {
            queued.push((tunnel.to_owned(), count as u64));
        }
    }
    Ok(queued)
}

/// The tunnels among `queued` (tunnel → queued deliveries) whose drain this node wakes: those
/// with deliveries that `serves` (authority here, with a session here).
pub fn to_wake(queued: &[(String, u64)], serves: impl Fn(&str) -> bool) -> Vec<String> {
    queued
        .iter()
        .filter(|(tunnel, count)| *count > 0 && serves(tunnel))
        .map(|(tunnel, _)| tunnel.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tunnels_with_deliveries_that_this_node_serves_are_woken() {
        let queued = vec![
            ("mine".to_string(), 3),
            ("empty".to_string(), 0),
            ("elsewhere".to_string(), 5),
        ];
        let woken = to_wake(&queued, |t| t == "mine" || t == "empty");
        assert_eq!(woken, vec!["mine".to_string()]);
        assert!(to_wake(&[], |_| true).is_empty());
    }
}
