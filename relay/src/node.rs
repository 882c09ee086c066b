//! The composition root: builds a relay node's parts from its [`Config`] — the TLS it serves
//! and the backend plugged into the core's ports (a single relay's SQLite, or with `--cluster`
//! the NATS adapter) — and runs the `token` and `tunnel` commands on the store they name. The
//! only module that names the NATS adapter; the core sees [`Queue`](crate::queue::Queue),
//! [`Placement`], [`Peers`], [`StoredTokens`], [`TokenAdmin`] and
//! [`Names`](crate::tunnel::release::Names).

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{DirTokens, StoredTokens};
use crate::auth::Owner;
use crate::config::{Args, ClusterConfig, Command, Config, ConfigError, TlsConfig};
use crate::ingress::{IngressContext, Peers};
use crate::metrics::Metrics;
use crate::placement::{Placement, Single};
use crate::queue::{QueueHandle, QueueStore};
use crate::tls::CertSlot;
use crate::tokens::{TokenAdmin, TokenError, TokenStore};
use crate::tunnel::release::{self, DataDir, ReleaseError};
use crate::tunnel::Tunnels;
use crate::{queue, tls, tokens, RelayError};

/// What the accept loop serves TLS with; `slot` is there to reload PEM files on SIGHUP.
pub(crate) struct Served {
    /// `None`: plain HTTP.
    pub acceptor: Option<TlsAcceptor>,
    /// The PEM (or self-signed) certificate's slot.
    pub slot: Option<Arc<CertSlot>>,
}

/// Sets up TLS as configured; with ACME this starts obtaining the certificate.
pub(crate) fn serve_tls(
    config: TlsConfig,
    data_dir: &Path,
    #[cfg_attr(not(feature = "acme"), allow(unused_variables))] shutdown: &CancellationToken,
) -> Result<Served, String> {
    match config {
        TlsConfig::Plain => Ok(Served {
            acceptor: None,
            slot: None,
        }),
        TlsConfig::Certified { chain, key } => certified(chain, key),
        TlsConfig::SelfSigned { names } => {
            let kept = tls::self_signed_in(data_dir, &names)?;
            certified(kept.chain, kept.key)
        }
        #[cfg(feature = "acme")]
        TlsConfig::Acme(settings) => {
            let resolver = crate::acme::spawn(&settings, data_dir, shutdown.child_token())?;
            Ok(Served {
                acceptor: Some(tls::acceptor_with(resolver, true)?),
                slot: None,
            })
        }
        #[cfg(not(feature = "acme"))]
        TlsConfig::Acme(_) => Err(
            "this build has no ACME support; use the illumitunnel-relay binary (built with the `acme` feature)"
                .into(),
        ),
    }
}

/// Serves a fixed certificate from a slot SIGHUP can refill.
fn certified(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Served, String> {
    let slot = CertSlot::new(chain, key)?;
    Ok(Served {
        acceptor: Some(tls::acceptor_with(slot.clone(), false)?),
        slot: Some(slot),
    })
}

/// Starts a backend's own tasks once the core exists: a cluster's presence and the deliveries
/// other nodes hand over. Arguments: the tunnels, ingress, the tracker sessions run on, the
/// token cancelled when sessions close, and the one cancelled at shutdown.
type Start = Box<
    dyn FnOnce(
            &Arc<Tunnels>,
            Arc<IngressContext>,
            &TaskTracker,
            &CancellationToken,
            &CancellationToken,
        ) + Send
        + Sync,
>;

/// A backend's parts, plugged into the core's ports.
pub(crate) struct Backend {
    /// The offline queue and tunnel ownership.
    pub queue: QueueHandle,
    /// A single relay's queue thread, joined at shutdown.
    pub queue_thread: Option<JoinHandle<()>>,
    /// Owners known at start (a single relay reads them from `relay.db`).
    pub owners: Vec<(String, Owner)>,
    /// Which node decides which tunnel.
    pub placement: Arc<dyn Placement>,
    /// The other nodes (none on a single relay).
    pub peers: Option<Arc<dyn Peers>>,
    /// Where the stored client tokens are read.
    pub stored_tokens: Option<Arc<dyn StoredTokens>>,
    /// The backend's own tasks, started by [`Backend::start`].
    start: Option<Start>,
}

impl Backend {
    /// Starts the backend's own tasks (see [`Start`]).
    pub fn start(
        &mut self,
        tunnels: &Arc<Tunnels>,
        ingress: Arc<IngressContext>,
        tracker: &TaskTracker,
        closing: &CancellationToken,
        shutdown: &CancellationToken,
    ) {
        if let Some(start) = self.start.take() {
            start(tunnels, ingress, tracker, closing, shutdown);
        }
    }
}

/// Opens the backend `config` names: the cluster with `--cluster`, else `relay.db`.
pub(crate) async fn open_backend(
    config: &Config,
    metrics: &Metrics,
) -> Result<Backend, RelayError> {
    match &config.cluster {
        None => open_local(config, metrics).await,
        Some(settings) => open_cluster(settings, config).await,
    }
}

async fn open_local(config: &Config, metrics: &Metrics) -> Result<Backend, RelayError> {
    let data_dir = config.data_dir.clone();
    let limits = config.queue;
    let gauges = metrics.queue.clone();
    let store = tokio::task::spawn_blocking(move || QueueStore::open(&data_dir, limits, gauges))
        .await
        .map_err(|e| RelayError::DataDir(format!("could not open the relay database: {e}")))?
        .map_err(|e| RelayError::DataDir(e.to_string()))?;
    let owners = store
        .owners()
        .map_err(|e| RelayError::DataDir(e.to_string()))?;
    let (queue, thread) = queue::local::spawn(store, config.clock.clone())?;
    let stored_tokens = config
        .stored_tokens
        .then(|| Arc::new(DirTokens::new(config.data_dir.clone())) as Arc<dyn StoredTokens>);
    Ok(Backend {
        queue,
        queue_thread: Some(thread),
        owners,
        placement: Arc::new(Single::new()),
        peers: None,
        stored_tokens,
        start: None,
    })
}

#[cfg(feature = "cluster")]
async fn open_cluster(settings: &ClusterConfig, config: &Config) -> Result<Backend, RelayError> {
    use crate::cluster::{self, node::Cluster, queue::NatsQueue, tokens::NatsTokens};
    let cluster = Cluster::connect(settings, config.queue)
        .await
        .map_err(|e| RelayError::Cluster(e.to_string()))?;
    tracing::info!(node = %settings.node_id, nats = %settings.nats.servers_text(), login = %settings.nats.login.describe(), "joined the relay cluster");
    let queue = Arc::new(NatsQueue {
        cluster: cluster.clone(),
        limits: config.queue,
    });
    let started = cluster.clone();
    let start: Start = Box::new(move |tunnels, ingress, tracker, closing, shutdown| {
        // Presence lasts as long as sessions do; other nodes' deliveries stop coming at once.
        cluster::presence::spawn(&started, tunnels, tracker, closing);
        cluster::handover::spawn(&started, ingress, tracker, shutdown);
    });
    Ok(Backend {
        queue,
        queue_thread: None,
        owners: Vec::new(),
        placement: cluster.clone(),
        peers: Some(cluster.clone()),
        stored_tokens: Some(Arc::new(NatsTokens(cluster.tokens.clone()))),
        start: Some(start),
    })
}

#[cfg(not(feature = "cluster"))]
async fn open_cluster(_: &ClusterConfig, _: &Config) -> Result<Backend, RelayError> {
    Err(RelayError::Cluster(NO_CLUSTER.into()))
}

/// Said when a build without the `cluster` feature is asked for `--cluster`.
#[cfg(not(feature = "cluster"))]
const NO_CLUSTER: &str =
    "this build has no cluster support; use the illumitunnel-relay binary (built with the `cluster` feature)";

/// A `token` or `tunnel` command failed: the sentence and the exit code (2 for usage).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// `--cluster` and its flags do not make a way to reach NATS.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// `token …` failed.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// `tunnel …` failed.
    #[error("{0}")]
    Release(#[from] ReleaseError),
    /// `--cluster` in a build without the cluster.
    #[error("{0}")]
    NoCluster(&'static str),
}

impl CommandError {
    /// The exit code: 2 when the command line was at fault, else 1.
    pub fn exit_code(&self) -> u8 {
        let usage = match self {
            CommandError::Config(_) | CommandError::NoCluster(_) => true,
            CommandError::Token(err) => err.is_usage(),
            CommandError::Release(err) => err.is_usage(),
        };
        if usage {
            2
        } else {
            1
        }
    }
}

/// Runs `token …` or `tunnel …` on the data dir `data_dir`, or on the cluster `--cluster`
/// names; results on stdout, explanations on stderr. `Ok(false)`: `args` holds no command.
pub async fn run_command(args: &Args, data_dir: &Path) -> Result<bool, CommandError> {
    let Some(command) = &args.command else {
        return Ok(false);
    };
    if let Some(printed) = crate::config::docs(command) {
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &printed);
        return Ok(true);
    }
    let link = match args.cluster.is_empty() {
        true => None,
        false => Some(crate::config::nats_link(args)?),
    };
    let (mut out, mut note) = (std::io::stdout(), std::io::stderr());
    match (command, link) {
        (Command::Token(command), None) => {
            let store = TokenStore::open(data_dir)?;
            let ran = tokens::run(command, &store as &dyn TokenAdmin, &mut out, &mut note).await;
            drop(store);
            tokens::match_owner(data_dir);
            ran?;
        }
        (Command::Tunnel(command), None) => {
            release::run(command, &DataDir(data_dir), &mut out).await?;
        }
        (Command::Completions { .. } | Command::Man, _) => {}
        (command, Some(link)) => run_in_cluster(command, &link, &mut out, &mut note).await?,
    }
    Ok(true)
}

#[cfg(feature = "cluster")]
async fn run_in_cluster(
    command: &Command,
    link: &crate::config::NatsLink,
    out: &mut dyn std::io::Write,
    note: &mut dyn std::io::Write,
) -> Result<(), CommandError> {
    use crate::cluster::{release::NatsNames, tokens};
    match command {
        Command::Token(command) => {
            let store = tokens::NatsTokens(tokens::open(link).await?);
            crate::tokens::run(command, &store, out, note).await?;
        }
        Command::Tunnel(command) => release::run(command, &NatsNames(link), out).await?,
        Command::Completions { .. } | Command::Man => {}
    }
    Ok(())
}

#[cfg(not(feature = "cluster"))]
async fn run_in_cluster(
    _: &Command,
    _: &crate::config::NatsLink,
    _: &mut dyn std::io::Write,
    _: &mut dyn std::io::Write,
) -> Result<(), CommandError> {
    Err(CommandError::NoCluster(NO_CLUSTER))
}
