//! The `--forward-to` origin: a validated URL, and the request target a delivery's path and
//! query become under it, with dot segments resolved and unsafe bytes percent-encoded so a
//! sender's path never leaves the origin or climbs above its path.

use std::fmt;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

/// A validated `--forward-to` URL: the only origin deliveries ever go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    scheme: Scheme,
    authority: Authority,
    /// Path without a trailing `/` unless it is just `/`.
    path: String,
    query: String,
}

/// Why a `--forward-to` value is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not parseable as a URL at all.
    #[error("invalid --forward-to {0:?}: not a URL; pass one such as http://localhost:3000/webhooks/illumichat")]
    NotUrl(String),
    /// `localhost:3000` and friends.
    #[error(
        "invalid --forward-to {0:?}: missing http:// or https://; pass one such as http://{0}"
    )]
    NoScheme(String),
    /// `ftp://…`.
    #[error("invalid --forward-to {0:?}: only http:// and https:// local servers are supported")]
    BadScheme(String),
    /// `http:///x`.
    #[error("invalid --forward-to {0:?}: missing host; pass one such as http://localhost:3000/webhooks/illumichat")]
    NoHost(String),
    /// `70000`.
    #[error("invalid --forward-to {0:?}: not a port; pass a port from 1 to 65535, e.g. 3000")]
    BadPort(String),
    /// `http://user:pw@host`.
    #[error("invalid --forward-to {0:?}: user info is not supported; put credentials in your local server instead")]
    UserInfo(String),
}

impl Target {
    /// Parses and checks a `--forward-to` value.
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        let s = s.trim();
        let uri: Uri = s.parse().map_err(|_| TargetError::NotUrl(s.to_string()))?;
        let scheme = match uri.scheme() {
            None if uri.authority().is_some() || !s.starts_with('/') => {
                return Err(TargetError::NoScheme(s.to_string()))
            }
            None => return Err(TargetError::NotUrl(s.to_string())),
            Some(scheme) => scheme.clone(),
        };
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(TargetError::BadScheme(s.to_string()));
        }
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| TargetError::NoHost(s.to_string()))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(TargetError::UserInfo(s.to_string()));
        }
        let path = match uri.path() {
            "" | "/" => "/".to_string(),
            p => p.trim_end_matches('/').to_string(),
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        Ok(Target {
            scheme,
            authority,
            path,
            query: uri.query().unwrap_or_default().to_string(),
        })
    }

    /// Parses `listen TARGET` and `--forward-to`: a port (`3000` is `http://localhost:3000`),
    /// `host:port/path` (taken as `http://`), or a full http(s) URL.
    pub fn parse_shorthand(s: &str) -> Result<Self, TargetError> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u16>() {
                Ok(port) if port > 0 => Target::parse(&format!("http://localhost:{port}")),
                _ => Err(TargetError::BadPort(s.to_string())),
            };
        }
        if s.contains("://") || s.starts_with('/') || s.is_empty() {
            return Target::parse(s);
        }
        Target::parse(&format!("http://{s}"))
    }

    /// Host and port, as the `host` header carries them.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The path deliveries go under: `/` or a path without a trailing `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether requests go over TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The same origin and query with another path (a `--route` PATH, which starts with `/`).
    pub fn with_path(&self, path: &str) -> Target {
        let path = match path.trim_end_matches('/') {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        Target {
            path,
            ..self.clone()
        }
    }

    /// Just the origin, `scheme://host:port/`, with no path or query of its own.
    pub fn origin(&self) -> Target {
        Target {
            path: "/".into(),
            query: String::new(),
            ..self.clone()
        }
    }

    /// `host:port` as errors name it, with the scheme's default port filled in.
    pub fn host_port(&self) -> String {
        match self.authority.port_u16() {
            Some(_) => self.authority.to_string(),
            None if self.scheme == Scheme::HTTPS => format!("{}:443", self.authority),
            None => format!("{}:80", self.authority),
        }
    }

    /// The URI a delivery with `path` and `query` goes to. The scheme and authority always come
    /// from `--forward-to`; `path` only ever extends its path, with anything a path may not
    /// contain percent-encoded, so no relay-sent value can change where the request goes.
    pub fn uri_for(&self, path: &str, query: &str) -> Uri {
        let path = &remove_dot_segments(path);
        let mut pq = String::with_capacity(self.path.len() + path.len() + query.len() + 2);
        if path.is_empty() || path == "/" {
            pq.push_str(&self.path);
        } else {
            if self.path != "/" {
                pq.push_str(&self.path);
            }
            // Under a root target, `//host/x` would read as protocol-relative to some frameworks.
            let path = if self.path == "/" {
                path.trim_start_matches('/')
            } else {
                path
            };
            if !path.starts_with('/') {
                pq.push('/');
            }
            push_encoded(&mut pq, path, false);
        }
        let query = match (self.query.is_empty(), query.is_empty()) {
            (_, true) => self.query.clone(),
            (true, false) => query.to_string(),
            (false, false) => format!("{}&{query}", self.query),
        };
        if !query.is_empty() {
            pq.push('?');
            push_encoded(&mut pq, &query, true);
        }
        let pq = PathAndQuery::try_from(pq).unwrap_or_else(|_| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .unwrap_or_else(|_| Uri::from_static("/"))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.path)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        Ok(())
    }
}

/// Resolves `.` and `..` segments (also percent-encoded, `%2e`) inside a delivery path, so a
/// sender's `/t/x/../../admin` cannot climb above the `--forward-to` path on servers that
/// normalize paths after routing; `..` at the top is dropped, as RFC 3986 §5.2.4 does.
pub(crate) fn remove_dot_segments(path: &str) -> String {
    let is_dot = |seg: &str| seg == "." || seg.eq_ignore_ascii_case("%2e");
    let is_dot_dot = |seg: &str| {
        let lower = seg.to_ascii_lowercase();
        matches!(lower.as_str(), ".." | ".%2e" | "%2e." | "%2e%2e")
    };
    if !path.split('/').any(|seg| is_dot(seg) || is_dot_dot(seg)) {
        return path.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        if is_dot(seg) || is_dot_dot(seg) {
            if is_dot_dot(seg) && out.len() > 1 {
                out.pop();
            }
            // A dot segment at the end leaves a directory path: keep the trailing slash.
            if i == last {
                out.push("");
            }
        } else {
            out.push(seg);
        }
    }
    let joined = out.join("/");
    if path.starts_with('/') && !joined.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Appends `s`, percent-encoding bytes a request target may not hold (and `?`/`#` in a path).
fn push_encoded(out: &mut String, s: &str, is_query: bool) {
    for b in s.bytes() {
        let keep = b.is_ascii_graphic()
            && !matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#'
            )
            && (is_query || b != b'?');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}
