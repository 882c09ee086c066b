//! `illumitunnel-relay`'s command line as clap reads it: [`Args`] and its subcommands. Nothing
//! here is checked beyond what clap can express; `Config::try_from` does the rest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::defaults::*;
use crate::proxy::Cidr;
use crate::queue::{DEFAULT_MAX_BYTES, DEFAULT_MAX_COUNT, DEFAULT_MAX_TOTAL_BYTES};
use crate::tunnel::DEFAULT_WINDOW;

/// What the relay does with a delivery for a known tunnel with no client connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OfflinePolicy {
    /// Keep it durably and answer 202.
    Queue,
    /// Answer 503.
    Reject,
}

/// `illumitunnel-relay`'s command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "illumitunnel-relay",
    version,
    about = "Public relay for illumitunnel: accepts webhooks on /t/{tunnel}/… and carries them to connected clients",
    after_help = "Client tokens can also come from ILLUMITUNNEL_RELAY_TOKENS (comma or newline separated), \
                  or be added with `illumitunnel-relay token add NAME`; tokens from a file or the environment need 22+ characters. \
                  SIGHUP reloads --tls-cert/--tls-key and --tokens-file. More than 10 failed token checks a second from one \
                  address get 429."
)]
pub struct Args {
    /// Manage client tokens instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Generate a self-signed ECDSA certificate and print its SHA-256 fingerprint.
    #[arg(long)]
    pub self_signed: bool,
    /// Obtain and renew a certificate for this DNS name over ACME (repeatable).
    #[arg(long = "acme-domain", value_name = "NAME")]
    pub acme_domains: Vec<String>,
    /// Contact address for the ACME account (expiry warnings).
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// ACME directory URL [default: Let's Encrypt production].
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Use Let's Encrypt's staging directory (untrusted certificates, for trying things out).
    #[arg(long)]
    pub acme_staging: bool,
    /// PEM CA certificate to trust for the ACME directory's own HTTPS (private CAs, Pebble).
    #[arg(long, value_name = "PEM")]
    pub acme_ca_root: Option<PathBuf>,
    /// Extra DNS name or IP address for --self-signed (repeatable).
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostnames: Vec<String>,
    /// Serve plain HTTP, for running behind a TLS proxy.
    #[arg(long)]
    pub http: bool,
    /// Base URL printed to clients (default from the listen address).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// File with one client token a line, each at least 22 characters (128 bits); SIGHUP
    /// reads it again (empty: no file tokens; missing or with a short token: kept as it was).
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Tokens from the environment; read once at parse time, never shown in `--help`.
    #[arg(skip = std::env::var(TOKENS_ENV).ok())]
    pub tokens_env: Option<String>,
    /// Accept clients without a token.
    #[arg(long)]
    pub allow_anonymous: bool,
    /// Offline queue, tunnel ownership, stored tokens and the ACME cache.
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Tokens stored in the data dir (`token add`); filled in by `main` before validation.
    #[arg(skip)]
    pub stored_tokens: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Queued deliveries sent to a reconnected client before it has recorded the first of them
    /// (it forwards them one at a time, in order); 1 waits for each.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WINDOW)]
    pub catch_up_window: usize,
    /// Seconds a sender waits for the local server's answer.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_RESPONSE_TIMEOUT.as_secs())]
    pub response_timeout: u64,
    /// What to do with deliveries while a tunnel's client is offline.
    #[arg(long, value_enum, default_value_t = OfflinePolicy::Queue)]
    pub offline: OfflinePolicy,
    /// Most deliveries queued per offline tunnel.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_COUNT)]
    pub queue_max_count: u64,
    /// Most bytes (bodies and headers) queued per offline tunnel.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    pub queue_max_bytes: u64,
    /// How long a queued delivery is kept: 30s, 15m, 72h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "72h", value_parser = parse_age)]
    pub queue_max_age: Duration,
    /// Most bytes queued across all tunnels; once reached, only tunnels over their fair share
    /// (this ÷ tunnels with a queue) are refused.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_TOTAL_BYTES)]
    pub queue_max_total_bytes: u64,
    /// Largest request line plus headers, in bytes (431 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// Request bodies held in memory across all requests, in bytes (503 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_INFLIGHT_BYTES)]
    pub max_inflight_bytes: usize,
    /// Slowest a request body may arrive after a 5 s grace, in bytes a second (408 and a close
    /// below); 0 turns the check off.
    #[arg(long, value_name = "BYTES/S", default_value_t = DEFAULT_MIN_BODY_RATE)]
    pub min_body_rate: u64,
    /// The grace before --min-body-rate applies, in milliseconds (tests shorten it).
    #[arg(long, hide = true, value_name = "MS")]
    pub min_body_grace_ms: Option<u64>,
    /// Most open connections; further ones are closed at accept.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most open connections from one IP address.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Seconds an HTTP connection may stay open with no request in flight.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,
    /// Forget the queue of a tunnel whose owner has not connected for this long (the name then
    /// answers 404 but stays its owner's; `tunnel release NAME` frees it).
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_age)]
    pub tunnel_ttl: Duration,
    /// Serve /metrics on this address (the ingress port serves it only when it is loopback and
    /// there is no --trusted-proxy).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Label queue metrics with tunnel names (off: names stay private).
    #[arg(long)]
    pub metrics_tunnel_labels: bool,
    /// Take the sender's address from X-Forwarded-For when the peer is in this network (a
    /// reverse proxy; repeatable; a plain IP is one host): the right-most entry that is not a
    /// trusted proxy.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<Cidr>,
    /// Every connection starts with a PROXY protocol v1/v2 header (HAProxy, AWS NLB) naming the
    /// sender; needs --trusted-proxy for the proxies that send it, others are closed.
    #[arg(long)]
    pub proxy_protocol: bool,
    /// Join a relay cluster through these NATS servers (JetStream enabled), comma-separated:
    /// tunnels, presence and the offline queue live in NATS instead of the data dir.
    #[arg(long, value_name = "URLS", value_delimiter = ',', global = true)]
    pub cluster: Vec<String>,
    /// This node's id in the cluster, unique per node: lowercase letters, digits and '-'.
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub node_id: Option<String>,
    /// Replicas of the JetStream buckets and streams the cluster creates: 3 with a three-server
    /// NATS cluster, so losing one NATS server loses nothing.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "cluster", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub cluster_replicas: u8,
    /// NATS credentials file (a user JWT and its NKey seed, `nsc` makes them) for --cluster.
    #[arg(
        long,
        value_name = "FILE",
        requires = "cluster",
        conflicts_with = "cluster_nkey",
        global = true
    )]
    pub cluster_creds: Option<PathBuf>,
    /// File holding the NKey seed (SU…) of this node's NATS user, for --cluster.
    #[arg(long, value_name = "FILE", requires = "cluster", global = true)]
    pub cluster_nkey: Option<PathBuf>,
    /// PEM CA certificate that signed the NATS servers' certificates; implies TLS to NATS.
    #[arg(long, value_name = "PEM", requires = "cluster", global = true)]
    pub cluster_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS with NATS (with --cluster-key).
    #[arg(long, value_name = "PEM", requires = "cluster", global = true)]
    pub cluster_cert: Option<PathBuf>,
    /// PEM private key for --cluster-cert.
    #[arg(long, value_name = "PEM", requires = "cluster", global = true)]
    pub cluster_key: Option<PathBuf>,
    /// Join a NATS that is not on loopback without credentials (a test network only: anyone
    /// who reaches it reads deliveries and adds tokens).
    #[arg(long, requires = "cluster", global = true)]
    pub cluster_insecure: bool,
    /// Websocket ping interval in milliseconds (tests shorten it).
    #[arg(long, hide = true, value_name = "MS")]
    pub keepalive_ms: Option<u64>,
}

/// `illumitunnel-relay token …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add, list or revoke client tokens stored (hashed) in the data dir.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage tunnel names in the data dir.
    #[command(subcommand)]
    Tunnel(TunnelCommand),
    /// Print a shell completion script, e.g. illumitunnel-relay completions bash > ~/.local/share/bash-completion/completions/illumitunnel-relay.
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. illumitunnel-relay man | man -l -
    Man,
}

/// `tunnel release`.
#[derive(Debug, clap::Subcommand)]
pub enum TunnelCommand {
    /// Free a tunnel name for any owner (its queue goes too); --tunnel-ttl never does this by
    /// itself. A running relay applies it within 5 s once the name's client is gone.
    Release {
        /// The tunnel name.
        name: String,
    },
}

/// `token add | list | revoke`; a running relay applies changes within 5 s.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once.
    Add {
        /// A name to revoke it by, e.g. the laptop it is for.
        name: String,
    },
    /// Show the stored tokens' names (never the tokens).
    List {
        /// One JSON array: `[{"name", "created_at_ms", "created_at"}]`.
        #[arg(long)]
        json: bool,
    },
    /// Delete a token; a running relay closes its sessions.
    Revoke {
        /// The name given to `token add`.
        name: String,
    },
}

fn parse_age(s: &str) -> Result<Duration, String> {
    match illumitunnel::parse_duration(s) {
        Some(age) if !age.is_zero() => Ok(age),
        _ => Err(format!(
            "{s:?} is not a duration; use a number and a unit, e.g. 30s, 15m, 72h or 7d"
        )),
    }
}
