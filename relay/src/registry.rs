//! The tunnel registry: which tunnels are known, who owns each (the SHA-256 of the claiming
//! token, or anonymous) and which sessions serve it, in connect order; the first session
//! answers senders, the others get copies. A tunnel stays known after its last session leaves,
//! and the relay preloads every tunnel owned in its database at start, so deliveries to it are
//! "offline" (queued) rather than "unknown" even after a restart.
//!
//! One session per tunnel owns the backlog (streams the offline queue). A session that joins a
//! tunnel with no live session owns it and stays hidden from senders until the backlog is sent,
//! so queued deliveries reach it before new ones; meanwhile new deliveries are queued behind.
//!
//! Lookups hand out an `Arc<[SessionHandle]>` snapshot, so the lock is held only for a hash
//! lookup and never across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use illumitunnel::TunnelName;
use prometheus_client::metrics::gauge::Gauge;

use crate::auth::Owner;
use crate::session::SessionHandle;

/// What the registry knows about a tunnel.
#[derive(Clone)]
pub enum Lookup {
    /// No client ever claimed it.
    Unknown,
    /// Claimed; its live sessions in connect order (possibly none).
    Known(Arc<[SessionHandle]>),
}

/// Another owner holds the tunnel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken;

/// A joining session's part in its tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Streams the offline queue, then is revealed to senders.
    Backlog,
    /// Another session has the backlog; reveal at once.
    Live,
}

struct Tunnel {
    owner: Owner,
    sessions: Arc<[SessionHandle]>,
    backlog: Option<SessionHandle>,
}

/// Tunnel name → owner and sessions.
pub struct Registry {
    tunnels: Mutex<HashMap<String, Tunnel>>,
    next_session: AtomicU64,
    tunnels_connected: Gauge<i64, AtomicI64>,
    sessions: Gauge<i64, AtomicI64>,
}

impl Registry {
    /// An empty registry that keeps the two gauges current.
    pub fn new(tunnels_connected: Gauge<i64, AtomicI64>, sessions: Gauge<i64, AtomicI64>) -> Self {
        Registry {
            tunnels: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            tunnels_connected,
            sessions,
        }
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes a tunnel owned in the relay's database known, with no session.
    pub fn preload(&self, tunnel: String, owner: Owner) {
        self.lock().entry(tunnel).or_insert_with(|| Tunnel {
            owner,
            sessions: Arc::from(Vec::new()),
            backlog: None,
        });
    }

    /// The tunnel's state.
    pub fn lookup(&self, tunnel: &str) -> Lookup {
        match self.lock().get(tunnel) {
            None => Lookup::Unknown,
            Some(t) => Lookup::Known(t.sessions.clone()),
        }
    }

    /// Adds `session` to `tunnel`, hidden from senders until [`reveal`](Self::reveal), claiming
    /// the name for `owner` when it is new. The first session of an idle tunnel gets the backlog.
    pub fn join(
        &self,
        tunnel: &TunnelName,
        owner: Owner,
        session: SessionHandle,
    ) -> Result<Role, Taken> {
        let mut tunnels = self.lock();
        let entry = tunnels
            .entry(tunnel.as_str().to_owned())
            .or_insert_with(|| Tunnel {
                owner,
                sessions: Arc::from(Vec::new()),
                backlog: None,
            });
        if entry.owner != owner {
            return Err(Taken);
        }
        if entry.backlog.is_none() {
            entry.backlog = Some(session);
            Ok(Role::Backlog)
        } else {
            Ok(Role::Live)
        }
    }

    /// Makes a joined session visible to senders (after its backlog, if it has it). A tunnel
    /// whose backlog owner left in the meantime hands the backlog to this session, which is
    /// then woken to send it.
    pub fn reveal(&self, tunnel: &str, session: &SessionHandle) {
        let mut tunnels = self.lock();
        let Some(entry) = tunnels.get_mut(tunnel) else {
            return;
        };
        // An ended session is marked before it is removed (under this lock), so a late reveal
        // from its backlog task cannot bring it back.
        if session.is_closed() || entry.sessions.iter().any(|s| s.id() == session.id()) {
            return;
        }
        if entry.sessions.is_empty() {
            self.tunnels_connected.inc();
        }
        let mut sessions = entry.sessions.to_vec();
        sessions.push(session.clone());
        entry.sessions = sessions.into();
        self.sessions.inc();
        if entry.backlog.is_none() {
            entry.backlog = Some(session.clone());
            session.wake_backlog();
        }
    }

    /// Whether `session_id` owns `tunnel`'s backlog.
    pub fn has_backlog(&self, tunnel: &str, session_id: u64) -> bool {
        self.lock()
            .get(tunnel)
            .and_then(|t| t.backlog.as_ref())
            .is_some_and(|s| s.id() == session_id)
    }

    /// Wakes the session that owns `tunnel`'s backlog, after a delivery was queued.
    pub fn wake_backlog(&self, tunnel: &str) {
        if let Some(session) = self.lock().get(tunnel).and_then(|t| t.backlog.as_ref()) {
            session.wake_backlog();
        }
    }

    /// Removes a session; the tunnel stays known. When it owned the backlog, the next live
    /// session takes it over and is woken.
    pub fn remove(&self, tunnel: &str, session_id: u64) {
        let mut tunnels = self.lock();
        let Some(entry) = tunnels.get_mut(tunnel) else {
            return;
        };
        if entry.sessions.iter().any(|s| s.id() == session_id) {
            let sessions: Vec<SessionHandle> = entry
                .sessions
                .iter()
                .filter(|s| s.id() != session_id)
                .cloned()
                .collect();
            if sessions.is_empty() {
                self.tunnels_connected.dec();
            }
            entry.sessions = sessions.into();
            self.sessions.dec();
        }
        if entry.backlog.as_ref().is_some_and(|s| s.id() == session_id) {
            entry.backlog = entry.sessions.first().cloned();
            if let Some(next) = &entry.backlog {
                next.wake_backlog();
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Tunnel>> {
        // A panic while holding this lock leaves the map consistent (every update is one assignment).
        self.tunnels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::new(Gauge::default(), Gauge::default())
    }

    fn handle(registry: &Registry) -> SessionHandle {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        SessionHandle::new(registry.next_session_id(), tx)
    }

    fn ids(lookup: Lookup) -> Option<Vec<u64>> {
        match lookup {
            Lookup::Unknown => None,
            Lookup::Known(s) => Some(s.iter().map(SessionHandle::id).collect()),
        }
    }

    fn join(
        r: &Registry,
        name: &TunnelName,
        owner: Owner,
        h: &SessionHandle,
    ) -> Result<Role, Taken> {
        let role = r.join(name, owner, h.clone())?;
        r.reveal(name.as_str(), h);
        Ok(role)
    }

    #[test]
    fn claim_fan_out_and_ownership() {
        let r = registry();
        let name = TunnelName::parse("my-app").unwrap();
        let alice = Owner::Token([1; 32]);
        assert_eq!(ids(r.lookup("my-app")), None);

        let (a, b) = (handle(&r), handle(&r));
        assert_eq!(join(&r, &name, alice, &a), Ok(Role::Backlog));
        assert_eq!(join(&r, &name, alice, &b), Ok(Role::Live));
        assert_eq!(ids(r.lookup("my-app")), Some(vec![a.id(), b.id()]));
        assert_eq!(r.join(&name, Owner::Token([2; 32]), handle(&r)), Err(Taken));
        assert_eq!(r.join(&name, Owner::Anonymous, handle(&r)), Err(Taken));
        assert_eq!((r.tunnels_connected.get(), r.sessions.get()), (1, 2));

        assert!(r.has_backlog("my-app", a.id()));
        r.remove("my-app", a.id());
        assert!(r.has_backlog("my-app", b.id()), "the backlog moves on");
        assert_eq!(ids(r.lookup("my-app")), Some(vec![b.id()]));
        r.remove("my-app", a.id());
        r.remove("my-app", b.id());
        assert!(!r.has_backlog("my-app", b.id()));
        assert_eq!(ids(r.lookup("my-app")), Some(vec![]), "stays known");
        assert_eq!((r.tunnels_connected.get(), r.sessions.get()), (0, 0));
        assert_eq!(
            r.join(&name, Owner::Token([2; 32]), handle(&r)),
            Err(Taken),
            "still owned"
        );
        join(&r, &name, alice, &handle(&r)).unwrap();
        assert_eq!(r.tunnels_connected.get(), 1);
    }

    #[test]
    fn a_backlog_session_stays_hidden_until_revealed_and_preloaded_names_stay_owned() {
        let r = registry();
        let name = TunnelName::parse("my-app").unwrap();
        r.preload("my-app".into(), Owner::Token([1; 32]));
        assert_eq!(ids(r.lookup("my-app")), Some(vec![]));
        assert_eq!(r.join(&name, Owner::Anonymous, handle(&r)), Err(Taken));
        let a = handle(&r);
        assert_eq!(
            r.join(&name, Owner::Token([1; 32]), a.clone()),
            Ok(Role::Backlog)
        );
        assert_eq!(
            ids(r.lookup("my-app")),
            Some(vec![]),
            "hidden while the backlog streams"
        );
        r.reveal("my-app", &a);
        r.reveal("my-app", &a);
        assert_eq!(ids(r.lookup("my-app")), Some(vec![a.id()]));
        assert_eq!(r.sessions.get(), 1);
    }
}
