//! This node's picture of the cluster: which live node holds which tunnel's sessions, and since
//! when. A tunnel's authority is the live node with its oldest session. Pure: the presence
//! tasks feed it, placement reads it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How often a node says it is alive, and reconciles its presence.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node silent this long is dead: its sessions no longer count.
pub const NODE_EXPIRY: Duration = Duration::from_secs(4);
/// A node silent this long is gone for good: its presence entries are deleted.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Age after which the nodes bucket forgets a heartbeat.
pub const NODE_KEY_AGE: Duration = Duration::from_secs(60);
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
    pub(super) fn forgotten(&self, after: Duration, started: Instant) -> Vec<(String, String)> {
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

    /// The tunnels the presence bucket says this node holds.
    pub(super) fn held_here(&self) -> Vec<String> {
        let state = self.lock();
        state
            .held
            .iter()
            .filter(|(_, nodes)| nodes.contains_key(&self.node))
            .map(|(tunnel, _)| tunnel.clone())
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

    pub(super) fn heard(&self, node: &str, created: time::OffsetDateTime) {
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

    pub(super) fn clear_held(&self) {
        self.lock().held.clear();
    }

    pub(super) fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn lock(&self) -> MutexGuard<'_, ViewState> {
        // Every update under this lock is a map insert or remove.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
