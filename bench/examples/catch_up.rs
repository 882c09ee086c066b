//! Catch-up of a queued backlog on one relay: `--catch-up-window 32` beside `--catch-up-window 1` in
//! the same run. For each window and repeat: a release relay on loopback, a tunnel claimed by a
//! `listen` that is then killed, N deliveries queued (each answered 202, one after another, so
//! the queue's order is the order sent), then a fresh `listen` started; the time from its start
//! until the local server has all N, which must arrive once each, in the order sent.
//!
//! `cargo build --release -p illumitunnel-relay -p illumitunnel-client`, then
//! `cargo run --release -p illumitunnel-bench --example catch_up -- 5000 3`
//! (deliveries, repeats; `ILLUMI_RELAY` / `ILLUMI_CLIENT` pick other binaries).

#![allow(clippy::print_stdout)] // the figures are this example's output

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use illumitunnel_bench::load::post_once;
use illumitunnel_bench::proc::Proc;
use illumitunnel_bench::stack::{start_client, start_relay, Binaries, Ingress, WEBHOOK_PATH};

/// Longest one catch-up may take before the run fails.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(300);

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: catch_up [DELIVERIES] [REPEATS]";
    let n: u32 = args.next().map_or(Ok(5000), |a| a.parse()).context(usage)?;
    let repeats: u32 = args.next().map_or(Ok(3), |a| a.parse()).context(usage)?;
    let bins = binaries()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let (target, seen) = handler(&rt)?;
    println!("catch-up of {n} queued deliveries, {repeats} repeats per window");
    println!(
        "| `--catch-up-window` | deliveries/s (min–max) | seconds (min–max) | in order, once each |"
    );
    println!("|---|---|---|---|");
    for window in [32u32, 1] {
        let mut rates = Vec::new();
        let mut secs = Vec::new();
        for repeat in 0..repeats {
            let name = format!("w{window}-r{repeat}");
            let took = catch_up(&bins, &rt, dir.path(), &name, window, n, target, &seen)?;
            rates.push(f64::from(n) / took.as_secs_f64());
            secs.push(took.as_secs_f64());
            eprintln!(
                "window {window}, repeat {repeat}: {:.2} s",
                took.as_secs_f64()
            );
        }
        println!(
            "| {window} | {:.0}–{:.0} | {:.2}–{:.2} | yes |",
            min(&rates),
            max(&rates),
            min(&secs),
            max(&secs)
        );
    }
    Ok(())
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// One catch-up: returns the time from the client's start until the handler had all `n`.
#[allow(clippy::too_many_arguments)]
fn catch_up(
    bins: &Binaries,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    name: &str,
    window: u32,
    n: u32,
    target: SocketAddr,
    seen: &Arc<Mutex<Vec<u32>>>,
) -> Result<Duration> {
    let window_arg = window.to_string();
    let relay = start_relay(
        bins,
        Ingress::Http,
        &format!("{name}-relay"),
        dir,
        &["--catch-up-window", &window_arg],
    )?;
    // Claim the tunnel, then leave it with no client.
    let (mut first, endpoint) = start_client(bins, &relay, Ingress::Http, name, target, dir, rt)?;
    illumitunnel_bench::proc::kill_pid(first.pid());
    let _ = first.child_mut().wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = rt.block_on(post_once(&endpoint, &Bytes::from_static(b"probe")))?;
        if status == 202 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the tunnel never went offline after its client was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..n {
        let (status, body) = rt.block_on(post_once(&endpoint, &Bytes::from(i.to_string())))?;
        if status != 202 {
            bail!(
                "delivery {i} was answered {status} {}, not queued",
                String::from_utf8_lossy(&body)
            );
        }
    }
    seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let started = Instant::now();
    let mut client = start_listen(bins, &relay.url, name, target, dir)?;
    loop {
        let got = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        if got >= n as usize {
            break;
        }
        if started.elapsed() > CATCH_UP_LIMIT {
            bail!("only {got} of {n} reached the handler within {CATCH_UP_LIMIT:?}");
        }
        client.check_alive()?;
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = started.elapsed();
    let order = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if order != (0..n).collect::<Vec<_>>() {
        let first_wrong = order.iter().enumerate().find(|(i, v)| **v != *i as u32);
        bail!(
            "the handler saw {} deliveries, not 0..{n} in order (first difference: {first_wrong:?})",
            order.len()
        );
    }
    drop(client);
    drop(relay);
    Ok(took)
}

/// Starts `listen` for `name` with a fresh capture store, without waiting for anything.
fn start_listen(
    bins: &Binaries,
    relay: &str,
    name: &str,
    target: SocketAddr,
    dir: &Path,
) -> Result<Proc> {
    let mut cmd = Command::new(&bins.client);
    cmd.args(["listen", "--relay", relay, "--tunnel", name, "--forward-to"])
        .arg(format!("http://{target}{WEBHOOK_PATH}"))
        .args(["--no-tui", "--json", "--store"])
        .arg(dir.join(format!("{name}-again.db")))
        .env("ILLUMITUNNEL_HOME", dir.join(format!("{name}-home")))
        .env(
            "RUST_LOG",
            std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        );
    Proc::spawn_logged(&format!("{name}-client-again"), cmd, dir)
}

/// The local server: records each numbered body in arrival order (other bodies, such as the
/// probes and the readiness check, are ignored) and answers 200.
fn handler(rt: &tokio::runtime::Runtime) -> Result<(SocketAddr, Arc<Mutex<Vec<u32>>>)> {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = seen.clone();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let n = body
                                .ok()
                                .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u32>().ok());
                            if let Some(n) = n {
                                seen.lock().unwrap_or_else(|e| e.into_inner()).push(n);
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(illumitunnel_bench::target::ANSWER),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, seen))
}

/// The release binaries next to this example (`target/release`), or `ILLUMI_RELAY` /
/// `ILLUMI_CLIENT`.
fn binaries() -> Result<Binaries> {
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target/release"));
    let pick = |var: &str, name: &str| -> Result<PathBuf> {
        let path = std::env::var_os(var).map_or_else(|| release.join(name), PathBuf::from);
        if !path.exists() {
            bail!(
                "{} not found; build it with `cargo build --release -p illumitunnel-relay -p illumitunnel-client` or set {var}",
                path.display()
            );
        }
        Ok(path)
    };
    Ok(Binaries {
        relay: pick("ILLUMI_RELAY", "illumitunnel-relay")?,
        client: pick("ILLUMI_CLIENT", "illumitunnel")?,
    })
}
