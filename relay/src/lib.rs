//! illumitunnel's relay as a library: the public server that accepts webhook deliveries on
//! `/t/{tunnel}/…` and carries them over websocket sessions to clients. `illumitunnel-relay`
//! wraps it in a CLI; `illumitunnel listen` embeds it when no `--relay` is given.
//!
//! # Layout
//! - [`config`] — `Args` (the CLI), validated [`Config`], [`ConfigError`].
//! - [`server`] — accept loop, HTTP/1.1 + HTTP/2, graceful shutdown, websocket upgrade.
//! - [`conn`] — connection limits, first-request and idle timeouts, lingering close.
//! - [`budget`] — the in-flight budget for bodies and answers, shared by address and connection.
//! - [`tls`] — PEM loading, self-signed certificates, the rustls acceptor.
//! - [`ingress`] — `/t/{tunnel}/…` → delivery → the local server's answer.
//! - [`route`] — pure path routing.
//! - [`error`] — `IngressError`: status and JSON body a sender reads.
//! - [`session`] — a client's websocket session actor and its `SessionHandle`.
//! - [`tunnel`] — tunnel → owner and sessions, and each tunnel's delivery order (idle,
//!   draining its backlog one delivery at a time, live).
//! - [`placement`] — which node decides a tunnel's order (always this one on a single relay).
//! - [`queue`] — the offline queue and tunnel ownership: the `Queue` port and its local
//!   backend in `{data_dir}/relay.db`.
//! - [`node`] — the composition root: a node's TLS and backend from its `Config`; `token` and
//!   `tunnel` commands on the store they name.
//! - `cluster` (feature `cluster`) — the NATS adapter: tunnels, presence and the queue in NATS
//!   JetStream; deliveries handed between nodes. Only [`node`] names it.
//! - [`auth`] — token check, claim keys and the one tunnel ownership rule.
//! - [`access`] — the tokens accepted now (file, environment, stored), revoked sessions closed.
//! - [`tokens`] — `token add | list | revoke`: tokens stored hashed in `relay.db`.
//! - `acme` (feature `acme`) — certificates from Let's Encrypt (or any ACME CA) over
//!   TLS-ALPN-01, renewed.
//! - [`reload`] — SIGHUP reloads the PEM certificate and the tokens file.
//! - [`metrics`] — Prometheus metrics for `GET /metrics`.
//! - [`proxy`] — `--trusted-proxy` and `--proxy-protocol`: the sender's real address behind a proxy.
//! - [`logging`] — log setup for both binaries: wire-dump caps and secret scrubbing.

pub mod access;
#[cfg(feature = "acme")]
pub mod acme;
pub mod auth;
pub mod budget;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod conn;
pub mod error;
pub mod ingress;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod proxy;
pub mod queue;
pub mod reload;
pub mod route;
pub mod server;
pub mod session;
pub mod tls;
pub mod tokens;
pub mod tunnel;
#[cfg(test)]
mod turns;

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
    /// The cluster (`--cluster`) could not be joined.
    #[error("{0}")]
    Cluster(String),
    /// A second listener (`--metrics-listen`) could not be bound.
    #[error("{0}")]
    Bind(#[from] server::BindError),
}

/// Serves `listener` until `shutdown` is cancelled, then drains requests in flight (up to the
/// response timeout), closes client sessions and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    server::run(config, listener, shutdown).await
}
