//! The client's session with the relay: TCP, TLS for `https`/`wss`, the websocket handshake on
//! `/_illumitunnel/connect` with the token, `Hello` → `Welcome`/`Refused`, then deliveries until
//! the connection drops, and reconnects with [`Backoff`](crate::backoff::Backoff) until shutdown.
//!
//! Each connection runs a reader and a writer half concurrently in one task. The reader spawns
//! one task per delivery (bounded by a semaphore) that forwards it, answers the relay through
//! the writer, then hands it to the recorder, so recording never delays an answer.

pub mod tls;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use illumitunnel::delivery::RequestRecord;
use illumitunnel::headers::Header;
use illumitunnel::protocol::{
    split_body, ClientMessage, Refusal, RelayMessage, CONNECT_PATH, MAX_MESSAGE, PROTOCOL_VERSION,
};
use illumitunnel::{DeliveryId, Token, TunnelName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff;
use crate::forward::Forwarder;
use crate::recorder::{Capture, RecorderHandle};
use crate::status::{ConnectionState, ListenEvent};

/// Bound on TCP connect, TLS and websocket handshakes, and the wait for `Welcome`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries forwarded at the same time; the reader waits for a slot beyond this.
const MAX_IN_FLIGHT: usize = 256;
/// Messages waiting for the writer.
pub const OUTBOUND_QUEUE: usize = 1024;
/// Messages written before one flush.
const MAX_WRITE_BATCH: usize = 256;
/// Largest request body the client assembles from chunks.
const MAX_REQUEST_BODY: usize = 256 * 1024 * 1024;
/// How long shutdown waits for deliveries still being forwarded.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A validated `--relay` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    tls: bool,
    host: String,
    port: u16,
    /// Path prefix the relay is served under, without a trailing `/` (usually empty).
    prefix: String,
}

/// Why a `--relay` value is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid --relay {input:?}: {why}; pass the relay's base URL, e.g. https://relay.example.com"
)]
pub struct RelayUrlError {
    input: String,
    why: &'static str,
}

impl RelayUrl {
    /// Accepts `http`, `https`, `ws` and `wss` URLs (http → ws, https → wss).
    pub fn parse(s: &str) -> Result<Self, RelayUrlError> {
        let err = |why| RelayUrlError {
            input: s.to_string(),
            why,
        };
        let uri: http::Uri = s.trim().parse().map_err(|_| err("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https" | "wss") => true,
            Some("http" | "ws") => false,
            Some(_) => return Err(err("the scheme must be https, http, wss or ws")),
            None => return Err(err("missing https://")),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| err("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(err("user info is not supported; use --token"));
        }
        if uri.query().is_some() {
            return Err(err("a query is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(RelayUrl {
            tls,
            host,
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// A URL for a relay listening on loopback.
    pub fn loopback(tls: bool, port: u16) -> Self {
        RelayUrl {
            tls,
            host: "127.0.0.1".into(),
            port,
            prefix: String::new(),
        }
    }

    /// The websocket URL of the relay's connect endpoint.
    pub fn connect_url(&self) -> String {
        format!("{self}{}", CONNECT_PATH)
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        write!(
            f,
            "{scheme}://{}:{}{}",
            self.host_for_url(),
            self.port,
            self.prefix
        )
    }
}

/// What a session needs to know about the relay and the tunnel.
pub struct SessionConfig {
    /// Relay to connect to.
    pub relay: RelayUrl,
    /// Client token, if the relay needs one.
    pub token: Option<Token>,
    /// Tunnel to claim.
    pub tunnel: TunnelName,
    /// Which relay certificates to trust.
    pub tls: Arc<rustls::ClientConfig>,
    /// Ping interval; the relay is gone after two silent intervals.
    pub keepalive: Duration,
}

/// A message for the relay, tagged with the connection it belongs to.
#[derive(Debug)]
pub struct Outbound {
    /// Connection generation the message answers; `0` fits any connection.
    pub generation: u64,
    /// The message.
    pub message: ClientMessage,
}

impl Outbound {
    /// A message valid on whichever connection is up (e.g. `Recorded`).
    pub fn any(message: ClientMessage) -> Self {
        Outbound {
            generation: 0,
            message,
        }
    }
}

/// Everything a running session works with.
pub struct Session {
    /// Where and who.
    pub config: Arc<SessionConfig>,
    /// Sends deliveries to the local server.
    pub forwarder: Forwarder,
    /// Capture store writer.
    pub recorder: RecorderHandle,
    /// The screen's channel.
    pub screen: mpsc::Sender<ListenEvent>,
    /// Set to the tunnel's public URL on each `Welcome`.
    pub public_url: watch::Sender<Option<String>>,
    /// Sender half of the relay-bound queue (the recorder holds a clone).
    pub outbound_tx: mpsc::Sender<Outbound>,
    /// Receiver half of the relay-bound queue; survives reconnects.
    pub outbound_rx: mpsc::Receiver<Outbound>,
}

/// A failed connection attempt.
#[derive(Debug)]
pub enum ConnectError {
    /// Retrying cannot help (refused token, taken name, untrusted certificate): exit 1.
    Fatal(String),
    /// Worth another attempt after a delay.
    Retry(String),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

struct Welcome {
    public_url: String,
    queued: u32,
    expired: u32,
}

/// Runs the session until `shutdown`, reconnecting after every drop. Returns an error only
/// when the relay refuses the session or its certificate cannot be trusted.
pub async fn run(mut session: Session, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut backoff = backoff::with_thread_rng();
    let shared = Arc::new(Shared {
        forwarder: session.forwarder.clone(),
        recorder: session.recorder.clone(),
        tunnel: session.config.tunnel.to_string(),
        outbound: session.outbound_tx.clone(),
        slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        tracker: TaskTracker::new(),
    });
    show(&session.screen, ConnectionState::Connecting).await;
    let mut generation = 0u64;
    let result = loop {
        let attempt = tokio::select! {
            attempt = connect(&session.config) => attempt,
            _ = shutdown.cancelled() => break Ok(()),
        };
        let cause = match attempt {
            Ok((ws, welcome)) => {
                generation += 1;
                session.public_url.send_replace(Some(welcome.public_url));
                show(
                    &session.screen,
                    ConnectionState::Connected {
                        queued: welcome.queued,
                        expired: welcome.expired,
                    },
                )
                .await;
                let started = Instant::now();
                let cause = serve(ws, &mut session, &shared, generation, &shutdown).await;
                if shutdown.is_cancelled() {
                    break Ok(());
                }
                backoff.connection_lasted(started.elapsed());
                // A connection that was up is retried within one keepalive interval (a laptop
                // waking from sleep), with jitter so a restarted relay is not hit all at once.
                let delay = backoff.after_drop(session.config.keepalive);
                tracing::debug!(%cause, ?delay, "reconnecting");
                if !wait_to_reconnect(&session.screen, delay, cause, &shutdown).await {
                    break Ok(());
                }
                continue;
            }
            Err(ConnectError::Fatal(sentence)) => {
                show(&session.screen, ConnectionState::Refused(sentence.clone())).await;
                break Err(anyhow::anyhow!(sentence));
            }
            Err(ConnectError::Retry(cause)) => cause,
        };
        let delay = backoff.next_delay();
        tracing::debug!(%cause, ?delay, "reconnecting");
        if !wait_to_reconnect(&session.screen, delay, cause, &shutdown).await {
            break Ok(());
        }
    };
    // Let deliveries already being forwarded finish and reach the recorder.
    shared.tracker.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, shared.tracker.wait()).await;
    result
}

/// Shows the reconnect and waits `delay`; `false` when shutdown came first.
async fn wait_to_reconnect(
    screen: &mpsc::Sender<ListenEvent>,
    delay: Duration,
    cause: String,
    shutdown: &CancellationToken,
) -> bool {
    show(
        screen,
        ConnectionState::Reconnecting {
            in_secs: delay.as_secs_f64(),
            cause,
        },
    )
    .await;
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

async fn show(screen: &mpsc::Sender<ListenEvent>, state: ConnectionState) {
    let _ = screen.send(ListenEvent::Connection(state)).await;
}

/// One attempt: TCP, TLS, websocket upgrade, `Hello`, and the relay's answer.
async fn connect(config: &SessionConfig) -> Result<(Ws, Welcome), ConnectError> {
    let relay = &config.relay;
    let retry =
        |cause: String| ConnectError::Retry(format!("could not connect to relay {relay}: {cause}"));
    let fatal =
        |cause: String| ConnectError::Fatal(format!("could not connect to relay {relay}: {cause}"));
    let timed_out = || {
        retry(format!(
            "timed out after {} s; check --relay",
            HANDSHAKE_TIMEOUT.as_secs()
        ))
    };

    let tcp = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TcpStream::connect((relay.host.as_str(), relay.port)),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| retry(describe_connect_error(&e, relay)))?;
    let _ = tcp.set_nodelay(true);

    let io: Box<dyn Io> = if relay.tls {
        let name = rustls::pki_types::ServerName::try_from(relay.host.clone()).map_err(|_| {
            fatal(format!(
                "{} is not a valid TLS server name; check --relay",
                relay.host
            ))
        })?;
        let tls = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_rustls::TlsConnector::from(config.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| match tls::explain_handshake_error(&e) {
            (cause, true) => retry(cause),
            (cause, false) => fatal(cause),
        })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };

    let mut request = relay
        .connect_url()
        .into_client_request()
        .map_err(|e| fatal(format!("invalid relay URL: {e}; check --relay")))?;
    if let Some(token) = &config.token {
        let value =
            http::HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                fatal("the token contains characters a header cannot carry; check --token".into())
            })?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    let ws_config = WebSocketConfig {
        max_message_size: Some(MAX_MESSAGE),
        max_frame_size: Some(MAX_MESSAGE),
        ..Default::default()
    };
    let (mut ws, _) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::client_async_with_config(request, io, Some(ws_config)),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| match e {
        tungstenite::Error::Http(resp) if matches!(resp.status().as_u16(), 401 | 403) => {
            ConnectError::Fatal(refusal_sentence(Refusal::Unauthorized, "", &config.tunnel))
        }
        tungstenite::Error::Http(resp) => retry(format!(
            "it answered {} to the websocket upgrade; check that --relay is an illumitunnel relay",
            resp.status()
        )),
        other => retry(format!("websocket handshake failed: {other}")),
    })?;

    let hello = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        tunnel: config.tunnel.to_string(),
        claim_key: String::new(),
    };
    ws.send(Message::Binary(hello.encode()))
        .await
        .map_err(|e| retry(format!("connection lost during hello: {e}")))?;
    let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Binary(buf)) => return Some(RelayMessage::decode(&buf)),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
        None
    })
    .await
    .map_err(|_| {
        retry(format!(
            "no answer to hello within {} s",
            HANDSHAKE_TIMEOUT.as_secs()
        ))
    })?;
    match answer {
        Some(Ok(RelayMessage::Welcome {
            public_url,
            queued,
            expired,
            ..
        })) => Ok((
            ws,
            Welcome {
                public_url,
                queued,
                expired,
            },
        )),
        Some(Ok(RelayMessage::Refused { reason, message })) => Err(ConnectError::Fatal(
            refusal_sentence(reason, &message, &config.tunnel),
        )),
        Some(Ok(other)) => Err(retry(format!(
            "unexpected first message {}",
            message_name(&other)
        ))),
        Some(Err(e)) => Err(retry(format!("unreadable answer to hello: {e}"))),
        None => Err(retry(
            "the relay closed the connection before welcoming this client".into(),
        )),
    }
}

fn describe_connect_error(err: &std::io::Error, relay: &RelayUrl) -> String {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused; check --relay".into(),
        _ if err.to_string().contains("lookup") || err.to_string().contains("resolve") => {
            format!("could not resolve {}; check --relay", relay.host)
        }
        _ => format!("{err}; check --relay"),
    }
}

/// The sentence `listen` exits with when the relay refuses the session.
pub fn refusal_sentence(reason: Refusal, message: &str, tunnel: &TunnelName) -> String {
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    };
    match reason {
        Refusal::Unauthorized => "relay refused the token; check --token or ILLUMITUNNEL_TOKEN".into(),
        Refusal::TunnelNameInvalid => {
            format!("relay refused the tunnel name {tunnel}{detail}; pass another with --tunnel NAME")
        }
        Refusal::TunnelTaken => format!(
            "tunnel {tunnel} belongs to another token on this relay; pick another name with --tunnel NAME"
        ),
        Refusal::VersionMismatch => format!(
            "relay speaks another protocol version than this client (version {PROTOCOL_VERSION}){detail}; upgrade illumitunnel or the relay"
        ),
    }
}

fn message_name(m: &RelayMessage) -> &'static str {
    match m {
        RelayMessage::Welcome { .. } => "welcome",
        RelayMessage::Refused { .. } => "refused",
        RelayMessage::Request { .. } => "request",
        RelayMessage::RequestChunk { .. } => "request chunk",
        RelayMessage::Cancel { .. } => "cancel",
        RelayMessage::DeadLettered { .. } => "dead letter",
    }
}

/// What every delivery task shares.
struct Shared {
    forwarder: Forwarder,
    recorder: RecorderHandle,
    tunnel: String,
    outbound: mpsc::Sender<Outbound>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
}

/// A delivery as it arrived, body complete.
struct Arrived {
    id: DeliveryId,
    received_at_ms: i64,
    answer: bool,
    queued: bool,
    request: RequestRecord,
}

/// A delivery whose body is still arriving in chunks.
struct Partial {
    head: Arrived,
    body: BytesMut,
}

/// Serves one connection until it drops or `shutdown`; returns the cause as a phrase.
async fn serve(
    ws: Ws,
    session: &mut Session,
    shared: &Arc<Shared>,
    generation: u64,
    shutdown: &CancellationToken,
) -> String {
    let (sink, stream) = ws.split();
    let started = Instant::now();
    let last_seen = AtomicU64::new(0);
    let keepalive = session.config.keepalive;
    tokio::select! {
        cause = read_half(stream, shared, generation, &last_seen, started) => cause,
        cause = write_half(sink, &mut session.outbound_rx, generation, keepalive, &last_seen, started) => cause,
        _ = shutdown.cancelled() => "shutting down".into(),
    }
}

async fn read_half(
    mut stream: futures_util::stream::SplitStream<Ws>,
    shared: &Arc<Shared>,
    generation: u64,
    last_seen: &AtomicU64,
    started: Instant,
) -> String {
    let mut partial: HashMap<DeliveryId, Partial> = HashMap::new();
    loop {
        // `StreamExt::next` is cancel-safe, so racing this loop against the writer loses nothing.
        let msg = match stream.next().await {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return format!("connection to relay lost: {e}"),
            None => return "the relay closed the connection".into(),
        };
        last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let buf = match msg {
            Message::Binary(buf) => buf,
            Message::Close(_) => return "the relay closed the connection".into(),
            _ => continue,
        };
        let decoded = match RelayMessage::decode(&buf) {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(%err, "ignored a message from the relay this client cannot read");
                continue;
            }
        };
        match decoded {
            RelayMessage::Request {
                id,
                received_at_ms,
                answer,
                redelivery: queued,
                method,
                path,
                query,
                headers,
                body,
                end,
            } => {
                let head = Arrived {
                    id,
                    received_at_ms: i64::try_from(received_at_ms).unwrap_or(i64::MAX),
                    answer,
                    queued,
                    request: RequestRecord {
                        method,
                        path,
                        query,
                        headers,
                        body: Bytes::new(),
                    },
                };
                if end {
                    let mut arrived = head;
                    arrived.request.body = body;
                    dispatch(arrived, shared, generation).await;
                } else {
                    let mut buf =
                        BytesMut::with_capacity(expected_len(&head.request.headers, body.len()));
                    buf.extend_from_slice(&body);
                    partial.insert(head.id.clone(), Partial { head, body: buf });
                }
            }
            RelayMessage::RequestChunk { id, data, end } => {
                let Some(p) = partial.get_mut(&id) else {
                    continue;
                };
                if p.body.len() + data.len() > MAX_REQUEST_BODY {
                    partial.remove(&id);
                    let message = format!("request body over {} MiB", MAX_REQUEST_BODY >> 20);
                    let _ = shared
                        .outbound
                        .send(Outbound {
                            generation,
                            message: ClientMessage::Failed { id, message },
                        })
                        .await;
                    continue;
                }
                p.body.extend_from_slice(&data);
                if end {
                    if let Some(Partial { mut head, body }) = partial.remove(&id) {
                        head.request.body = body.freeze();
                        dispatch(head, shared, generation).await;
                    }
                }
            }
            RelayMessage::Cancel { id } => {
                partial.remove(&id);
            }
            RelayMessage::DeadLettered { id, reason } => {
                tracing::warn!(delivery = %id, %reason, "the relay set a queued delivery aside");
            }
            RelayMessage::Welcome { .. } | RelayMessage::Refused { .. } => {
                tracing::debug!("ignored a handshake message during the session");
            }
        }
    }
}

/// Capacity for a chunked body: its Content-Length when plausible, so it is not reallocated.
fn expected_len(headers: &[Header], first: usize) -> usize {
    illumitunnel::headers::get(headers, "content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
        .filter(|n| *n <= MAX_REQUEST_BODY)
        .unwrap_or(first)
        .max(first)
}

async fn dispatch(arrived: Arrived, shared: &Arc<Shared>, generation: u64) {
    // Waiting for a slot here slows reading, which is the backpressure the relay should see.
    let Ok(slot) = shared.slots.clone().acquire_owned().await else {
        return;
    };
    let task_shared = shared.clone();
    shared.tracker.spawn(async move {
        handle_delivery(arrived, &task_shared, generation).await;
        drop(slot);
    });
}

/// Forwards one delivery, answers the relay, then hands it to the recorder.
async fn handle_delivery(arrived: Arrived, shared: &Shared, generation: u64) {
    let Arrived {
        id,
        received_at_ms,
        answer,
        queued,
        request,
    } = arrived;
    if queued {
        if let Some(recorded) = shared.recorder.answer(id.clone()).await {
            // A redelivery of something already recorded: neither forwarded nor shown again.
            // A sender may still wait for it (its first session vanished before answering), so
            // it gets the recorded answer; then the relay may drop it from its queue.
            if answer {
                answer_relay(&shared.outbound, generation, &id, &recorded).await;
            }
            let _ = shared
                .outbound
                .send(Outbound::any(ClientMessage::Recorded { id }))
                .await;
            return;
        }
    }
    let forwarded = shared.forwarder.forward(&request).await;
    if answer {
        answer_relay(&shared.outbound, generation, &id, &forwarded.result).await;
    }
    // The capture store keeps the request as the local server saw it.
    let mut request = request;
    request.path = forwarded.uri.path().to_string();
    request.query = forwarded.uri.query().unwrap_or_default().to_string();
    shared
        .recorder
        .record(Capture {
            id,
            received_at_ms,
            tunnel: shared.tunnel.clone(),
            queued,
            target: forwarded.uri.to_string(),
            request,
            result: forwarded.result,
            duration_us: forwarded.duration.as_micros() as i64,
            source: forwarded.source,
            skipped: forwarded.skipped,
        })
        .await;
}

async fn answer_relay(
    outbound: &mpsc::Sender<Outbound>,
    generation: u64,
    id: &DeliveryId,
    result: &Result<illumitunnel::delivery::ResponseRecord, String>,
) {
    let send = |message| {
        outbound.send(Outbound {
            generation,
            message,
        })
    };
    match result {
        Ok(response) => {
            let (first, rest) = split_body(&response.body);
            let last = rest.len();
            let head = ClientMessage::Response {
                id: id.clone(),
                status: response.status,
                headers: response.headers.clone(),
                body: first,
                end: last == 0,
            };
            if send(head).await.is_err() {
                return;
            }
            for (i, data) in rest.into_iter().enumerate() {
                let chunk = ClientMessage::ResponseChunk {
                    id: id.clone(),
                    data,
                    end: i + 1 == last,
                };
                if send(chunk).await.is_err() {
                    return;
                }
            }
        }
        Err(message) => {
            let _ = send(ClientMessage::Failed {
                id: id.clone(),
                message: message.clone(),
            })
            .await;
        }
    }
}

async fn write_half(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    outbound: &mut mpsc::Receiver<Outbound>,
    generation: u64,
    keepalive: Duration,
    last_seen: &AtomicU64,
    started: Instant,
) -> String {
    let mut ping = tokio::time::interval(keepalive);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let lost = |e: tungstenite::Error| format!("connection to relay lost: {e}");
    loop {
        tokio::select! {
            // `mpsc::Receiver::recv` is cancel-safe: a message is never lost to the ping branch.
            next = outbound.recv() => {
                let Some(first) = next else {
                    return "the client is shutting down".into();
                };
                let mut pending = Some(first);
                let mut written = 0;
                while let Some(out) = pending.take() {
                    // Answers for a connection that has since dropped mean nothing to this one.
                    if out.generation == 0 || out.generation == generation {
                        if let Err(e) = sink.feed(Message::Binary(out.message.encode())).await {
                            return lost(e);
                        }
                        written += 1;
                    }
                    if written < MAX_WRITE_BATCH {
                        pending = outbound.try_recv().ok();
                    }
                }
                if let Err(e) = sink.flush().await {
                    return lost(e);
                }
            }
            _ = ping.tick() => {
                let silent_ms = (started.elapsed().as_millis() as u64)
                    .saturating_sub(last_seen.load(Ordering::Relaxed));
                if silent_ms > 2 * keepalive.as_millis() as u64 {
                    return format!(
                        "the relay was silent for {:.0} s",
                        Duration::from_millis(silent_ms).as_secs_f64()
                    );
                }
                if let Err(e) = sink.send(Message::Ping(Vec::new())).await {
                    return lost(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_map_to_websocket_schemes() {
        for (input, shown) in [
            ("https://relay.example.com", "wss://relay.example.com:443"),
            ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080"),
            (
                "wss://relay.example.com:9443/base/",
                "wss://relay.example.com:9443/base",
            ),
            ("ws://[::1]:80", "ws://[::1]:80"),
        ] {
            assert_eq!(
                RelayUrl::parse(input).unwrap().to_string(),
                shown,
                "{input}"
            );
        }
        assert_eq!(
            RelayUrl::parse("https://r.example").unwrap().connect_url(),
            "wss://r.example:443/_illumitunnel/connect"
        );
    }

    #[test]
    fn bad_relay_urls_are_sentences() {
        for (input, needle) in [
            ("relay.example.com", "missing https://"),
            ("ftp://relay.example.com", "scheme must be"),
            ("https://", "not a URL"),
            ("https://u:p@r.example", "user info"),
        ] {
            let err = RelayUrl::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(err.starts_with("invalid --relay "), "{err}");
        }
    }

    #[test]
    fn refusals_say_what_to_do() {
        let t = TunnelName::parse("my-app").unwrap();
        assert_eq!(
            refusal_sentence(Refusal::Unauthorized, "bad", &t),
            "relay refused the token; check --token or ILLUMITUNNEL_TOKEN"
        );
        assert!(refusal_sentence(Refusal::TunnelTaken, "", &t).contains("--tunnel NAME"));
        assert!(refusal_sentence(Refusal::VersionMismatch, "", &t).contains("upgrade"));
    }

    #[test]
    fn chunked_body_capacity_trusts_only_plausible_lengths() {
        let h = |v: &str| vec![("content-length".to_string(), v.as_bytes().to_vec())];
        assert_eq!(expected_len(&h("1000"), 10), 1000);
        assert_eq!(expected_len(&h("99999999999"), 10), 10);
        assert_eq!(expected_len(&h("x"), 10), 10);
        assert_eq!(expected_len(&[], 10), 10);
    }
}
