//! Relay configuration: validated settings the server runs with. (Skeleton: the relay CLI's
//! `Args` and `TryFrom<Args>` validation land here.)

use std::path::PathBuf;
use std::time::Duration;

use illumitunnel::Token;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Default `--max-body`: 10 MiB.
pub const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;
/// Default `--response-timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(25);
/// How often each side pings; a peer silent for two intervals is gone.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);

/// What the relay does with a delivery for a known tunnel with no client connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflinePolicy {
    /// Keep it durably and answer 202.
    Queue,
    /// Answer 503.
    Reject,
}

/// How the relay speaks on its listener.
pub enum TlsConfig {
    /// Plain HTTP (`--http`), for running behind a TLS proxy or on loopback.
    Plain,
    /// Certificate chain and key already loaded (PEM files, or the embedded relay's self-signed pair).
    Certified {
        /// Leaf first.
        chain: Vec<CertificateDer<'static>>,
        /// The leaf's private key.
        key: PrivateKeyDer<'static>,
    },
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsConfig::Plain => f.write_str("Plain"),
            TlsConfig::Certified { chain, .. } => write!(f, "Certified({} certificates, key MASKED)", chain.len()),
        }
    }
}

/// Validated relay settings.
#[derive(Debug)]
pub struct Config {
    /// TLS or plain.
    pub tls: TlsConfig,
    /// Base URL printed to clients; `None`: derived from the listener's address and scheme.
    pub public_url: Option<String>,
    /// Accepted client tokens.
    pub tokens: Vec<Token>,
    /// Accept clients without a token.
    pub allow_anonymous: bool,
    /// Offline queue and tunnel ownership live here.
    pub data_dir: PathBuf,
    /// Largest request body accepted.
    pub max_body: usize,
    /// How long a sender waits for the local server's answer.
    pub response_timeout: Duration,
    /// Offline behaviour.
    pub offline: OfflinePolicy,
    /// Websocket ping interval.
    pub keepalive: Duration,
}

/// A configuration the relay refuses to start with (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Placeholder until the CLI lands.
    #[error("{0}")]
    Invalid(String),
}
