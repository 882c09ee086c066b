//! What can go wrong with the capture store, and the sentence `listen` shows for it.

use std::path::PathBuf;

/// Capture store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file or its folder could not be created or opened.
    #[error(
        "could not open capture store {path}: {cause}; pass --store PATH to a writable location"
    )]
    Open {
        /// The store path.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// The file was written by a newer version of the tool.
    #[error("capture store {path} has schema version {found}, newer than this illumitunnel knows ({known}); upgrade illumitunnel or pass --store PATH")]
    TooNew {
        /// The store path.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Latest version known.
        known: i64,
    },
    /// An id prefix matched more than one delivery.
    #[error("delivery id {0} is ambiguous; type more of it")]
    Ambiguous(String),
    /// SQLite failed.
    #[error("capture store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// The sentence a failed write is shown as while `listen` runs: the cause, then what to do.
    pub fn failing_sentence(&self) -> String {
        use rusqlite::ErrorCode;
        let (cause, remedy) = match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, message)) => {
                let cause = message.clone().unwrap_or_else(|| e.to_string());
                let remedy = match e.code {
                    ErrorCode::DiskFull => "free disk space or pass --store PATH",
                    ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen => {
                        "make the file writable or pass --store PATH"
                    }
                    ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                        "stop other programs writing to it or pass --store PATH"
                    }
                    _ => "pass --store PATH to a writable location",
                };
                (cause, remedy)
            }
            StoreError::Sqlite(e) => (e.to_string(), "pass --store PATH to a writable location"),
            // These already end with what to do.
            other => return format!("capture store failing: {other}"),
        };
        format!("capture store failing: {cause}; {remedy}")
    }
}
