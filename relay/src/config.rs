//! Relay configuration: the command line ([`Args`]) and the validated settings the server runs
//! with ([`Config`]). Every rule clap cannot express is checked in `TryFrom<Args>`, and each
//! [`ConfigError`] is the one sentence `illumitunnel-relay` prints before exiting with code 2.
//!
//! - `defaults` — every default and fixed limit.
//! - `args` — the command line as clap reads it.
//! - `error` — [`ConfigError`].
//! - `nats` — `--cluster` and its login and TLS flags as a [`NatsLink`] (pure; no NATS here).
//! - `acme` — `--acme-domain` and its flags as [`AcmeSettings`].

mod acme;
mod args;
mod defaults;
mod error;
mod nats;

pub use acme::{AcmeSettings, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING};
pub use args::{Args, Command, OfflinePolicy, TokenCommand, TunnelCommand};
pub use defaults::*;
pub use error::ConfigError;
pub use nats::{ClusterConfig, LinkError, LinkFlags, Login, NatsLink, NatsTls, Secret};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use illumitunnel::Token;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::proxy::TrustedProxies;
use crate::queue::Clock;
use crate::queue::QueueLimits;
use crate::tunnel::DEFAULT_WINDOW;

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
    /// `--self-signed`: the certificate kept in the data dir for these names (made on first
    /// start, or when the names change), see [`crate::tls::self_signed_in`].
    SelfSigned {
        /// DNS names and IP addresses on the certificate.
        names: Vec<String>,
    },
}

impl TlsConfig {
    /// URL scheme the listener serves: `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self {
            TlsConfig::Plain => "http",
            TlsConfig::Certified { .. } | TlsConfig::Acme(_) | TlsConfig::SelfSigned { .. } => {
                "https"
            }
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
            TlsConfig::SelfSigned { names } => write!(f, "SelfSigned({names:?})"),
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
    /// The host in that derived URL instead of the listener's address (a self-signed relay's
    /// first `--hostname`, the name its certificate is for).
    pub public_host: Option<String>,
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
    pub catch_up_window: usize,
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
            public_host: None,
            tokens: Vec::new(),
            allow_anonymous: true,
            process_token: None,
            data_dir,
            max_body: DEFAULT_MAX_BODY,
            catch_up_window: DEFAULT_WINDOW,
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

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Self, ConfigError> {
        let tls = match acme::settings_from(&args)? {
            Some(acme) => TlsConfig::Acme(acme),
            None => tls_from(&args)?,
        };
        let (tokens, env_tokens) = tokens_from(&args)?;
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
            (None, TlsConfig::Acme(acme)) => acme.domains.first().map(|d| https_url(d, &args)),
            (None, _) => None,
        };
        check_limits(&args)?;
        let cluster = cluster_from(&args)?;
        let limits = limits_from(&args);
        let keepalive = match args.keepalive_ms {
            Some(0) => return Err(ConfigError::ZeroKeepalive),
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_KEEPALIVE,
        };
        Ok(Config {
            tls,
            public_url,
            // Senders reach a self-signed relay by the name given for its certificate.
            public_host: args.hostnames.first().cloned(),
            tokens,
            allow_anonymous: args.allow_anonymous,
            process_token: None,
            data_dir: args
                .data_dir
                .unwrap_or_else(illumitunnel::paths::default_relay_data_dir),
            max_body: args.max_body,
            catch_up_window: args.catch_up_window,
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
            limits,
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

/// The tokens of `--tokens-file` and the environment (all of them), and the environment's alone.
fn tokens_from(args: &Args) -> Result<(Vec<Token>, Vec<Token>), ConfigError> {
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
    Ok((tokens, env_tokens))
}

/// Refuses limits of zero and limits that contradict each other.
fn check_limits(args: &Args) -> Result<(), ConfigError> {
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
        (args.catch_up_window as u64, "catch-up-window"),
    ] {
        if value == 0 {
            return Err(ConfigError::ZeroLimit(flag));
        }
    }
    if args.max_inflight_bytes < args.max_body {
        return Err(ConfigError::InflightBelowBody);
    }
    Ok(())
}

/// The connection and body limits.
fn limits_from(args: &Args) -> Limits {
    Limits {
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
    }
}

/// `--cluster`, `--node-id` and `--cluster-replicas`; `None` without `--cluster`.
fn cluster_from(args: &Args) -> Result<Option<ClusterConfig>, ConfigError> {
    match (args.cluster.as_slice(), args.node_id.clone()) {
        ([], _) => Ok(None),
        (_, Some(node_id)) if valid_node_id(&node_id) => Ok(Some(ClusterConfig {
            nats: nats_link(args)?,
            node_id,
            replicas: usize::from(args.cluster_replicas),
        })),
        (_, None) => Err(ConfigError::NoNodeId),
        (_, Some(node_id)) => Err(ConfigError::NodeId(node_id)),
    }
}

/// How to reach NATS from `--cluster` and its login and TLS flags (see [`nats::parse`]), with
/// the PEM files checked now. Also used by `token … --cluster`.
pub fn nats_link(args: &Args) -> Result<NatsLink, ConfigError> {
    let client = args
        .cluster_cert
        .as_deref()
        .zip(args.cluster_key.as_deref());
    if client.is_none() && (args.cluster_cert.is_some() || args.cluster_key.is_some()) {
        return Err(ConfigError::ClusterCertPair);
    }
    let link = nats::parse(&LinkFlags {
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
            // Refuse names no certificate can carry now (exit 2), not at the first start.
            crate::tls::SelfSigned::generate(&names).map_err(ConfigError::SelfSigned)?;
            Ok(TlsConfig::SelfSigned { names })
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

/// What `completions SHELL` and `man` print, generated from the clap definition so they always
/// match the flags; `None` for the other commands.
pub fn docs(command: &Command) -> Option<Vec<u8>> {
    use clap::CommandFactory as _;
    let mut printed = Vec::new();
    match command {
        Command::Completions { shell } => {
            let mut cli = Args::command();
            clap_complete::generate(*shell, &mut cli, "illumitunnel-relay", &mut printed);
        }
        Command::Man => clap_mangen::Man::new(Args::command())
            .render(&mut printed)
            .ok()?,
        Command::Token(_) | Command::Tunnel(_) => return None,
    }
    Some(printed)
}

/// `https://{host}` on the listening port (443 left out).
fn https_url(host: &str, args: &Args) -> String {
    match args.listen.port() {
        443 => format!("https://{host}"),
        port => format!("https://{host}:{port}"),
    }
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
