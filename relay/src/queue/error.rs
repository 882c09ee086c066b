//! Why the queue could not do what was asked, and the sentence a sender reads for a full one.

use std::path::PathBuf;

/// Which limit a full queue reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--queue-max-count`.
    Count(u64),
    /// `--queue-max-bytes`.
    Bytes(u64),
    /// `--queue-max-total-bytes`, across every tunnel.
    TotalBytes(u64),
}

/// Why the queue could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The data dir or database could not be opened.
    #[error(
        "could not open the relay database {path}: {cause}; check --data-dir and its permissions"
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// What failed.
        cause: String,
    },
    /// A limit is reached; the delivery was not queued.
    #[error("{}", full_sentence(tunnel, *limit))]
    Full {
        /// The tunnel.
        tunnel: String,
        /// The limit reached.
        limit: Limit,
    },
    /// SQLite failed.
    #[error("the relay could not write its offline queue: {0}")]
    Storage(String),
    /// The queue thread has stopped (the relay is shutting down).
    #[error("the relay's offline queue is closed")]
    Stopped,
}

impl From<rusqlite::Error> for QueueError {
    fn from(err: rusqlite::Error) -> Self {
        QueueError::Storage(err.to_string())
    }
}

fn full_sentence(tunnel: &str, limit: Limit) -> String {
    let (what, flag) = match limit {
        Limit::Count(n) => (format!("{n} deliveries"), "--queue-max-count"),
        Limit::Bytes(n) => (format!("{n} bytes"), "--queue-max-bytes"),
        Limit::TotalBytes(n) => {
            return format!(
                "the relay's offline queues are full ({n} bytes across all tunnels, --queue-max-total-bytes); send again later"
            )
        }
    };
    format!(
        "the offline queue for tunnel {tunnel} is full ({what}); start `illumitunnel listen --tunnel {tunnel}` to drain it, or raise the relay's {flag}"
    )
}
