//! Scenarios from SPEC's "Numbers (second stage)" that put a hostile or heavy load beside a
//! measured one, each measured twice in the same run: without the load (the baseline) and
//! with it.
//!
//! - Slow sockets: thousands of idle or slow ingress connections ([`crate::slow`]) held
//!   against a relay while `/healthz` and a tunnel are measured, one request at a time each.
//! - Fairness: senders streaming large bodies to tunnel A while tunnel B, on the same relay,
//!   is measured one request at a time.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;

use crate::load::{self, Endpoint, Run};
use crate::payload;
use crate::report::{Report, Verdict};
use crate::slow::{self, SlowKind};
use crate::stack::{self, Binaries, Ingress};
use crate::target::Target;

/// Handshakes the slow-socket opener runs at once.
const OPEN_PARALLEL: usize = 64;
/// When held sockets are checked a second time, counted from when they were all open: SPEC's
/// 10 s accept-to-first-byte / handshake limit plus 2 s.
const CLOSE_CHECK_AFTER: Duration = Duration::from_secs(12);
/// How long the large-body senders run before tunnel B is measured beside them.
const RAMP_UP: Duration = Duration::from_secs(1);

fn say(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

/// How long each measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Unrecorded time before the baseline.
    pub warmup: Duration,
    /// Recorded time of each measurement.
    pub secs: Duration,
}

/// One figure measured without and with the load.
pub struct Compared {
    /// The scenario, e.g. `2000 slow sockets, --http`.
    pub scenario: String,
    /// What was measured, e.g. `/healthz c=1`.
    pub figure: String,
    /// Without the load.
    pub baseline: Run,
    /// With the load.
    pub loaded: Run,
}

impl Compared {
    /// Loaded p99 over baseline p99.
    pub fn p99_ratio(&self) -> f64 {
        self.loaded.percentile_ms(99.0) / self.baseline.percentile_ms(99.0)
    }
}

/// Writes the side-by-side table.
pub fn write_compared(rows: &[Compared], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "| scenario | measured | baseline req/s | p50 ms | p99 ms | under load req/s | p50 ms | p99 ms | p99 ×baseline | errors (baseline / load) |")?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in rows {
        writeln!(
            out,
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} | {:.2} | {} / {} |",
            r.scenario,
            r.figure,
            r.baseline.rps(),
            r.baseline.percentile_ms(50.0),
            r.baseline.percentile_ms(99.0),
            r.loaded.rps(),
            r.loaded.percentile_ms(50.0),
            r.loaded.percentile_ms(99.0),
            r.p99_ratio(),
            r.baseline.errors,
            r.loaded.errors,
        )?;
    }
    Ok(())
}

/// `/healthz` and the tunnel, one request at a time each, side by side for `secs`.
fn health_and_tunnel(
    rt: &tokio::runtime::Runtime,
    health: &Endpoint,
    tunnel: &Endpoint,
    body: &Bytes,
    secs: Duration,
) -> Result<(Run, Run)> {
    let (h, t) = rt.block_on(async {
        tokio::join!(
            load::run(health, body, 1, false, secs),
            load::run(tunnel, body, 1, false, secs)
        )
    });
    Ok((h.context("/healthz")?, t.context("tunnel c=1")?))
}

/// A fresh relay and tunnel with `n` slow sockets held against its ingress (the plain mix on
/// `--http`, the TLS mix on `--self-signed`).
#[allow(clippy::too_many_arguments)]
pub fn slow_sockets(
    bins: &Binaries,
    ingress: Ingress,
    target: &Target,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    window: Window,
    n: usize,
    report: &mut Report,
) -> Result<Vec<Compared>> {
    let (flag, kinds): (&str, &[SlowKind]) = match ingress {
        Ingress::Http => ("--http", &SlowKind::PLAIN),
        Ingress::Tls => ("--self-signed", &SlowKind::TLS),
    };
    let name = match ingress {
        Ingress::Http => "bench-slow",
        Ingress::Tls => "bench-slow-tls",
    };
    // Every socket here comes from 127.0.0.1: without this the per-address limit (256) closes
    // all but the first at accept, the bench's own requests included. The figure is for 2,000
    // slow sockets from many addresses.
    let many_addresses = ["--max-connections-per-ip", "100000"];
    let t = stack::start_tunnel(bins, ingress, name, target.addr, dir, &many_addresses, rt)?;
    let health = t.endpoint.get("/healthz");
    let body = payload::envelope();
    if !window.warmup.is_zero() {
        health_and_tunnel(rt, &health, &t.endpoint, &body, window.warmup)?;
    }
    let (h0, t0) = health_and_tunnel(rt, &health, &t.endpoint, &body, window.secs)?;
    say(format!("{n} slow sockets against the {flag} relay"));
    let mut held = rt.block_on(slow::open(
        t.relay.addr,
        t.endpoint.tls.clone(),
        kinds,
        n,
        OPEN_PARALLEL,
    ));
    say(format!(
        "{} held, {} failed ({})",
        held.len(),
        held.failed,
        held.first_error.as_deref().unwrap_or("no error")
    ));
    let opened = std::time::Instant::now();
    let loaded = health_and_tunnel(rt, &health, &t.endpoint, &body, window.secs);
    let closed_early = held.closed_by_relay();
    let early = opened.elapsed();
    if let Some(rest) = CLOSE_CHECK_AFTER.checked_sub(early) {
        std::thread::sleep(rest);
    }
    let closed_late = held.closed_by_relay();
    let late = opened.elapsed();
    let (h1, t1) = match loaded {
        Ok(runs) => runs,
        Err(err) => {
            report.row(
                format!(
                    "{flag}: /healthz and tunnel c=1 with {} slow sockets",
                    held.len()
                ),
                format!("unusable: {err:#}"),
                "/healthz p99 < 100 ms; tunnel p99 ≤ 2× idle",
                Verdict::Miss,
            );
            return Ok(Vec::new());
        }
    };
    let scenario = format!("{} slow sockets, {flag}", held.len());
    let rows = vec![
        Compared {
            scenario: scenario.clone(),
            figure: "/healthz c=1".into(),
            baseline: h0,
            loaded: h1,
        },
        Compared {
            scenario: scenario.clone(),
            figure: "tunnel c=1".into(),
            baseline: t0,
            loaded: t1,
        },
    ];
    let hp99 = rows[0].loaded.percentile_ms(99.0);
    report.row(
        format!("/healthz p99 with {scenario}"),
        format!(
            "{hp99:.2} ms (none held: {:.2} ms)",
            rows[0].baseline.percentile_ms(99.0)
        ),
        "< 100 ms",
        Verdict::at_most(hp99, 100.0, None),
    );
    report.row(
        format!("tunnel c=1 p99 with {scenario}"),
        format!(
            "{:.2} ms = {:.2}× none held ({:.2} ms)",
            rows[1].loaded.percentile_ms(99.0),
            rows[1].p99_ratio(),
            rows[1].baseline.percentile_ms(99.0)
        ),
        "≤ 2× idle",
        Verdict::at_most(rows[1].p99_ratio(), 2.0, None),
    );
    for (closed, after) in [(closed_early, early), (closed_late, late)] {
        report.info(
            format!(
                "{scenario}: closed by the relay {:.0} s after all were open",
                after.as_secs_f64()
            ),
            closed
                .iter()
                .map(|(k, held, closed)| format!("{} {closed}/{held}", k.label()))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    drop(held);
    drop(t);
    Ok(rows)
}

/// A relay with tunnels A and B (each its own client and target): `senders` connections
/// stream `big`-byte bodies to A while B is measured one request at a time, beside B alone.
#[allow(clippy::too_many_arguments)]
pub fn fairness(
    bins: &Binaries,
    target_b: &Target,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    window: Window,
    big: usize,
    senders: usize,
    report: &mut Report,
) -> Result<Vec<Compared>> {
    let max_body = (big + big / 2).to_string();
    let target_a = Target::start()?;
    let relay = stack::start_relay(
        bins,
        Ingress::Http,
        "fair-relay",
        dir,
        &["--max-body", &max_body],
    )?;
    let (client_a, ep_a) = stack::start_client(
        bins,
        &relay,
        Ingress::Http,
        "fair-a",
        target_a.addr,
        dir,
        rt,
    )?;
    let (client_b, ep_b) = stack::start_client(
        bins,
        &relay,
        Ingress::Http,
        "fair-b",
        target_b.addr,
        dir,
        rt,
    )?;
    let body = payload::envelope();
    if !window.warmup.is_zero() {
        rt.block_on(load::run(&ep_b, &body, 1, false, window.warmup))?;
    }
    let b0 = rt.block_on(load::run(&ep_b, &body, 1, false, window.secs))?;

    let mib = big as f64 / (1024.0 * 1024.0);
    say(format!(
        "{senders} senders streaming {mib:.0} MiB bodies to tunnel A"
    ));
    // The large bodies are sent from a thread and runtime of their own, so what B measures
    // is the relay and client, not this process's scheduler.
    let hold = RAMP_UP + window.warmup + window.secs;
    let big_body = payload::large_body(big);
    let heavy = std::thread::Builder::new()
        .name("fair-a-senders".into())
        .spawn(move || -> Result<Run> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(load::run(&ep_a, &big_body, senders, false, hold))
        })
        .context("could not start the large-body senders")?;
    rt.block_on(async { tokio::time::sleep(RAMP_UP).await });
    if !window.warmup.is_zero() {
        let _ = rt.block_on(load::run(&ep_b, &body, 1, false, window.warmup));
    }
    let b1 = rt.block_on(load::run(&ep_b, &body, 1, false, window.secs));
    let a = heavy
        .join()
        .map_err(|_| anyhow::anyhow!("the large-body senders panicked"))?;
    let scenario = format!("{senders} senders streaming {mib:.0} MiB bodies to tunnel A");
    let (a, b1) = match (a, b1) {
        (Ok(a), Ok(b1)) => (a, b1),
        (a, b1) => {
            let err = a
                .err()
                .or(b1.err())
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            report.row(
                format!("tunnel B c=1 p99 with {scenario}"),
                format!("unusable: {err}"),
                "≤ 2× idle",
                Verdict::Miss,
            );
            return Ok(Vec::new());
        }
    };
    let row = Compared {
        scenario: scenario.clone(),
        figure: "tunnel B c=1".into(),
        baseline: b0,
        loaded: b1,
    };
    report.row(
        format!("tunnel B c=1 p99 with {scenario}"),
        format!(
            "{:.2} ms = {:.2}× idle ({:.2} ms)",
            row.loaded.percentile_ms(99.0),
            row.p99_ratio(),
            row.baseline.percentile_ms(99.0)
        ),
        "≤ 2× idle",
        Verdict::at_most(row.p99_ratio(), 2.0, None),
    );
    report.info(
        format!("tunnel A while B was measured ({senders} × {mib:.0} MiB)"),
        format!(
            "{} bodies in {:.1} s = {:.0} MiB/s, p50 {:.0} ms, p99 {:.0} ms, {} errors",
            a.ok,
            a.elapsed.as_secs_f64(),
            a.ok as f64 * mib / a.elapsed.as_secs_f64(),
            a.percentile_ms(50.0),
            a.percentile_ms(99.0),
            a.errors
        ),
    );
    drop(client_a);
    drop(client_b);
    drop(relay);
    drop(target_a);
    Ok(vec![row])
}
