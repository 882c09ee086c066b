//! The declared-size / slow-body attacker beside another tunnel (SPEC "A relay a team can
//! share"): 32 HTTP/1 sockets and one HTTP/2 connection with 32 streams, every request declaring
//! an 8 MiB body to tunnel A and sending one byte every 4 s, reopened as soon as the relay
//! answers or closes one, while tunnel B on the same relay is measured one request at a time,
//! beside B with no attacker in the same run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::hostile::{Compared, Window};
use crate::load;
use crate::payload;
use crate::report::{Report, Verdict};
use crate::stack::{self, Binaries, Ingress};
use crate::target::Target;

/// What each attacking request declares.
const DECLARED: usize = 8 * 1024 * 1024;
/// Attacking HTTP/1 sockets, and streams on the one HTTP/2 connection.
const SOCKETS: usize = 32;
/// Pause between two bytes of an attacking body.
const TRICKLE: Duration = Duration::from_secs(4);
/// How long the attacker runs before tunnel B is measured beside it.
const RAMP_UP: Duration = Duration::from_secs(1);

fn say(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

/// What the attacker saw.
#[derive(Default)]
struct Seen {
    /// Requests the relay answered (408 when too slow, anything else).
    answered: AtomicU64,
    /// Requests started.
    started: AtomicU64,
}

/// A relay with tunnels A and B: B alone, then B beside the attacker on A.
pub fn measure(
    bins: &Binaries,
    target_b: &Target,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    window: Window,
    report: &mut Report,
) -> Result<Vec<Compared>> {
    let target_a = Target::start()?;
    let relay = stack::start_relay(bins, Ingress::Http, "slow-body-relay", dir, &[])?;
    let (client_a, ep_a) = stack::start_client(
        bins,
        &relay,
        Ingress::Http,
        "slow-body-a",
        target_a.addr,
        dir,
        rt,
    )?;
    let (client_b, ep_b) = stack::start_client(
        bins,
        &relay,
        Ingress::Http,
        "slow-body-b",
        target_b.addr,
        dir,
        rt,
    )?;
    let body = payload::envelope();
    if !window.warmup.is_zero() {
        rt.block_on(load::run(&ep_b, &body, 1, false, window.warmup))?;
    }
    let b0 = rt.block_on(load::run(&ep_b, &body, 1, false, window.secs))?;

    say(format!(
        "{SOCKETS} HTTP/1 sockets and one HTTP/2 connection with {SOCKETS} streams declaring 8 MiB to tunnel A, a byte every 4 s"
    ));
    let until = Instant::now() + RAMP_UP + window.warmup + window.secs;
    let seen = Arc::new(Seen::default());
    let (addr, path) = (relay.addr, ep_a.path.clone());
    let attacker_seen = seen.clone();
    // The attacker runs on a thread and runtime of its own, so what B measures is the relay.
    let attacker = std::thread::Builder::new()
        .name("slow-body-attacker".into())
        .spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(attack(addr, path, until, attacker_seen));
            Ok(())
        })
        .context("could not start the attacker")?;
    std::thread::sleep(RAMP_UP);
    if !window.warmup.is_zero() {
        let _ = rt.block_on(load::run(&ep_b, &body, 1, false, window.warmup));
    }
    let b1 = rt.block_on(load::run(&ep_b, &body, 1, false, window.secs));
    attacker
        .join()
        .map_err(|_| anyhow::anyhow!("the attacker panicked"))??;
    let scenario = "slow-body attacker: 32 HTTP/1 + 32 HTTP/2 streams declaring 8 MiB to tunnel A";
    let b1 = match b1 {
        Ok(b1) => b1,
        Err(err) => {
            report.row(
                format!("tunnel B c=1 p99 with the {scenario}"),
                format!("unusable: {err:#}"),
                "≤ 2× idle",
                Verdict::Miss,
            );
            return Ok(Vec::new());
        }
    };
    let row = Compared {
        scenario: scenario.into(),
        figure: "tunnel B c=1".into(),
        baseline: b0,
        loaded: b1,
    };
    report.row(
        format!("tunnel B c=1 p99 with the {scenario}"),
        format!(
            "{:.2} ms = {:.2}× idle ({:.2} ms), {} errors",
            row.loaded.percentile_ms(99.0),
            row.p99_ratio(),
            row.baseline.percentile_ms(99.0),
            row.loaded.errors
        ),
        "≤ 2× idle",
        Verdict::at_most(row.p99_ratio(), 2.0, None),
    );
    report.info(
        "slow-body attacker's requests",
        format!(
            "{} started, {} answered by the relay (408 after --min-body-rate's grace)",
            seen.started.load(Ordering::Relaxed),
            seen.answered.load(Ordering::Relaxed)
        ),
    );
    drop(client_a);
    drop(client_b);
    drop(relay);
    drop(target_a);
    Ok(vec![row])
}

/// Keeps `SOCKETS` slow HTTP/1 requests and one HTTP/2 connection of slow streams going until
/// `until`.
async fn attack(addr: SocketAddr, path: String, until: Instant, seen: Arc<Seen>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SOCKETS {
        tasks.spawn(http1_attacker(addr, path.clone(), until, seen.clone()));
    }
    tasks.spawn(http2_attacker(addr, path, until, seen));
    while tasks.join_next().await.is_some() {}
}

/// One socket: a request declaring 8 MiB, a byte every 4 s; a new one when it is answered.
async fn http1_attacker(addr: SocketAddr, path: String, until: Instant, seen: Arc<Seen>) {
    let head = format!(
        "POST {path}/hook HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {DECLARED}\r\n\r\n{{"
    );
    while Instant::now() < until {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        seen.started.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(head.as_bytes()).await.is_err() {
            continue;
        }
        let mut buf = [0u8; 1024];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // Both branches are cancel-safe: a sleep and `TcpStream::read`.
            tokio::select! {
                _ = tokio::time::sleep(TRICKLE.min(left)) => {
                    if stream.write_all(b" ").await.is_err() {
                        break;
                    }
                }
                _ = stream.read(&mut buf) => {
                    seen.answered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// One HTTP/2 connection with `SOCKETS` streams, each declaring 8 MiB and fed a byte every
/// 4 s; a stream answered is replaced.
async fn http2_attacker(addr: SocketAddr, path: String, until: Instant, seen: Arc<Seen>) {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return;
    };
    let Ok((sender, conn)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await
    else {
        return;
    };
    tokio::spawn(conn);
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..SOCKETS {
        let (sender, path, seen) = (sender.clone(), path.clone(), seen.clone());
        streams.spawn(async move {
            while Instant::now() < until {
                let mut sender = sender.clone();
                if sender.ready().await.is_err() {
                    return;
                }
                let (tx, rx) = mpsc::channel(1);
                let request = http::Request::post(format!("http://{addr}{path}/hook"))
                    .header("content-length", DECLARED.to_string())
                    .body(Fed(rx));
                let Ok(request) = request else { return };
                seen.started.fetch_add(1, Ordering::Relaxed);
                let feed = async {
                    while tx.send(Bytes::from_static(b" ")).await.is_ok() {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return;
                        }
                        tokio::time::sleep(TRICKLE.min(left)).await;
                    }
                };
                // Both branches are cancel-safe: the answer, or the feed running out of time.
                tokio::select! {
                    _ = sender.send_request(request) => {
                        seen.answered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ = feed => return,
                }
            }
        });
    }
    while streams.join_next().await.is_some() {}
}

/// A request body fed from a channel.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
