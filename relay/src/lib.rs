//! illumitunnel's relay as a library: the public server that accepts webhook deliveries on
//! `/t/{tunnel}/…` and carries them over websocket sessions to clients. `illumitunnel-relay`
//! wraps it in a CLI; `illumitunnel listen` embeds it when no `--relay` is given.
//!
//! (Skeleton: the relay implementation replaces the body of [`run`].)

pub mod config;
pub mod tls;

pub use config::{Config, ConfigError, OfflinePolicy, TlsConfig};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Errors that stop a running relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// TLS setup failed.
    #[error("{0}")]
    Tls(String),
    /// The data dir could not be used.
    #[error("{0}")]
    DataDir(String),
    /// Accepting connections failed.
    #[error("could not accept connections: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), RelayError> {
    let _ = (config, listener);
    shutdown.cancelled().await;
    Ok(())
}
