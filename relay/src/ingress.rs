//! Webhook ingress: a request to `/t/{tunnel}/{rest}?{query}` becomes a delivery. The relay
//! checks the tunnel and the body size, rewrites the headers (hop-by-hop out, `X-Forwarded-*`
//! in), sends the delivery to the tunnel's first session (copies to the others) and answers the
//! sender with the local server's response, or with an [`IngressError`].
//!
//! A delivery is never lost to a missing client: with no session it is committed to the
//! offline queue and answered 202; when its session vanishes before answering, it is re-sent to
//! the tunnel's next session or queued; when the relay shuts down before an answer arrives, it
//! is queued.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use illumitunnel::headers::{strip_hop_by_hop, Header};
use illumitunnel::DeliveryId;
use tracing::{debug, warn, Instrument};

use crate::config::OfflinePolicy;
use crate::error::IngressError;
use crate::metrics::Outcome;
use crate::queue::{QueueError, QueuedDelivery};
use crate::registry::Lookup;
use crate::server::Shared;
use crate::session::{Outbound, Reply, SessionHandle};

/// A request for `tunnel` with `rest` below it.
pub(crate) struct Delivery<'a> {
    /// The request head.
    pub parts: &'a Parts,
    /// The raw tunnel segment of the path.
    pub tunnel: &'a str,
    /// The path below the tunnel.
    pub rest: &'a str,
    /// The sender's address.
    pub peer: SocketAddr,
    /// `X-Forwarded-Proto` for this connection.
    pub proto: &'static str,
}

/// Answers one webhook request and counts its outcome.
pub(crate) async fn handle(
    shared: &Shared,
    delivery: Delivery<'_>,
    body: Incoming,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let span = tracing::debug_span!("delivery", tunnel = delivery.tunnel);
    let (outcome, response) = match forward(shared, &delivery, body).instrument(span).await {
        Ok(answered) => answered,
        Err(err) => {
            debug!(tunnel = delivery.tunnel, %err, "delivery not answered by a local server");
            (outcome_of(&err), err.into_response())
        }
    };
    shared.metrics.delivery(outcome, started.elapsed());
    response
}

fn outcome_of(err: &IngressError) -> Outcome {
    match err {
        IngressError::UnknownTunnel | IngressError::NotFound => Outcome::unknown_tunnel,
        IngressError::BodyTooLarge { .. } => Outcome::too_large,
        IngressError::BodyRead(_) | IngressError::BodyTimeout(_) | IngressError::NotWebsocket => {
            Outcome::bad_request
        }
        IngressError::Offline(_) => Outcome::offline,
        IngressError::QueueFull(_) | IngressError::QueueUnavailable(_) => Outcome::rejected,
        IngressError::Timeout { .. } => Outcome::timeout,
        IngressError::Failed(_) | IngressError::BadAnswer { .. } => Outcome::failed,
        IngressError::ClientGone(_) => Outcome::client_gone,
    }
}

/// Most times a delivery follows its tunnel's sessions as they vanish before it is queued.
const MAX_RESENDS: usize = 3;

type Answered = (Outcome, Response<Full<Bytes>>);

async fn forward(
    shared: &Shared,
    d: &Delivery<'_>,
    body: Incoming,
) -> Result<Answered, IngressError> {
    let Lookup::Known(sessions) = shared.registry.lookup(d.tunnel) else {
        return Err(IngressError::UnknownTunnel);
    };
    let limit = shared.max_body;
    if content_length(&d.parts.headers).is_some_and(|len| len > limit as u64) {
        return Err(IngressError::BodyTooLarge { limit });
    }
    let body = read_body(body, shared).await?;
    let received_at_ms = illumitunnel::now_ms().max(0) as u64;
    let host = d
        .parts
        .headers
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| d.parts.uri.authority().map(|a| a.as_str().as_bytes()));
    let delivery = QueuedDelivery {
        id: DeliveryId::generate(),
        received_at_ms,
        method: d.parts.method.as_str().to_owned(),
        path: d.rest.to_owned(),
        query: d.parts.uri.query().unwrap_or("").to_owned(),
        headers: forward_headers(&d.parts.headers, d.peer.ip(), d.proto, host),
        body,
    };
    let sessions = if sessions.is_empty() {
        // A client may have connected while the body arrived.
        match shared.registry.lookup(d.tunnel) {
            Lookup::Known(s) if !s.is_empty() => s,
            _ => return offline(shared, d.tunnel, delivery).await,
        }
    } else {
        sessions
    };

    let timeout = shared.response_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut sessions = sessions;
    let mut outbound = Arc::new(Outbound::new(delivery, false));
    let mut copies = true;
    let mut attempts = 0;
    let reply = loop {
        attempts += 1;
        let exchanged =
            tokio::time::timeout_at(deadline, exchange(&sessions, &outbound, copies)).await;
        match exchanged {
            Err(_) if shared.shutdown.is_cancelled() => {
                // The relay is stopping and the answer did not come: keep the delivery.
                return requeue(shared, d.tunnel, &outbound).await;
            }
            Err(_) => {
                return Err(IngressError::Timeout {
                    tunnel: d.tunnel.to_owned(),
                    timeout,
                })
            }
            Ok(Exchange::Replied(reply)) => break reply,
            Ok(Exchange::NoSession) => return requeue(shared, d.tunnel, &outbound).await,
            Ok(Exchange::Gone) if attempts > MAX_RESENDS => {
                return requeue(shared, d.tunnel, &outbound).await
            }
            Ok(Exchange::Gone) => {
                // The session vanished before answering; the client may have it already, so
                // the next one gets it marked as a redelivery (answered from its store).
                debug!(delivery = %outbound.id(), "session gone before answering; sending elsewhere");
                sessions = match shared.registry.lookup(d.tunnel) {
                    Lookup::Known(s) if !s.is_empty() => s,
                    _ => return requeue(shared, d.tunnel, &outbound).await,
                };
                outbound = Arc::new(outbound.redelivery());
                copies = false;
            }
        }
    };
    drop(outbound);
    let answered = match reply {
        Reply::Failed(message) => return Err(IngressError::Failed(message)),
        Reply::Answered {
            status,
            headers,
            body,
        } => answer(d.tunnel, status, headers, body)?,
    };
    Ok((Outcome::answered, answered))
}

/// A delivery already sent that no session answered: queue it (see [`offline`]).
async fn requeue(
    shared: &Shared,
    tunnel: &str,
    outbound: &Outbound,
) -> Result<Answered, IngressError> {
    match outbound.to_queued() {
        Some(delivery) => offline(shared, tunnel, delivery).await,
        None => Err(IngressError::ClientGone(tunnel.to_owned())),
    }
}

/// A known tunnel with no session that can take the delivery: queue it durably (202) or, with
/// `--offline reject`, answer 503.
async fn offline(
    shared: &Shared,
    tunnel: &str,
    delivery: QueuedDelivery,
) -> Result<Answered, IngressError> {
    if shared.offline == OfflinePolicy::Reject {
        return Err(IngressError::Offline(tunnel.to_owned()));
    }
    let id = delivery.id.clone();
    match shared.queue.push(tunnel, delivery).await {
        Ok(()) => {
            shared.registry.wake_backlog(tunnel);
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
            Err(IngressError::QueueUnavailable(tunnel.to_owned()))
        }
    }
}

enum Exchange {
    NoSession,
    Gone,
    Replied(Reply),
}

/// Sends the delivery to the first session that takes it and, with `copies`, a copy to every
/// later one, then waits for the answer. Dropping this future (timeout, sender gone) cancels
/// the delivery.
async fn exchange(sessions: &[SessionHandle], outbound: &Arc<Outbound>, copies: bool) -> Exchange {
    let mut rest = sessions.iter();
    let mut pending = loop {
        let Some(session) = rest.next() else {
            return Exchange::NoSession;
        };
        if let Ok(pending) = session.deliver(outbound).await {
            break pending;
        }
    };
    if copies {
        // Copies go out on their own tasks so a slow listener never delays the answer.
        for session in rest {
            let (session, outbound) = (session.clone(), Arc::clone(outbound));
            tokio::spawn(async move {
                if session.copy(&outbound).await.is_err() {
                    debug!(delivery = %outbound.id(), "fan-out copy not sent: session gone");
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

async fn read_body(body: Incoming, shared: &Shared) -> Result<Bytes, IngressError> {
    let limit = shared.max_body;
    let within = shared.response_timeout;
    match tokio::time::timeout(within, Limited::new(body, limit).collect()).await {
        Err(_) => Err(IngressError::BodyTimeout(within)),
        Ok(Err(err)) if err.is::<LengthLimitError>() => Err(IngressError::BodyTooLarge { limit }),
        Ok(Err(err)) => Err(IngressError::BodyRead(err.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The sender's end-to-end headers in order, byte for byte, without hop-by-hop headers and
/// `Host` (the client sets it to the forward target), plus `X-Forwarded-For` (appended to the
/// sender's own), `X-Forwarded-Proto` and `X-Forwarded-Host` (replacing the sender's).
pub(crate) fn forward_headers(
    src: &HeaderMap,
    peer: IpAddr,
    proto: &str,
    host: Option<&[u8]>,
) -> Vec<Header> {
    let mut headers: Vec<Header> = Vec::with_capacity(src.len() + 3);
    for (name, value) in src {
        let name = name.as_str();
        if matches!(name, "host" | "x-forwarded-proto" | "x-forwarded-host") {
            continue;
        }
        headers.push((name.to_owned(), value.as_bytes().to_vec()));
    }
    strip_hop_by_hop(&mut headers);
    let peer = peer.to_canonical().to_string();
    match headers
        .iter_mut()
        .rev()
        .find(|(n, _)| n == "x-forwarded-for")
    {
        Some((_, value)) => {
            value.extend_from_slice(b", ");
            value.extend_from_slice(peer.as_bytes());
        }
        None => headers.push(("x-forwarded-for".to_owned(), peer.into_bytes())),
    }
    headers.push(("x-forwarded-proto".to_owned(), proto.as_bytes().to_vec()));
    if let Some(host) = host {
        headers.push(("x-forwarded-host".to_owned(), host.to_vec()));
    }
    headers
}

/// The local server's answer as the sender's response: its status, end-to-end headers in
/// order (hyper sets `Content-Length`), and body.
fn answer(
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
mod tests {
    use super::*;

    fn h(n: &str, v: &[u8]) -> Header {
        (n.to_string(), v.to_vec())
    }

    #[test]
    fn forwarded_headers_keep_order_bytes_and_repeats() {
        let mut src = HeaderMap::new();
        src.append("host", HeaderValue::from_static("relay.example.com"));
        src.append("content-type", HeaderValue::from_static("application/json"));
        src.append(
            "x-raw",
            HeaderValue::from_bytes(&[0xff, 0x80, b'a']).unwrap(),
        );
        src.append("x-raw", HeaderValue::from_static("second"));
        src.append(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        src.append("x-secret-hop", HeaderValue::from_static("1"));
        src.append("transfer-encoding", HeaderValue::from_static("chunked"));
        src.append("keep-alive", HeaderValue::from_static("timeout=5"));
        src.append("x-forwarded-proto", HeaderValue::from_static("gopher"));
        let out = forward_headers(
            &src,
            "203.0.113.7".parse().unwrap(),
            "https",
            Some(b"relay.example.com"),
        );
        assert_eq!(
            out,
            vec![
                h("content-type", b"application/json"),
                h("x-raw", &[0xff, 0x80, b'a']),
                h("x-raw", b"second"),
                h("x-forwarded-for", b"203.0.113.7"),
                h("x-forwarded-proto", b"https"),
                h("x-forwarded-host", b"relay.example.com"),
            ]
        );
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut src = HeaderMap::new();
        src.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        let out = forward_headers(&src, "::ffff:127.0.0.1".parse().unwrap(), "http", None);
        assert_eq!(
            out,
            vec![
                h("x-forwarded-for", b"198.51.100.1, 127.0.0.1"),
                h("x-forwarded-proto", b"http")
            ]
        );
    }

    #[test]
    fn answers_drop_hop_by_hop_and_length_and_keep_the_rest() {
        let headers = vec![
            h("content-type", b"text/plain"),
            h("set-cookie", b"a=1"),
            h("set-cookie", b"b=2"),
            h("content-length", b"999"),
            h("connection", b"close"),
            h("x-bin", &[0xe9]),
            h("bad name", b"x"),
        ];
        let response = answer("t", 418, headers, Bytes::from_static(b"teapot")).unwrap();
        assert_eq!(response.status(), 418);
        let got: Vec<(String, Vec<u8>)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                h("content-type", b"text/plain"),
                h("set-cookie", b"a=1"),
                h("set-cookie", b"b=2"),
                h("x-bin", &[0xe9])
            ]
        );
        assert!(answer("t", 101, vec![], Bytes::new()).is_err());
        assert!(answer("t", 1000, vec![], Bytes::new()).is_err());
    }
}
