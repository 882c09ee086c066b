//! The tunnel registry: which tunnels are known, who owns each (the SHA-256 of the claiming
//! token, or anonymous) and which sessions serve it, in connect order; the first session
//! answers senders, the others get copies. A tunnel stays known after its last session leaves
//! (for the relay's lifetime), so deliveries to it are "offline" rather than "unknown".
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

struct Tunnel {
    owner: Owner,
    sessions: Arc<[SessionHandle]>,
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

    /// The tunnel's state.
    pub fn lookup(&self, tunnel: &str) -> Lookup {
        match self.lock().get(tunnel) {
            None => Lookup::Unknown,
            Some(t) => Lookup::Known(t.sessions.clone()),
        }
    }

    /// Adds `session` to `tunnel`, claiming the name for `owner` when it is new.
    pub fn claim(
        &self,
        tunnel: &TunnelName,
        owner: Owner,
        session: SessionHandle,
    ) -> Result<(), Taken> {
        let mut tunnels = self.lock();
        let entry = tunnels
            .entry(tunnel.as_str().to_owned())
            .or_insert_with(|| Tunnel {
                owner,
                sessions: Arc::from(Vec::new()),
            });
        if entry.owner != owner {
            return Err(Taken);
        }
        if entry.sessions.is_empty() {
            self.tunnels_connected.inc();
        }
        let mut sessions = entry.sessions.to_vec();
        sessions.push(session);
        entry.sessions = sessions.into();
        self.sessions.inc();
        Ok(())
    }

    /// Removes a session; the tunnel stays known.
    pub fn remove(&self, tunnel: &str, session_id: u64) {
        let mut tunnels = self.lock();
        let Some(entry) = tunnels.get_mut(tunnel) else {
            return;
        };
        if !entry.sessions.iter().any(|s| s.id() == session_id) {
            return;
        }
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

    #[test]
    fn claim_fan_out_and_ownership() {
        let r = registry();
        let name = TunnelName::parse("my-app").unwrap();
        let alice = Owner::Token([1; 32]);
        assert_eq!(ids(r.lookup("my-app")), None);

        let (a, b) = (handle(&r), handle(&r));
        r.claim(&name, alice, a.clone()).unwrap();
        r.claim(&name, alice, b.clone()).unwrap();
        assert_eq!(ids(r.lookup("my-app")), Some(vec![a.id(), b.id()]));
        assert_eq!(
            r.claim(&name, Owner::Token([2; 32]), handle(&r)),
            Err(Taken)
        );
        assert_eq!(r.claim(&name, Owner::Anonymous, handle(&r)), Err(Taken));
        assert_eq!((r.tunnels_connected.get(), r.sessions.get()), (1, 2));

        r.remove("my-app", a.id());
        assert_eq!(ids(r.lookup("my-app")), Some(vec![b.id()]));
        r.remove("my-app", a.id());
        r.remove("my-app", b.id());
        assert_eq!(ids(r.lookup("my-app")), Some(vec![]), "stays known");
        assert_eq!((r.tunnels_connected.get(), r.sessions.get()), (0, 0));
        assert_eq!(
            r.claim(&name, Owner::Token([2; 32]), handle(&r)),
            Err(Taken),
            "still owned"
        );
        r.claim(&name, alice, handle(&r)).unwrap();
        assert_eq!(r.tunnels_connected.get(), 1);
    }
}
