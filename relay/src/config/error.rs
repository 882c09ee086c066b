//! [`ConfigError`]: each configuration the relay refuses to start with, as the one sentence
//! `illumitunnel-relay` prints before exiting with code 2.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::defaults::{MAX_MAX_HEADER_BYTES, MIN_TOKEN_CHARS, TOKENS_ENV};
use super::nats::LinkError;

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
