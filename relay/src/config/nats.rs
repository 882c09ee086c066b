//! `--cluster` and its login flags turned into a [`NatsLink`]: the URLs split into addresses
//! and the login they carry (percent-decoded), one login for every URL, the credential files
//! read and checked, TLS required whenever a `tls://` URL, a CA or a client certificate is
//! given, and no NATS off loopback without a credential unless `--cluster-insecure`. Pure: no
//! connection is made here, so a refusal comes before anything is dialled.

use std::path::{Path, PathBuf};

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

/// Where the cluster's NATS servers are, how to log in, and who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS servers, login and TLS.
    pub nats: NatsLink,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// Replicas of the buckets and streams this node creates (3 with a three-server NATS
    /// cluster); existing ones keep theirs.
    pub replicas: usize,
}

/// The flags [`parse`] reads.
#[derive(Debug, Default)]
pub struct LinkFlags<'a> {
    /// `--cluster`, one URL per server.
    pub urls: &'a [String],
    /// `--cluster-creds`.
    pub creds: Option<&'a Path>,
    /// `--cluster-nkey`.
    pub nkey: Option<&'a Path>,
    /// `--cluster-ca`.
    pub ca: Option<&'a Path>,
    /// `--cluster-cert` and `--cluster-key`.
    pub client: Option<(&'a Path, &'a Path)>,
    /// `--cluster-insecure`.
    pub insecure: bool,
}

/// `--cluster` and its login flags do not make one safe way to reach NATS (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A NATS URL off loopback and no credential.
    #[error("refusing to join NATS at {0} without credentials: anyone who reaches it could read deliveries, add client tokens and forge deliveries; log in with nats://user:pass@host, --cluster-creds FILE, --cluster-nkey FILE or --cluster-cert/--cluster-key (docs/cluster.md), or pass --cluster-insecure on a test network")]
    WithoutCredentials(String),
    /// A `--cluster` value is not a NATS URL (shown without its user info).
    #[error("invalid --cluster URL {0:?}: use nats://[user:pass@]host:4222 or tls://host:4222, comma-separated")]
    Url(String),
    /// The URLs carry different logins.
    #[error("the --cluster URLs carry different logins; give every URL the same user:pass, or none and pass --cluster-creds or --cluster-nkey")]
    Logins,
    /// A login in the URL and a credentials or NKey file.
    #[error("--cluster carries a login in its URL and {0} gives another; pick one way to log in to NATS")]
    LoginTwice(&'static str),
    /// A credentials or NKey file cannot be used.
    #[error("could not load {flag} {path}: {reason}; pass {expected}")]
    File {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its contents).
        reason: String,
        /// What the flag takes.
        expected: &'static str,
    },
}

/// Turns the flags into a [`NatsLink`], or the sentence that refuses them.
pub fn parse(flags: &LinkFlags<'_>) -> Result<NatsLink, LinkError> {
    let mut servers = Vec::with_capacity(flags.urls.len());
    let mut logins = Vec::new();
    let mut tls_url = false;
    let mut off_loopback = None;
    for url in flags.urls {
        let split = split_url(url).ok_or_else(|| LinkError::Url(without_userinfo(url)))?;
        tls_url |= split.address.starts_with("tls://");
        if !is_loopback(&split.host) && off_loopback.is_none() {
            off_loopback = Some(split.address.clone());
        }
        match (split.user, split.password) {
            (Some(user), Some(password)) => logins.push(Login::Password { user, password }),
            (Some(token), None) => logins.push(Login::Token(Secret::new(token))),
            _ => {}
        }
        servers.push(split.address);
    }
    let url_login = match logins.split_first() {
        None => None,
        Some((first, rest)) if rest.iter().all(|l| l == first) => Some(first.clone()),
        Some(_) => return Err(LinkError::Logins),
    };
    let file_login = match (flags.creds, flags.nkey) {
        (Some(path), _) => Some(("--cluster-creds", Login::Creds(read_creds(path)?))),
        (None, Some(path)) => Some(("--cluster-nkey", Login::Nkey(read_nkey(path)?))),
        (None, None) => None,
    };
    let login = match (url_login, file_login) {
        (Some(_), Some((flag, _))) => return Err(LinkError::LoginTwice(flag)),
        (Some(login), None) | (None, Some((_, login))) => login,
        (None, None) => Login::Anonymous,
    };
    let client = flags
        .client
        .map(|(cert, key)| (cert.to_path_buf(), key.to_path_buf()));
    let link = NatsLink {
        servers,
        login,
        tls: NatsTls {
            required: tls_url || flags.ca.is_some() || client.is_some(),
            ca: flags.ca.map(Path::to_path_buf),
            client,
        },
    };
    match off_loopback {
        Some(address) if !link.has_credential() && !flags.insecure => {
            Err(LinkError::WithoutCredentials(address))
        }
        _ => Ok(link),
    }
}

fn read_secret_file(
    flag: &'static str,
    path: &Path,
    expected: &'static str,
) -> Result<String, LinkError> {
    std::fs::read_to_string(path).map_err(|e| LinkError::File {
        flag,
        path: path.to_path_buf(),
        reason: e.to_string(),
        expected,
    })
}

fn read_nkey(path: &Path) -> Result<Secret, LinkError> {
    const EXPECTED: &str = "a file holding the NATS user's NKey seed (one line starting with SU)";
    let text = read_secret_file("--cluster-nkey", path, EXPECTED)?;
    let seed = text.trim();
    if seed.starts_with("SU") && seed.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(Secret::new(seed))
    } else {
        Err(LinkError::File {
            flag: "--cluster-nkey",
            path: path.to_path_buf(),
            reason: "not a user NKey seed".into(),
            expected: EXPECTED,
        })
    }
}

fn read_creds(path: &Path) -> Result<Secret, LinkError> {
    const EXPECTED: &str = "a NATS .creds file (a user JWT and its NKey seed, as nsc writes it)";
    let text = read_secret_file("--cluster-creds", path, EXPECTED)?;
    // A user JWT and its seed, each between the markers nsc writes (what NATS clients parse).
    let has = |what: &str| text.contains(&format!("-----BEGIN {what}-----"));
    match has("NATS USER JWT") && has("USER NKEY SEED") {
        true => Ok(Secret::new(text)),
        false => Err(LinkError::File {
            flag: "--cluster-creds",
            path: path.to_path_buf(),
            reason: "not a credentials file".into(),
            expected: EXPECTED,
        }),
    }
}

/// `url` with anything before an `@` in its authority replaced by `…`, for messages.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => {
            let sep = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{sep}…@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
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
                .map(Secret::new),
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
}
