//! A mistake in how a command was called, which every layer that reads arguments, settings or
//! files named on the command line can report: `main` prints it as `error: …` and exits 2.

/// A mistake in how the command was called: printed as `error: …`, exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
