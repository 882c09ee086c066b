//! Holds idle sessions against a relay that is already running, for profiling it:
//! `cargo run --release -p illumitunnel-bench --example idle_fleet -- 127.0.0.1:8080 5000 30`
//! opens 5,000 sessions (each its own tunnel), holds them 30 s answering pings, then exits.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: idle_fleet RELAY_ADDR SESSIONS HOLD_SECS";
    let relay = args.next().context(usage)?.parse().context(usage)?;
    let n: usize = args.next().context(usage)?.parse().context(usage)?;
    let hold: u64 = args.next().context(usage)?.parse().context(usage)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let sessions = rt.block_on(illumitunnel_bench::idle::open(relay, n, 64, "fleet"));
    eprintln!(
        "{} welcomed, {} failed ({}) in {:.1} s",
        sessions.opened,
        sessions.failed,
        sessions.first_error.as_deref().unwrap_or("no error"),
        started.elapsed().as_secs_f64()
    );
    rt.block_on(tokio::time::sleep(Duration::from_secs(hold)));
    eprintln!("{} still open", sessions.alive());
    Ok(())
}
