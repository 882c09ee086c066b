//! Presence: which node holds which tunnel's sessions, and which nodes are alive.
//!
//! - Every node puts its heartbeat in `illumitunnel-nodes` every [`HEARTBEAT`]; a node whose
//!   heartbeat is older than [`NODE_EXPIRY`] is dead to the others, and so are its sessions.
//! - Every node puts `{tunnel}.{node}` in `illumitunnel-presence` (value: when its first
//!   session of that tunnel joined) and deletes it when its last one leaves; a reconciler
//!   compares what it published with the tunnels it holds on every heartbeat, so a write lost
//!   while NATS was away is made good by itself.
//! - Every node watches both buckets (and the owners bucket, so it knows every tunnel) and keeps
//!   a [`View`]; a tunnel's authority is the live node with its oldest session.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::ready::{replay_over, Catalog};
use super::Cluster;
use crate::auth::Owner;
use crate::tunnel::Tunnels;

/// How often a node says it is alive, and reconciles its presence.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node silent this long is dead: its sessions no longer count.
pub const NODE_EXPIRY: Duration = Duration::from_secs(4);
/// Age after which the nodes bucket forgets a heartbeat.
pub const NODE_KEY_AGE: Duration = Duration::from_secs(60);
/// A node silent this long is gone for good: its presence entries are deleted.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Heartbeats between two sweeps for such entries.
const SWEEP_EVERY: u64 = 30;
/// Pause before watching a bucket again after its watch ended (NATS went away).
const REWATCH: Duration = Duration::from_secs(1);

#[derive(Default)]
struct ViewState {
    /// Node → when its latest heartbeat arrived.
    beats: HashMap<String, Instant>,
    /// Node → when a request found nobody listening there.
    suspects: HashMap<String, Instant>,
    /// Tunnel → node → when that node's first session joined (Unix ms).
    held: HashMap<String, HashMap<String, u64>>,
}

/// This node's picture of the cluster.
pub struct View {
    node: String,
    state: Mutex<ViewState>,
    version: watch::Sender<u64>,
}

impl View {
    /// An empty picture, as `node` sees it.
    pub fn new(node: String) -> Self {
        View {
            node,
            state: Mutex::new(ViewState::default()),
            version: watch::Sender::new(0),
        }
    }

    /// Whether `node` is alive: this node always is; another one while its heartbeats come
    /// and no request found it gone since the last one.
    pub fn is_alive(&self, node: &str) -> bool {
        node == self.node || Self::alive_in(&self.lock(), node)
    }

    fn alive_in(state: &ViewState, node: &str) -> bool {
        let Some(beat) = state.beats.get(node) else {
            return false;
        };
        beat.elapsed() < NODE_EXPIRY && state.suspects.get(node).is_none_or(|s| s < beat)
    }

    /// The live node with `tunnel`'s oldest session, `None` when no live node has one.
    pub fn authority(&self, tunnel: &str) -> Option<String> {
        let state = self.lock();
        state
            .held
            .get(tunnel)?
            .iter()
            .filter(|(node, _)| **node == self.node || Self::alive_in(&state, node))
            .min_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
            .map(|(node, _)| node.clone())
    }

    /// Whether this node is `tunnel`'s authority.
    pub fn is_authority(&self, tunnel: &str) -> bool {
        self.authority(tunnel).as_deref() == Some(self.node.as_str())
    }

    /// The other live nodes holding sessions of `tunnel`.
    pub fn others_holding(&self, tunnel: &str) -> Vec<String> {
        let state = self.lock();
        state.held.get(tunnel).map_or_else(Vec::new, |nodes| {
            nodes
                .keys()
                .filter(|node| **node != self.node && Self::alive_in(&state, node))
                .cloned()
                .collect()
        })
    }

    /// Presence entries of nodes silent for `after` (or never heard from in that long since
    /// `started`): a node that died and never came back under its id.
    fn forgotten(&self, after: Duration, started: Instant) -> Vec<(String, String)> {
        let state = self.lock();
        let gone = |node: &str| match state.beats.get(node) {
            Some(beat) => beat.elapsed() >= after,
            None => started.elapsed() >= after,
        };
        state
            .held
            .iter()
            .flat_map(|(tunnel, nodes)| nodes.keys().map(move |node| (tunnel, node)))
            .filter(|(_, node)| **node != self.node && gone(node))
            .map(|(tunnel, node)| (tunnel.clone(), node.clone()))
            .collect()
    }

    /// A request found nobody listening at `node`: it is gone until its next heartbeat.
    pub fn suspect(&self, node: &str) {
        self.lock().suspects.insert(node.to_owned(), Instant::now());
        self.bump();
    }

    /// A receiver that wakes when the picture may have changed (also on every heartbeat, as
    /// nodes expire with time).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn heard(&self, node: &str, created: time::OffsetDateTime) {
        // A heartbeat replayed from long ago (a dead node's last one) proves nothing.
        let age = time::OffsetDateTime::now_utc() - created;
        if age < time::Duration::try_from(NODE_EXPIRY).unwrap_or(time::Duration::ZERO) {
            self.lock().beats.insert(node.to_owned(), Instant::now());
        }
    }

    pub(crate) fn set_held(&self, tunnel: &str, node: &str, since: Option<u64>) {
        let mut state = self.lock();
        match since {
            Some(since) => {
                state
                    .held
                    .entry(tunnel.to_owned())
                    .or_default()
                    .insert(node.to_owned(), since);
            }
            None => {
                if let Some(nodes) = state.held.get_mut(tunnel) {
                    nodes.remove(node);
                    if nodes.is_empty() {
                        state.held.remove(tunnel);
                    }
                }
            }
        }
        drop(state);
        self.bump();
    }

    fn clear_held(&self) {
        self.lock().held.clear();
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn lock(&self) -> MutexGuard<'_, ViewState> {
        // Every update under this lock is a map insert or remove.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

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
                loop {
                    // Both branches are cancel-safe: a token wait and `StreamExt::next`.
                    let entry = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        entry = entries.next() => entry,
                    };
                    match entry {
                        Some(Ok(entry)) => {
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

/// Puts this node's heartbeat and reconciles its presence every [`HEARTBEAT`] (sooner when
/// a tunnel gains its first session or loses its last); withdraws both at shutdown.
async fn heartbeat(cluster: Arc<Cluster>, tunnels: Arc<Tunnels>, shutdown: CancellationToken) {
    let node = cluster.node().to_owned();
    withdraw_stale(&cluster).await;
    let mut published: HashMap<String, u64> = HashMap::new();
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
                        published.clear();
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
        reconcile(&cluster, &tunnels, &mut published).await;
    }
    // Tell the others at once instead of letting the heartbeat expire.
    for tunnel in published.keys() {
        let _ = cluster.presence.delete(format!("{tunnel}.{node}")).await;
    }
    let _ = cluster.nodes.delete(&node).await;
}

/// Publishes the difference between what this node holds and what it last published.
async fn reconcile(cluster: &Cluster, tunnels: &Tunnels, published: &mut HashMap<String, u64>) {
    let node = cluster.node();
    let held: HashMap<String, u64> = tunnels.held().into_iter().collect();
    for (tunnel, since) in &held {
        if published.get(tunnel) == Some(since) {
            continue;
        }
        let key = format!("{tunnel}.{node}");
        match cluster.presence.put(&key, since.to_string().into()).await {
            Ok(_) => {
                published.insert(tunnel.clone(), *since);
            }
            Err(err) => debug!(%err, tunnel, "could not publish presence; retrying"),
        }
    }
    let gone: Vec<String> = published
        .keys()
        .filter(|t| !held.contains_key(*t))
        .cloned()
        .collect();
    for tunnel in gone {
        match cluster.presence.delete(format!("{tunnel}.{node}")).await {
            Ok(()) => {
                published.remove(&tunnel);
            }
            Err(err) => debug!(%err, tunnel, "could not withdraw presence; retrying"),
        }
    }
    cluster.set_published(published.keys().cloned().collect());
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

    #[test]
    fn the_authority_is_the_live_node_with_the_oldest_session() {
        let view = View::new("a".into());
        let now = time::OffsetDateTime::now_utc();
        view.heard("b", now);
        view.heard("c", now);
        view.set_held("t", "a", Some(300));
        view.set_held("t", "b", Some(200));
        view.set_held("t", "c", Some(100));
        view.set_held("t", "dead", Some(50));
        assert_eq!(view.authority("t").as_deref(), Some("c"));
        view.suspect("c");
        assert_eq!(view.authority("t").as_deref(), Some("b"));
        view.set_held("t", "b", None);
        assert!(view.is_authority("t"));
        assert_eq!(view.others_holding("t"), Vec::<String>::new());
        assert_eq!(view.authority("other"), None);
    }

    #[test]
    fn only_nodes_silent_past_the_limit_are_forgotten() {
        let view = View::new("a".into());
        view.heard("b", time::OffsetDateTime::now_utc());
        view.set_held("t", "a", Some(1));
        view.set_held("t", "b", Some(2));
        view.set_held("t", "never-heard", Some(3));
        let long_ago = Instant::now() - Duration::from_secs(120);
        assert_eq!(
            view.forgotten(FORGET_AFTER, long_ago),
            vec![("t".to_string(), "never-heard".to_string())]
        );
        assert!(view.forgotten(FORGET_AFTER, Instant::now()).is_empty());
    }

    #[test]
    fn an_old_heartbeat_does_not_make_a_node_alive() {
        let view = View::new("a".into());
        view.heard(
            "b",
            time::OffsetDateTime::now_utc() - time::Duration::seconds(60),
        );
        assert!(!view.is_alive("b"));
        assert!(view.is_alive("a"));
    }
}
