//! Placement: which node decides a tunnel's delivery order. On a single relay that is always
//! this one ([`Single`]); on a cluster it is the node holding the tunnel's oldest session (the
//! NATS adapter's view of presence). Ingress asks it where a delivery goes, the catch-up asks
//! it whether this node may send the backlog, a new session waits until it is announced, and
//! `/healthz` reads its [`Health`].

use std::time::Duration;

use tokio::sync::watch;

/// Who decides a tunnel's delivery order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// This node: send to its sessions or queue here.
    Here,
    /// Another node: hand the delivery to it.
    Elsewhere(String),
    /// No node holds a session of the tunnel.
    Nobody,
}

/// Whether this node can answer deliveries now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Serving.
    Ready,
    /// Still reading what the cluster knows (owners, presence, heartbeats): deliveries get 503.
    Starting,
    /// The cluster's store is out of reach.
    Unreachable,
}

/// Where a tunnel's deliveries are decided; one implementation per backend.
#[async_trait::async_trait]
pub trait Placement: Send + Sync {
    /// This node's id, for logs (`None` on a single relay).
    fn node(&self) -> Option<&str>;

    /// Who decides `tunnel`'s order, as this node last heard.
    fn authority(&self, tunnel: &str) -> Authority;

    /// Who decides `tunnel`'s order, read again from the source (for a delivery about to be
    /// queued: the view may lag a moment behind a session that joined elsewhere).
    async fn authority_now(&self, tunnel: &str) -> Authority;

    /// Wakes when the picture may have changed.
    fn changes(&self) -> watch::Receiver<u64>;

    /// Waits (up to `within`) until the other nodes know this node holds `tunnel`.
    async fn announced(&self, tunnel: &str, within: Duration);

    /// Whether this node can answer deliveries now.
    fn health(&self) -> Health;

    /// Whether this node may send `tunnel`'s backlog: it decides the tunnel's order.
    fn is_authority(&self, tunnel: &str) -> bool {
        self.authority(tunnel) == Authority::Here
    }
}

/// A single relay: every tunnel is decided here.
pub struct Single {
    changes: watch::Sender<u64>,
}

impl Single {
    /// A single relay's placement.
    pub fn new() -> Self {
        Single {
            changes: watch::Sender::new(0),
        }
    }
}

impl Default for Single {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Placement for Single {
    fn node(&self) -> Option<&str> {
        None
    }

    fn authority(&self, _tunnel: &str) -> Authority {
        Authority::Here
    }

    async fn authority_now(&self, _tunnel: &str) -> Authority {
        Authority::Here
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn announced(&self, _tunnel: &str, _within: Duration) {}

    fn health(&self) -> Health {
        Health::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_single_relay_decides_every_tunnel_and_is_ready() {
        let single = Single::new();
        assert_eq!(single.authority("a"), Authority::Here);
        assert_eq!(single.authority_now("b").await, Authority::Here);
        assert!(single.is_authority("a"));
        assert_eq!(single.health(), Health::Ready);
        assert_eq!(single.node(), None);
    }
}
