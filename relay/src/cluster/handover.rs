//! Deliveries between cluster nodes. The node a webhook reaches hands it to the tunnel's
//! authority with a NATS request on `illumitunnel.node.{node}.deliver.{tunnel}` and gives the
//! sender whatever the authority answers: the local server's response, or the relay's own
//! (202 queued, 504, …). The ingress node counts the outcome, so every delivery is counted
//! once across the cluster.
//!
//! - Nobody listens at the authority (it died or is stopping): the delivery never left this
//!   node, so this node decides for it (it queues, unless it holds a session itself).
//! - The authority dies while the delivery is out (its heartbeat stops): the client may have
//!   it already, so it is queued as a redelivery, which the client answers from its store.
//! - Bodies larger than a NATS message go through the object store, both ways. The ingress
//!   node deletes a request body whatever the outcome (the authority deletes it on reading);
//!   the authority deletes an answer body after [`ANSWER_BODY_GRACE`] if the ingress node has
//!   not (it gave up on the answer).
//! - The authority sends fan-out copies to the other nodes holding sessions of the tunnel on
//!   `illumitunnel.node.{node}.copy.{tunnel}`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::Message;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use illumitunnel::headers::Header;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

use super::codec::{self, AnswerHead};
use super::node::Cluster;
use super::PUSHED_SUBJECT;
use crate::error::IngressError;
use crate::ingress::{self, Answered, IngressContext, Peers};
use crate::metrics::Outcome;
use crate::queue::QueuedDelivery;
use crate::session::handle::OutgoingDelivery;

/// Beyond the response timeout, how long the ingress node waits for the authority (which
/// answers 504 itself at the response timeout).
const REMOTE_GRACE: Duration = Duration::from_secs(5);
/// How long a large answer's body stays in the object store for the ingress node, which reads
/// it as soon as the answer arrives; then the authority deletes it.
const ANSWER_BODY_GRACE: Duration = Duration::from_secs(10);

fn deliver_subject(node: &str, tunnel: &str) -> String {
    format!("illumitunnel.node.{node}.deliver.{tunnel}")
}

fn copy_subject(node: &str, tunnel: &str) -> String {
    format!("illumitunnel.node.{node}.copy.{tunnel}")
}

#[async_trait::async_trait]
impl Peers for Cluster {
    async fn hand_to(
        &self,
        ctx: &IngressContext,
        node: &str,
        tunnel: &str,
        delivery: QueuedDelivery,
    ) -> Result<Answered, IngressError> {
        to_node(ctx, self, node, tunnel, delivery).await
    }

    async fn copy_to_others(&self, tunnel: &str, delivery: &QueuedDelivery) {
        copy_to_others(self, tunnel, delivery).await
    }
}

/// Hands `delivery` to `node`, the tunnel's authority, and returns its answer.
async fn to_node(
    ctx: &IngressContext,
    cluster: &Cluster,
    node: &str,
    tunnel: &str,
    delivery: QueuedDelivery,
) -> Result<Answered, IngressError> {
    if !cluster.is_reachable() {
        // A request buffered until NATS is back could still be delivered after the sender
        // heard 503; refuse before anything leaves instead.
        return Err(IngressError::QueueUnavailable(tunnel.to_owned()));
    }
    let body_ref = if cluster.fits(delivery.body.len()) {
        None
    } else {
        let name = format!("request-{}", delivery.id);
        if let Err(err) = cluster.put_body(&name, &delivery.body).await {
            warn!(%err, "could not hand a large delivery to another node; deciding here");
            return ingress::decide(ctx, tunnel, delivery).await;
        }
        Some(name)
    };
    // Whatever happens next (an answer, no responders, the authority dying or timing out, the
    // sender hanging up), the body stored for the authority goes with this function; the
    // authority deletes it once read, and deleting twice is harmless.
    let _stored = body_ref.clone().map(|name| cluster.body_guard(name));
    let message = codec::encode_delivery(&delivery, body_ref);
    let request = async_nats::Request::new()
        .payload(message)
        .timeout(Some(ctx.response_timeout + REMOTE_GRACE));
    let sent = cluster
        .client()
        .send_request(deliver_subject(node, tunnel), request);
    let view = cluster.view();
    let mut changes = view.changes();
    let died = async {
        // Bounded: ends when the node's heartbeat stops, or with the request below.
        while changes.changed().await.is_ok() {
            if !view.is_alive(node) {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    // Both are cancel-safe: dropping the request only drops its inbox subscription.
    let reply = tokio::select! {
        reply = sent => reply,
        _ = died => {
            debug!(node, delivery = %delivery.id, "the tunnel's node died with a delivery out; queueing it as a redelivery");
            let outgoing = OutgoingDelivery::new(delivery, true);
            return ingress::requeue(ctx, tunnel, &outgoing).await;
        }
    };
    match reply {
        Ok(reply) => answer_from(cluster, tunnel, &reply.payload).await,
        Err(err) if err.kind() == RequestErrorKind::NoResponders => {
            // Nobody listens there: the delivery never left; this node decides.
            view.suspect(node);
            ingress::decide(ctx, tunnel, delivery).await
        }
        Err(err) if err.kind() == RequestErrorKind::TimedOut => {
            debug!(
                node,
                "no word from the tunnel's node; queueing the delivery as a redelivery"
            );
            let outgoing = OutgoingDelivery::new(delivery, true);
            ingress::requeue(ctx, tunnel, &outgoing).await
        }
        Err(err) => {
            warn!(%err, node, "could not reach the tunnel's node over NATS");
            Err(IngressError::QueueUnavailable(tunnel.to_owned()))
        }
    }
}

/// The authority's answer as the sender gets it.
async fn answer_from(
    cluster: &Cluster,
    tunnel: &str,
    payload: &Bytes,
) -> Result<Answered, IngressError> {
    let bad = |reason: String| IngressError::BadAnswer {
        tunnel: tunnel.to_owned(),
        reason,
    };
    let (head, mut body) = codec::decode_answer(payload).map_err(|e| bad(e.to_string()))?;
    if let Some(name) = &head.body_ref {
        body = cluster.get_body(name).await.map_err(bad)?;
        cluster.drop_body(name).await;
    }
    let headers = codec::decode_headers(head.headers).map_err(|e| bad(e.to_string()))?;
    let outcome = head
        .outcome
        .as_deref()
        .and_then(Outcome::from_name)
        .unwrap_or(Outcome::answered);
    let response = ingress::answer(tunnel, head.status, headers, body)?;
    Ok((outcome, response))
}

/// Sends a copy of a live delivery to every other node holding sessions of `tunnel`.
async fn copy_to_others(cluster: &Cluster, tunnel: &str, delivery: &QueuedDelivery) {
    let others = cluster.view().others_holding(tunnel);
    if others.is_empty() {
        return;
    }
    if !cluster.fits(delivery.body.len()) {
        debug!(delivery = %delivery.id, "fan-out copy not sent to other nodes: body larger than a NATS message");
        return;
    }
    let message = codec::encode_delivery(delivery, None);
    for node in others {
        if let Err(err) = cluster
            .client()
            .publish(copy_subject(&node, tunnel), message.clone())
            .await
        {
            debug!(%err, node, "fan-out copy not sent to another node");
        }
    }
}

/// Serves this node's subjects until `shutdown`: deliveries handed over by other nodes,
/// fan-out copies, and pushes that wake a drain here.
pub(crate) fn spawn(
    cluster: &Arc<Cluster>,
    ctx: Arc<IngressContext>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let span = tracing::info_span!("cluster", node = %cluster.node());
    super::wake::spawn(cluster, &ctx.tunnels, tracker, shutdown);
    tracker.spawn(serve(cluster.clone(), ctx, tracker.clone(), shutdown.clone()).instrument(span));
}

async fn serve(
    cluster: Arc<Cluster>,
    ctx: Arc<IngressContext>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let node = cluster.node().to_owned();
    let client = cluster.client().clone();
    let subscribed = async {
        Ok::<_, async_nats::SubscribeError>((
            client
                .subscribe(format!("illumitunnel.node.{node}.deliver.*"))
                .await?,
            client
                .subscribe(format!("illumitunnel.node.{node}.copy.*"))
                .await?,
            client.subscribe(format!("{PUSHED_SUBJECT}.*")).await?,
        ))
    };
    let (mut delivers, mut copies, mut pushes) = match subscribed.await {
        Ok(subscriptions) => subscriptions,
        Err(err) => {
            warn!(%err, "could not subscribe to this node's subjects; it takes no deliveries from other nodes");
            return;
        }
    };
    loop {
        // All cancel-safe: a token wait and `StreamExt::next` on subscriptions.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(message) = delivers.next() => {
                let (cluster, ctx, shutdown) = (cluster.clone(), ctx.clone(), shutdown.clone());
                tracker.spawn(async move { handle_delivery(&cluster, &ctx, message, shutdown).await }.in_current_span());
            }
            Some(message) = copies.next() => {
                let ctx = ctx.clone();
                tracker.spawn(async move { handle_copy(&ctx, message).await }.in_current_span());
            }
            Some(message) = pushes.next() => {
                if let Some(tunnel) = last_token(&message) {
                    ctx.tunnels.pushed_elsewhere(tunnel);
                }
            }
            else => break,
        }
    }
    // Stop taking deliveries at once, so other nodes decide for themselves.
    let _ = delivers.unsubscribe().await;
    let _ = copies.unsubscribe().await;
    let _ = pushes.unsubscribe().await;
}

fn last_token(message: &Message) -> Option<&str> {
    message.subject.as_str().rsplit('.').next()
}

/// A delivery another node handed over: decide for it here and answer.
async fn handle_delivery(
    cluster: &Cluster,
    ctx: &IngressContext,
    message: Message,
    shutdown: CancellationToken,
) {
    let Some(reply) = message.reply.clone() else {
        return;
    };
    let Some(tunnel) = last_token(&message).map(str::to_owned) else {
        return;
    };
    let answered = match codec::decode_delivery(&message.payload) {
        Ok(frame) => {
            let mut delivery = frame.delivery;
            match frame.body_ref {
                Some(name) => match cluster.get_body(&name).await {
                    Ok(body) => {
                        delivery.body = body;
                        cluster.drop_body(&name).await;
                        ingress::decide(ctx, &tunnel, delivery).await
                    }
                    Err(err) => {
                        // The sender hears the usual 503; the NATS detail is for the operator.
                        tracing::warn!(%err, %tunnel, "could not read a forwarded large body from NATS");
                        Err(IngressError::QueueUnavailable(tunnel))
                    }
                },
                None => ingress::decide(ctx, &tunnel, delivery).await,
            }
        }
        Err(err) => {
            warn!(%err, "unreadable delivery from another node");
            return;
        }
    };
    let (outcome, response) = match answered {
        Ok(answered) => answered,
        Err(err) => (ingress::outcome_of(&err), err.into_response()),
    };
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let headers: Vec<Header> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let mut head = AnswerHead {
        status: parts.status.as_u16(),
        headers: codec::encode_headers(&headers),
        body_ref: None,
        outcome: Some(format!("{outcome:?}")),
    };
    let payload = if cluster.fits(body.len()) {
        codec::encode_answer(&head, &body)
    } else {
        let name = format!("answer-{}", illumitunnel::DeliveryId::generate());
        if let Err(err) = cluster.put_body(&name, &body).await {
            warn!(%err, "could not return a large answer to the ingress node");
            return;
        }
        head.body_ref = Some(name.clone());
        // The ingress node reads and deletes it on arrival; if it has given up (its sender
        // hung up, it timed out or died), nobody would: delete it after a grace either way.
        cluster.drop_body_later(name, ANSWER_BODY_GRACE, shutdown);
        codec::encode_answer(&head, &[])
    };
    if let Err(err) = cluster.client().publish(reply, payload).await {
        debug!(%err, "could not answer the ingress node");
    }
}

/// A fan-out copy from the tunnel's authority: to every session of the tunnel here.
async fn handle_copy(ctx: &IngressContext, message: Message) {
    let Some(tunnel) = last_token(&message) else {
        return;
    };
    let Ok(frame) = codec::decode_delivery(&message.payload) else {
        return;
    };
    let outgoing = OutgoingDelivery::new(frame.delivery, false);
    for session in ctx.tunnels.sessions(tunnel).iter() {
        if session.copy(&outgoing).await.is_err() {
            debug!(delivery = %outgoing.id(), "fan-out copy not sent: session gone");
        }
    }
}
