//! A local server for the fault and soak tests: counts every body it receives (so a test can
//! tell lost from duplicated), answers 200, and can be stopped and started again on the same
//! port, closing the connections it holds, to play a local server that goes down and comes back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// What the sink has received: body → how many times.
#[derive(Default)]
pub struct Received {
    counts: Mutex<HashMap<Vec<u8>, u32>>,
    arrived: Condvar,
}

impl Received {
    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, u32>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many times each body arrived.
    pub fn counts(&self) -> HashMap<Vec<u8>, u32> {
        self.lock().clone()
    }

    /// Waits up to `within` until every body in `want` arrived at least once; returns the
    /// ones still missing.
    pub fn wait_for_all(&self, want: &[Vec<u8>], within: Duration) -> Vec<Vec<u8>> {
        let start = Instant::now();
        let mut counts = self.lock();
        loop {
            let missing: Vec<Vec<u8>> = want
                .iter()
                .filter(|b| !counts.contains_key(*b))
                .cloned()
                .collect();
            let left = within.saturating_sub(start.elapsed());
            if missing.is_empty() || left.is_zero() {
                return missing;
            }
            counts = self
                .arrived
                .wait_timeout(counts, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A running (or stopped) sink.
pub struct Sink {
    /// Where it listens (the same port after a restart).
    pub addr: SocketAddr,
    /// Everything received, across restarts.
    pub received: Arc<Received>,
    stop: Option<watch::Sender<bool>>,
}

impl Sink {
    /// Starts on `127.0.0.1:0`.
    pub fn start(rt: &Runtime) -> Sink {
        let received = Arc::new(Received::default());
        let addr = "127.0.0.1:0".parse().expect("an address");
        let (addr, stop) = serve(rt, addr, Arc::clone(&received));
        Sink {
            addr,
            received,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Closes the port and every connection: requests to it are refused until [`Sink::resume`].
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }

    /// Listens again on the same port.
    pub fn resume(&mut self, rt: &Runtime) {
        self.stop();
        let (_, stop) = serve(rt, self.addr, Arc::clone(&self.received));
        self.stop = Some(stop);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(
    rt: &Runtime,
    addr: SocketAddr,
    received: Arc<Received>,
) -> (SocketAddr, watch::Sender<bool>) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("bind the sink on {addr}: {e}"));
    let addr = listener.local_addr().expect("sink address");
    let (stop_tx, stop_rx) = watch::channel(false);
    rt.spawn(async move {
        let mut stop = stop_rx.clone();
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => return,
                },
            };
            let received = Arc::clone(&received);
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| record(req, Arc::clone(&received)));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = stop.changed() => {}
                    _ = connection => {}
                }
            });
        }
    });
    (addr, stop_tx)
}

async fn record(
    req: hyper::Request<hyper::body::Incoming>,
    received: Arc<Received>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    {
        let mut counts = received.lock();
        *counts.entry(body).or_default() += 1;
        received.arrived.notify_all();
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(br#"{"received":true}"#)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
