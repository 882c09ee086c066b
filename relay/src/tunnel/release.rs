//! `illumitunnel-relay tunnel release NAME`: the operator frees a tunnel name for any owner.
//! `--tunnel-ttl` forgets an unused tunnel's queue but keeps its owner, so a name IllumiChat
//! may still post to never goes to a stranger by itself; this command is the deliberate way
//! to hand it on. It deletes the owner, the queue and the dead letters in `relay.db`, and a
//! running relay forgets the name within [`RELEASE_POLL`](super::RELEASE_POLL) once no client
//! of it is connected.

use std::io::Write;
use std::path::Path;

use illumitunnel::TunnelName;

use crate::config::TunnelCommand;
use crate::metrics::Metrics;
use crate::queue::{QueueLimits, QueueStore};

/// A `tunnel` command failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Not a tunnel name.
    #[error(
        "invalid tunnel name {0:?}: tunnel names are 3 to 40 lowercase letters, digits or '-'"
    )]
    Name(String),
    /// No tunnel has this name.
    #[error("no tunnel named {name} in {place}; check the name and {flag}")]
    Unknown {
        /// The name.
        name: String,
        /// The data dir, or the cluster's NATS servers.
        place: String,
        /// `--data-dir` or `--cluster`.
        flag: &'static str,
    },
    /// The cluster's NATS could not be reached.
    #[error("could not reach the cluster's tunnels in NATS: {0}; check --cluster and that nats-server runs with JetStream (-js)")]
    Cluster(String),
    /// The database could not be opened or written.
    #[error(
        "could not use the relay database in {dir}: {cause}; check --data-dir and its permissions"
    )]
    Storage {
        /// The data dir.
        dir: String,
        /// What failed.
        cause: String,
    },
}

impl ReleaseError {
    /// Whether the command line was at fault (exit 2) rather than the machine (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, ReleaseError::Name(_) | ReleaseError::Unknown { .. })
    }
}

/// Where tunnel names are kept: a data dir's `relay.db` ([`DataDir`]) or a cluster's NATS.
#[async_trait::async_trait]
pub trait Names: Send + Sync {
    /// Frees `name` and drops its queue; how many queued deliveries went, `None` when no
    /// tunnel has the name.
    async fn release(&self, name: &str) -> Result<Option<u64>, ReleaseError>;
    /// Where the names are, and the flag that picks that place.
    fn place(&self) -> (String, &'static str);
}

/// The names in `{dir}/relay.db`.
pub struct DataDir<'a>(pub &'a Path);

#[async_trait::async_trait]
impl Names for DataDir<'_> {
    async fn release(&self, name: &str) -> Result<Option<u64>, ReleaseError> {
        release_in(self.0, name)
    }

    fn place(&self) -> (String, &'static str) {
        (self.0.display().to_string(), "--data-dir")
    }
}

/// Runs `illumitunnel-relay tunnel …` on `names`; its one line goes to `out`.
pub async fn run(
    command: &TunnelCommand,
    names: &dyn Names,
    out: &mut dyn Write,
) -> Result<(), ReleaseError> {
    let TunnelCommand::Release { name } = command;
    let name = TunnelName::parse(name)
        .map_err(|_| ReleaseError::Name(name.clone()))?
        .to_string();
    let Some(dropped) = names.release(&name).await? else {
        let (place, flag) = names.place();
        return Err(ReleaseError::Unknown { name, place, flag });
    };
    let _ = writeln!(
        out,
        "tunnel {name} released ({dropped} queued deliveries dropped): the next client to claim it owns it; a running relay forgets it within 5 s once its client is gone"
    );
    Ok(())
}

/// Releases `name` in `{dir}/relay.db`.
fn release_in(dir: &Path, name: &str) -> Result<Option<u64>, ReleaseError> {
    let storage = |cause: String| ReleaseError::Storage {
        dir: dir.display().to_string(),
        cause,
    };
    if !dir.join(crate::queue::store::DB_FILE).exists() {
        return Ok(None);
    }
    let gauges = Metrics::new().queue.clone();
    let mut store = QueueStore::open(dir, QueueLimits::default(), gauges)
        .map_err(|e| storage(e.to_string()))?;
    store.begin().map_err(|e| storage(e.to_string()))?;
    let released = store
        .release(name, illumitunnel::now_ms())
        .map_err(|e| storage(e.to_string()))?;
    store.commit().map_err(|e| storage(e.to_string()))?;
    drop(store);
    crate::tokens::match_owner(dir);
    Ok(released)
}
