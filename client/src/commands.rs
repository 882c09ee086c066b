//! One module per subcommand, each with `run(args, ctx)`, plus what they share.

pub mod events;
pub mod listen;
pub mod show;

use std::path::PathBuf;

use crate::output::LocalClock;

/// What every command gets besides its own arguments.
pub struct Ctx {
    /// Capture store file (`--store`, else the platform default).
    pub store: PathBuf,
    /// Local time for printed deliveries.
    pub clock: LocalClock,
}

/// A mistake in how the command was called: printed as `error: …`, exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Treats a closed stdout (`illumitunnel events | head`) as a normal end.
pub fn ignore_broken_pipe(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
