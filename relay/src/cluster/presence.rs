//! Presence: which node holds which tunnel's sessions, and which nodes are alive.
//!
//! - Every node puts its heartbeat in `illumitunnel-nodes` every [`HEARTBEAT`]; a node whose
//!   heartbeat is older than [`NODE_EXPIRY`] is dead to the others, and so are its sessions.
//! - Every node puts `{tunnel}.{node}` in `illumitunnel-presence` (value: when its first
//!   session of that tunnel joined) and deletes it when its last one leaves; a reconciler
//!   compares what it published with the tunnels it holds on every heartbeat, so a write lost
//!   while NATS was away is made good by itself; a put that failed may have been stored after
//!   all, so it is withdrawn once the tunnel is no longer held here (else the others would take
//!   this node for the tunnel's authority and wait for it to catch the tunnel up).
//! - Every node watches both buckets (and the owners bucket, so it knows every tunnel) and keeps
//!   a [`View`]; a tunnel's authority is the live node with its oldest session.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::node::Cluster;
use super::ready::{replay_over, Catalog};
use super::view::{FORGET_AFTER, HEARTBEAT};
use crate::auth::Owner;
use crate::tunnel::Tunnels;

/// Heartbeats between two sweeps for such entries.
const SWEEP_EVERY: u64 = 30;
/// Pause before watching a bucket again after its watch ended (NATS went away).
const REWATCH: Duration = Duration::from_secs(1);
/// A watch quiet this long is checked against its bucket (see [`stalled`]).
const STALL_CHECK: Duration = Duration::from_secs(3);

/// Starts the heartbeat and the watchers on `tracker`; they run until `shutdown`, and the
/// heartbeat task withdraws this node's presence on the way out.
pub fn spawn(
    cluster: &Arc<Cluster>,
    tunnels: &Arc<Tunnels>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let span = tracing::info_span!("cluster", node = %cluster.node());
    tracker.spawn(
        heartbeat(cluster.clone(), tunnels.clone(), shutdown.clone()).instrument(span.clone()),
    );
    let (c, s) = (cluster.clone(), shutdown.clone());
    tracker.spawn(
        watch_bucket(c.clone(), c.nodes.clone(), s, move |entry| {
            // A node that shuts down deletes its heartbeat: that is no sign of life.
            if entry.operation == async_nats::jetstream::kv::Operation::Put {
                c.view.heard(&entry.key, entry.created);
            }
        })
        .instrument(span.clone()),
    );
    let (c, s) = (cluster.clone(), shutdown.clone());
    tracker.spawn(
        watch_bucket(c.clone(), c.presence.clone(), s, move |entry| {
            let Some((tunnel, node)) = entry.key.split_once('.') else {
                return;
            };
            let since = match entry.operation {
                kv::Operation::Put => std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|v| v.parse().ok()),
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            c.view.set_held(tunnel, node, since);
        })
        .instrument(span.clone()),
    );
    let (c, s, t) = (cluster.clone(), shutdown.clone(), tunnels.clone());
    tracker.spawn(
        watch_bucket(c.clone(), c.owners.clone(), s, move |entry| {
            if entry.operation != kv::Operation::Put {
                // `tunnel release`: forgotten here once no client of it is connected.
                t.release(std::slice::from_ref(&entry.key));
                return;
            }
            let owner = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(Owner::parse_key);
            match owner {
                Some(owner) => t.learn(&entry.key, owner),
                None => warn!(tunnel = %entry.key, "unreadable owner in the tunnels bucket"),
            }
        })
        .instrument(span),
    );
}

/// The catalog a node must have read before it answers, for the buckets it watches.
fn catalog_of(bucket: &str) -> Option<Catalog> {
    match bucket {
        super::OWNERS_BUCKET => Some(Catalog::Owners),
        super::PRESENCE_BUCKET => Some(Catalog::Presence),
        super::NODES_BUCKET => Some(Catalog::Nodes),
        _ => None,
    }
}

/// Watches every key of `store` (its current values first, then changes), again and again
/// if the watch ends while NATS comes and goes; notes the bucket read once its first replay is
/// over (see [`super::ready`]).
async fn watch_bucket(
    cluster: Arc<Cluster>,
    store: kv::Store,
    shutdown: CancellationToken,
    mut apply: impl FnMut(kv::Entry) + Send,
) {
    let presence = store.name == super::PRESENCE_BUCKET;
    let catalog = catalog_of(&store.name);
    let read = |over: bool| {
        if let (true, Some(catalog)) = (over, catalog) {
            cluster.readiness().read(catalog);
        }
    };
    loop {
        match store.watch_with_history(">").await {
            Ok(mut entries) => {
                if presence {
                    // The replay brings back what is true now; what it omits was deleted.
                    cluster.view.clear_held();
                }
                // Asked after the watch began: a bucket empty now has nothing to replay.
                let empty = match store.stream.get_info().await {
                    Ok(info) => info.state.messages == 0,
                    Err(_) => false,
                };
                read(replay_over(empty, None));
                let mut seen = 0;
                loop {
                    // All three are cancel-safe: a token wait, `StreamExt::next`, a sleep.
                    let entry = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        entry = entries.next() => entry,
                        _ = tokio::time::sleep(STALL_CHECK) => {
                            if stalled(&store, seen).await {
                                debug!(bucket = %store.name, "watch stalled; watching again");
                                break;
                            }
                            continue;
                        }
                    };
                    match entry {
                        Some(Ok(entry)) => {
                            seen = seen.max(entry.revision);
                            let over = replay_over(false, Some(entry.delta));
                            apply(entry);
                            read(over);
                        }
                        Some(Err(err)) => {
                            debug!(%err, bucket = %store.name, "watch interrupted");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(err) => debug!(%err, bucket = %store.name, "could not watch; trying again"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REWATCH) => {}
        }
    }
}

/// Whether a watch that has been quiet for [`STALL_CHECK`] missed what the bucket holds: the
/// client library re-creates a watch's consumer by itself after NATS comes back, and that
/// attempt can go unanswered for as long as the stream has no leader — then the watch would
/// stay silent for good while the bucket moves on. (An unanswered check proves nothing.)
async fn stalled(store: &kv::Store, seen: u64) -> bool {
    match store.stream.get_info().await {
        Ok(info) => info.state.last_sequence > seen,
        Err(_) => false,
    }
}

/// Puts this node's heartbeat and reconciles its presence every [`HEARTBEAT`] (sooner when
/// a tunnel gains its first session or loses its last); withdraws both at shutdown.
async fn heartbeat(cluster: Arc<Cluster>, tunnels: Arc<Tunnels>, shutdown: CancellationToken) {
    let node = cluster.node().to_owned();
    withdraw_stale(&cluster).await;
    let mut told: HashMap<String, Told> = HashMap::new();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let held_changed = tunnels.held_changed();
    let mut reachable = true;
    let started = Instant::now();
    let mut beats = 0u64;
    loop {
        // All three are cancel-safe: a token wait, `Interval::tick`, `Notify::notified`.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let now = illumitunnel::now_ms().to_string();
                match cluster.nodes.put(&node, now.into()).await {
                    Ok(_) if !reachable => {
                        info!("NATS reachable again");
                        reachable = true;
                        // Other nodes may have swept this node's presence while it was away:
                        // publish every session held here again on this heartbeat.
                        told.clear();
                    }
                    Ok(_) => {}
                    Err(err) if reachable => {
                        warn!(%err, "NATS unreachable: sessions held here keep working; deliveries that must be queued are refused with 503 until it is back");
                        reachable = false;
                    }
                    Err(_) => {}
                }
                cluster.view.bump();
                beats += 1;
                if beats % SWEEP_EVERY == 0 {
                    sweep(&cluster, started).await;
                }
            }
            _ = held_changed.notified() => {}
        }
        reconcile(&cluster, &tunnels, &mut told).await;
    }
    // Tell the others at once instead of letting the heartbeat expire.
    for tunnel in told.keys() {
        let _ = cluster.presence.delete(format!("{tunnel}.{node}")).await;
    }
    let _ = cluster.nodes.delete(&node).await;
}

/// What this node last told the presence bucket about one of its tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    /// It holds sessions since this time (Unix ms).
    Since(u64),
    /// A put failed: NATS may have stored it all the same (a timeout after the write), so
    /// the entry is withdrawn once the tunnel is no longer held here, or put again while it is.
    Unsure,
}

/// What [`reconcile`] must write: entries to put, and tunnels whose entry to delete.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    put: Vec<(String, u64)>,
    delete: Vec<String>,
}

/// Compares what this node holds with what it told the bucket.
fn plan(held: &HashMap<String, u64>, told: &HashMap<String, Told>) -> Plan {
    let mut plan = Plan::default();
    for (tunnel, since) in held {
        if told.get(tunnel) != Some(&Told::Since(*since)) {
            plan.put.push((tunnel.clone(), *since));
        }
    }
    plan.delete = told
        .keys()
        .filter(|t| !held.contains_key(*t))
        .cloned()
        .collect();
    plan.put.sort();
    plan.delete.sort();
    plan
}

/// Publishes the difference between what this node holds and what it last told the bucket.
async fn reconcile(cluster: &Cluster, tunnels: &Tunnels, told: &mut HashMap<String, Told>) {
    let node = cluster.node();
    let held: HashMap<String, u64> = tunnels.held().into_iter().collect();
    // An entry of this node's the bucket shows and nothing here accounts for (however it got
    // there) is withdrawn like an unsure put.
    for tunnel in cluster.view.held_here() {
        told.entry(tunnel).or_insert(Told::Unsure);
    }
    let Plan { put, delete } = plan(&held, told);
    for (tunnel, since) in put {
        let key = format!("{tunnel}.{node}");
        let outcome = match cluster.presence.put(&key, since.to_string().into()).await {
            Ok(_) => {
                // Known here at once, whether or not the watch brings it back.
                cluster.view.set_held(&tunnel, node, Some(since));
                Told::Since(since)
            }
            Err(err) => {
                debug!(%err, tunnel, "could not publish presence; retrying");
                Told::Unsure
            }
        };
        told.insert(tunnel, outcome);
    }
    for tunnel in delete {
        match cluster.presence.delete(format!("{tunnel}.{node}")).await {
            Ok(()) => {
                cluster.view.set_held(&tunnel, node, None);
                told.remove(&tunnel);
            }
            Err(err) => debug!(%err, tunnel, "could not withdraw presence; retrying"),
        }
    }
    let published = told
        .iter()
        .filter(|(_, told)| matches!(told, Told::Since(_)))
        .map(|(tunnel, _)| tunnel.clone())
        .collect();
    cluster.set_published(published);
}

/// Deletes the presence of nodes gone for [`FORGET_AFTER`], so the bucket does not keep every
/// node that ever died (any node may do it; deleting twice is harmless).
async fn sweep(cluster: &Cluster, started: Instant) {
    for (tunnel, node) in cluster.view.forgotten(FORGET_AFTER, started) {
        debug!(
            tunnel,
            node, "forgetting the presence of a node gone for good"
        );
        let _ = cluster.presence.delete(format!("{tunnel}.{node}")).await;
    }
}

/// A node that restarts under the same id first withdraws what its previous life published.
async fn withdraw_stale(cluster: &Cluster) {
    let suffix = format!(".{}", cluster.node());
    let Ok(keys) = cluster.presence.keys().await else {
        return;
    };
    let keys: Vec<String> = keys.filter_map(|k| async move { k.ok() }).collect().await;
    let mut seen = HashSet::new();
    for key in keys.into_iter().filter(|k| k.ends_with(&suffix)) {
        if seen.insert(key.clone()) {
            let _ = cluster.presence.delete(&key).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<V: Copy>(entries: &[(&str, V)]) -> HashMap<String, V> {
        entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_tunnel_held_and_not_told_is_put() {
        let plan = plan(&map(&[("a", 5), ("b", 7)]), &map(&[("a", Told::Since(5))]));
        assert_eq!(plan.put, vec![("b".to_string(), 7)]);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn a_tunnel_told_with_another_since_is_put_again() {
        let plan = plan(&map(&[("a", 9)]), &map(&[("a", Told::Since(5))]));
        assert_eq!(plan.put, vec![("a".to_string(), 9)]);
    }

    #[test]
    fn an_unsure_put_is_put_again_while_held() {
        let plan = plan(&map(&[("a", 5)]), &map(&[("a", Told::Unsure)]));
        assert_eq!(plan.put, vec![("a".to_string(), 5)]);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn an_unsure_put_is_withdrawn_once_the_tunnel_is_not_held() {
        // The put timed out but NATS stored it: left there, the other nodes would wait
        // forever for this node to catch the tunnel up.
        let plan = plan(&HashMap::new(), &map(&[("a", Told::Unsure)]));
        assert!(plan.put.is_empty());
        assert_eq!(plan.delete, vec!["a".to_string()]);
    }

    #[test]
    fn nothing_changed_writes_nothing() {
        assert_eq!(
            plan(&map(&[("a", 5)]), &map(&[("a", Told::Since(5))])),
            Plan::default()
        );
    }
}
