//! A tunnel under a steady stream of webhooks loses its client's connection for a moment: the
//! relay queues what arrives meanwhile, drains the backlog to the reconnected client with a
//! window in flight, and answers senders with the local server's answer again within 2 s of
//! the reconnect. Every webhook reaches the local server once, in the order it was sent.
//! Real processes: the relay and `illumitunnel listen`, a TCP proxy between them that cuts
//! the connection, a local server that records the order, and a sender at 150 a second.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use support::sender::Request;
use support::{runtime, Listen, Relay};

/// Webhooks a second.
const RATE: u32 = 150;
/// Short keepalive on both sides, so the cut is noticed at once either way.
const KEEPALIVE_MS: &str = "300";

/// A local server that records each body (a number) in arrival order and answers 200.
fn handler(rt: &Runtime) -> (SocketAddr, Arc<Mutex<Vec<u64>>>) {
    let listener = rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind the handler");
    let addr = listener.local_addr().expect("handler address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = seen.clone();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let seen = seen.clone();
                    async move {
                        let body: hyper::body::Incoming = req.into_body();
                        let body = body.collect().await.map(|b| b.to_bytes());
                        let n = body
                            .ok()
                            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok());
                        if let Some(n) = n {
                            seen.lock().unwrap_or_else(|e| e.into_inner()).push(n);
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"handled",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A TCP proxy whose connections can be cut while it keeps accepting; remembers when it
/// accepted each one.
struct CutProxy {
    addr: SocketAddr,
    cut: tokio::sync::watch::Sender<u32>,
    accepted: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    fn start(rt: &Runtime, upstream: SocketAddr) -> CutProxy {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, cuts) = tokio::sync::watch::channel(0u32);
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let times = accepted.clone();
        let task = rt.spawn(async move {
            let mut pipes = JoinSet::new();
            let mut cuts = cuts;
            loop {
                tokio::select! {
                    changed = cuts.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        // Drops both ends of every connection carried so far.
                        pipes.abort_all();
                    }
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { return };
                        times.lock().unwrap_or_else(|e| e.into_inner()).push(Instant::now());
                        pipes.spawn(async move {
                            let Ok(mut relay) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            let _ = relay.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut relay).await;
                        });
                    }
                }
                while pipes.try_join_next().is_some() {}
            }
        });
        CutProxy {
            addr,
            cut,
            accepted,
            task,
        }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    fn accepted(&self) -> Vec<Instant> {
        self.accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `probe` until it holds, for at most `within`.
fn wait(what: &str, within: Duration, mut probe: impl FnMut() -> bool) {
    support::poll_until(what, within, || {
        if probe() {
            Ok(())
        } else {
            Err(String::new())
        }
    });
}

/// One webhook's fate: its number, when its answer came, and the status.
struct Sent {
    n: u64,
    answered: Instant,
    status: u16,
}

/// Sends numbered webhooks to `url` one after another at [`RATE`] a second (each after the
/// previous answer, so their order is the order the relay saw) until `stop` is set.
async fn stream(url: String, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0u64;
    // Bounded: a stream of at most two minutes.
    while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < u64::from(RATE) * 120 {
        tick.tick().await;
        let response = Request::post(&url)
            .header("content-type", "text/plain")
            .body(n.to_string())
            .send_async()
            .await;
        sent.push(Sent {
            n,
            answered: Instant::now(),
            status: response.status,
        });
        n += 1;
    }
    sent
}

#[test]
fn a_tunnel_answers_from_the_handler_again_within_2_s_of_a_reconnect_under_a_steady_stream() {
    let rt = runtime();
    let (handler_addr, seen) = handler(&rt);
    let relay = Relay::http(&["--keepalive-ms", KEEPALIVE_MS]);
    let upstream: SocketAddr = relay.authority().parse().expect("relay address");
    let proxy = CutProxy::start(&rt, upstream);
    let forward = format!("http://{handler_addr}/hooks");
    let via_proxy = format!("http://{}", proxy.addr);
    let listen = Listen::start(
        Some(&via_proxy),
        &forward,
        "steady",
        &["--keepalive-ms", KEEPALIVE_MS],
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = rt.spawn(stream(listen.url.clone(), stop.clone()));
    let count = |seen: &Mutex<Vec<u64>>| seen.lock().unwrap_or_else(|e| e.into_inner()).len();
    // Live for a while: the handler answers.
    wait("300 live webhooks", Duration::from_secs(30), || {
        count(&seen) >= 300
    });

    proxy.cut();
    let cut_at = Instant::now();
    // The client reconnects through the proxy (its backoff waits up to a second).
    wait("the reconnect", Duration::from_secs(10), || {
        proxy.accepted().len() >= 2
    });
    let reconnected = proxy.accepted()[1];
    // Keep streaming for 5 s after the reconnect, then stop.
    wait("5 s after the reconnect", Duration::from_secs(20), || {
        reconnected.elapsed() >= Duration::from_secs(5)
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = rt.block_on(sender).expect("the sender");

    for s in &sent {
        assert!(
            s.status == 200 || s.status == 202,
            "webhook {} answered {}",
            s.n,
            s.status
        );
    }
    let queued = sent.iter().filter(|s| s.status == 202).count();
    assert!(queued > 0, "nothing was queued: the cut did not happen");
    let first_live = sent
        .iter()
        .find(|s| s.answered > reconnected && s.status == 200)
        .unwrap_or_else(|| {
            let after: Vec<u16> = sent
                .iter()
                .filter(|s| s.answered > reconnected)
                .map(|s| s.status)
                .collect();
            panic!("no webhook answered by the handler after the reconnect: {after:?}")
        });
    let back = first_live.answered - reconnected;
    eprintln!(
        "cut {:?} before the reconnect; {queued} queued; live again {back:?} after it",
        reconnected - cut_at
    );
    assert!(
        back <= Duration::from_secs(2),
        "the handler answered again only {back:?} after the reconnect"
    );

    // Every webhook reaches the handler once, in the order sent.
    let total = sent.len();
    wait(
        "every webhook at the handler",
        Duration::from_secs(30),
        || count(&seen) >= total,
    );
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let expected: Vec<u64> = (0..total as u64).collect();
    assert_eq!(seen.len(), total, "lost or duplicated webhooks");
    assert_eq!(seen, expected, "out of order or duplicated at the handler");
}
