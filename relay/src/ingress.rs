//! Webhook ingress: a request to `/t/{tunnel}/{rest}?{query}` becomes a delivery. The relay
//! checks the tunnel and the body size, reads the body within the in-flight budget and
//! `--min-body-rate` (`ingress::body`), rewrites the headers (hop-by-hop out, `X-Forwarded-*`
//! in), sends the delivery to the tunnel's first session (copies to the others) and answers the
//! sender with the local server's response, or with an [`IngressError`].
//!
//! A delivery is never lost to a missing client: with no session it is committed to the
//! offline queue and answered 202; when its session vanishes before answering, it is re-sent to
//! the tunnel's next session or queued; when the relay shuts down before an answer arrives, it
//! is queued.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use illumitunnel::headers::{strip_hop_by_hop, Header};
use illumitunnel::DeliveryId;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::budget::{AnswerBody, Holder, InflightBudget};
use crate::config::OfflinePolicy;
use crate::error::IngressError;
use crate::metrics::{Metrics, Outcome};
use crate::placement::{Authority, Health, Placement};
use crate::proxy::{self, Origin};
use crate::queue::{QueueError, QueuedDelivery};
use crate::session::handle::{OutgoingDelivery, Reply, SessionHandle};
use crate::tunnel::{QueueTicket, Route, Tunnels};

mod body;
use body::BodyRules;

/// What webhook ingress works with.
pub(crate) struct IngressContext {
    pub tunnels: Arc<Tunnels>,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
    pub response_timeout: Duration,
    pub offline: OfflinePolicy,
    /// Cancelled when the relay starts shutting down.
    pub shutdown: CancellationToken,
    /// Request bodies and answers in memory across all requests.
    pub budget: Arc<InflightBudget>,
    /// `--min-body-rate` in bytes a second; 0: off.
    pub min_body_rate: u64,
    /// Time a body has before the minimum rate applies.
    pub min_body_grace: Duration,
    /// Which node decides which tunnel (always this one on a single relay).
    pub placement: Arc<dyn Placement>,
    /// On a cluster node: the other nodes.
    pub peers: Option<Arc<dyn Peers>>,
}

/// The other nodes of a cluster, as ingress reaches them; the NATS adapter implements it, a
/// single relay has none.
#[async_trait::async_trait]
pub(crate) trait Peers: Send + Sync {
    /// Hands `delivery` to `node`, which decides `tunnel`'s order, and returns its answer (or
    /// decides here through [`decide`] when it never left this node).
    async fn hand_to(
        &self,
        ctx: &IngressContext,
        node: &str,
        tunnel: &str,
        delivery: QueuedDelivery,
    ) -> Result<Answered, IngressError>;

    /// Sends fan-out copies to the other nodes holding sessions of `tunnel`.
    async fn copy_to_others(&self, tunnel: &str, delivery: &QueuedDelivery);
}

/// A webhook request for `tunnel` with `rest` below it, as it arrived.
pub(crate) struct WebhookRequest<'a> {
    /// The request head.
    pub parts: &'a Parts,
    /// The raw tunnel segment of the path.
    pub tunnel: &'a str,
    /// The path below the tunnel.
    pub rest: &'a str,
    /// Where the request came from, as the relay believes it: `origin.sender` is the sender's
    /// address (behind a trusted proxy, the one its proxy names).
    pub origin: &'a Origin,
    /// The connection it came on (all streams of an HTTP/2 connection share it).
    pub connection: u64,
    /// `X-Forwarded-Proto` for this connection.
    pub proto: &'static str,
}

/// Answers one webhook request and counts its outcome. The answer's body is counted in the
/// in-flight budget until it has been handed to the connection; one that does not fit is
/// dropped and the sender gets 503.
pub(crate) async fn handle<B>(
    ctx: &IngressContext,
    request: WebhookRequest<'_>,
    body: B,
) -> Response<AnswerBody>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let span = tracing::debug_span!("delivery", tunnel = request.tunnel);
    let holder = Holder {
        sender: request.origin.sender,
        connection: request.connection,
    };
    let answered = match forward(ctx, &request, holder, body).instrument(span).await {
        Ok((outcome, response)) => hold_answer(ctx, holder, response)
            .await
            .map(|response| (outcome, response)),
        Err(err) => Err(err),
    };
    let (outcome, response) = answered.unwrap_or_else(|err| {
        debug!(tunnel = request.tunnel, %err, "delivery not answered by a local server");
        (outcome_of(&err), err.into_response().map(AnswerBody::from))
    });
    ctx.metrics.delivery(outcome, started.elapsed());
    response
}

/// Reserves an answer's body in the budget for as long as it is being written.
async fn hold_answer(
    ctx: &IngressContext,
    holder: Holder,
    response: Response<Full<Bytes>>,
) -> Result<Response<AnswerBody>, IngressError> {
    let (parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await;
    let body = collected.to_bytes();
    let mut reservation = ctx.budget.reserve(holder);
    if reservation.grow(body.len()).is_err() {
        warn!(
            bytes = body.len(),
            "answer dropped: the in-flight budget cannot hold it now"
        );
        return Err(IngressError::Busy {
            limit: ctx.budget.limit(),
        });
    }
    Ok(Response::from_parts(
        parts,
        AnswerBody::held(body, reservation),
    ))
}

pub(crate) fn outcome_of(err: &IngressError) -> Outcome {
    match err {
        IngressError::UnknownTunnel | IngressError::NotFound => Outcome::unknown_tunnel,
        IngressError::BodyTooLarge { .. } => Outcome::too_large,
        IngressError::BodyRead(_)
        | IngressError::BodyTimeout(_)
        | IngressError::BodyTooSlow { .. }
        | IngressError::NotWebsocket
        | IngressError::MethodNotAllowed(_)
        | IngressError::BadPath(_)
        | IngressError::HeadTooLarge { .. }
        | IngressError::Unauthorized
        | IngressError::TooManyTokenFailures { .. } => Outcome::bad_request,
        IngressError::Busy { .. } => Outcome::rejected,
        IngressError::Offline(_) => Outcome::offline,
        IngressError::QueueFull(_) | IngressError::QueueUnavailable(_) | IngressError::Starting => {
            Outcome::rejected
        }
        IngressError::Timeout { .. } => Outcome::timeout,
        IngressError::Failed(_) | IngressError::BadAnswer { .. } => Outcome::failed,
        IngressError::ClientGone(_) => Outcome::client_gone,
    }
}

/// Most times a delivery follows its tunnel's sessions as they vanish before it is queued.
const MAX_RESENDS: usize = 3;

pub(crate) type Answered = (Outcome, Response<Full<Bytes>>);

async fn forward<B>(
    ctx: &IngressContext,
    r: &WebhookRequest<'_>,
    holder: Holder,
    body: B,
) -> Result<Answered, IngressError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if ctx.placement.health() == Health::Starting {
        // It would not know tunnels claimed elsewhere yet: 503, never a final 404.
        return Err(IngressError::Starting);
    }
    if !ctx.tunnels.is_known(r.tunnel) {
        return Err(IngressError::UnknownTunnel);
    }
    let limit = ctx.max_body;
    let declared = content_length(&r.parts.headers);
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(IngressError::BodyTooLarge { limit });
    }
    // Grows as the body arrives and is held until the sender is answered: the body stays in
    // memory that long.
    let mut reservation = ctx.budget.reserve(holder);
    let body = body::read(body, declared, body_rules(ctx), &mut reservation).await?;
    let received_at_ms = illumitunnel::now_ms().max(0) as u64;
    let host = r
        .parts
        .headers
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| r.parts.uri.authority().map(|a| a.as_str().as_bytes()));
    let delivery = QueuedDelivery {
        id: DeliveryId::generate(),
        received_at_ms,
        method: r.parts.method.as_str().to_owned(),
        path: r.rest.to_owned(),
        query: r.parts.uri.query().unwrap_or("").to_owned(),
        headers: forward_headers(&r.parts.headers, r.origin, r.proto, host),
        body,
    };
    // On a cluster the tunnel's authority decides its order; it may be another node.
    let mut authority = ctx.placement.authority(r.tunnel);
    if authority == Authority::Nobody && ctx.tunnels.sessions(r.tunnel).is_empty() {
        // About to be queued: make sure no session joined elsewhere a moment ago.
        authority = ctx.placement.authority_now(r.tunnel).await;
    }
    if let (Authority::Elsewhere(node), Some(peers)) = (&authority, &ctx.peers) {
        return peers.hand_to(ctx, node, r.tunnel, delivery).await;
    }
    decide(ctx, r.tunnel, delivery).await
}

/// Sends a delivery this node decides for to its tunnel's sessions, or queues it.
pub(crate) async fn decide(
    ctx: &IngressContext,
    tunnel: &str,
    delivery: QueuedDelivery,
) -> Result<Answered, IngressError> {
    // Decided once the body is in: a client may have connected (or a backlog formed) meanwhile.
    let (mut sessions, mut forwarders) = match ctx.tunnels.route(tunnel) {
        Route::Unknown => return Err(IngressError::UnknownTunnel),
        Route::Queue(ticket) => return offline(ctx, ticket, delivery).await,
        Route::Live(sessions, forwarders) => (sessions, forwarders),
    };
    if let Some(peers) = &ctx.peers {
        peers.copy_to_others(tunnel, &delivery).await;
    }

    let timeout = ctx.response_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut outgoing = Arc::new(OutgoingDelivery::new(delivery, false));
    let mut copies = true;
    let mut attempts = 0;
    let reply = loop {
        attempts += 1;
        let exchanged =
            tokio::time::timeout_at(deadline, exchange(&sessions, forwarders, &outgoing, copies))
                .await;
        match exchanged {
            Err(_) if ctx.shutdown.is_cancelled() => {
                // The relay is stopping and the answer did not come: keep the delivery.
                return requeue(ctx, tunnel, &outgoing).await;
            }
            Err(_) => {
                return Err(IngressError::Timeout {
                    tunnel: tunnel.to_owned(),
                    timeout,
                })
            }
            Ok(Exchange::Replied(reply)) => break reply,
            Ok(Exchange::NoSession) => return requeue(ctx, tunnel, &outgoing).await,
            Ok(Exchange::Gone) if attempts > MAX_RESENDS => {
                return requeue(ctx, tunnel, &outgoing).await
            }
            Ok(Exchange::Gone) => {
                // The session vanished before answering; the client may have it already, so
                // the next one gets it marked as a redelivery (answered from its store).
                debug!(delivery = %outgoing.id(), "session gone before answering; sending elsewhere");
                (sessions, forwarders) = match ctx.tunnels.route(tunnel) {
                    Route::Live(s, f) => (s, f),
                    Route::Queue(ticket) => return queue_sent(ctx, ticket, &outgoing).await,
                    Route::Unknown => return Err(IngressError::ClientGone(tunnel.to_owned())),
                };
                outgoing = Arc::new(outgoing.redelivery());
                copies = false;
            }
        }
    };
    drop(outgoing);
    let answered = match reply {
        Reply::Failed(message) => return Err(IngressError::Failed(message)),
        Reply::Answered {
            status,
            headers,
            body,
        } => answer(tunnel, status, headers, body)?,
    };
    Ok((Outcome::answered, answered))
}

/// A delivery already sent that no session answered: queue it (see [`offline`]).
pub(crate) async fn requeue(
    ctx: &IngressContext,
    tunnel: &str,
    outgoing: &OutgoingDelivery,
) -> Result<Answered, IngressError> {
    queue_sent(ctx, ctx.tunnels.requeue(tunnel), outgoing).await
}

pub(crate) async fn queue_sent(
    ctx: &IngressContext,
    ticket: QueueTicket,
    outgoing: &OutgoingDelivery,
) -> Result<Answered, IngressError> {
    match outgoing.to_queued() {
        Some(delivery) => offline(ctx, ticket, delivery).await,
        None => Err(IngressError::ClientGone(ticket.tunnel().to_owned())),
    }
}

/// A known tunnel whose sessions cannot take the delivery now (none, or a backlog draining):
/// queue it durably (202) or, with `--offline reject`, answer 503.
async fn offline(
    ctx: &IngressContext,
    ticket: QueueTicket,
    delivery: QueuedDelivery,
) -> Result<Answered, IngressError> {
    let tunnel = ticket.tunnel().to_owned();
    if ctx.offline == OfflinePolicy::Reject {
        return Err(IngressError::Offline(tunnel));
    }
    let id = delivery.id.clone();
    match ticket.queue().push(&tunnel, delivery).await {
        Ok(()) => {
            ticket.pushed();
            let body = serde_json::json!({ "queued": true, "id": id.as_str() }).to_string();
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = StatusCode::ACCEPTED;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok((Outcome::queued, response))
        }
        Err(err @ QueueError::Full { .. }) => {
            warn!(tunnel, %err, "offline queue full; delivery refused");
            Err(IngressError::QueueFull(err.to_string()))
        }
        Err(err) => {
            warn!(tunnel, %err, "could not queue a delivery");
            Err(IngressError::QueueUnavailable(tunnel))
        }
    }
}

enum Exchange {
    NoSession,
    Gone,
    Replied(Reply),
}

/// Sends the delivery to the first of the first `forwarders` sessions that takes it and, with
/// `copies`, a copy to every later one, then waits for the answer. Dropping this future (timeout, sender gone) cancels
/// the delivery.
async fn exchange(
    sessions: &[SessionHandle],
    forwarders: usize,
    outgoing: &Arc<OutgoingDelivery>,
    copies: bool,
) -> Exchange {
    let mut rest = sessions.iter();
    let mut pending = loop {
        // Only a forwarding session takes the push: an observer never answers the sender.
        if sessions.len() - rest.len() >= forwarders {
            return Exchange::NoSession;
        }
        let Some(session) = rest.next() else {
            return Exchange::NoSession;
        };
        if let Ok(pending) = session.deliver(outgoing).await {
            break pending;
        }
    };
    if copies {
        // Copies go out on their own tasks so a slow listener never delays the answer.
        for session in rest {
            let (session, outgoing) = (session.clone(), Arc::clone(outgoing));
            tokio::spawn(async move {
                if session.copy(&outgoing).await.is_err() {
                    debug!(delivery = %outgoing.id(), "fan-out copy not sent: session gone");
                }
            });
        }
    }
    match pending.reply().await {
        Ok(reply) => Exchange::Replied(reply),
        Err(_) => Exchange::Gone,
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The body rules of this relay.
fn body_rules(ctx: &IngressContext) -> BodyRules {
    BodyRules {
        limit: ctx.max_body,
        within: ctx.response_timeout,
        rate: ctx.min_body_rate,
        grace: ctx.min_body_grace,
        budget_limit: ctx.budget.limit(),
    }
}

/// The sender's end-to-end headers in order, byte for byte, without hop-by-hop headers,
/// `Host` (the client sets it to the forward target) and every header that claims where the
/// request came from (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`: anyone can write them), plus
/// the relay's own `X-Forwarded-For` (the sender, then — behind a trusted proxy — each trusted
/// hop; see [`Origin`]), `X-Forwarded-Proto` and `X-Forwarded-Host` (the `Host` it received).
pub(crate) fn forward_headers(
    src: &HeaderMap,
    origin: &Origin,
    proto: &str,
    host: Option<&[u8]>,
) -> Vec<Header> {
    let mut headers: Vec<Header> = Vec::with_capacity(src.len() + 3);
    for (name, value) in src {
        let name = name.as_str();
        if name == "host" || proxy::is_origin_header(name) {
            continue;
        }
        headers.push((name.to_owned(), value.as_bytes().to_vec()));
    }
    strip_hop_by_hop(&mut headers);
    headers.push((
        "x-forwarded-for".to_owned(),
        origin.forwarded_for.clone().into_bytes(),
    ));
    headers.push(("x-forwarded-proto".to_owned(), proto.as_bytes().to_vec()));
    if let Some(host) = host {
        headers.push(("x-forwarded-host".to_owned(), host.to_vec()));
    }
    headers
}

/// The local server's answer as the sender's response: its status, end-to-end headers in
/// order (hyper sets `Content-Length`), and body.
pub(crate) fn answer(
    tunnel: &str,
    status: u16,
    mut headers: Vec<Header>,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, IngressError> {
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or_else(|| IngressError::BadAnswer {
            tunnel: tunnel.to_owned(),
            reason: format!("status {status} is not a final HTTP status"),
        })?;
    strip_hop_by_hop(&mut headers);
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let map = response.headers_mut();
    map.reserve(headers.len());
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(Bytes::from(value)),
        ) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => debug!(tunnel, "dropping a response header that is not valid HTTP"),
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests;
