//! The accept loop and the HTTP layer: every connection (TLS or plain) is served by hyper-util's
//! auto builder (HTTP/1.1 and HTTP/2, upgrades for the client websocket), watched by a
//! `GracefulShutdown` so that a shutdown drains requests in flight (queueing those whose answer
//! does not come) before sessions close and the offline queue is flushed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::auth::Auth;
use crate::config::{Config, TlsConfig};
use crate::error::IngressError;
use crate::ingress::{self, IngressContext, WebhookRequest};
use crate::metrics::Metrics;
use crate::queue::{self, QueueHandle, QueueStore};
use crate::route::{self, Route};
use crate::session::SessionContext;
use crate::tunnel::{DrainPolicy, Tunnels};
use crate::{session, tls, RelayError};

/// Longest a sender may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest between answering 101 and the websocket being usable.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time, beyond the response timeout, a shutdown waits for requests in flight.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Longest a shutdown waits for sessions to close after requests drained.
const SESSION_CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Beyond the response timeout, how long a drain waits for the client to record a queued
/// delivery (it forwards it to the local server first).
const BACKLOG_ACK_GRACE: Duration = Duration::from_secs(30);
/// Longest pause between two expiry passes over the offline queue.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// What the HTTP layer dispatches to: each role gets its own narrow view.
struct Dispatch {
    ingress: Arc<IngressContext>,
    sessions: Arc<SessionContext>,
    auth: Auth,
    metrics: Arc<Metrics>,
    /// `X-Forwarded-Proto` on plain connections (the public URL's scheme behind a TLS proxy).
    plain_proto: &'static str,
    tracker: TaskTracker,
}

/// Binding the listener failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process holds the port.
    #[error("address {0} is already in use; pass --listen with another port")]
    InUse(SocketAddr),
    /// Anything else (permission, no such address).
    #[error("could not listen on {addr}: {source}; pass --listen with an address of this machine")]
    Other {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Binds `addr` with a message that says what to do when it fails.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => BindError::InUse(addr),
            _ => BindError::Other { addr, source },
        })
}

pub(crate) async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let local = listener.local_addr()?;
    let acceptor = match config.tls {
        TlsConfig::Plain => None,
        TlsConfig::Certified { chain, key } => {
            Some(tls::acceptor(chain, key).map_err(RelayError::Tls)?)
        }
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let public_base = config
        .public_url
        .clone()
        .unwrap_or_else(|| default_public_base(scheme, local));
    let plain_proto = if public_base.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    let metrics = Arc::new(Metrics::new());
    let data_dir = config.data_dir.clone();
    let limits = config.queue;
    let gauges = metrics.queue.clone();
    let store = tokio::task::spawn_blocking(move || QueueStore::open(&data_dir, limits, gauges))
        .await
        .map_err(|e| RelayError::DataDir(format!("could not open the relay database: {e}")))?
        .map_err(|e| RelayError::DataDir(e.to_string()))?;
    let owners = store
        .owners()
        .map_err(|e| RelayError::DataDir(e.to_string()))?;
    let (queue, queue_thread) = queue::spawn(store, config.clock.clone())?;
    let tracker = TaskTracker::new();
    // Cancelled after HTTP requests drained: ends every session and drain.
    let closing = CancellationToken::new();
    let tunnels = Tunnels::new(
        queue.clone(),
        metrics.clone(),
        DrainPolicy {
            ack_timeout: config.response_timeout + BACKLOG_ACK_GRACE,
            ..DrainPolicy::default()
        },
        tracker.clone(),
        closing.clone(),
    );
    for (tunnel, owner) in owners {
        tunnels.preload(tunnel, owner);
    }
    let dispatch = Arc::new(Dispatch {
        ingress: Arc::new(IngressContext {
            tunnels: tunnels.clone(),
            metrics: metrics.clone(),
            max_body: config.max_body,
            response_timeout: config.response_timeout,
            offline: config.offline,
            shutdown: shutdown.clone(),
        }),
        sessions: Arc::new(SessionContext {
            tunnels,
            queue: queue.clone(),
            public_base: public_base.clone(),
            keepalive: config.keepalive,
            max_body: config.max_body,
            closing: closing.clone(),
        }),
        auth: Auth::new(&config.tokens, config.allow_anonymous)
            .with_process_token(config.process_token.as_ref()),
        metrics,
        plain_proto,
        tracker: tracker.clone(),
    });
    info!(%local, public_url = %public_base, "relay serving");
    let expiry = tokio::spawn(expire_periodically(
        queue.clone(),
        config.queue.max_age,
        shutdown.clone(),
    ));

    let builder = Arc::new(http_builder());
    let graceful = GracefulShutdown::new();
    loop {
        // Both branches are cancel-safe: a token wait and `TcpListener::accept`.
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(%err, "accept failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = serve_connection(
            dispatch.clone(),
            builder.clone(),
            acceptor.clone(),
            stream,
            peer,
            graceful.watcher(),
        );
        tracker.spawn(connection);
    }
    drop(listener);

    info!("shutting down: draining requests in flight");
    let drain = config.response_timeout + DRAIN_GRACE;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after {drain:?}; closing anyway");
    }
    closing.cancel();
    tracker.close();
    if tokio::time::timeout(SESSION_CLOSE_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!("sessions did not close within {SESSION_CLOSE_GRACE:?}");
    }
    let _ = expiry.await;
    queue.close().await;
    let _ = tokio::task::spawn_blocking(move || queue_thread.join()).await;
    info!("relay stopped");
    Ok(())
}

/// Drops aged deliveries from every tunnel's queue now and then, one bounded pass at a time.
async fn expire_periodically(queue: QueueHandle, max_age: Duration, shutdown: CancellationToken) {
    let every = (max_age / 2).clamp(Duration::from_secs(1), EXPIRE_EVERY);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Both branches are cancel-safe: a token wait and `Interval::tick`.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match queue.expire().await {
            Ok(0) => {}
            Ok(expired) => info!(
                expired,
                "dropped queued deliveries older than the queue's age limit"
            ),
            Err(err) => warn!(%err, "could not expire the offline queue"),
        }
    }
}

/// Installs SIGTERM and SIGINT (Ctrl-C) handlers at once, so a signal that comes before the
/// returned future first runs (a current-thread runtime runs spawned tasks only when `main`
/// yields) still shuts down cleanly; the future cancels `shutdown` on either signal.
pub fn cancel_on_signal(
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    async fn received(signal: Option<Signal>) {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let term = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            _ = received(term) => {}
            _ = received(interrupt) => {}
            _ = shutdown.cancelled() => return,
        }
        shutdown.cancel();
    }
}

fn default_public_base(scheme: &str, local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", local.port())
    } else {
        format!("{scheme}://{local}")
    }
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    builder
}

async fn serve_connection(
    dispatch: Arc<Dispatch>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    acceptor: Option<TlsAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
) {
    let Some(acceptor) = acceptor else {
        return serve_http(dispatch, &builder, stream, peer, false, watcher).await;
    };
    match tokio::time::timeout(tls::TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_http(dispatch, &builder, stream, peer, true, watcher).await,
        Ok(Err(err)) => debug!(%peer, %err, "TLS handshake failed"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_http<I>(
    dispatch: Arc<Dispatch>,
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    peer: SocketAddr,
    is_tls: bool,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let dispatch = dispatch.clone();
        async move { Ok::<_, Infallible>(route_request(dispatch, req, peer, is_tls).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(err) = watcher.watch(connection).await {
        debug!(%peer, %err, "connection ended with an error");
    }
}

async fn route_request(
    dispatch: Arc<Dispatch>,
    req: Request<Incoming>,
    peer: SocketAddr,
    is_tls: bool,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    match route::parse(parts.uri.path()) {
        Route::Tunnel { tunnel, rest } => {
            let proto = if is_tls {
                "https"
            } else {
                dispatch.plain_proto
            };
            let request = WebhookRequest {
                parts: &parts,
                tunnel,
                rest,
                peer,
                proto,
            };
            ingress::handle(&dispatch.ingress, request, body).await
        }
        Route::Healthz => text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"ok"),
        ),
        Route::Metrics => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(dispatch.metrics.encode()),
        ),
        Route::Connect => upgrade(&dispatch, Request::from_parts(parts, body)),
        Route::NotFound => IngressError::NotFound.into_response(),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Answers a client's websocket upgrade with 101 and runs the session on a tracked task.
fn upgrade(dispatch: &Dispatch, req: Request<Incoming>) -> Response<Full<Bytes>> {
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
    let auth = dispatch.auth.check(
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    );
    let on_upgrade = hyper::upgrade::on(req);
    let sessions = dispatch.sessions.clone();
    dispatch.tracker.spawn(async move {
        match tokio::time::timeout(UPGRADE_TIMEOUT, on_upgrade).await {
            Ok(Ok(upgraded)) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(session::ws_config()),
                )
                .await;
                session::run(sessions, ws, auth).await;
            }
            Ok(Err(err)) => debug!(%err, "websocket upgrade failed"),
            Err(_) => debug!("websocket upgrade timed out"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}
