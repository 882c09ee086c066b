//! What the HTTP layer does with one request: [`Handlers`] holds each role's narrow view
//! (ingress, sessions, access, metrics), and [`route_request`] sends the request to the one it
//! is for — a webhook to ingress, `/connect` to a websocket session, `/healthz`, `/metrics`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use crate::access::{self, Access, Refused};
use crate::budget::AnswerBody;
use crate::conn::ConnectionLimits;
use crate::error::IngressError;
use crate::ingress::{self, IngressContext, WebhookRequest};
use crate::metrics::Metrics;
use crate::placement::{Health, Placement};
use crate::proxy::{self, Origin, TrustedProxies};
use crate::route::{self, Route};
use crate::session::{self, SessionContext};

/// Longest between answering 101 and the websocket being usable.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTP layer dispatches to: each role gets its own narrow view.
pub(super) struct Handlers {
    pub(super) ingress: Arc<IngressContext>,
    pub(super) sessions: Arc<SessionContext>,
    pub(super) auth: Arc<Access>,
    pub(super) metrics: Arc<Metrics>,
    /// Whether this listener serves `/metrics` (only on loopback, and not behind a proxy).
    pub(super) serve_metrics: bool,
    /// `--trusted-proxy`: peers whose `X-Forwarded-For` names the sender.
    pub(super) proxies: TrustedProxies,
    /// Open connections, and senders behind a trusted proxy by their real address.
    pub(super) connections: Arc<ConnectionLimits>,
    pub(super) max_header_bytes: usize,
    pub(super) first_request_timeout: Duration,
    pub(super) idle_timeout: Duration,
    /// `X-Forwarded-Proto` on plain connections (the public URL's scheme behind a TLS proxy).
    pub(super) plain_proto: &'static str,
    pub(super) tracker: TaskTracker,
    /// `/healthz` says whether this node can answer (on a cluster: NATS reachable, state read).
    pub(super) placement: Arc<dyn Placement>,
    /// The next connection's id, for the budget's per-connection share.
    pub(super) next_connection: AtomicU64,
}

/// The connection a request came on.
#[derive(Clone, Copy)]
pub(super) struct Link {
    pub(super) peer: SocketAddr,
    /// The connection's id (all streams of an HTTP/2 connection share it).
    pub(super) connection: u64,
    pub(super) is_tls: bool,
}

pub(super) async fn route_request(
    handlers: Arc<Handlers>,
    req: Request<Incoming>,
    from: Link,
) -> Response<AnswerBody> {
    let Link {
        peer,
        connection,
        is_tls,
    } = from;
    if !route::check_method(req.method()) {
        let err = IngressError::MethodNotAllowed(req.method().to_string());
        return err.into_response().map(AnswerBody::from);
    }
    let limit = handlers.max_header_bytes;
    if head_size(&req) > limit {
        return IngressError::HeadTooLarge { limit }
            .into_response()
            .map(AnswerBody::from);
    }
    if let Err(why) = route::check_path(req.uri().path()) {
        return IngressError::BadPath(why)
            .into_response()
            .map(AnswerBody::from);
    }
    let origin = Origin::of(req.headers(), peer.ip(), &handlers.proxies);
    // Behind a trusted proxy the sender is known only now: count it while its request lasts.
    let _sender = match origin.via_trusted_proxy {
        true => match handlers.connections.admit_sender(origin.sender) {
            Some(slot) => Some(slot),
            None => return proxy::too_many_from(origin.sender).map(AnswerBody::from),
        },
        false => None,
    };
    let (parts, body) = req.into_parts();
    match route::parse(parts.uri.path()) {
        Route::Tunnel { tunnel, rest } => {
            let proto = if is_tls {
                "https"
            } else {
                handlers.plain_proto
            };
            let request = WebhookRequest {
                parts: &parts,
                tunnel,
                rest,
                origin: &origin,
                connection,
                proto,
            };
            let span = tracing::debug_span!("request", sender = %origin.sender);
            return ingress::handle(&handlers.ingress, request, body)
                .instrument(span)
                .await;
        }
        Route::Healthz => healthz(handlers.placement.as_ref()),
        Route::Metrics if handlers.serve_metrics => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(handlers.metrics.encode()),
        ),
        Route::Connect if handlers.placement.health() == Health::Starting => {
            IngressError::Starting.into_response()
        }
        Route::Connect => upgrade(&handlers, Request::from_parts(parts, body), origin.sender),
        Route::Metrics | Route::NotFound => IngressError::NotFound.into_response(),
    }
    .map(AnswerBody::from)
}

/// `ok` when this node can answer deliveries; on a cluster node it names the node and says
/// why not (503 while NATS is out of reach or the node is still reading the cluster's state,
/// so a load balancer sends new webhooks to nodes that can take them).
fn healthz(placement: &dyn Placement) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    let Some(node) = placement.node() else {
        return text(StatusCode::OK, plain, Bytes::from_static(b"ok"));
    };
    let (status, body) = match placement.health() {
        Health::Ready => (StatusCode::OK, format!("ok\nnode {node}: nats reachable\n")),
        Health::Starting => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("starting\nnode {node}: reading the cluster's tunnels, presence and heartbeats; deliveries get 503\n"),
        ),
        Health::Unreachable => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded\nnode {node}: nats unreachable; sessions held here keep working, deliveries that must be queued get 503\n"),
        ),
    };
    text(status, plain, Bytes::from(body))
}

/// The size of a request's line and headers as a sender wrote them (HTTP/1), or the same
/// measure for an HTTP/2 request.
fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

pub(super) fn text(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The websocket of an upgraded connection; `None` when the upgrade failed or timed out.
async fn open_websocket(
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Option<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
    match tokio::time::timeout(UPGRADE_TIMEOUT, on_upgrade).await {
        Ok(Ok(upgraded)) => {
            // An empty read buffer that grows with what the client sends, instead of
            // tungstenite's 4 KiB up front: most sessions idle (docs/benchmarks.md).
            let ws = WebSocketStream::from_partially_read(
                TokioIo::new(upgraded),
                Vec::new(),
                Role::Server,
                Some(session::ws_config()),
            )
            .await;
            Some(ws)
        }
        Ok(Err(err)) => {
            debug!(%err, "websocket upgrade failed");
            None
        }
        Err(_) => {
            debug!("websocket upgrade timed out");
            None
        }
    }
}

/// Answers a client's websocket upgrade with 101 and runs the session on a tracked task.
/// Failed token checks count against `sender`: behind a trusted proxy the real client, so one
/// guesser cannot keep out everyone who comes through the same proxy.
fn upgrade(handlers: &Handlers, req: Request<Incoming>, sender: IpAddr) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let has = |name: header::HeaderName, want: &str| {
        headers.get_all(name).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(want.as_bytes()))
        })
    };
    // Websocket upgrades exist on HTTP/1.1 only; clients negotiate http/1.1 for this path.
    let is_upgrade = req.version() == http::Version::HTTP_11
        && req.method() == http::Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::SEC_WEBSOCKET_VERSION, "13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_upgrade)
    else {
        return IngressError::NotWebsocket.into_response();
    };
    let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) else {
        return IngressError::NotWebsocket.into_response();
    };
    // The token is checked before anything is upgraded: a wrong one never sees a 101.
    let authorization = headers.get(header::AUTHORIZATION);
    let auth = match handlers
        .auth
        .check_from(sender, authorization.map(HeaderValue::as_bytes))
    {
        Ok(owner) => Ok(owner),
        Err(Refused::Unauthorized) => return IngressError::Unauthorized.into_response(),
        Err(Refused::Limited(limited)) => {
            let retry_after = limited.retry_after;
            return IngressError::TooManyTokenFailures { retry_after }.into_response();
        }
    };
    let on_upgrade = hyper::upgrade::on(req);
    let sessions = handlers.sessions.clone();
    let access = handlers.auth.clone();
    handlers.tracker.spawn(async move {
        // Boxed, so the upgrade's states do not stay reserved in the session's task.
        let Some(ws) = Box::pin(open_websocket(on_upgrade)).await else {
            return;
        };
        access::run_session(access, sessions, ws, auth).await;
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}
