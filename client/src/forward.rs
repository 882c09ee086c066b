//! Sends deliveries to the local server (`--forward-to`) over a pooled keep-alive client, and
//! guards the origin: whatever path the relay sends, the request goes to the `--forward-to`
//! scheme and authority, under its path (or a `--route` path on the same origin). Deliveries
//! whose event `--events` leaves out are answered here without reaching the local server.

mod target;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::event::Envelope;
use illumitunnel::headers::{is_hop_by_hop, Header};

pub(crate) use self::target::remove_dot_segments;
pub use self::target::Target;

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
            if let Ok(host) = HeaderValue::from_str(target.authority().as_str()) {
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
mod tests;
