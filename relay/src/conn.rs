//! What the relay allows one connection before any request handler runs: how many connections
//! it holds at once (in all and from one IP address), how long a connection may take to send
//! its first request (TLS and the HTTP/2 preface included), how long it may stay open with no
//! request in flight, how long a write may make no progress (a sender that does not read its
//! answer), and the lingering close that lets a sender which writes its whole body before
//! reading still see an early error answer.
//!
//! hyper's own timers start only after its protocol detection has read the first bytes, and
//! HTTP/2 has no idle timeout at all, so [`Activity::expired`] watches every connection from
//! accept to close instead.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Longest a connection may take from accept to its first complete request head (TCP idle,
/// TLS handshake, HTTP/2 preface and request headers alike).
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a lingering close keeps reading (it reads at most twice `--max-body`, and at least
/// [`MIN_LINGER_BYTES`]).
pub const LINGER_TIME: Duration = Duration::from_secs(10);
/// Fewest bytes a lingering close is ready to read, however small `--max-body` is.
pub const MIN_LINGER_BYTES: usize = 1024 * 1024;
/// Longest a write to a connection may make no progress before the connection is dropped:
/// an answer the sender does not read is not held longer than this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections, in all and per sender address. A sender behind a trusted proxy is counted
/// by its real address: at accept when a PROXY header names it, or per request in flight when
/// only its proxy's `X-Forwarded-For` does (the proxy's own connections are many senders).
pub struct ConnectionLimits {
    max: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimits {
    /// At most `max` connections, `max_per_ip` from one address.
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max,
            max_per_ip,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` when a limit is reached (close it).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let ip = ip.to_canonical();
        let mut per_ip = self.lock();
        if self.open.load(Ordering::Relaxed) >= self.max {
            return None;
        }
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot {
            limits: self.clone(),
            ip: Some(ip),
        })
    }

    /// A slot for a connection from a trusted proxy: counted in all, not against the proxy's
    /// address; its senders are counted with [`admit_sender`](Self::admit_sender).
    pub fn admit_proxy(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let _per_ip = self.lock();
        if self.open.load(Ordering::Relaxed) >= self.max {
            return None;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot {
            limits: self.clone(),
            ip: None,
        })
    }

    /// Counts the real sender `ip` behind a trusted proxy (for a connection, or for one request
    /// in flight) against the per-address limit; `None` when it is reached.
    pub fn admit_sender(self: &Arc<Self>, ip: IpAddr) -> Option<SenderSlot> {
        let ip = ip.to_canonical();
        let mut per_ip = self.lock();
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        Some(SenderSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Updates under this lock are single counter changes.
        self.per_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn release(&self, ip: IpAddr) {
        let mut per_ip = self.lock();
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// One admitted connection; dropping it frees the slot.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    /// `None` for a trusted proxy's connection.
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.limits.release(ip);
        }
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A sender behind a trusted proxy, counted against its address; dropping it frees the count.
pub struct SenderSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for SenderSlot {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

/// Requests in flight on one connection and when it last changed, for the idle watch, plus
/// whether its close should linger.
pub struct Activity {
    in_flight: AtomicUsize,
    seen_request: AtomicBool,
    since: Mutex<Instant>,
    changed: Notify,
    linger: AtomicBool,
    /// Answers being handed to the connection, and when one last took a piece.
    answering: AtomicUsize,
    answer_progress: Mutex<Instant>,
    answers_changed: Notify,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            seen_request: AtomicBool::new(false),
            since: Mutex::new(Instant::now()),
            changed: Notify::new(),
            linger: AtomicBool::new(false),
            answering: AtomicUsize::new(0),
            answer_progress: Mutex::new(Instant::now()),
            answers_changed: Notify::new(),
        })
    }

    /// An answer is being handed to the connection until the guard drops; it reports each
    /// piece it hands over through [`AnswerGuard::progress`].
    pub fn answering(self: &Arc<Self>) -> AnswerGuard {
        *lock(&self.answer_progress) = Instant::now();
        self.answering.fetch_add(1, Ordering::SeqCst);
        self.answers_changed.notify_one();
        AnswerGuard {
            activity: self.clone(),
        }
    }

    /// Resolves when an answer has been waiting for `limit` for the connection to take its
    /// next piece: over HTTP/2 a sender that reads nothing stops the stream's flow-control
    /// window, so no write ever blocks for [`LingerIo`] to see. Cancel-safe.
    pub async fn answer_stalled(&self, limit: Duration) {
        loop {
            if self.answering.load(Ordering::SeqCst) == 0 {
                self.answers_changed.notified().await;
                continue;
            }
            let deadline = *lock(&self.answer_progress) + limit;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    let stalled = *lock(&self.answer_progress) + limit <= Instant::now();
                    if stalled && self.answering.load(Ordering::SeqCst) > 0 {
                        return;
                    }
                }
                _ = self.answers_changed.notified() => {}
            }
        }
    }

    /// A request head arrived; the connection is busy until the guard drops.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.seen_request.store(true, Ordering::SeqCst);
        self.changed.notify_one();
        RequestGuard {
            activity: self.clone(),
        }
    }

    /// Asks for a lingering close: the sender may still be writing a body nobody reads.
    pub fn linger(&self) {
        self.linger.store(true, Ordering::SeqCst);
    }

    fn touch(&self) {
        *self
            .since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
    }

    fn since(&self) -> Instant {
        *self
            .since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resolves when the connection has had no request in flight for `idle` (or, before its
    /// first request, for `first` since accept). Cancel-safe.
    pub async fn expired(&self, first: Duration, idle: Duration) {
        loop {
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                self.changed.notified().await;
                continue;
            }
            let limit = if self.seen_request.load(Ordering::SeqCst) {
                idle
            } else {
                first
            };
            let deadline = self.since() + limit;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if self.in_flight.load(Ordering::SeqCst) == 0 && self.since() + limit <= Instant::now() {
                        return;
                    }
                }
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// An answer being handed to its connection.
pub struct AnswerGuard {
    activity: Arc<Activity>,
}

impl AnswerGuard {
    /// The connection took another piece of the answer.
    pub fn progress(&self) {
        *lock(&self.activity.answer_progress) = Instant::now();
    }
}

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        self.activity.answering.fetch_sub(1, Ordering::SeqCst);
        self.activity.answers_changed.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only an `Instant` is stored under these locks; a panic cannot leave it torn.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A request in flight on its connection.
pub struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.activity.changed.notify_one();
    }
}

/// A connection's stream. A write that makes no progress for [`WRITE_TIMEOUT`] fails, which
/// drops the connection. When dropped after an early error answer, it keeps reading and
/// discarding what the sender still writes (up to twice `--max-body` or [`LINGER_TIME`])
/// before closing, so the sender sees the answer instead of a reset. Twice, because what hyper
/// had read before the answer is not counted and what is left when the drain stops must fit the
/// kernel's buffers: a body just over the limit is read to its end.
pub struct LingerIo<T: AsyncRead + Unpin + Send + 'static> {
    inner: Option<T>,
    activity: Arc<Activity>,
    linger_bytes: usize,
    /// Set while a write is blocked: when it fires, the write fails.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T: AsyncRead + Unpin + Send + 'static> LingerIo<T> {
    /// Wraps `inner`; the lingering (sized from `max_body`) is asked for through `activity`.
    pub fn new(inner: T, activity: Arc<Activity>, max_body: usize) -> Self {
        LingerIo {
            inner: Some(inner),
            activity,
            linger_bytes: max_body.saturating_mul(2).max(MIN_LINGER_BYTES),
            stalled: None,
        }
    }

    /// Passes a write's progress on, or fails it once it has been blocked for
    /// [`WRITE_TIMEOUT`]. The timer registers the waker, so a blocked write is polled again
    /// when it fires even if the socket never becomes writable.
    fn watch_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer read nothing we wrote for the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn inner(&mut self) -> io::Result<&mut T> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<T: AsyncRead + Unpin + Send + 'static> Drop for LingerIo<T> {
    fn drop(&mut self) {
        if !self.activity.linger.load(Ordering::SeqCst) {
            return;
        }
        let (Some(mut inner), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let most = self.linger_bytes;
        runtime.spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut read = 0;
            let _ = tokio::time::timeout(LINGER_TIME, async {
                while read < most {
                    match inner.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
            })
            .await;
        });
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for LingerIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.inner() {
            Ok(inner) => Pin::new(inner).poll_read(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for LingerIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = match self.inner() {
            Ok(inner) => Pin::new(inner).poll_write(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        };
        self.watch_write(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = match self.inner() {
            Ok(inner) => Pin::new(inner).poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        };
        self.watch_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner() {
            Ok(inner) => Pin::new(inner).poll_shutdown(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = match self.inner() {
            Ok(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
            Err(err) => Poll::Ready(Err(err)),
        };
        self.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.is_write_vectored())
    }
}

#[cfg(test)]
mod tests;
