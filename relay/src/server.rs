//! The accept loop and the HTTP layer: every connection (TLS or plain) is served by hyper-util's
//! auto builder (HTTP/1.1 and HTTP/2, upgrades for the client websocket), watched by a
//! `GracefulShutdown` so that a shutdown drains requests in flight (queueing those whose answer
//! does not come) before sessions close and the offline queue is flushed.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
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
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::access::{self, Access, Refused};
use crate::budget::{AnswerBody, InflightBudget};
use crate::cluster::{self, Cluster};
use crate::config::{Config, Limits};
use crate::conn::{Activity, ConnectionLimits, LingerIo, WRITE_TIMEOUT};
use crate::error::IngressError;
use crate::ingress::{self, IngressContext, WebhookRequest};
use crate::metrics::Metrics;
use crate::proxy::{self, Origin, TrustedProxies};
use crate::queue::{self, QueueHandle, QueueStore};
use crate::route::{self, Route};
use crate::session::SessionContext;
use crate::tunnel::{DrainPolicy, Tunnels};
use crate::{session, tls, RelayError};

/// Longest a sender may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent HTTP/2 streams one connection may open.
pub const MAX_H2_STREAMS: u32 = 32;
/// How far above `--max-header-bytes` hyper's own head limits sit.
const HYPER_HEAD_SLACK: usize = 16 * 1024;
/// hyper's smallest read buffer.
const MIN_HYPER_BUF: usize = 8192;
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
    auth: Arc<Access>,
    metrics: Arc<Metrics>,
    /// Whether this listener serves `/metrics` (only on loopback, and not behind a proxy).
    serve_metrics: bool,
    /// `--trusted-proxy`: peers whose `X-Forwarded-For` names the sender.
    proxies: TrustedProxies,
    /// Open connections, and senders behind a trusted proxy by their real address.
    connections: Arc<ConnectionLimits>,
    max_header_bytes: usize,
    first_request_timeout: Duration,
    idle_timeout: Duration,
    /// `X-Forwarded-Proto` on plain connections (the public URL's scheme behind a TLS proxy).
    plain_proto: &'static str,
    tracker: TaskTracker,
    /// On a cluster node: `/healthz` says whether NATS is reachable.
    cluster: Option<Arc<Cluster>>,
    /// The next connection's id, for the budget's per-connection share.
    next_connection: AtomicU64,
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

pub(crate) async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let local = listener.local_addr()?;
    let served = tls::serve(config.tls, &config.data_dir, &shutdown).map_err(RelayError::Tls)?;
    let acceptor = served.acceptor;
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
    metrics.queue.label_tunnels(config.metrics_tunnel_labels);
    let (queue, queue_thread, cluster, owners) = match &config.cluster {
        None => {
            let data_dir = config.data_dir.clone();
            let limits = config.queue;
            let gauges = metrics.queue.clone();
            let store =
                tokio::task::spawn_blocking(move || QueueStore::open(&data_dir, limits, gauges))
                    .await
                    .map_err(|e| {
                        RelayError::DataDir(format!("could not open the relay database: {e}"))
                    })?
                    .map_err(|e| RelayError::DataDir(e.to_string()))?;
            let owners = store
                .owners()
                .map_err(|e| RelayError::DataDir(e.to_string()))?;
            let (queue, thread) = queue::spawn(store, config.clock.clone())?;
            (queue, Some(thread), None, owners)
        }
        Some(settings) => {
            let cluster = Cluster::connect(settings, config.queue)
                .await
                .map_err(|e| RelayError::Cluster(e.to_string()))?;
            info!(node = %settings.node_id, nats = %settings.nats.servers_text(), login = %settings.nats.login.describe(), "joined the relay cluster");
            let queue = QueueHandle::cluster(cluster.clone(), config.queue);
            (queue, None, Some(cluster), Vec::new())
        }
    };
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
        cluster.as_ref().map(|c| c.view().clone()),
    );
    for (tunnel, owner) in owners {
        tunnels.preload(tunnel, owner);
    }
    tunnels.spawn_release_watch();
    // Without tokens only an anonymous relay (or the embedded one, with its process token) is
    // open; any other relay with an empty set accepts nobody, on loopback too (a proxy there
    // makes it public).
    let open_when_empty =
        config.tokens.is_empty() && (config.allow_anonymous || config.process_token.is_some());
    let stored = match &cluster {
        Some(cluster) => access::Stored::Cluster(Box::new(cluster.tokens.clone())),
        None if config.stored_tokens => access::Stored::Dir(config.data_dir.clone()),
        None => access::Stored::Nowhere,
    };
    let (auth, token_poll) = access::start(
        &config.tokens,
        config.allow_anonymous,
        open_when_empty,
        config.process_token.as_ref(),
        stored,
        shutdown.clone(),
    )
    .await;
    let reloader =
        crate::reload::spawn(config.reload, served.slot, auth.clone(), shutdown.clone())?;
    let dispatch = Arc::new(Dispatch {
        ingress: Arc::new(IngressContext {
            tunnels: tunnels.clone(),
            metrics: metrics.clone(),
            max_body: config.max_body,
            response_timeout: config.response_timeout,
            offline: config.offline,
            shutdown: shutdown.clone(),
            budget: InflightBudget::new(config.limits.max_inflight_bytes),
            min_body_rate: config.limits.min_body_rate,
            min_body_grace: config.limits.min_body_grace,
            cluster: cluster.clone(),
        }),
        sessions: Arc::new(SessionContext {
            tunnels: tunnels.clone(),
            queue: queue.clone(),
            public_base: public_base.clone(),
            keepalive: config.keepalive,
            max_body: config.max_body,
            closing: closing.clone(),
            cluster: cluster.clone(),
        }),
        auth: auth.clone(),
        metrics: metrics.clone(),
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
        tracker: tracker.clone(),
        cluster: cluster.clone(),
        next_connection: AtomicU64::new(0),
    });
    if let Some(cluster) = &cluster {
        // Presence lasts as long as sessions do; other nodes' deliveries stop coming at once.
        cluster::presence::spawn(cluster, &tunnels, &tracker, &closing);
        cluster::forward::spawn(cluster, dispatch.ingress.clone(), &tracker, &shutdown);
    }
    info!(%local, public_url = %public_base, "relay serving");
    let expiry = tokio::spawn(expire_periodically(
        queue.clone(),
        tunnels.clone(),
        config.queue.max_age,
        config.limits.tunnel_ttl,
        shutdown.clone(),
    ));

    let metrics_task = match config.metrics_listen {
        Some(addr) => Some(tokio::spawn(
            serve_metrics(bind(addr).await?, metrics.clone(), shutdown.clone()).in_current_span(),
        )),
        None => None,
    };
    let builder = Arc::new(http_builder(&config.limits));
    let connections = dispatch.connections.clone();
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
        let proxies = &dispatch.proxies;
        let Some(slot) = proxy::admit(&connections, proxies, config.proxy_protocol, peer) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (dispatch, builder) = (dispatch.clone(), builder.clone());
        let (acceptor, watcher) = (acceptor.clone(), graceful.watcher());
        let proxy_protocol = config.proxy_protocol;
        let span = tracing::debug_span!("connection", %peer, sender = tracing::field::Empty);
        tracker.spawn(
            async move {
                let (mut stream, mut peer, mut sender) = (stream, peer, None);
                if proxy_protocol {
                    let (limits, within) = (&dispatch.connections, dispatch.first_request_timeout);
                    let read = proxy::read_sender(&mut stream, peer, limits, within);
                    let Some((source, slot)) = read.await else {
                        return;
                    };
                    tracing::Span::current().record("sender", tracing::field::display(source));
                    (peer, sender) = (source, slot);
                }
                serve_connection(dispatch, builder, acceptor, stream, peer, watcher).await;
                drop((slot, sender));
            }
            .instrument(span),
        );
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
    for task in [token_poll, reloader].into_iter().flatten() {
        let _ = task.await;
    }
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    queue.close().await;
    if let Some(thread) = queue_thread {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    info!("relay stopped");
    Ok(())
}

/// Now and then drops aged deliveries from every tunnel's queue, one bounded pass at a time,
/// and forgets the queues of tunnel names unused for `--tunnel-ttl` (their owners stay).
async fn expire_periodically(
    queue: QueueHandle,
    tunnels: Arc<Tunnels>,
    max_age: Duration,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let every = (max_age.min(ttl) / 2).clamp(Duration::from_secs(1), EXPIRE_EVERY);
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
        // Memory first: once forgotten there, a name takes no new delivery while its rows go.
        let stale = match queue.stale(ttl).await {
            Ok(stale) => stale,
            Err(err) => {
                warn!(%err, "could not look for unused tunnel names");
                continue;
            }
        };
        let forgotten = tunnels.release(&stale);
        if forgotten.is_empty() {
            continue;
        }
        match queue.release_stale(ttl, forgotten).await {
            Ok(names) => info!(
                count = names.len(),
                "forgot the queues of tunnel names unused for --tunnel-ttl; their owners keep the names"
            ),
            Err(err) => warn!(%err, "could not release unused tunnel names"),
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

fn default_public_base(scheme: &str, local: SocketAddr) -> String {
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
    dispatch: Arc<Dispatch>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    acceptor: Option<TlsAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
) {
    let activity = Activity::new();
    let max_body = dispatch.ingress.max_body;
    let Some(acceptor) = acceptor else {
        let io = LingerIo::new(stream, activity.clone(), max_body);
        return serve_http(dispatch, &builder, io, peer, false, activity, watcher).await;
    };
    // The TLS handshake counts against the first-request time, like every other silence.
    let handshake = dispatch.first_request_timeout;
    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
        Ok(Ok(mut stream)) if tls::is_acme_validation(stream.get_ref().1) => {
            debug!("answered an ACME TLS-ALPN-01 validation");
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
        }
        Ok(Ok(stream)) => {
            let io = LingerIo::new(stream, activity.clone(), max_body);
            serve_http(dispatch, &builder, io, peer, true, activity, watcher).await
        }
        Ok(Err(err)) => debug!(%err, "TLS handshake failed"),
        Err(_) => debug!("TLS handshake timed out"),
    }
}

async fn serve_http<I>(
    dispatch: Arc<Dispatch>,
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    peer: SocketAddr,
    is_tls: bool,
    activity: Arc<Activity>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (first, idle) = (dispatch.first_request_timeout, dispatch.idle_timeout);
    let watched = activity.clone();
    let connection = dispatch.next_connection.fetch_add(1, Ordering::Relaxed);
    let service = service_fn(move |req| {
        let (dispatch, activity) = (dispatch.clone(), activity.clone());
        async move {
            let _busy = activity.begin();
            let link = Link {
                peer,
                connection,
                is_tls,
            };
            let response = route_request(dispatch, req, link)
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

/// The connection a request came on.
#[derive(Clone, Copy)]
struct Link {
    peer: SocketAddr,
    /// The connection's id (all streams of an HTTP/2 connection share it).
    connection: u64,
    is_tls: bool,
}

async fn route_request(
    dispatch: Arc<Dispatch>,
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
    let limit = dispatch.max_header_bytes;
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
    let origin = Origin::of(req.headers(), peer.ip(), &dispatch.proxies);
    // Behind a trusted proxy the sender is known only now: count it while its request lasts.
    let _sender = match origin.via_trusted_proxy {
        true => match dispatch.connections.admit_sender(origin.sender) {
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
                dispatch.plain_proto
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
            return ingress::handle(&dispatch.ingress, request, body)
                .instrument(span)
                .await;
        }
        Route::Healthz => healthz(dispatch.cluster.as_deref()),
        Route::Metrics if dispatch.serve_metrics => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(dispatch.metrics.encode()),
        ),
        Route::Connect if dispatch.cluster.as_ref().is_some_and(|c| !c.is_ready()) => {
            IngressError::Starting.into_response()
        }
        Route::Connect => upgrade(&dispatch, Request::from_parts(parts, body), origin.sender),
        Route::Metrics | Route::NotFound => IngressError::NotFound.into_response(),
    }
    .map(AnswerBody::from)
}

/// `ok`; on a cluster node, also whether it has read the cluster and NATS is reachable (503
/// when not, so a load balancer sends new webhooks to nodes that can answer and queue them).
fn healthz(cluster: Option<&Cluster>) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    match cluster {
        None => text(StatusCode::OK, plain, Bytes::from_static(b"ok")),
        Some(c) if !c.is_ready() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            plain,
            Bytes::from(format!(
                "starting\nnode {}: reading the cluster's tunnels, presence and heartbeats; deliveries get 503\n",
                c.node()
            )),
        ),
        Some(c) if c.is_reachable() => text(
            StatusCode::OK,
            plain,
            Bytes::from(format!("ok\nnode {}: nats reachable\n", c.node())),
        ),
        Some(c) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            plain,
            Bytes::from(format!(
                "degraded\nnode {}: nats unreachable; sessions held here keep working, deliveries that must be queued get 503\n",
                c.node()
            )),
        ),
    }
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

fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
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
fn upgrade(dispatch: &Dispatch, req: Request<Incoming>, sender: IpAddr) -> Response<Full<Bytes>> {
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
    let auth = match dispatch
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
    let sessions = dispatch.sessions.clone();
    let access = dispatch.auth.clone();
    dispatch.tracker.spawn(async move {
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
