//! Relay configuration: the command line ([`Args`]) and the validated settings the server runs
//! with ([`Config`]). Every rule clap cannot express is checked in `TryFrom<Args>`, and each
//! [`ConfigError`] is the one sentence `illumitunnel-relay` prints before exiting with code 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use illumitunnel::Token;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::acme::AcmeSettings;
use crate::cluster::link::{self, LinkError, LinkFlags};
use crate::cluster::{ClusterConfig, NatsLink};
use crate::proxy::{Cidr, TrustedProxies};
use crate::queue::Clock;
use crate::queue::{QueueLimits, DEFAULT_MAX_BYTES, DEFAULT_MAX_COUNT, DEFAULT_MAX_TOTAL_BYTES};
use crate::tunnel::DEFAULT_WINDOW;

/// Default `--listen` address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default `--max-body`: 10 MiB.
pub const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;
/// Default `--response-timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(25);
/// How often each side pings; a peer silent for two intervals is gone.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);
/// Default `--max-header-bytes`: request line and headers of one request.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest `--max-header-bytes`: a request head this size still fits one protocol message to
/// the client, with room for the `X-Forwarded-*` headers the relay adds.
pub const MAX_MAX_HEADER_BYTES: usize = 96 * 1024;
/// Default `--max-inflight-bytes`: request bodies held in memory across all requests.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 256 * 1024 * 1024;
/// Default `--min-body-rate`: 8 KiB a second.
pub const DEFAULT_MIN_BODY_RATE: u64 = 8 * 1024;
/// Time a body has before `--min-body-rate` applies to it.
pub const MIN_BODY_GRACE: Duration = Duration::from_secs(5);
/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `--max-connections-per-ip`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Default `--idle-timeout`: an HTTP connection with no request in flight is closed after it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `--tunnel-ttl`: a tunnel whose owner has not connected for this long loses its queue.
pub const DEFAULT_TUNNEL_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Environment variable holding client tokens, separated by commas or newlines.
pub const TOKENS_ENV: &str = "ILLUMITUNNEL_RELAY_TOKENS";
/// Shortest client token in a tokens file or the environment: 22 base64url characters carry
/// 128 bits, so a token cannot be guessed through the per-address limit on failed checks.
pub const MIN_TOKEN_CHARS: usize = 22;

/// What the relay does with a delivery for a known tunnel with no client connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    /// Certificates obtained and renewed over ACME (`--acme-domain`).
    Acme(AcmeSettings),
}

impl TlsConfig {
    /// URL scheme the listener serves: `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self {
            TlsConfig::Plain => "http",
            TlsConfig::Certified { .. } | TlsConfig::Acme(_) => "https",
        }
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsConfig::Plain => f.write_str("Plain"),
            TlsConfig::Certified { chain, .. } => {
                write!(f, "Certified({} certificates, key MASKED)", chain.len())
            }
            TlsConfig::Acme(settings) => write!(f, "Acme({:?})", settings.domains),
        }
    }
}

/// What one sender, or all of them together, may make the relay hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line and headers of one request (431 beyond).
    pub max_header_bytes: usize,
    /// Request bodies in memory across all requests (503 beyond).
    pub max_inflight_bytes: usize,
    /// Bytes a second a body must keep up after [`Limits::min_body_grace`] (408 below); 0: off.
    pub min_body_rate: u64,
    /// Time a body has before the minimum rate applies: 5 s, shorter only in tests.
    pub min_body_grace: Duration,
    /// Open connections (further ones are closed at accept).
    pub max_connections: usize,
    /// Open connections from one IP address.
    pub max_connections_per_ip: usize,
    /// An HTTP connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Longest from accept to a connection's first request head (TLS and HTTP/2 preface
    /// included); 10 s, shorter only in tests.
    pub first_request_timeout: Duration,
    /// A tunnel whose owner has not connected for this long loses its queue (not its owner).
    pub tunnel_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            min_body_rate: DEFAULT_MIN_BODY_RATE,
            min_body_grace: MIN_BODY_GRACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            first_request_timeout: crate::conn::FIRST_REQUEST_TIMEOUT,
            tunnel_ttl: DEFAULT_TUNNEL_TTL,
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
    /// The embedded relay's per-process token: when set, the only client accepted.
    pub process_token: Option<Token>,
    /// Offline queue and tunnel ownership live here.
    pub data_dir: PathBuf,
    /// Largest request body accepted.
    pub max_body: usize,
    /// Queued deliveries in flight to a client at once while its tunnel's backlog drains.
    pub drain_window: usize,
    /// How long a sender waits for the local server's answer.
    pub response_timeout: Duration,
    /// Offline behaviour.
    pub offline: OfflinePolicy,
    /// Websocket ping interval.
    pub keepalive: Duration,
    /// Per-tunnel limits of the offline queue.
    pub queue: QueueLimits,
    /// Where the offline queue reads the time (the system clock; tests set their own).
    pub clock: Clock,
    /// What senders may make the relay hold.
    pub limits: Limits,
    /// Where `/metrics` is served besides the ingress port (which serves it only on loopback,
    /// and never behind `--trusted-proxy` or `--proxy-protocol`).
    pub metrics_listen: Option<SocketAddr>,
    /// Label queue metrics with tunnel names.
    pub metrics_tunnel_labels: bool,
    /// `--trusted-proxy`: peers whose `X-Forwarded-For` (or PROXY header) names the sender.
    pub trusted_proxies: TrustedProxies,
    /// `--proxy-protocol`: every connection comes from a trusted proxy and starts with a PROXY
    /// protocol header.
    pub proxy_protocol: bool,
    /// What SIGHUP reads again.
    pub reload: Reload,
    /// Accept tokens stored by `token add` in the data dir (not for the embedded relay).
    pub stored_tokens: bool,
    /// `--cluster` / `--node-id`: shared state in NATS JetStream; `None`: `relay.db`.
    pub cluster: Option<ClusterConfig>,
}

/// The files SIGHUP reloads without dropping connections.
#[derive(Debug, Clone, Default)]
pub struct Reload {
    /// Take SIGHUP at all: the `illumitunnel-relay` process does (so `systemctl reload` never
    /// stops it), a relay embedded in another process does not.
    pub on_hangup: bool,
    /// `--tls-cert` and `--tls-key`.
    pub pem: Option<(PathBuf, PathBuf)>,
    /// `--tokens-file`.
    pub tokens_file: Option<PathBuf>,
    /// Tokens from the environment, kept beside the file's.
    pub env_tokens: Vec<Token>,
}

impl Config {
    /// Settings for a relay embedded in `illumitunnel listen` on loopback: no tokens, any
    /// client accepted, every limit at its default.
    pub fn embedded(tls: TlsConfig, data_dir: PathBuf) -> Self {
        Config {
            tls,
            public_url: None,
            tokens: Vec::new(),
            allow_anonymous: true,
            process_token: None,
            data_dir,
            max_body: DEFAULT_MAX_BODY,
            drain_window: DEFAULT_WINDOW,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            offline: OfflinePolicy::Queue,
            keepalive: DEFAULT_KEEPALIVE,
            queue: QueueLimits::default(),
            clock: Clock::system(),
            limits: Limits::default(),
            metrics_listen: None,
            metrics_tunnel_labels: false,
            trusted_proxies: TrustedProxies::default(),
            proxy_protocol: false,
            reload: Reload::default(),
            stored_tokens: false,
            cluster: None,
        }
    }
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
    pub drain_window: usize,
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
    List,
    /// Delete a token; a running relay closes its sessions.
    Revoke {
        /// The name given to `token add`.
        name: String,
    },
}

/// A configuration the relay refuses to start with (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--cluster` without `--node-id`.
    #[error("--cluster needs --node-id NAME, unique per node (e.g. the host name)")]
    NoNodeId,
    /// `--node-id` is not a usable id.
    #[error("--node-id {0:?} is not a node id; use 1 to 40 lowercase letters, digits or '-', unique per node")]
    NodeId(String),
    /// `--cluster` and its login flags do not make one safe way to reach NATS.
    #[error("{0}")]
    Nats(#[from] LinkError),
    /// `--cluster-cert` without `--cluster-key` or the other way round.
    #[error("--cluster-cert and --cluster-key go together: pass the client certificate and its private key")]
    ClusterCertPair,
    /// A PEM file for TLS to NATS cannot be used.
    #[error("could not load {flag} {path}: {reason}; pass {expected}")]
    ClusterPem {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// What the flag takes.
        expected: &'static str,
    },
    /// None of `--http`, `--tls-cert/--tls-key`, `--self-signed`.
    #[error("choose how to serve: pass --acme-domain NAME (a certificate from Let's Encrypt), --tls-cert FILE --tls-key FILE, --self-signed, or --http (plain HTTP behind a TLS proxy)")]
    NoServeMode,
    /// `--tls-cert` without `--tls-key`.
    #[error("--tls-cert needs --tls-key; pass the certificate's private key as well")]
    CertWithoutKey,
    /// `--tls-key` without `--tls-cert`.
    #[error("--tls-key needs --tls-cert; pass the certificate chain as well")]
    KeyWithoutCert,
    /// `--http` together with TLS flags.
    #[error("--http serves plain HTTP and cannot be combined with --tls-cert, --tls-key or --self-signed; pick one")]
    HttpWithTls,
    /// `--self-signed` together with PEM files.
    #[error("--self-signed cannot be combined with --tls-cert/--tls-key; pick one")]
    SelfSignedWithPem,
    /// `--hostname` without `--self-signed`.
    #[error("--hostname only applies to --self-signed; add --self-signed or drop --hostname")]
    HostnameWithoutSelfSigned,
    /// No tokens and no `--allow-anonymous`, on any address.
    #[error("refusing to listen on {0} without client tokens: any client could open tunnels on it, also through a proxy on loopback; add one with `illumitunnel-relay token add NAME`, pass --tokens-file FILE (or set ILLUMITUNNEL_RELAY_TOKENS), or pass --allow-anonymous to accept any client")]
    OpenToAnyone(SocketAddr),
    /// `--proxy-protocol` without `--trusted-proxy`.
    #[error("--proxy-protocol needs --trusted-proxy CIDR naming the proxies that send the header (e.g. --trusted-proxy 10.0.0.0/8); connections from anyone else are closed")]
    ProxyProtocolWithoutTrustedProxy,
    /// The tokens file cannot be read.
    #[error("could not read tokens file {path}: {reason}; check the path and its permissions")]
    TokensFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: std::io::Error,
    },
    /// The tokens file holds no token.
    #[error("tokens file {0} has no tokens; put one token a line, or pass --allow-anonymous")]
    EmptyTokensFile(PathBuf),
    /// A token in the tokens file is too short to resist guessing.
    #[error("tokens file {path} line {line} holds a token shorter than {MIN_TOKEN_CHARS} characters (128 bits); replace it with a long random one, e.g. from `illumitunnel-relay token add NAME` or `openssl rand -hex 16`")]
    WeakFileToken {
        /// The file.
        path: PathBuf,
        /// Its line, from 1.
        line: usize,
    },
    /// A token in the environment is too short to resist guessing.
    #[error("{TOKENS_ENV} entry {0} is a token shorter than {MIN_TOKEN_CHARS} characters (128 bits); replace it with a long random one, e.g. from `openssl rand -hex 16`")]
    WeakEnvToken(usize),
    /// A PEM file cannot be used.
    #[error("could not load {path}: {reason}; pass a PEM certificate chain with --tls-cert and its private key with --tls-key")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen failed.
    #[error("could not generate a self-signed certificate: {0}; check the --hostname values")]
    SelfSigned(String),
    /// `--public-url` is not an http(s) URL.
    #[error("invalid --public-url {0:?}: use http:// or https:// and a host, e.g. https://relay.example.com")]
    PublicUrl(String),
    /// `--max-body 0`.
    #[error("--max-body must be at least 1 byte")]
    ZeroMaxBody,
    /// `--response-timeout 0`.
    #[error("--response-timeout must be at least 1 second")]
    ZeroResponseTimeout,
    /// `--queue-max-count 0` or `--queue-max-bytes 0`.
    #[error("--queue-max-count and --queue-max-bytes must be at least 1; use --offline reject to queue nothing")]
    ZeroQueueLimit,
    /// `--keepalive-ms 0`.
    #[error("--keepalive-ms must be at least 1")]
    ZeroKeepalive,
    /// `--max-header-bytes` outside what one protocol message can carry.
    #[error("--max-header-bytes must be between 1024 and {MAX_MAX_HEADER_BYTES} bytes, so every request head fits the relay-client link")]
    HeaderLimit,
    /// A connection limit, the in-flight budget, the total queue size, the idle timeout or the
    /// drain window is 0.
    #[error("--{0} must be at least 1")]
    ZeroLimit(&'static str),
    /// The in-flight budget cannot hold one body.
    #[error("--max-inflight-bytes must be at least --max-body, or no request could ever pass")]
    InflightBelowBody,
    /// An `--acme-*` flag without `--acme-domain`.
    #[error("{0} only applies with --acme-domain; add --acme-domain NAME or drop {0}")]
    AcmeFlagWithoutDomain(&'static str),
    /// `--acme-domain` with another source of certificates.
    #[error("--acme-domain obtains its own certificate and cannot be combined with --tls-cert/--tls-key, --self-signed or --http; pick one")]
    AcmeWithOtherCertificate,
    /// `--acme-domain` is not a DNS name.
    #[error("invalid --acme-domain {0:?}: pass a DNS name that points at this machine, e.g. relay.example.com (no scheme, port, IP address or wildcard)")]
    AcmeDomain(String),
    /// `--acme-directory` is not an https URL.
    #[error("invalid --acme-directory {0:?}: pass the CA's https:// directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory")]
    AcmeDirectory(String),
    /// Both `--acme-staging` and `--acme-directory`.
    #[error("--acme-staging picks Let's Encrypt's staging directory and cannot be combined with --acme-directory; pick one")]
    AcmeStagingWithDirectory,
    /// `--acme-email` is not an address.
    #[error("invalid --acme-email {0:?}: pass an address such as you@example.com")]
    AcmeEmail(String),
    /// `--acme-ca-root` cannot be used.
    #[error("could not load --acme-ca-root {path}: {reason}; pass the PEM certificate of the CA that signed the ACME directory's HTTPS certificate")]
    AcmeCaRoot {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Self, ConfigError> {
        let tls = match crate::acme::settings_from(&args)? {
            Some(acme) => TlsConfig::Acme(acme),
            None => tls_from(&args)?,
        };
        let mut tokens = Vec::new();
        if let Some(path) = &args.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::TokensFile {
                path: path.clone(),
                reason,
            })?;
            tokens = parse_tokens(&text).map_err(|weak| ConfigError::WeakFileToken {
                path: path.clone(),
                line: weak.line,
            })?;
            if tokens.is_empty() {
                return Err(ConfigError::EmptyTokensFile(path.clone()));
            }
        }
        let env_tokens = match args.tokens_env.as_deref().map(parse_tokens) {
            None => Vec::new(),
            Some(parsed) => parsed.map_err(|weak| ConfigError::WeakEnvToken(weak.entry))?,
        };
        tokens.extend(env_tokens.iter().cloned());
        if tokens.is_empty()
            && args.stored_tokens == 0
            && !args.allow_anonymous
            && args.cluster.is_empty()
        {
            return Err(ConfigError::OpenToAnyone(args.listen));
        }
        if args.proxy_protocol && args.trusted_proxies.is_empty() {
            return Err(ConfigError::ProxyProtocolWithoutTrustedProxy);
        }
        let public_url = match (args.public_url.as_deref(), &tls) {
            (Some(url), _) => Some(parse_public_url(url)?),
            // The certificate's name is the one senders can reach and verify.
            (None, TlsConfig::Acme(acme)) => {
                acme.domains.first().map(|domain| match args.listen.port() {
                    443 => format!("https://{domain}"),
                    port => format!("https://{domain}:{port}"),
                })
            }
            (None, _) => None,
        };
        if args.max_body == 0 {
            return Err(ConfigError::ZeroMaxBody);
        }
        if args.response_timeout == 0 {
            return Err(ConfigError::ZeroResponseTimeout);
        }
        if args.queue_max_count == 0 || args.queue_max_bytes == 0 {
            return Err(ConfigError::ZeroQueueLimit);
        }
        if !(1024..=MAX_MAX_HEADER_BYTES).contains(&args.max_header_bytes) {
            return Err(ConfigError::HeaderLimit);
        }
        for (value, flag) in [
            (args.max_inflight_bytes as u64, "max-inflight-bytes"),
            (args.max_connections as u64, "max-connections"),
            (args.max_connections_per_ip as u64, "max-connections-per-ip"),
            (args.idle_timeout, "idle-timeout"),
            (args.queue_max_total_bytes, "queue-max-total-bytes"),
            (args.drain_window as u64, "drain-window"),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit(flag));
            }
        }
        if args.max_inflight_bytes < args.max_body {
            return Err(ConfigError::InflightBelowBody);
        }
        let cluster = match (args.cluster.as_slice(), args.node_id.clone()) {
            ([], _) => None,
            (_, Some(node_id)) if valid_node_id(&node_id) => Some(ClusterConfig {
                nats: nats_link(&args)?,
                node_id,
                replicas: usize::from(args.cluster_replicas),
            }),
            (_, None) => return Err(ConfigError::NoNodeId),
            (_, Some(node_id)) => return Err(ConfigError::NodeId(node_id)),
        };
        let keepalive = match args.keepalive_ms {
            Some(0) => return Err(ConfigError::ZeroKeepalive),
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_KEEPALIVE,
        };
        Ok(Config {
            tls,
            public_url,
            tokens,
            allow_anonymous: args.allow_anonymous,
            process_token: None,
            data_dir: args
                .data_dir
                .unwrap_or_else(illumitunnel::paths::default_relay_data_dir),
            max_body: args.max_body,
            drain_window: args.drain_window,
            response_timeout: Duration::from_secs(args.response_timeout),
            offline: args.offline,
            keepalive,
            queue: QueueLimits {
                max_count: args.queue_max_count,
                max_bytes: args.queue_max_bytes,
                max_age: args.queue_max_age,
                max_total_bytes: args.queue_max_total_bytes,
            },
            clock: Clock::system(),
            limits: Limits {
                max_header_bytes: args.max_header_bytes,
                max_inflight_bytes: args.max_inflight_bytes,
                min_body_rate: args.min_body_rate,
                min_body_grace: args
                    .min_body_grace_ms
                    .map_or(MIN_BODY_GRACE, Duration::from_millis),
                max_connections: args.max_connections,
                max_connections_per_ip: args.max_connections_per_ip,
                idle_timeout: Duration::from_secs(args.idle_timeout),
                first_request_timeout: crate::conn::FIRST_REQUEST_TIMEOUT,
                tunnel_ttl: args.tunnel_ttl,
            },
            metrics_listen: args.metrics_listen,
            metrics_tunnel_labels: args.metrics_tunnel_labels,
            trusted_proxies: TrustedProxies::new(args.trusted_proxies),
            proxy_protocol: args.proxy_protocol,
            reload: Reload {
                on_hangup: true,
                pem: args.tls_cert.zip(args.tls_key),
                tokens_file: args.tokens_file,
                env_tokens,
            },
            stored_tokens: true,
            cluster,
        })
    }
}

/// How to reach NATS from `--cluster` and its login and TLS flags (see [`link::parse`]), with
/// the PEM files checked now. Also used by `token … --cluster`.
pub fn nats_link(args: &Args) -> Result<NatsLink, ConfigError> {
    let client = args
        .cluster_cert
        .as_deref()
        .zip(args.cluster_key.as_deref());
    if client.is_none() && (args.cluster_cert.is_some() || args.cluster_key.is_some()) {
        return Err(ConfigError::ClusterCertPair);
    }
    let link = link::parse(&LinkFlags {
        urls: &args.cluster,
        creds: args.cluster_creds.as_deref(),
        nkey: args.cluster_nkey.as_deref(),
        ca: args.cluster_ca.as_deref(),
        client,
        insecure: args.cluster_insecure,
    })?;
    let pem = |flag: &'static str, path: &Path, expected: &'static str| {
        let error = |reason: String| ConfigError::ClusterPem {
            flag,
            path: path.to_path_buf(),
            reason,
            expected,
        };
        match flag {
            "--cluster-key" => crate::tls::load_key(path).map(drop).map_err(error),
            _ => crate::tls::load_certs(path).map(drop).map_err(error),
        }
    };
    if let Some(ca) = &link.tls.ca {
        pem(
            "--cluster-ca",
            ca,
            "the PEM certificate of the CA that signed the NATS servers' certificates",
        )?;
    }
    if let Some((cert, key)) = &link.tls.client {
        pem(
            "--cluster-cert",
            cert,
            "a PEM client certificate the NATS server trusts",
        )?;
        pem(
            "--cluster-key",
            key,
            "the PEM private key of --cluster-cert",
        )?;
    }
    Ok(link)
}

fn valid_node_id(id: &str) -> bool {
    (1..=40).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn parse_age(s: &str) -> Result<Duration, String> {
    match illumitunnel::parse_duration(s) {
        Some(age) if !age.is_zero() => Ok(age),
        _ => Err(format!(
            "{s:?} is not a duration; use a number and a unit, e.g. 30s, 15m, 72h or 7d"
        )),
    }
}

fn tls_from(args: &Args) -> Result<TlsConfig, ConfigError> {
    let has_pem = args.tls_cert.is_some() || args.tls_key.is_some();
    if args.http && (has_pem || args.self_signed) {
        return Err(ConfigError::HttpWithTls);
    }
    if args.self_signed && has_pem {
        return Err(ConfigError::SelfSignedWithPem);
    }
    if !args.hostnames.is_empty() && !args.self_signed {
        return Err(ConfigError::HostnameWithoutSelfSigned);
    }
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => load_pem(cert, key),
        (Some(_), None) => Err(ConfigError::CertWithoutKey),
        (None, Some(_)) => Err(ConfigError::KeyWithoutCert),
        (None, None) if args.self_signed => {
            let mut names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            names.extend(args.hostnames.iter().cloned());
            let cert = crate::tls::SelfSigned::generate(&names).map_err(ConfigError::SelfSigned)?;
            Ok(TlsConfig::Certified {
                chain: vec![cert.cert],
                key: cert.key,
            })
        }
        (None, None) if args.http => Ok(TlsConfig::Plain),
        (None, None) => Err(ConfigError::NoServeMode),
    }
}

fn load_pem(cert: &Path, key: &Path) -> Result<TlsConfig, ConfigError> {
    let pem_error = |path: &Path| {
        let path = path.to_path_buf();
        move |reason: String| ConfigError::Pem { path, reason }
    };
    let chain = crate::tls::load_certs(cert).map_err(pem_error(cert))?;
    let key = crate::tls::load_key(key).map_err(pem_error(key))?;
    Ok(TlsConfig::Certified { chain, key })
}

/// Tokens separated by newlines or commas; blank entries and `#` comment lines are skipped.
/// Every token must have at least [`MIN_TOKEN_CHARS`] characters.
pub(crate) fn parse_tokens(text: &str) -> Result<Vec<Token>, WeakToken> {
    let mut tokens = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        for token in line.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(WeakToken {
                    line: index + 1,
                    entry: tokens.len() + 1,
                });
            }
            tokens.push(Token::new(token));
        }
    }
    Ok(tokens)
}

/// Where [`parse_tokens`] found a token shorter than [`MIN_TOKEN_CHARS`]; never the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WeakToken {
    /// Its line, from 1.
    pub line: usize,
    /// Its place among the tokens, from 1.
    pub entry: usize,
}

fn parse_public_url(url: &str) -> Result<String, ConfigError> {
    let trimmed = url.trim_end_matches('/');
    let host = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match host {
        Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) => Ok(trimmed.to_string()),
        _ => Err(ConfigError::PublicUrl(url.to_string())),
    }
}

#[cfg(test)]
mod tests;
