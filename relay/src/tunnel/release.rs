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
    #[error("no tunnel named {name} in {dir}; check the name and --data-dir")]
    Unknown {
        /// The name.
        name: String,
        /// The data dir.
        dir: String,
    },
    /// A cluster node's names live in NATS.
    #[error("tunnel release does not reach a cluster's NATS yet; on a cluster, delete the key {0} from the illumitunnel-tunnels bucket with `nats kv del illumitunnel-tunnels {0}`")]
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
        matches!(
            self,
            ReleaseError::Name(_) | ReleaseError::Unknown { .. } | ReleaseError::Cluster(_)
        )
    }
}

/// Runs `illumitunnel-relay tunnel …` on the data dir `dir` (or says what to do on a cluster
/// when `cluster` lists NATS servers); its one line goes to `out`.
pub fn run(
    command: &TunnelCommand,
    dir: &Path,
    cluster: &[String],
    out: &mut dyn Write,
) -> Result<(), ReleaseError> {
    let TunnelCommand::Release { name } = command;
    let name = TunnelName::parse(name)
        .map_err(|_| ReleaseError::Name(name.clone()))?
        .to_string();
    if !cluster.is_empty() {
        return Err(ReleaseError::Cluster(name));
    }
    let storage = |cause: String| ReleaseError::Storage {
        dir: dir.display().to_string(),
        cause,
    };
    if !dir.join(crate::queue::store::DB_FILE).exists() {
        return Err(ReleaseError::Unknown {
            name,
            dir: dir.display().to_string(),
        });
    }
    let gauges = Metrics::new().queue.clone();
    let mut store = QueueStore::open(dir, QueueLimits::default(), gauges)
        .map_err(|e| storage(e.to_string()))?;
    store.begin().map_err(|e| storage(e.to_string()))?;
    let released = store
        .release(&name, illumitunnel::now_ms())
        .map_err(|e| storage(e.to_string()))?;
    store.commit().map_err(|e| storage(e.to_string()))?;
    drop(store);
    crate::tokens::match_owner(dir);
    let Some(dropped) = released else {
        return Err(ReleaseError::Unknown {
            name,
            dir: dir.display().to_string(),
        });
    };
    let _ = writeln!(
        out,
        "tunnel {name} released ({dropped} queued deliveries dropped): the next client to claim it owns it; a running relay forgets it within 5 s once its client is gone"
    );
    Ok(())
}
