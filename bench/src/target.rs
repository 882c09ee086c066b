//! The local server webhooks are forwarded to: an in-process hyper HTTP/1.1 server on its own
//! thread and single-threaded runtime, answering every request `200 {"received":true}` after
//! reading the whole body (what nginx `return 200` does in `peers.sh`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// The answer body, the same as `peers.sh`'s nginx target.
pub const ANSWER: &[u8] = br#"{"received":true}"#;

/// A running target server; stopped when dropped.
pub struct Target {
    /// Where it listens (127.0.0.1, ephemeral port).
    pub addr: SocketAddr,
    served: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Target {
    /// Binds 127.0.0.1:0 and starts serving on a thread of its own.
    pub fn start() -> Result<Self> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("could not bind the target")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let served = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("could not build the target runtime")?;
        let counter = served.clone();
        let thread = std::thread::Builder::new()
            .name("target".into())
            .spawn(move || rt.block_on(serve(listener, counter, stopped)))
            .context("could not start the target thread")?;
        Ok(Target {
            addr,
            served,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    served: Arc<AtomicU64>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let served = served.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let served = served.clone();
                async move {
                    // read the whole body, as a webhook handler would
                    let _ = req.into_body().collect().await;
                    served.fetch_add(1, Ordering::Relaxed);
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(ANSWER)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
