//! When a cluster node may answer: only once it has read the owners bucket (or it would answer
//! `404 unknown tunnel` for tunnels claimed elsewhere), presence and heartbeats (or it would
//! take itself for the authority of tunnels held elsewhere). Until then deliveries and client
//! upgrades get `503` with `Retry-After` and `/healthz` says `starting`.
//!
//! Each bucket's watch replays what the bucket holds, then follows changes; the replay is read
//! when the bucket was empty as the watch began, or once an entry arrives with nothing left
//! behind it (`delta == 0`). Readiness is reached once and kept: a watch that restarts after a
//! NATS outage replays again, and the node keeps serving meanwhile.

use tokio::sync::watch;

/// A bucket a node reads in full before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalog {
    /// `illumitunnel-tunnels`: which tunnels exist.
    Owners,
    /// `illumitunnel-presence`: which node holds which tunnel's sessions.
    Presence,
    /// `illumitunnel-nodes`: which nodes are alive.
    Nodes,
}

impl Catalog {
    fn bit(self) -> u8 {
        match self {
            Catalog::Owners => 1,
            Catalog::Presence => 2,
            Catalog::Nodes => 4,
        }
    }
}

const ALL: u8 = 1 | 2 | 4;

/// Which catalogs this node has read.
pub struct Readiness {
    read: watch::Sender<u8>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            read: watch::Sender::new(0),
        }
    }
}

impl Readiness {
    /// Notes that `catalog` has been read in full; idempotent.
    pub fn read(&self, catalog: Catalog) {
        self.read.send_if_modified(|read| {
            let before = *read;
            *read |= catalog.bit();
            *read != before
        });
    }

    /// Whether every catalog has been read.
    pub fn is_ready(&self) -> bool {
        *self.read.borrow() == ALL
    }

    /// Waits until every catalog has been read.
    pub async fn ready(&self) {
        let mut read = self.read.subscribe();
        let _ = read.wait_for(|r| *r == ALL).await;
    }
}

/// Whether a watch's replay is over: the bucket was empty when the watch began, or an entry
/// arrived with `delta` (messages still to come) 0.
pub fn replay_over(empty_at_start: bool, delta: Option<u64>) -> bool {
    empty_at_start || delta == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_every_catalog_is_read() {
        let readiness = Readiness::default();
        assert!(!readiness.is_ready());
        readiness.read(Catalog::Owners);
        readiness.read(Catalog::Owners);
        readiness.read(Catalog::Nodes);
        assert!(!readiness.is_ready(), "presence not read yet");
        readiness.read(Catalog::Presence);
        assert!(readiness.is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_readiness_ends_when_the_last_catalog_is_read() {
        let readiness = std::sync::Arc::new(Readiness::default());
        let waiter = tokio::spawn({
            let readiness = readiness.clone();
            async move { readiness.ready().await }
        });
        readiness.read(Catalog::Owners);
        readiness.read(Catalog::Presence);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        readiness.read(Catalog::Nodes);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("ready")
            .expect("the waiter");
    }

    #[test]
    fn a_replay_is_over_when_empty_or_nothing_is_left_behind() {
        assert!(replay_over(true, None));
        assert!(!replay_over(false, None));
        assert!(!replay_over(false, Some(3)));
        assert!(replay_over(false, Some(0)));
    }
}
