//! Sends deliveries to the local server (`--forward-to`) over a pooled keep-alive client, and
//! guards the origin: whatever path the relay sends, the request goes to the `--forward-to`
//! scheme and authority, under its path (or a `--route` path on the same origin). Deliveries
//! whose event `--events` leaves out are answered here without reaching the local server.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::event::Envelope;
use illumitunnel::headers::{is_hop_by_hop, Header};

/// How long the local server may take to answer; the relay gives the sender the same time.
pub const FORWARD_TIMEOUT: Duration = illumitunnel_relay::config::DEFAULT_RESPONSE_TIMEOUT;
/// Idle keep-alive connections kept to the local server.
const POOL_MAX_IDLE: usize = 256;
/// How long an idle keep-alive connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Header `trigger` adds to deliveries it sends through a tunnel, so the `listen` that receives
/// one records it as triggered. It stays on the request the local server gets.
pub const TRIGGER_HEADER: &str = "x-illumitunnel-trigger";
/// Largest local response body read unless `--max-body` says otherwise.
pub const DEFAULT_MAX_RESPONSE: usize = illumitunnel_relay::config::DEFAULT_MAX_BODY;
/// What a delivery `--events` leaves out is answered with, so IllumiChat does not retry it.
pub const SKIPPED_BODY: &[u8] = br#"{"skipped":true}"#;

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

/// The local server's answer, or why there was none.
pub struct Forwarded {
    /// Full URI the request went to (or would have, when skipped).
    pub uri: Uri,
    /// Status, headers and body, or a one-sentence error.
    pub result: Result<ResponseRecord, String>,
    /// From sending to the complete answer.
    pub duration: Duration,
    /// Whether `--events` left it out: answered [`SKIPPED_BODY`], never sent.
    pub skipped: bool,
    /// [`Source::Trigger`] when it carries [`TRIGGER_HEADER`], else [`Source::Tunnel`].
    pub source: Source,
}

/// Which deliveries go where by event type (`listen --events` and `--route`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Forward only these event types; `None` forwards all.
    pub only: Option<Vec<String>>,
    /// Event type → path on the `--forward-to` origin.
    pub routes: Vec<(String, String)>,
}

/// A pooled keep-alive client bound to one [`Target`].
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpsConnector<crate::proxy::Connector>, Full<Bytes>>,
    target: std::sync::Arc<Target>,
    /// `--route`s as targets, by event type.
    routes: std::sync::Arc<Vec<(String, Target)>>,
    only: Option<std::sync::Arc<Vec<String>>>,
    timeout: Duration,
    max_body: usize,
    /// What a certificate error tells the user to pass, after "; ".
    trust_remedy: &'static str,
    /// `listen --fan-out`: nothing is sent; every delivery is recorded as skipped.
    observe_only: bool,
}

/// The remedy for an untrusted https local server, for `listen`'s forwarder.
pub const FORWARD_TRUST_REMEDY: &str = "pass its CA with --forward-ca PEM (for mkcert: rootCA.pem in the folder `mkcert -CAROOT` prints) or pass --forward-insecure";

impl Forwarder {
    /// A client for `target` (http, or https verified against the OS trust store and the web
    /// PKI roots).
    pub fn new(target: Target) -> Self {
        Self::build_with(target, system_tls(), false)
    }

    /// A client for a server on the internet (IllumiChat's API): like [`Forwarder::new`], and
    /// https requests go through the proxy `HTTPS_PROXY`/`NO_PROXY` name.
    pub fn through_proxies(target: Target) -> Self {
        Self::build_with(target, system_tls(), true)
    }

    /// A client for `target` that checks https certificates with `tls` (e.g. a tunnel's
    /// self-signed relay for `trigger`).
    pub fn with_tls(target: Target, tls: rustls::ClientConfig) -> Self {
        Self::build_with(target, Some(tls), false)
    }

    /// The same client (pool, trust, limits) sending to another target.
    pub fn retarget(&self, target: Target) -> Self {
        Forwarder {
            target: std::sync::Arc::new(target),
            routes: std::sync::Arc::new(Vec::new()),
            only: None,
            ..self.clone()
        }
    }

    /// The same client, whose certificate errors end with `remedy` (e.g. [`FORWARD_TRUST_REMEDY`]).
    pub fn with_trust_remedy(mut self, remedy: &'static str) -> Self {
        self.trust_remedy = remedy;
        self
    }

    fn build_with(target: Target, tls: Option<rustls::ClientConfig>, proxied: bool) -> Self {
        // The connector sets ALPN itself and refuses a configuration that already has it.
        let tls = tls.map(|mut tls| {
            tls.alpn_protocols.clear();
            tls
        });
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let http = if proxied {
            crate::proxy::Connector::from_env(http)
        } else {
            crate::proxy::Connector::direct(http)
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let https = match tls {
            Some(config) => builder.with_tls_config(config),
            // The ring provider supports the default versions; this arm only keeps the type total.
            None => builder.with_webpki_roots(),
        }
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);
        Forwarder {
            client,
            target: std::sync::Arc::new(target),
            routes: std::sync::Arc::new(Vec::new()),
            only: None,
            timeout: FORWARD_TIMEOUT,
            max_body: DEFAULT_MAX_RESPONSE,
            trust_remedy: "",
            observe_only: false,
        }
    }

    /// The same client that sends nothing (`listen --fan-out`): every delivery is answered
    /// here as skipped, so another `listen` on this machine is the only one that forwards.
    pub fn observer(mut self) -> Self {
        self.observe_only = true;
        self
    }

    /// The same client with `--events` and `--route` applied; route paths stay on the target's
    /// origin.
    pub fn with_rules(mut self, rules: &Rules) -> Self {
        self.routes = std::sync::Arc::new(
            rules
                .routes
                .iter()
                .map(|(event, path)| (event.clone(), self.target.with_path(path)))
                .collect(),
        );
        self.only = rules.only.clone().map(std::sync::Arc::new);
        self
    }

    /// The same client with another bound on response bodies (`--max-body`).
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    /// The same client with another bound on each request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The target this client sends to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends `request` to the target (or its event's route) and reads the whole answer; a
    /// delivery whose event `--events` leaves out is answered here instead.
    pub async fn forward(&self, request: &RequestRecord) -> Forwarded {
        let source = if illumitunnel::headers::get(&request.headers, TRIGGER_HEADER).is_some() {
            Source::Trigger
        } else {
            Source::Tunnel
        };
        let event = if self.only.is_some() || !self.routes.is_empty() {
            Envelope::parse(&request.body).map(|e| e.event)
        } else {
            None
        };
        let target = event
            .as_deref()
            .and_then(|e| self.routes.iter().find(|(name, _)| name == e))
            .map_or(&*self.target, |(_, t)| t);
        let uri = target.uri_for(&request.path, &request.query);
        // A body with no readable event is forwarded: only a known, unlisted type is skipped.
        let unlisted = |event: &String| {
            self.only
                .as_ref()
                .is_some_and(|only| !only.iter().any(|o| o == event))
        };
        if self.observe_only || event.as_ref().is_some_and(unlisted) {
            return Forwarded {
                uri,
                result: Ok(skipped_answer()),
                duration: Duration::ZERO,
                skipped: true,
                source,
            };
        }
        let started = Instant::now();
        let result = match self.build(target, request, uri.clone()) {
            Ok(req) => match tokio::time::timeout(self.timeout, self.send(req)).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "timed out after {} s waiting for {}",
                    self.timeout.as_secs(),
                    self.target.host_port()
                )),
            },
            Err(e) => Err(e),
        };
        Forwarded {
            uri,
            result,
            duration: started.elapsed(),
            skipped: false,
            source,
        }
    }

    fn build(
        &self,
        target: &Target,
        request: &RequestRecord,
        uri: Uri,
    ) -> Result<Request<Full<Bytes>>, String> {
        let method = Method::from_bytes(request.method.as_bytes())
            .map_err(|_| format!("invalid method {:?} in delivery", request.method))?;
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(headers) = req.headers_mut() {
            if let Ok(host) = HeaderValue::from_str(target.authority.as_str()) {
                headers.insert(http::header::HOST, host);
            }
            for (name, value) in &request.headers {
                if name.eq_ignore_ascii_case("host") || is_hop_by_hop(name) {
                    continue;
                }
                // A header the local request cannot carry is dropped rather than failing it.
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(value),
                ) else {
                    tracing::debug!(header = %name, "dropped a header hyper cannot send");
                    continue;
                };
                headers.append(name, value);
            }
        }
        req.body(Full::new(request.body.clone()))
            .map_err(|e| format!("could not build the local request: {e}"))
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<ResponseRecord, String> {
        /// Most header bytes a local answer may carry: one protocol head, less room for framing.
        const MAX_RESPONSE_HEAD: usize = illumitunnel::protocol::MAX_HEAD - 1024;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| describe_error(&e, &self.target.host_port(), self.trust_remedy))?;
        let status = resp.status().as_u16();
        let headers: Vec<Header> = resp
            .headers()
            .iter()
            .filter(|(n, _)| !is_hop_by_hop(n.as_str()))
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        // The answer's head must fit one message to the relay, or the link would break on it.
        let head_bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 6).sum();
        if head_bytes > MAX_RESPONSE_HEAD {
            return Err(format!(
                "{} answered {status} with {head_bytes} bytes of headers, more than the {MAX_RESPONSE_HEAD} a tunnel carries; the sender got 502; send fewer or smaller headers",
                self.target.host_port()
            ));
        }
        // Read no further than the bound: a local server cannot make the client (or the relay)
        // hold an unbounded answer.
        let body = http_body_util::Limited::new(resp.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!(
                        "{} answered {status} with a body over --max-body ({} bytes); the response was cut and the sender got 502; raise --max-body",
                        self.target.host_port(),
                        self.max_body
                    )
                } else {
                    format!(
                        "{} broke off its response body: {e}",
                        self.target.host_port()
                    )
                }
            })?
            .to_bytes();
        Ok(ResponseRecord {
            status,
            headers,
            body,
        })
    }
}

/// The rustls error inside `err`, looking through io::Errors that wrap it (io::Error's `source`
/// skips the error it wraps, and the TLS connector wraps one io::Error in another).
fn find_rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = err.downcast_ref::<std::io::Error>()?.get_ref()?;
    find_rustls_error(inner)
}

/// The OS trust store and web PKI roots (see `session::tls`).
fn system_tls() -> Option<rustls::ClientConfig> {
    crate::session::tls::client_config(crate::session::tls::Trust::System(Vec::new()))
        .ok()
        .map(|c| (*c).clone())
}

/// The answer for a delivery `--events` leaves out.
fn skipped_answer() -> ResponseRecord {
    ResponseRecord {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: Bytes::from_static(SKIPPED_BODY),
    }
}

/// One sentence for a failed local request, naming the cause and the target; a certificate
/// error ends with `trust_remedy` when there is one.
fn describe_error(
    err: &(dyn std::error::Error + 'static),
    host_port: &str,
    trust_remedy: &str,
) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut innermost = err.to_string();
    while let Some(e) = source {
        if let Some(rustls::Error::InvalidCertificate(cause)) = find_rustls_error(e) {
            let problem = crate::session::tls::certificate_problem(cause);
            return if trust_remedy.is_empty() {
                format!("{host_port} {problem}")
            } else {
                format!("{host_port} {problem}; {trust_remedy}")
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return format!("connection refused to {host_port}"),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    return format!("{host_port} closed the connection without answering")
                }
                TimedOut => return format!("timed out connecting to {host_port}"),
                _ => {}
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return format!("{host_port} closed the connection without answering");
            }
        }
        innermost = e.to_string();
        source = e.source();
    }
    if innermost.contains("dns error") || innermost.contains("failed to lookup") {
        return format!("could not resolve {host_port}");
    }
    format!("could not reach {host_port}: {innermost}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn parses_good_targets() {
        let t = target("http://localhost:3000/webhooks/illumichat/");
        assert_eq!(t.to_string(), "http://localhost:3000/webhooks/illumichat");
        assert_eq!(t.host_port(), "localhost:3000");
        assert_eq!(
            target("https://example.test").host_port(),
            "example.test:443"
        );
        assert_eq!(
            target("http://[::1]:8080").to_string(),
            "http://[::1]:8080/"
        );
    }

    #[test]
    fn rejects_bad_targets_with_a_sentence() {
        for (input, needle) in [
            ("localhost:3000", "missing http:// or https://"),
            ("ftp://host/x", "only http:// and https://"),
            ("http://", "not a URL"),
            ("not a url", "not a URL"),
            ("http://user:pw@localhost:3000", "user info"),
            ("/just/a/path", "not a URL"),
        ] {
            let err = Target::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(!err.ends_with('.'), "{err}");
        }
    }

    #[test]
    fn delivery_path_extends_the_forward_path() {
        let t = target("http://127.0.0.1:3000/webhooks/illumichat");
        assert_eq!(
            t.uri_for("/", "").to_string(),
            "http://127.0.0.1:3000/webhooks/illumichat"
        );
        assert_eq!(
            t.uri_for("", "").to_string(),
            "http://127.0.0.1:3000/webhooks/illumichat"
        );
        assert_eq!(
            t.uri_for("/sub/x", "a=1&b=%20").to_string(),
            "http://127.0.0.1:3000/webhooks/illumichat/sub/x?a=1&b=%20"
        );
        let root = target("http://127.0.0.1:3000");
        assert_eq!(
            root.uri_for("/x", "").to_string(),
            "http://127.0.0.1:3000/x"
        );
        assert_eq!(
            root.uri_for("//evil.example/x", "").to_string(),
            "http://127.0.0.1:3000/evil.example/x"
        );
        let with_query = target("http://127.0.0.1:3000/h?key=1");
        assert_eq!(
            with_query.uri_for("/", "a=2").to_string(),
            "http://127.0.0.1:3000/h?key=1&a=2"
        );
    }

    #[test]
    fn dot_segments_never_climb_above_the_forward_path() {
        let t = target("http://127.0.0.1:3000/hooks");
        for (path, want) in [
            ("/../../admin", "/hooks/admin"),
            ("/a/../b", "/hooks/b"),
            ("/a/%2E%2e/%2e/b", "/hooks/b"),
            ("/a/./", "/hooks/a/"),
            ("/a/..", "/hooks"),
            ("/plain/path", "/hooks/plain/path"),
        ] {
            assert_eq!(t.uri_for(path, "").path(), want, "{path}");
        }
    }

    #[test]
    fn hostile_paths_never_leave_the_origin() {
        let t = target("http://127.0.0.1:3000/hooks");
        for hostile in [
            "//evil.example/x",
            "/..%2f..",
            "/../../admin",
            "http://evil/x",
            "@evil",
            "/@evil",
            "evil.example:80/x",
            "/x#frag",
            "/x?smuggled=1",
            "/\r\nHost: evil",
            "/ü",
            "//",
            "",
        ] {
            let uri = t.uri_for(hostile, "q=\r\n#x");
            assert_eq!(uri.scheme_str(), Some("http"), "{hostile}");
            assert_eq!(
                uri.authority().map(|a| a.as_str()),
                Some("127.0.0.1:3000"),
                "{hostile}"
            );
            assert!(uri.path().starts_with("/hooks"), "{hostile} -> {uri}");
            // Re-parsing the text form must land on the same origin too.
            let reparsed: Uri = uri.to_string().parse().unwrap();
            assert_eq!(reparsed.authority(), uri.authority(), "{hostile}");
            assert_eq!(reparsed.path(), uri.path(), "{hostile}");
        }
        assert_eq!(
            t.uri_for("//evil.example/x", "").to_string(),
            "http://127.0.0.1:3000/hooks//evil.example/x"
        );
        assert_eq!(
            t.uri_for("http://evil/x", "").to_string(),
            "http://127.0.0.1:3000/hooks/http://evil/x"
        );
        assert_eq!(
            t.uri_for("/x?smuggled=1#f", "").path(),
            "/hooks/x%3Fsmuggled=1%23f"
        );
    }

    #[test]
    fn error_sentences_name_the_cause() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            describe_error(&refused, "127.0.0.1:3000", ""),
            "connection refused to 127.0.0.1:3000"
        );
    }

    #[test]
    fn certificate_errors_name_the_cause_and_the_flags() {
        #[derive(Debug)]
        struct CaUsedAsEndEntity;
        impl std::fmt::Display for CaUsedAsEndEntity {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("CaUsedAsEndEntity")
            }
        }
        impl std::error::Error for CaUsedAsEndEntity {}
        // As the TLS connector reports it: an io::Error around an io::Error around rustls's.
        let wrapped = |cause: rustls::CertificateError| {
            let tls = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(cause),
            );
            std::io::Error::other(tls)
        };
        let mkcert = wrapped(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(CaUsedAsEndEntity),
        )));
        let sentence = describe_error(&mkcert, "localhost:3443", FORWARD_TRUST_REMEDY);
        assert!(
            sentence.starts_with(
                "localhost:3443 presented a CA certificate as its server certificate (CaUsedAsEndEntity)"
            ),
            "{sentence}"
        );
        assert!(
            sentence.contains("; pass its CA with --forward-ca PEM"),
            "{sentence}"
        );
        assert!(sentence.contains("--forward-insecure"), "{sentence}");
        assert!(!sentence.contains("OtherError"), "{sentence}");
        let unknown = wrapped(rustls::CertificateError::UnknownIssuer);
        assert_eq!(
            describe_error(&unknown, "localhost:3443", ""),
            "localhost:3443 presented a certificate from an issuer this client does not trust"
        );
    }

    fn envelope(body: &'static [u8], headers: Vec<Header>) -> RequestRecord {
        RequestRecord {
            method: "POST".into(),
            path: "/sub".into(),
            query: "q=1".into(),
            headers,
            body: Bytes::from_static(body),
        }
    }

    #[tokio::test]
    async fn events_skip_and_routes_pick_the_path() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let rules = Rules {
            only: Some(vec!["ticket.created".into()]),
            routes: vec![("ticket.created".into(), "/tickets/".into())],
        };
        let f =
            Forwarder::new(target(&format!("http://127.0.0.1:{port}/hooks"))).with_rules(&rules);

        let skipped = f
            .forward(&envelope(br#"{"event":"lead.captured"}"#, vec![]))
            .await;
        assert!(skipped.skipped);
        assert_eq!(skipped.source, Source::Tunnel);
        let answer = skipped.result.unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, SKIPPED_BODY));

        let routed = f
            .forward(&envelope(
                br#"{"event":"ticket.created"}"#,
                vec![(TRIGGER_HEADER.into(), b"1".to_vec())],
            ))
            .await;
        assert!(!routed.skipped);
        assert_eq!(routed.source, Source::Trigger);
        assert_eq!(
            routed.uri.to_string(),
            format!("http://127.0.0.1:{port}/tickets/sub?q=1")
        );
        assert!(routed.result.is_err(), "nothing listens there");

        // No readable event: forwarded to the --forward-to path, never skipped.
        let plain = f.forward(&envelope(b"not json", vec![])).await;
        assert!(!plain.skipped);
        assert_eq!(
            plain.uri.to_string(),
            format!("http://127.0.0.1:{port}/hooks/sub?q=1")
        );
    }

    #[tokio::test]
    async fn refused_local_server_is_one_sentence() {
        // Bind then drop to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let f = Forwarder::new(target(&format!("http://127.0.0.1:{port}/hooks")));
        let out = f
            .forward(&RequestRecord {
                method: "POST".into(),
                path: "/".into(),
                ..Default::default()
            })
            .await;
        assert_eq!(
            out.result.unwrap_err(),
            format!("connection refused to 127.0.0.1:{port}")
        );
    }

    #[tokio::test]
    async fn a_local_response_over_max_body_is_cut_and_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // Two requests at most, each answered with 5,000 bytes.
            for _ in 0..2 {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0; 4096];
                let _ = conn.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 5000\r\nconnection: close\r\n\r\n";
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&[b'x'; 5000]).await;
            }
        });
        let f = Forwarder::new(target(&format!("http://{addr}/hooks")));
        let fits = f
            .clone()
            .with_max_body(5000)
            .forward(&envelope(b"{}", vec![]))
            .await;
        assert_eq!(fits.result.unwrap().body.len(), 5000);
        let cut = f
            .with_max_body(1000)
            .forward(&envelope(b"{}", vec![]))
            .await;
        let err = cut.result.unwrap_err();
        assert!(err.contains("over --max-body (1000 bytes)"), "{err}");
        assert!(
            err.contains("the response was cut and the sender got 502"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_local_response_head_too_large_for_the_link_fails_with_a_sentence() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0; 4096];
            let _ = conn.read(&mut buf).await;
            let big = "v".repeat(50_000);
            let head = format!(
                "HTTP/1.1 200 OK\r\nx-a: {big}\r\nx-b: {big}\r\nx-c: {big}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
            let _ = conn.write_all(head.as_bytes()).await;
        });
        let f = Forwarder::new(target(&format!("http://{addr}/hooks")));
        let err = f
            .forward(&envelope(b"{}", vec![]))
            .await
            .result
            .unwrap_err();
        assert!(err.contains("bytes of headers, more than the"), "{err}");
        assert!(err.contains("the sender got 502"), "{err}");
    }
}
