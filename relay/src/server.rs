//! The accept loop and the HTTP layer: every connection (TLS or plain) is served by hyper-util's
//! auto builder (HTTP/1.1 and HTTP/2, upgrades for the client websocket), watched by a
//! `GracefulShutdown` so that a shutdown drains requests in flight (queueing those whose answer
//! does not come) before sessions close and the offline queue is flushed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::access::{self, Access};
use crate::budget::InflightBudget;
use crate::config::{Config, Limits};
use crate::conn::{Activity, ConnectionLimits, LingerIo, WRITE_TIMEOUT};
use crate::error::IngressError;
use crate::ingress::IngressContext;
use crate::metrics::Metrics;
use crate::proxy;
use crate::session::SessionContext;
use crate::tunnel::{CatchUpPolicy, Tunnels};
use crate::{node, tls, RelayError};

mod housekeeping;
mod routing;

use routing::{route_request, text, Handlers, Link};

/// Longest a sender may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent HTTP/2 streams one connection may open.
pub const MAX_H2_STREAMS: u32 = 32;
/// How far above `--max-header-bytes` hyper's own head limits sit.
const HYPER_HEAD_SLACK: usize = 16 * 1024;
/// hyper's smallest read buffer.
const MIN_HYPER_BUF: usize = 8192;
/// Extra time, beyond the response timeout, a shutdown waits for requests in flight.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Longest a shutdown waits for sessions to close after requests drained.
const SESSION_CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Beyond the response timeout, how long a drain waits for the client to record a queued
/// delivery (it forwards it to the local server first).
const BACKLOG_ACK_GRACE: Duration = Duration::from_secs(30);

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

/// Connections the kernel queues for the accept loop (capped by `net.core.somaxconn`): the
/// default of 128 drops SYNs when a few hundred connections arrive at once (a burst through a
/// proxy), and each dropped one waits a second or more before its retry.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `addr` with a message that says what to do when it fails.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let fail = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::AddrInUse => BindError::InUse(addr),
        _ => BindError::Other { addr, source },
    };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(fail)?;
    // As std and tokio do: a restarted relay rebinds at once despite old TIME_WAIT sockets.
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)
}

/// Serves `listener` with the node `config` describes until `shutdown`, then drains requests
/// in flight, closes sessions and the queue.
pub(crate) async fn run(
    mut config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let local = listener.local_addr()?;
    let tls = std::mem::replace(&mut config.tls, crate::TlsConfig::Plain);
    let served = node::serve_tls(tls, &config.data_dir, &shutdown).map_err(RelayError::Tls)?;
    let scheme = if served.acceptor.is_some() {
        "https"
    } else {
        "http"
    };
    let public_base = config
        .public_url
        .clone()
        .unwrap_or_else(|| default_public_base(scheme, local, config.public_host.as_deref()));
    let metrics = Arc::new(Metrics::new());
    metrics.queue.label_tunnels(config.metrics_tunnel_labels);
    let mut backend = node::open_backend(&config, &metrics).await?;
    let tracker = TaskTracker::new();
    // Cancelled after HTTP requests drained: ends every session and drain.
    let closing = CancellationToken::new();
    let tunnels = Tunnels::new(
        backend.queue.clone(),
        metrics.clone(),
        CatchUpPolicy {
            ack_timeout: config.response_timeout + BACKLOG_ACK_GRACE,
            window: config.catch_up_window,
            ..CatchUpPolicy::default()
        },
        tracker.clone(),
        closing.clone(),
        backend.placement.clone(),
    );
    for (tunnel, owner) in std::mem::take(&mut backend.owners) {
        tunnels.preload(tunnel, owner);
    }
    tunnels.spawn_release_watch();
    let (auth, token_poll) = start_access(&config, backend.stored_tokens.clone(), &shutdown).await;
    let reload = std::mem::take(&mut config.reload);
    let reloader = crate::reload::spawn(reload, served.slot, auth.clone(), shutdown.clone())?;
    let roles = Roles {
        tunnels,
        auth,
        metrics,
        public_base,
        tracker,
        closing,
        shutdown: shutdown.clone(),
    };
    let handlers = Arc::new(handlers_for(&config, local, &backend, roles));
    let (tunnels, ingress) = (&handlers.ingress.tunnels, handlers.ingress.clone());
    let (tracker, closing) = (&handlers.tracker, &handlers.sessions.closing);
    backend.start(tunnels, ingress, tracker, closing, &shutdown);
    info!(%local, public_url = %handlers.sessions.public_base, "relay serving");
    let mut tasks = side_tasks(&config, &handlers, &backend, &shutdown).await?;
    tasks.extend([token_poll, reloader].into_iter().flatten());
    let graceful = accept(&config, listener, &handlers, served.acceptor, &shutdown).await;
    close(&config, graceful, &handlers).await;
    for task in tasks {
        let _ = task.await;
    }
    backend.queue.close().await;
    if let Some(thread) = backend.queue_thread {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    info!("relay stopped");
    Ok(())
}

/// The queue's housekeeping and, with `--metrics-listen`, the metrics listener; both end at
/// `shutdown`.
async fn side_tasks(
    config: &Config,
    handlers: &Handlers,
    backend: &node::Backend,
    shutdown: &CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, RelayError> {
    let mut tasks = vec![tokio::spawn(housekeeping::expire_periodically(
        backend.queue.clone(),
        handlers.ingress.tunnels.clone(),
        config.queue.max_age,
        config.limits.tunnel_ttl,
        shutdown.clone(),
    ))];
    if let Some(addr) = config.metrics_listen {
        let metrics = serve_metrics(
            bind(addr).await?,
            handlers.metrics.clone(),
            shutdown.clone(),
        );
        tasks.push(tokio::spawn(metrics.in_current_span()));
    }
    Ok(tasks)
}

/// Starts checking client tokens: the configured ones, and the stored ones read again now and
/// then. Without tokens only an anonymous relay (or the embedded one, with its process token)
/// is open; any other relay with an empty set accepts nobody, on loopback too (a proxy there
/// makes it public).
async fn start_access(
    config: &Config,
    stored: Option<Arc<dyn access::StoredTokens>>,
    shutdown: &CancellationToken,
) -> (Arc<Access>, Option<tokio::task::JoinHandle<()>>) {
    let open_when_empty =
        config.tokens.is_empty() && (config.allow_anonymous || config.process_token.is_some());
    access::start(
        &config.tokens,
        config.allow_anonymous,
        open_when_empty,
        config.process_token.as_ref(),
        stored,
        shutdown.clone(),
    )
    .await
}

/// What the HTTP layer's roles share, built before [`handlers_for`].
struct Roles {
    tunnels: Arc<Tunnels>,
    auth: Arc<Access>,
    metrics: Arc<Metrics>,
    public_base: String,
    tracker: TaskTracker,
    closing: CancellationToken,
    shutdown: CancellationToken,
}

/// Each role's narrow view of the node.
fn handlers_for(config: &Config, local: SocketAddr, backend: &node::Backend, r: Roles) -> Handlers {
    let plain_proto = if r.public_base.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    Handlers {
        ingress: Arc::new(IngressContext {
            tunnels: r.tunnels.clone(),
            metrics: r.metrics.clone(),
            max_body: config.max_body,
            response_timeout: config.response_timeout,
            offline: config.offline,
            shutdown: r.shutdown.clone(),
            budget: InflightBudget::new(config.limits.max_inflight_bytes),
            min_body_rate: config.limits.min_body_rate,
            min_body_grace: config.limits.min_body_grace,
            placement: backend.placement.clone(),
            peers: backend.peers.clone(),
        }),
        sessions: Arc::new(SessionContext {
            tunnels: r.tunnels,
            queue: backend.queue.clone(),
            public_base: r.public_base,
            keepalive: config.keepalive,
            max_body: config.max_body,
            closing: r.closing,
            placement: backend.placement.clone(),
        }),
        auth: r.auth,
        metrics: r.metrics,
        // Behind a proxy on loopback every sender looks local: /metrics only on --metrics-listen.
        serve_metrics: local.ip().is_loopback()
            && config.trusted_proxies.is_empty()
            && !config.proxy_protocol,
        proxies: config.trusted_proxies.clone(),
        connections: ConnectionLimits::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        ),
        max_header_bytes: config.limits.max_header_bytes,
        first_request_timeout: config.limits.first_request_timeout,
        idle_timeout: config.limits.idle_timeout,
        plain_proto,
        tracker: r.tracker,
        placement: backend.placement.clone(),
        next_connection: AtomicU64::new(0),
    }
}

/// Accepts connections until `shutdown`; returns what watches the connections still open.
async fn accept(
    config: &Config,
    listener: TcpListener,
    handlers: &Arc<Handlers>,
    acceptor: Option<TlsAcceptor>,
    shutdown: &CancellationToken,
) -> GracefulShutdown {
    let builder = Arc::new(http_builder(&config.limits));
    let graceful = GracefulShutdown::new();
    let proxy_protocol = config.proxy_protocol;
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
        let (connections, proxies) = (&handlers.connections, &handlers.proxies);
        let Some(slot) = proxy::admit(connections, proxies, proxy_protocol, peer) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (handlers, builder) = (handlers.clone(), builder.clone());
        let (acceptor, watcher) = (acceptor.clone(), graceful.watcher());
        let span = tracing::debug_span!("connection", %peer, sender = tracing::field::Empty);
        let tracker = handlers.tracker.clone();
        tracker.spawn(
            async move {
                let (mut stream, mut peer, mut sender) = (stream, peer, None);
                if proxy_protocol {
                    let (limits, within) = (&handlers.connections, handlers.first_request_timeout);
                    let read = proxy::read_sender(&mut stream, peer, limits, within);
                    let Some((source, slot)) = read.await else {
                        return;
                    };
                    tracing::Span::current().record("sender", tracing::field::display(source));
                    (peer, sender) = (source, slot);
                }
                serve_connection(handlers, builder, acceptor, stream, peer, watcher).await;
                drop((slot, sender));
            }
            .instrument(span),
        );
    }
    drop(listener);
    graceful
}

/// Shuts down in order: requests in flight first (up to the response timeout), then sessions.
async fn close(config: &Config, graceful: GracefulShutdown, handlers: &Handlers) {
    info!("shutting down: draining requests in flight");
    let drain = config.response_timeout + DRAIN_GRACE;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after {drain:?}; closing anyway");
    }
    handlers.sessions.closing.cancel();
    handlers.tracker.close();
    if tokio::time::timeout(SESSION_CLOSE_GRACE, handlers.tracker.wait())
        .await
        .is_err()
    {
        warn!("sessions did not close within {SESSION_CLOSE_GRACE:?}");
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

/// Serves `/metrics` (and `/healthz`) on the operator's `--metrics-listen` address until
/// shutdown; plain HTTP/1.1.
async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        // Both branches are cancel-safe.
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(%err, "metrics accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let metrics = metrics.clone();
            async move {
                let response = match req.uri().path() {
                    "/metrics" => text(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        Bytes::from(metrics.encode()),
                    ),
                    "/healthz" => text(
                        StatusCode::OK,
                        "text/plain; charset=utf-8",
                        Bytes::from_static(b"ok"),
                    ),
                    _ => IngressError::NotFound.into_response(),
                };
                Ok::<_, Infallible>(response)
            }
        });
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

fn default_public_base(scheme: &str, local: SocketAddr, host: Option<&str>) -> String {
    if let Some(host) = host {
        let host = match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{host}]"),
            Err(_) => host.to_owned(),
        };
        return format!("{scheme}://{host}:{}", local.port());
    }
    if local.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", local.port())
    } else {
        format!("{scheme}://{local}")
    }
}

/// hyper's settings. Its own head limits sit a little above `--max-header-bytes`, so that
/// heads just over the limit reach the relay and get its JSON 431; only far larger ones get
/// hyper's bare answer (see docs/security.md).
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let hyper_head_limit = limits.max_header_bytes + HYPER_HEAD_SLACK;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's timer also runs while a keep-alive connection waits for its next request, so
        // it must not close one before `--idle-timeout` does; the first request's head is
        // bounded by the 10 s first-request watch.
        .header_read_timeout(HEADER_READ_TIMEOUT.max(limits.idle_timeout))
        .max_buf_size(hyper_head_limit.max(MIN_HYPER_BUF));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_header_list_size(u32::try_from(hyper_head_limit).unwrap_or(u32::MAX));
    builder
}

/// One accepted connection: TLS (if any), then HTTP until the sender leaves, its idle time
/// runs out, or the relay shuts down.
async fn serve_connection(
    handlers: Arc<Handlers>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    acceptor: Option<TlsAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
) {
    let activity = Activity::new();
    let max_body = handlers.ingress.max_body;
    let Some(acceptor) = acceptor else {
        let io = LingerIo::new(stream, activity.clone(), max_body);
        return serve_http(handlers, &builder, io, peer, false, activity, watcher).await;
    };
    // The TLS handshake counts against the first-request time, like every other silence.
    let handshake = handlers.first_request_timeout;
    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
        Ok(Ok(mut stream)) if tls::is_acme_validation(stream.get_ref().1) => {
            debug!("answered an ACME TLS-ALPN-01 validation");
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
        }
        Ok(Ok(stream)) => {
            let io = LingerIo::new(stream, activity.clone(), max_body);
            serve_http(handlers, &builder, io, peer, true, activity, watcher).await
        }
        Ok(Err(err)) => debug!(%err, "TLS handshake failed"),
        Err(_) => debug!("TLS handshake timed out"),
    }
}

async fn serve_http<I>(
    handlers: Arc<Handlers>,
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    peer: SocketAddr,
    is_tls: bool,
    activity: Arc<Activity>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (first, idle) = (handlers.first_request_timeout, handlers.idle_timeout);
    let watched = activity.clone();
    let connection = handlers.next_connection.fetch_add(1, Ordering::Relaxed);
    let service = service_fn(move |req| {
        let (handlers, activity) = (handlers.clone(), activity.clone());
        async move {
            let _busy = activity.begin();
            let link = Link {
                peer,
                connection,
                is_tls,
            };
            let response = route_request(handlers, req, link)
                .await
                .map(|body| body.watched(|| activity.answering()));
            let status = response.status();
            // The sender may still be writing a body nobody will read; one too slow for
            // --min-body-rate is closed at once instead.
            if (status.is_client_error() && status != StatusCode::REQUEST_TIMEOUT)
                || status == StatusCode::SERVICE_UNAVAILABLE
            {
                activity.linger();
            }
            Ok::<_, Infallible>(response)
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    // Both branches are cancel-safe: dropping the connection closes it.
    tokio::select! {
        served = watcher.watch(connection) => {
            if let Err(err) = served {
                debug!(%err, "connection ended with an error");
            }
        }
        _ = watched.expired(first, idle) => debug!("closed an idle connection"),
        _ = watched.answer_stalled(WRITE_TIMEOUT) => {
            debug!("dropped a connection whose sender took none of its answer for {WRITE_TIMEOUT:?}");
        }
    }
}
