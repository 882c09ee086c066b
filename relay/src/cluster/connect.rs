//! How a node (or `token … --cluster`) reaches NATS: the servers of `--cluster`, the login
//! (`user:pass@` or a token in the URL, `--cluster-creds`, `--cluster-nkey`) and TLS
//! (`tls://` URLs, `--cluster-ca`, `--cluster-cert`/`--cluster-key`). Secrets live in
//! [`Secret`]s, whose Debug prints `MASKED`; the servers are kept without the credentials their
//! URLs carried, so whatever prints a [`NatsLink`] prints no password. A refusal by NATS at
//! start becomes one sentence naming the flag to check.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{ConnectErrorKind, Event};

use super::ClusterError;

/// Longest a node waits for NATS when it starts.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A password, token, NKey seed or credentials file's text: Debug prints `MASKED`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the NATS client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MASKED")
    }
}

/// How a node proves who it is to NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Login {
    /// No login (a NATS server without authorization; loopback or `--cluster-insecure` only,
    /// unless a client certificate identifies the node).
    #[default]
    Anonymous,
    /// `nats://user:pass@host`.
    Password {
        /// The NATS user.
        user: String,
        /// Its password.
        password: Secret,
    },
    /// `nats://TOKEN@host`.
    Token(Secret),
    /// `--cluster-creds FILE`: a user JWT and its NKey seed.
    Creds(Secret),
    /// `--cluster-nkey FILE`: an NKey seed.
    Nkey(Secret),
}

impl Login {
    /// The flag an operator checks when NATS refuses this login.
    pub fn flag(&self) -> &'static str {
        match self {
            Login::Anonymous => "--cluster (NATS wants a login: nats://user:pass@host, --cluster-creds FILE or --cluster-nkey FILE)",
            Login::Password { .. } => "the user and password in --cluster",
            Login::Token(_) => "the token in --cluster",
            Login::Creds(_) => "--cluster-creds",
            Login::Nkey(_) => "--cluster-nkey",
        }
    }

    /// What kind of login it is, for the log line (never the secret).
    pub fn describe(&self) -> String {
        match self {
            Login::Anonymous => "none".into(),
            Login::Password { user, .. } => format!("user {user}"),
            Login::Token(_) => "token".into(),
            Login::Creds(_) => "credentials file".into(),
            Login::Nkey(_) => "nkey".into(),
        }
    }
}

/// TLS to NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// Refuse a connection without TLS: a `tls://` URL, `--cluster-ca` or `--cluster-cert`.
    pub required: bool,
    /// `--cluster-ca`: the CA that signed the NATS servers' certificates (else the system's).
    pub ca: Option<PathBuf>,
    /// `--cluster-cert` and `--cluster-key`: this node's client certificate (mutual TLS).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Everything `--cluster…` says about reaching NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsLink {
    /// Server URLs without the credentials they carried (`nats://host:4222`, `tls://…`).
    pub servers: Vec<String>,
    /// The login.
    pub login: Login,
    /// TLS settings.
    pub tls: NatsTls,
}

impl NatsLink {
    /// The servers, comma-separated: safe to print.
    pub fn servers_text(&self) -> String {
        self.servers.join(",")
    }

    /// Whether the node proves who it is (login or client certificate).
    pub fn has_credential(&self) -> bool {
        self.login != Login::Anonymous || self.tls.client.is_some()
    }
}

/// One `--cluster` URL split into the address NATS is dialled at and the user info it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitUrl {
    /// `scheme://host:port`, without user info.
    pub address: String,
    /// Its host (brackets of an IPv6 address removed).
    pub host: String,
    /// The URL's user (percent-decoded), or a token given alone.
    pub user: Option<String>,
    /// The URL's password (percent-decoded).
    pub password: Option<Secret>,
}

/// Splits `url` (`nats://user:pass@host:4222`, `tls://host`, `host:4222`); `None` when it has
/// no host or a scheme NATS does not speak.
pub fn split_url(url: &str) -> Option<SplitUrl> {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("nats".to_owned(), url),
    };
    if !matches!(scheme.as_str(), "nats" | "tls") {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((info, hostport)) => (Some(info), hostport),
        None => (None, authority),
    };
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => hostport.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let (user, password) = match userinfo.map(|info| info.split_once(':').unwrap_or((info, ""))) {
        None => (None, None),
        Some((user, password)) => (
            Some(percent_decode(user)?).filter(|u| !u.is_empty()),
            Some(percent_decode(password)?)
                .filter(|p| !p.is_empty())
                .map(Secret),
        ),
    };
    Some(SplitUrl {
        address: format!("{scheme}://{hostport}{path}"),
        host: host.to_owned(),
        user,
        password,
    })
}

/// Whether `host` names this machine: `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What NATS last refused (a permissions violation), for the sentence when set-up fails.
#[derive(Clone, Default)]
pub struct LastRefusal(Arc<Mutex<Option<String>>>);

impl LastRefusal {
    /// The last refusal NATS reported, if any.
    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, text: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(text);
    }
}

/// Connects to `link`'s servers as `name`, with replies on `inbox` (`_INBOX.{node}` for a
/// node, so its NATS user may read its own replies only). Waits up to [`CONNECT_TIMEOUT`].
pub async fn connect(
    link: &NatsLink,
    name: String,
    inbox: Option<String>,
) -> Result<(async_nats::Client, LastRefusal), ClusterError> {
    let servers = link.servers_text();
    let unreachable = |cause: String| ClusterError::Unreachable {
        servers: servers.clone(),
        cause,
    };
    let addrs = link
        .servers
        .iter()
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreachable(e.to_string()))?;
    let refusal = LastRefusal::default();
    let mut options = login(async_nats::ConnectOptions::new(), &link.login)
        .map_err(|cause| ClusterError::Refused {
            servers: servers.clone(),
            cause,
            flag: link.login.flag(),
        })?
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        .event_callback({
            let refusal = refusal.clone();
            move |event| on_event(refusal.clone(), event)
        })
        // Reconnects go on for ever, a few seconds apart at most.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(2_000))
        });
    if let Some(inbox) = inbox {
        options = options.custom_inbox_prefix(inbox);
    }
    if link.tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &link.tls.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &link.tls.client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(addrs))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?;
    match connected {
        Ok(client) => Ok((client, refusal)),
        Err(err) => Err(match err.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                ClusterError::Refused {
                    servers,
                    // The kind says it all; its source repeats it with a prefix.
                    cause: err.kind().to_string(),
                    flag: link.login.flag(),
                }
            }
            _ if is_tls(&err) => ClusterError::Tls {
                servers,
                cause: err.to_string(),
            },
            _ => unreachable(err.to_string()),
        }),
    }
}

/// Whether a failure came from TLS (the client reports an untrusted certificate as I/O).
fn is_tls(err: &async_nats::ConnectError) -> bool {
    if err.kind() == ConnectErrorKind::Tls {
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    // Bounded by the chain's length.
    while let Some(cause) = next {
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            let inner = io
                .get_ref()
                .map(|e| e as &(dyn std::error::Error + 'static));
            if inner.is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some()) {
                return true;
            }
        }
        next = cause.source();
    }
    false
}

fn login(
    options: async_nats::ConnectOptions,
    login: &Login,
) -> Result<async_nats::ConnectOptions, String> {
    Ok(match login {
        Login::Anonymous => options,
        Login::Password { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_owned())
        }
        Login::Token(token) => options.token(token.expose().to_owned()),
        Login::Nkey(seed) => options.nkey(seed.expose().trim().to_owned()),
        // The parser's message names no secret.
        Login::Creds(text) => options
            .credentials(text.expose())
            .map_err(|e| format!("not a NATS credentials file ({e})"))?,
    })
}

/// Logs what NATS refuses while the node runs (a permissions violation names the subject) and
/// keeps the last refusal for the set-up sentence.
async fn on_event(refusal: LastRefusal, event: Event) {
    match event {
        Event::ServerError(err) => {
            let text = err.to_string();
            tracing::warn!(error = %text, "NATS refused an operation; check this node's NATS permissions (docs/cluster.md)");
            refusal.set(text);
        }
        Event::Disconnected => tracing::warn!("lost the connection to NATS; reconnecting"),
        Event::Connected => tracing::info!("connected to NATS"),
        other => tracing::debug!(event = %other, "NATS connection event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_secrets_kept_out_of_the_address() {
        let split = split_url("nats://relay-a:p%40ss:word@nats.example.com:4222").unwrap();
        assert_eq!(split.address, "nats://nats.example.com:4222");
        assert_eq!(split.host, "nats.example.com");
        assert_eq!(split.user.as_deref(), Some("relay-a"));
        assert_eq!(
            split.password.as_ref().map(Secret::expose),
            Some("p@ss:word")
        );
        assert_eq!(format!("{split:?}").matches("p@ss").count(), 0);

        let tls = split_url("tls://[::1]:4222").unwrap();
        assert_eq!(
            (tls.address.as_str(), tls.host.as_str()),
            ("tls://[::1]:4222", "::1")
        );
        assert_eq!(tls.user, None);
        let bare = split_url("10.0.0.1:4222").unwrap();
        assert_eq!(bare.address, "nats://10.0.0.1:4222");
        let token = split_url("nats://s3cr3t@h:4222").unwrap();
        assert_eq!(
            (token.user.as_deref(), token.password),
            (Some("s3cr3t"), None)
        );

        for bad in [
            "http://h:4222",
            "nats://",
            "nats://:4222",
            "nats://u:%zz@h",
            "nats://[::1",
        ] {
            assert_eq!(split_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "127.8.9.1", "::1", "localhost", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "0.0.0.0",
            "nats.example.com",
            "::",
            "192.168.1.2",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn debug_output_masks_every_secret() {
        let link = NatsLink {
            servers: vec!["nats://h:4222".into()],
            login: Login::Password {
                user: "relay-a".into(),
                password: Secret::new("hunter2-password"),
            },
            tls: NatsTls::default(),
        };
        let text = format!("{link:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("MASKED"), "{text}");
        for login in [
            Login::Token(Secret::new("tok-secret")),
            Login::Nkey(Secret::new("SUAseedsecret")),
            Login::Creds(Secret::new("-----BEGIN NATS USER JWT----- secret")),
        ] {
            let text = format!("{login:?} {}", login.describe());
            assert!(!text.contains("secret"), "{text}");
        }
    }
}
