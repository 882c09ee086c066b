//! One client's websocket session. The session task owns the websocket: after the `Hello` /
//! `Welcome` handshake it splits into a writer task, which drains a bounded queue of encoded
//! messages (batched with `feed` + one `flush`) and pings every keepalive interval, and a reader,
//! which completes pending answers and acknowledgements and drops the session once the client
//! has been silent for two intervals. Everyone else holds a cloneable [`SessionHandle`]; each
//! delivery that waits for an answer registers a `oneshot` keyed by its [`DeliveryId`].
//!
//! Which deliveries a session gets, and in what order, is the tunnel's business
//! ([`tunnel`](crate::tunnel)): the session only joins and leaves its tunnel.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use illumitunnel::headers::Header;
use illumitunnel::protocol::{ClientMessage, Refusal, RelayMessage, MAX_MESSAGE, PROTOCOL_VERSION};
use illumitunnel::reassembly::Reassembler;
use illumitunnel::{DeliveryId, TunnelName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

pub mod handle;

use handle::Pending;
pub use handle::{
    Ack, OutgoingDelivery, PendingAck, PendingAnswer, Reply, SessionGone, SessionHandle,
};

use crate::auth::{fresh_claim_key, Claim, Owner, Unauthorized};
use crate::placement::Placement;
use crate::queue::QueueHandle;
use crate::tunnel::{Phase, Tunnels};

/// Longest the client may take to send `Hello` after the websocket opens.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Encoded messages queued for one session's writer (each a binary frame: plain bytes, so the
/// queue's first block of slots is small in every idle session); senders wait when it is full,
/// so a large body is enqueued chunk by chunk, interleaved with other deliveries.
const OUTBOUND_CAPACITY: usize = 64;
/// Most messages written before one flush.
const WRITE_BATCH: usize = 64;
/// Most bytes written before one flush.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Longest a cluster node waits for its presence to reach NATS before welcoming a client.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the relay spends sending a refusal or a close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a session works with: its tunnels, the queue (ownership and acknowledgements) and
/// its own settings.
#[derive(Clone)]
pub(crate) struct SessionContext {
    pub tunnels: Arc<Tunnels>,
    pub queue: QueueHandle,
    /// Public base URL without a trailing slash.
    pub public_base: String,
    pub keepalive: Duration,
    pub max_body: usize,
    /// Cancelled after HTTP requests drained; ends every session.
    pub closing: CancellationToken,
    /// Where tunnels are decided: on a cluster, presence to announce before the welcome.
    pub placement: Arc<dyn Placement>,
}

/// Websocket limits for client sessions: one protocol message at most; no compression.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: Some(MAX_MESSAGE),
        max_frame_size: Some(MAX_MESSAGE),
        ..WebSocketConfig::default()
    }
}

/// Runs a session on an opened websocket until the client leaves, falls silent, or the relay
/// shuts down. `auth` is the verdict on the upgrade request's token.
pub(crate) fn run<S>(
    ctx: Arc<SessionContext>,
    ws: WebSocketStream<S>,
    auth: Result<Owner, Unauthorized>,
) -> impl std::future::Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The handshake (hello, claim, refusals) lives in a box of its own, freed once it is done:
    // a session's task then holds only what serving needs, ~1 KiB instead of ~6 KiB, and most
    // sessions idle for hours (docs/benchmarks.md, idle fleet).
    let handshake = Box::pin(handshake(ctx.clone(), ws, auth));
    async move {
        let Some(joined) = handshake.await else {
            return;
        };
        let span =
            tracing::info_span!("session", tunnel = %joined.name, session = joined.handle.id());
        serve(ctx, joined).instrument(span).await;
    }
}

/// A session that passed the handshake and joined its tunnel.
struct Joined<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    stream: SplitStream<WebSocketStream<S>>,
    rx: mpsc::Receiver<Vec<u8>>,
    handle: SessionHandle,
    name: TunnelName,
}

/// Reads the hello, claims the tunnel and joins it; `None` when the session ended (refused,
/// silent, or the client left).
async fn handshake<S>(
    ctx: Arc<SessionContext>,
    mut ws: WebSocketStream<S>,
    auth: Result<Owner, Unauthorized>,
) -> Option<Joined<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(hello) = read_hello(&mut ws).await else {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        return None;
    };
    if hello.version != PROTOCOL_VERSION {
        let message = format!(
            "the relay speaks protocol version {PROTOCOL_VERSION} but the client speaks {}; use the same illumitunnel release on both sides",
            hello.version
        );
        refuse(ws, Refusal::VersionMismatch, message).await;
        return None;
    }
    let Ok(client) = auth else {
        let message = "the relay did not accept the client token; pass --token (or ILLUMITUNNEL_TOKEN) with a token from the relay's tokens file".to_string();
        refuse(ws, Refusal::Unauthorized, message).await;
        return None;
    };
    let name = match TunnelName::parse(&hello.tunnel) {
        Ok(name) => name,
        Err(err) => {
            refuse(ws, Refusal::TunnelNameInvalid, err.to_string()).await;
            return None;
        }
    };
    let (owner, claim_key) = match claim(&ctx, &name, client, &hello.claim_key).await {
        Granted::Owner(owner, claim_key) => (owner, claim_key),
        Granted::Taken => {
            refuse(ws, Refusal::TunnelTaken, taken(&name, client)).await;
            return None;
        }
        Granted::Unavailable => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
            return None;
        }
    };

    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let handle = SessionHandle::new(ctx.tunnels.next_session_id(), tx);
    let empty_after = welcome(&ctx, &name, &handle, claim_key, hello.observer).await;
    if ctx
        .tunnels
        .join(&name, owner, handle.clone(), hello.observer, empty_after)
        .is_err()
    {
        refuse(ws, Refusal::TunnelTaken, taken(&name, client)).await;
        return None;
    }
    // On a cluster the welcome goes out once every node can find this session.
    ctx.placement
        .announced(name.as_str(), ANNOUNCE_TIMEOUT)
        .await;
    let (sink, stream) = ws.split();
    Some(Joined {
        sink,
        stream,
        rx,
        handle,
        name,
    })
}

/// Queues the `Welcome` (before the session joins, so it precedes every delivery) with what
/// waits in the queue; returns the push count when the queue was seen empty. An observer is
/// never sent the backlog, so its welcome counts none queued.
async fn welcome(
    ctx: &SessionContext,
    name: &TunnelName,
    handle: &SessionHandle,
    claim_key: String,
    observer: bool,
) -> Option<u64> {
    let pushes = ctx.tunnels.pushes(name.as_str());
    let (backlog, empty_after) = match ctx.queue.connect(name.as_str()).await {
        Ok(backlog) => (backlog, (backlog.queued == 0).then_some(pushes)),
        Err(err) => {
            // The catch-up finds out what is queued when the queue works again.
            warn!(%err, tunnel = %name, "could not read the offline queue");
            (Default::default(), None)
        }
    };
    // Only a session that finds its tunnel idle gets the backlog.
    let idle = !observer && matches!(ctx.tunnels.phase(name.as_str()), None | Some(Phase::Idle));
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let welcome = RelayMessage::Welcome {
        tunnel: name.to_string(),
        public_url: format!("{}/t/{name}", ctx.public_base),
        queued: if idle { count(backlog.queued) } else { 0 },
        expired: count(backlog.expired),
        dead_letters: count(backlog.dead_letters),
        claim_key,
    };
    let _ = handle.tx.try_send(welcome.encode());
    empty_after
}

async fn serve<S>(ctx: Arc<SessionContext>, joined: Joined<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Joined {
        sink,
        stream,
        rx,
        handle,
        name,
    } = joined;
    info!("client connected");
    let token = ctx.closing.child_token();
    let writer = tokio::spawn(write_loop(sink, rx, ctx.keepalive, token.clone()).in_current_span());
    let reason = read_loop(stream, &ctx, &handle.pending, name.as_str(), &token).await;
    token.cancel();
    ctx.tunnels.leave(name.as_str(), handle.id());
    // Senders still waiting see the session gone and send their delivery elsewhere or queue it.
    let abandoned = handle.pending.close(reason == CLOSED_CLEANLY);
    drop(handle);
    let _ = writer.await;
    info!(reason, abandoned, "client disconnected");
}

/// How a claim in the handshake ended.
enum Granted {
    /// The session joins as this owner; the claim key to hand out in `Welcome` (empty unless
    /// a new one was issued).
    Owner(Owner, String),
    /// Another owner holds the tunnel.
    Taken,
    /// The database could not answer; the client retries.
    Unavailable,
}

/// Claims `name` for a client whose token check said `client`: a token client owns by its
/// token's hash; an anonymous one proves ownership with the claim key it `kept`, and a new
/// claim gets a fresh key.
async fn claim(ctx: &SessionContext, name: &TunnelName, client: Owner, kept: &str) -> Granted {
    let (presented, fresh, fresh_key) = match client {
        Owner::Anonymous => {
            let (key, owner) = fresh_claim_key();
            let presented = (!kept.is_empty()).then(|| Owner::of_claim_key(kept));
            (presented, owner, key)
        }
        token => (Some(token), token, String::new()),
    };
    match ctx.queue.claim(name.as_str(), presented, fresh).await {
        Ok(Claim::Joined(owner)) => Granted::Owner(owner, String::new()),
        Ok(Claim::Claimed(owner @ Owner::Key(_))) => Granted::Owner(owner, fresh_key),
        Ok(Claim::Claimed(owner)) => Granted::Owner(owner, String::new()),
        Ok(Claim::Taken) => Granted::Taken,
        Err(err) => {
            // Ownership must never be granted without the database.
            warn!(%err, tunnel = %name, "could not check tunnel ownership; closing the session");
            Granted::Unavailable
        }
    }
}

/// The refusal a client gets for a tunnel someone else owns.
fn taken(name: &TunnelName, client: Owner) -> String {
    match client {
        Owner::Token(_) => {
            format!("tunnel {name} belongs to another token; pick another name with --tunnel")
        }
        _ => format!(
            "tunnel {name} belongs to another client of this relay (only the claim key its first client was given re-joins it); pick another name with --tunnel"
        ),
    }
}

/// What a client's `Hello` asks for.
struct Hello {
    version: u16,
    tunnel: String,
    claim_key: String,
    /// `listen --fan-out`: copies only, never the push or the catch-up.
    observer: bool,
}

async fn read_hello<S>(ws: &mut WebSocketStream<S>) -> Option<Hello>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await;
        match frame {
            Err(_) => {
                debug!("no hello within {HELLO_TIMEOUT:?}");
                return None;
            }
            Ok(Some(Ok(Message::Binary(bytes)))) => {
                return match ClientMessage::decode(&bytes) {
                    Ok(ClientMessage::Hello {
                        version,
                        tunnel,
                        claim_key,
                        observer,
                    }) => Some(Hello {
                        version,
                        tunnel,
                        claim_key,
                        observer,
                    }),
                    Ok(_) | Err(_) => {
                        debug!("first message is not a hello");
                        None
                    }
                };
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(_) => return None,
        }
    }
}

async fn refuse<S>(mut ws: WebSocketStream<S>, reason: Refusal, message: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    info!(?reason, "refused a client: {message}");
    let refused = RelayMessage::Refused { reason, message }.encode();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        ws.send(Message::Binary(refused)).await?;
        ws.close(None).await
    })
    .await;
}

/// Why a session ended when the client sent a close frame.
const CLOSED_CLEANLY: &str = "client closed the websocket";

/// Most answers one session may be sending in pieces at once.
const MAX_PARTIAL_ANSWERS: usize = 16;

/// Reads until the session ends; returns why, for the log.
async fn read_loop<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    ctx: &SessionContext,
    pending: &Pending,
    tunnel: &str,
    token: &CancellationToken,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let silent_limit = ctx.keepalive * 2;
    let mut partial = Partials::new(ctx.max_body, MAX_PARTIAL_ANSWERS);
    let mut heard = tokio::time::Instant::now();
    // Answers whose sender stopped waiting (504, gone) are dropped here, even when the
    // client never finishes them.
    let mut sweep = tokio::time::interval(ctx.keepalive);
    loop {
        // All branches are cancel-safe: `StreamExt::next`, a token wait and `Interval::tick`.
        let frame = tokio::select! {
            _ = token.cancelled() => return "session closed by the relay",
            _ = sweep.tick() => {
                let dropped = partial.retain(|id| pending.contains(id));
                if dropped > 0 {
                    debug!(dropped, "dropped unfinished answers nobody waits for");
                }
                continue;
            }
            frame = tokio::time::timeout_at(heard + silent_limit, stream.next()) => frame,
        };
        heard = tokio::time::Instant::now();
        let bytes = match frame {
            Err(_) => {
                warn!(silent_for = ?silent_limit, "client silent for two keepalive intervals; dropping the session");
                return "keepalive timeout";
            }
            Ok(Some(Ok(Message::Close(_)))) => return CLOSED_CLEANLY,
            Ok(None) => return "client connection ended without a close frame",
            Ok(Some(Err(err))) => {
                debug!(%err, "websocket read failed");
                return "websocket error";
            }
            Ok(Some(Ok(Message::Binary(bytes)))) => bytes,
            Ok(Some(Ok(_))) => continue,
        };
        match ClientMessage::decode(&bytes) {
            Ok(message) => {
                if let Some(id) = on_message(message, pending, &mut partial) {
                    // Nobody waited for it (e.g. the drain gave up on it): drop it by id. Rare,
                    // so boxed: inline it would double the size of every idle session's task.
                    Box::pin(ctx.queue.ack(tunnel, id)).await;
                }
            }
            Err(err) => {
                warn!(%err, "undecodable message from client; dropping the session");
                return "protocol error";
            }
        }
    }
}

/// Answers arriving in pieces: status and headers first, then the body.
pub(crate) type Partials = Reassembler<DeliveryId, (u16, Vec<Header>)>;

/// Settles answers and acknowledgements; returns the id of a delivery the client recorded
/// that nobody waited for, so the offline queue drops it.
fn on_message(
    message: ClientMessage,
    pending: &Pending,
    partial: &mut Partials,
) -> Option<DeliveryId> {
    let too_large = |limit: usize| {
        Reply::Failed(format!(
            "the local server's response is larger than the relay's limit of {limit} bytes"
        ))
    };
    match message {
        ClientMessage::Response {
            id,
            status,
            headers,
            body,
            end,
        } => {
            if end {
                pending.settle(
                    &id,
                    Reply::Answered {
                        status,
                        headers,
                        body,
                    },
                );
            } else if pending.contains(&id) {
                if let Err(err) = partial.begin(id.clone(), (status, headers), &body, None) {
                    debug!(%err, delivery = %id, "answer refused");
                    pending.settle(&id, too_large(partial.max_body()));
                }
            }
        }
        ClientMessage::ResponseChunk { id, data, end } => {
            if !pending.contains(&id) {
                partial.cancel(&id);
                return None;
            }
            match partial.push(&id, &data, end) {
                Ok(None) => {}
                Ok(Some(((status, headers), body))) => pending.settle(
                    &id,
                    Reply::Answered {
                        status,
                        headers,
                        body,
                    },
                ),
                Err(_) => pending.settle(&id, too_large(partial.max_body())),
            }
        }
        ClientMessage::Failed { id, message } => {
            partial.cancel(&id);
            pending.settle(&id, Reply::Failed(message));
        }
        ClientMessage::Recorded { id } => {
            if !pending.acknowledge(&id, Ack::Recorded) {
                return Some(id);
            }
        }
        ClientMessage::NotRecorded { id, message } => {
            pending.acknowledge(&id, Ack::NotRecorded(message));
        }
        ClientMessage::Rejected { id, message } => {
            partial.cancel(&id);
            pending.acknowledge(&id, Ack::Rejected(message.clone()));
            pending.settle(&id, Reply::Failed(message));
        }
        ClientMessage::Hello { .. } => debug!("ignoring a second hello"),
    }
    None
}

async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    keepalive: Duration,
    token: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let result = tokio::select! {
        _ = token.cancelled() => Ok(()),
        result = pump(&mut sink, &mut rx, keepalive) => result,
    };
    if let Err(err) = result {
        debug!(%err, "websocket write failed");
    }
    token.cancel();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}

async fn pump<S>(
    sink: &mut SplitSink<WebSocketStream<S>, Message>,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    keepalive: Duration,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Both branches are cancel-safe: `mpsc::Receiver::recv` and `Interval::tick`.
        tokio::select! {
            message = rx.recv() => {
                let Some(message) = message else { return Ok(()) };
                let mut bytes = message.len();
                sink.feed(Message::Binary(message)).await?;
                // Flush after a batch of messages or of bytes, whichever comes first, so one
                // session's large bodies never hold the relay's thread for long.
                for _ in 1..WRITE_BATCH {
                    if bytes >= WRITE_BATCH_BYTES {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(message) => {
                            bytes += message.len();
                            sink.feed(Message::Binary(message)).await?;
                        }
                        Err(_) => break,
                    }
                }
                sink.flush().await?;
            }
            _ = ping.tick() => sink.send(Message::Ping(Vec::new())).await?,
        }
    }
}

#[cfg(test)]
mod tests;
