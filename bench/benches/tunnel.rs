//! `cargo bench -p illumitunnel-bench`: builds the release relay and client, then measures,
//! beside a direct sender → target baseline in the same run (and bore, when installed):
//! latency one request at a time (plain and TLS ingress), throughput and CPU per request at
//! 32 concurrent senders, a new connection per webhook, memory while a 10 MiB body passes,
//! the relay with 10,000 idle clients, and `listen` with 100,000 stored deliveries; then, each
//! beside its own no-load baseline, `/healthz` and a tunnel with 2,000 idle or slow sockets held
//! against the relay (plain and TLS), one tunnel while four senders stream 10 MiB bodies to
//! another, and one tunnel while a slow-body attacker declares 8 MiB bodies to another.
//!
//! Parts: `core` (latency, throughput, new connection per webhook; with `tls` and `bore`
//! unless skipped), `big`, `idle`, `store`, `slow`, `slow-tls`, `fairness`, `slow-body`, and `cluster` (only
//! when named: it starts a nats-server, `$NATS_SERVER` or on the PATH). Name some after
//! `--` to run only those (`cargo bench -p illumitunnel-bench -- slow fairness`); `BENCH_SKIP`
//! leaves some out.
//!
//! Settings (environment): `BENCH_SECS` (measured seconds per run, default 4), `BENCH_WARMUP`
//! (default 1), `BENCH_CONC` (default 32), `BENCH_IDLE` (idle clients, a comma list for a curve:
//! `10000,50000,100000`; default 10000), `BENCH_STORE_ROWS`
//! (default 100000), `BENCH_BIG_MIB` (default 10), `BENCH_SLOW` (slow sockets, default 2000),
//! `BENCH_SKIP` (comma list of parts), `BENCH_NO_BUILD=1` (use the binaries as they are),
//! `ILLUMI_RELAY`/`ILLUMI_CLIENT` (binaries), `BORE` (bore binary), `BENCH_KEEP=1` (keep logs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use illumitunnel_bench::hostile::{self, Window};
use illumitunnel_bench::inspector;
use illumitunnel_bench::load::{self, Endpoint, Run};
use illumitunnel_bench::payload;
use illumitunnel_bench::proc;
use illumitunnel_bench::report::{Report, Verdict};
use illumitunnel_bench::stack::{self, Binaries, Ingress};
use illumitunnel_bench::target::Target;

/// Interleaved repeats of each cluster path.
const CLUSTER_REPEATS: usize = 3;

struct Settings {
    secs: Duration,
    warmup: Duration,
    conc: usize,
    idle: Vec<usize>,
    store_rows: usize,
    big_mib: usize,
    slow: usize,
    skip: Vec<String>,
    only: Vec<String>,
    build: bool,
    keep: bool,
}

fn env_num(name: &str, default: f64) -> Result<f64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

/// `BENCH_IDLE`: idle-fleet sizes, comma-separated (default 10000; `0` skips the part).
fn idle_sizes() -> Result<Vec<usize>> {
    let raw = std::env::var("BENCH_IDLE").unwrap_or_else(|_| "10000".into());
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map(|n| n.min(200_000))
                .with_context(|| format!("BENCH_IDLE={raw}: {s} is not a number"))
        })
        .filter(|n| !matches!(n, Ok(0)))
        .collect()
}

impl Settings {
    fn from_env() -> Result<Self> {
        Ok(Settings {
            secs: Duration::from_secs_f64(env_num("BENCH_SECS", 4.0)?.clamp(0.2, 600.0)),
            warmup: Duration::from_secs_f64(env_num("BENCH_WARMUP", 1.0)?.clamp(0.0, 60.0)),
            conc: env_num("BENCH_CONC", 32.0)?.clamp(1.0, 1024.0) as usize,
            idle: idle_sizes()?,
            store_rows: env_num("BENCH_STORE_ROWS", 100_000.0)?.clamp(0.0, 10_000_000.0) as usize,
            big_mib: env_num("BENCH_BIG_MIB", 10.0)?.clamp(1.0, 100.0) as usize,
            slow: env_num("BENCH_SLOW", 2_000.0)?.clamp(0.0, 50_000.0) as usize,
            skip: std::env::var("BENCH_SKIP")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            // `cargo bench` passes `--bench`; the other words name parts to run.
            only: std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .collect(),
            build: std::env::var_os("BENCH_NO_BUILD").is_none(),
            keep: std::env::var_os("BENCH_KEEP").is_some(),
        })
    }

    fn skipped(&self, part: &str) -> bool {
        self.skip.iter().any(|s| s == part)
    }

    fn runs(&self, part: &str) -> bool {
        !self.skipped(part) && (self.only.is_empty() || self.only.iter().any(|s| s == part))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

/// The relay and client: built with `cargo build --release`, found beside this bench binary
/// (`target/release`), or named by `ILLUMI_RELAY`/`ILLUMI_CLIENT`.
fn binaries(settings: &Settings) -> Result<Binaries> {
    if settings.build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        say("building the release relay and client");
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "illumitunnel-relay",
                "-p",
                "illumitunnel-client",
            ])
            .status()
            .context("could not run cargo")?;
        if !status.success() {
            bail!("cargo build --release failed ({status})");
        }
    }
    let exe = std::env::current_exe().context("could not locate the bench binary")?;
    // target/release/deps/tunnel-HASH → target/release
    let release = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target/release"));
    let pick = |var: &str, name: &str| -> Result<PathBuf> {
        let path = std::env::var_os(var).map_or_else(|| release.join(name), PathBuf::from);
        if !path.exists() {
            bail!(
                "{} not found; build it with `cargo build --release` or set {var}",
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

/// One measured load run and the CPU the tunnel processes spent on it.
struct Measured {
    run: Run,
    cpu_us_per_req: f64,
}

struct Bench {
    settings: Settings,
    rt: tokio::runtime::Runtime,
    tck: u64,
    body: Bytes,
    table: Vec<(String, String, Measured)>,
}

impl Bench {
    fn measure(
        &mut self,
        tool: &str,
        mode: &str,
        ep: &Endpoint,
        conc: usize,
        close: bool,
        pids: &[u32],
    ) -> Result<f64> {
        if !self.settings.warmup.is_zero() {
            self.rt
                .block_on(load::run(ep, &self.body, conc, close, self.settings.warmup))?;
        }
        let before: u64 = pids
            .iter()
            .map(|p| proc::cpu_ticks(*p))
            .sum::<Result<u64>>()?;
        let run = self
            .rt
            .block_on(load::run(ep, &self.body, conc, close, self.settings.secs))
            .with_context(|| format!("{tool} {mode}"))?;
        let after: u64 = pids
            .iter()
            .map(|p| proc::cpu_ticks(*p))
            .sum::<Result<u64>>()?;
        let cpu_us_per_req = if pids.is_empty() {
            f64::NAN
        } else {
            (after - before) as f64 / self.tck as f64 * 1e6 / run.ok.max(1) as f64
        };
        say(format!(
            "{tool:<14} {mode:<16} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  errors {}  tunnel CPU {:.1} µs/req",
            run.rps(),
            run.percentile_ms(50.0),
            run.percentile_ms(99.0),
            run.errors,
            cpu_us_per_req
        ));
        let rps = run.rps();
        self.table.push((
            tool.to_string(),
            mode.to_string(),
            Measured {
                run,
                cpu_us_per_req,
            },
        ));
        Ok(rps)
    }

    fn get(&self, tool: &str, mode: &str) -> Option<&Measured> {
        self.table
            .iter()
            .find(|(t, m, _)| t == tool && m == mode)
            .map(|(_, _, r)| r)
    }
}

fn run() -> Result<()> {
    let settings = Settings::from_env()?;
    let bins = binaries(&settings)?;
    let load_start = proc::load_average();
    say(format!("machine: {}", proc::machine()));
    let tmp = tempfile::Builder::new()
        .prefix("illumitunnel-bench.")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    say(format!("logs and stores in {}", dir.display()));
    // the sender runs on one thread; the target on another (see target.rs)
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let target = Target::start()?;
    let mut bench = Bench {
        rt,
        tck: proc::clk_tck(),
        body: payload::envelope(),
        table: Vec::new(),
        settings,
    };
    let mut report = Report::default();

    // --- (a)–(c): latency, throughput, new connection per webhook ---
    let tunnel = stack::start_tunnel(
        &bins,
        Ingress::Http,
        "bench-http",
        target.addr,
        &dir,
        &[],
        &bench.rt,
    )?;
    if bench.settings.runs("core") {
        core(&mut bench, &bins, &target, &tunnel, &dir, &mut report)?;
    }

    // --- (d) a large body ---
    if bench.settings.runs("big") {
        big_body(&bench, &bins, &target, &dir, &mut report)?;
    }
    // --- (e) idle clients ---
    if bench.settings.runs("idle") && !bench.settings.idle.is_empty() {
        idle_clients(&bench, &bins, &dir, &mut report)?;
    }
    // --- (f) a full capture store ---
    if bench.settings.runs("store") && bench.settings.store_rows > 0 {
        full_store(&bench, &bins, &tunnel.relay.url, &target, &dir, &mut report)?;
    }
    // --- (g) idle and slow sockets, (h) one tunnel's large bodies beside another ---
    let mut compared = Vec::new();
    let window = Window {
        warmup: bench.settings.warmup,
        secs: bench.settings.secs,
    };
    for (part, ingress) in [("slow", Ingress::Http), ("slow-tls", Ingress::Tls)] {
        if bench.settings.runs(part) && bench.settings.slow > 0 {
            let n = slow_fit(bench.settings.slow);
            compared.extend(hostile::slow_sockets(
                &bins,
                ingress,
                &target,
                &dir,
                &bench.rt,
                window,
                n,
                &mut report,
            )?);
        }
    }
    if bench.settings.runs("fairness") {
        compared.extend(hostile::fairness(
            &bins,
            &target,
            &dir,
            &bench.rt,
            window,
            bench.settings.big_mib * 1024 * 1024,
            FAIRNESS_SENDERS,
            &mut report,
        )?);
    }
    if bench.settings.runs("slow-body") {
        compared.extend(illumitunnel_bench::slow_body::measure(
            &bins,
            &target,
            &dir,
            &bench.rt,
            window,
            &mut report,
        )?);
    }
    // --- (i) the cluster's NATS hop: only when named, as it needs a nats-server ---
    let cluster = if bench.settings.only.iter().any(|s| s == "cluster") {
        Some(illumitunnel_bench::cluster::measure(
            &bins,
            target.addr,
            &dir,
            &bench.rt,
            &bench.body,
            bench.settings.warmup,
            bench.settings.secs,
            bench.settings.conc,
            CLUSTER_REPEATS,
        )?)
    } else {
        None
    };
    drop(tunnel);
    let served = target.served();
    drop(target);

    let mut out = std::io::stdout().lock();
    writeln!(out, "\n## illumitunnel bench\n")?;
    writeln!(out, "machine: {}", proc::machine())?;
    writeln!(
        out,
        "load average at start: {load_start}; at end: {}",
        proc::load_average()
    )?;
    writeln!(
        out,
        "settings: BENCH_SECS={} BENCH_WARMUP={} BENCH_CONC={} payload {} bytes; target answered {served} requests\n",
        bench.settings.secs.as_secs_f64(),
        bench.settings.warmup.as_secs_f64(),
        bench.settings.conc,
        bench.body.len()
    )?;
    if !bench.table.is_empty() {
        write_measurements(&bench, &mut out)?;
        writeln!(out)?;
    }
    if !compared.is_empty() {
        hostile::write_compared(&compared, &mut out)?;
        writeln!(out)?;
    }
    if let Some(paths) = &cluster {
        writeln!(
            out,
            "cluster, {CLUSTER_REPEATS} interleaved repeats, mean (min–max):\n"
        )?;
        illumitunnel_bench::cluster::write(paths, bench.settings.conc, &mut out)?;
        writeln!(out)?;
    }
    report.write(&mut out)?;
    if bench.settings.keep {
        let kept = tmp.keep();
        writeln!(out, "\nlogs kept in {}", kept.display())?;
    }
    Ok(())
}

/// (a)–(c): latency, throughput, a new connection per webhook; beside direct, TLS and bore.
fn core(
    bench: &mut Bench,
    bins: &Binaries,
    target: &Target,
    tunnel: &stack::Tunnel,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let direct = Endpoint::http(target.addr, stack::WEBHOOK_PATH);
    let tls = if !bench.settings.skipped("tls") {
        Some(stack::start_tunnel(
            bins,
            Ingress::Tls,
            "bench-tls",
            target.addr,
            dir,
            &[],
            &bench.rt,
        )?)
    } else {
        None
    };
    let bore = match (!bench.settings.skipped("bore"), stack::find_bore()) {
        (true, Some(path)) => match stack::start_bore(&path, target.addr, dir, &bench.rt) {
            Ok(b) => Some(b),
            Err(err) => {
                say(format!("bore skipped: {err:#}"));
                None
            }
        },
        _ => None,
    };
    let conc = bench.settings.conc;
    let c_mode = format!("c={conc}");
    type Entry<'a> = (&'a str, Endpoint, Vec<u32>);
    let mut entries: Vec<Entry> = vec![
        ("direct", direct.clone(), vec![]),
        ("illumitunnel", tunnel.endpoint.clone(), tunnel.pids()),
    ];
    if let Some(b) = &bore {
        entries.push(("bore", b.endpoint.clone(), b.pids()));
    }
    let tls_entry = tls
        .as_ref()
        .map(|t| ("illumitunnel TLS", t.endpoint.clone(), t.pids()));
    for (tool, ep, pids) in entries.iter().chain(tls_entry.iter()) {
        bench.measure(tool, "c=1", ep, 1, false, pids)?;
    }
    for (tool, ep, pids) in &entries {
        bench.measure(tool, &c_mode, ep, conc, false, pids)?;
    }
    for (tool, ep, pids) in entries.iter().chain(tls_entry.iter()) {
        bench.measure(tool, "1c", ep, 1, true, pids)?;
    }
    drop(tls);
    drop(bore);
    spec_rows(bench, &c_mode, report);
    Ok(())
}

fn write_measurements(bench: &Bench, out: &mut impl Write) -> Result<()> {
    writeln!(out, "| tool | mode | req/s | ×direct | p50 ms | p99 ms | Δp50 ms | Δp99 ms | tunnel CPU µs/req | errors |")?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (tool, mode, m) in &bench.table {
        let base = bench.get("direct", mode);
        let (ratio, d50, d99) = match base {
            Some(d) if tool != "direct" => (
                format!("{:.2}", m.run.rps() / d.run.rps()),
                format!(
                    "{:+.3}",
                    m.run.percentile_ms(50.0) - d.run.percentile_ms(50.0)
                ),
                format!(
                    "{:+.3}",
                    m.run.percentile_ms(99.0) - d.run.percentile_ms(99.0)
                ),
            ),
            _ => ("1".into(), "–".into(), "–".into()),
        };
        let cpu = if m.cpu_us_per_req.is_nan() {
            "–".to_string()
        } else {
            format!("{:.1}", m.cpu_us_per_req)
        };
        writeln!(
            out,
            "| {tool} | {mode} | {:.0} | {ratio} | {:.3} | {:.3} | {d50} | {d99} | {cpu} | {} |",
            m.run.rps(),
            m.run.percentile_ms(50.0),
            m.run.percentile_ms(99.0),
            m.run.errors
        )?;
    }
    Ok(())
}

fn spec_rows(bench: &Bench, c_mode: &str, report: &mut Report) {
    let added = |tool: &str, p: f64| -> f64 {
        match (bench.get(tool, "c=1"), bench.get("direct", "c=1")) {
            (Some(t), Some(d)) => t.run.percentile_ms(p) - d.run.percentile_ms(p),
            _ => f64::NAN,
        }
    };
    let a50 = added("illumitunnel", 50.0);
    let a99 = added("illumitunnel", 99.0);
    report.row(
        "c=1 added median, `--http`",
        format!("{a50:+.3} ms"),
        "≤ 0.15 ms (floor 0.5 ms)",
        Verdict::at_most(a50, 0.15, Some(0.5)),
    );
    report.row(
        "c=1 added p99, `--http`",
        format!("{a99:+.3} ms"),
        "≤ 0.5 ms (floor 2 ms)",
        Verdict::at_most(a99, 0.5, Some(2.0)),
    );
    if bench.get("illumitunnel TLS", "c=1").is_some() {
        report.info(
            "c=1 added median / p99, TLS ingress",
            format!(
                "{:+.3} / {:+.3} ms",
                added("illumitunnel TLS", 50.0),
                added("illumitunnel TLS", 99.0)
            ),
        );
    }
    if bench.get("bore", "c=1").is_some() {
        report.info(
            "c=1 added median / p99, bore",
            format!(
                "{:+.3} / {:+.3} ms",
                added("bore", 50.0),
                added("bore", 99.0)
            ),
        );
    }
    let rps = |tool: &str, mode: &str| bench.get(tool, mode).map_or(f64::NAN, |m| m.run.rps());
    let cpu = |tool: &str, mode: &str| bench.get(tool, mode).map_or(f64::NAN, |m| m.cpu_us_per_req);
    report.info(
        format!("{c_mode} req/s, share of direct"),
        format!(
            "{:.0} ({:.0} %)",
            rps("illumitunnel", c_mode),
            100.0 * rps("illumitunnel", c_mode) / rps("direct", c_mode)
        ),
    );
    if bench.get("bore", c_mode).is_some() {
        let share = rps("illumitunnel", c_mode) / rps("bore", c_mode);
        report.row(
            format!("{c_mode} req/s, share of bore"),
            format!("{:.0} %", 100.0 * share),
            "≥ 85 % of bore",
            Verdict::at_least(share, 0.85, None),
        );
        let ratio = cpu("illumitunnel", c_mode) / cpu("bore", c_mode);
        report.row(
            format!("{c_mode} tunnel CPU per request"),
            format!(
                "{:.1} µs ({:.2}× bore's {:.1} µs)",
                cpu("illumitunnel", c_mode),
                ratio,
                cpu("bore", c_mode)
            ),
            "≤ 1.5× bore",
            Verdict::at_most(ratio, 1.5, None),
        );
        let ratio_1c = rps("illumitunnel", "1c") / rps("bore", "1c");
        report.row(
            "1c req/s (new connection per webhook)",
            format!(
                "{:.0} ({:.2}× bore's {:.0}; {:.0} % of direct)",
                rps("illumitunnel", "1c"),
                ratio_1c,
                rps("bore", "1c"),
                100.0 * rps("illumitunnel", "1c") / rps("direct", "1c")
            ),
            "ahead of bore and rathole",
            Verdict::at_least(ratio_1c, 1.0, None),
        );
    } else {
        report.info(
            format!("{c_mode} tunnel CPU per request"),
            format!("{:.1} µs (bore not run)", cpu("illumitunnel", c_mode)),
        );
        report.info(
            "1c req/s (new connection per webhook)",
            format!(
                "{:.0} ({:.0} % of direct; bore not run)",
                rps("illumitunnel", "1c"),
                100.0 * rps("illumitunnel", "1c") / rps("direct", "1c")
            ),
        );
    }
    if bench.get("illumitunnel TLS", "1c").is_some() {
        report.info(
            "1c req/s, TLS ingress (ECDSA, resumption)",
            format!(
                "{:.0} ({:.0} % of direct)",
                rps("illumitunnel TLS", "1c"),
                100.0 * rps("illumitunnel TLS", "1c") / rps("direct", "1c")
            ),
        );
    }
}

/// Senders streaming large bodies to tunnel A in the fairness part (SPEC's four).
const FAIRNESS_SENDERS: usize = 4;

/// Slow sockets that fit the open-files limit: each costs a descriptor here and one in the
/// relay, and the bench keeps 256 spare.
fn slow_fit(n: usize) -> usize {
    let limit = proc::open_files_limit().unwrap_or(1024);
    if (n as u64) + 256 > limit {
        let fit = limit.saturating_sub(256) as usize;
        say(format!(
            "open-files limit {limit}: {n} slow sockets do not fit, opening {fit}; raise it with `ulimit -n {}`",
            n + 1024
        ));
        return fit;
    }
    n
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn big_body(
    bench: &Bench,
    bins: &Binaries,
    target: &Target,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let size = bench.settings.big_mib * 1024 * 1024;
    let max_body = (size + size / 2).to_string();
    say(format!(
        "a {} MiB body through a fresh relay and client",
        bench.settings.big_mib
    ));
    let mut t = stack::start_tunnel(
        bins,
        Ingress::Http,
        "bench-big",
        target.addr,
        dir,
        &["--max-body", &max_body],
        &bench.rt,
    )?;
    let (rp, cp) = (t.relay.proc.pid(), t.client.pid());
    let (r0, c0) = (
        proc::status_kib(rp, "VmHWM")?,
        proc::status_kib(cp, "VmHWM")?,
    );
    let body = payload::large_body(size);
    let started = Instant::now();
    let (status, _) = bench.rt.block_on(load::post_once(&t.endpoint, &body))?;
    let took = started.elapsed();
    if status != 200 {
        bail!(
            "the {} MiB body was answered {status}",
            bench.settings.big_mib
        );
    }
    // The peak is read once the client has shown the delivery, which it does only after the
    // commit: recording is part of what the body costs, however long it takes.
    t.client
        .wait_for_line(
            "\"resource_id\":\"tkt_large\"",
            false,
            Duration::from_secs(30),
        )
        .context("the client never showed the large delivery")?;
    let (r1, c1) = (
        proc::status_kib(rp, "VmHWM")?,
        proc::status_kib(cp, "VmHWM")?,
    );
    let body_mib = size as f64 / (1024.0 * 1024.0);
    for (who, before, after) in [("relay", r0, r1), ("client", c0, c1)] {
        let growth = mib(after.saturating_sub(before));
        report.row(
            format!("{} MiB body: {who} peak RSS growth", bench.settings.big_mib),
            format!(
                "{growth:.1} MiB = {:.2}× body (VmHWM {:.1} → {:.1} MiB)",
                growth / body_mib,
                mib(before),
                mib(after)
            ),
            "≤ ~2× body",
            Verdict::at_most(growth / body_mib, 2.0, None),
        );
    }
    report.info(
        format!("{} MiB body: round trip", bench.settings.big_mib),
        format!("{:.0} ms", took.as_secs_f64() * 1e3),
    );
    Ok(())
}

fn idle_clients(bench: &Bench, bins: &Binaries, dir: &Path, report: &mut Report) -> Result<()> {
    for &n in &bench.settings.idle {
        idle_fleet(bench, bins, dir, n, report)?;
    }
    Ok(())
}

/// How long idle sessions are held before the relay's memory is read: one keepalive interval
/// (the relay's default, 10 s) and a little, so every session has been pinged and has answered.
const IDLE_SETTLE: Duration = Duration::from_secs(12);

/// One point of the idle-fleet curve: `n` sessions against a fresh relay, its memory after a
/// keepalive cycle.
fn idle_fleet(
    bench: &Bench,
    bins: &Binaries,
    dir: &Path,
    mut n: usize,
    report: &mut Report,
) -> Result<()> {
    let wanted = n;
    let limit = proc::open_files_limit().unwrap_or(1024);
    if (n as u64) + 256 > limit {
        let fit = limit.saturating_sub(256) as usize;
        say(format!("open-files limit {limit}: {n} idle clients do not fit, opening {fit}; raise it with `ulimit -n {}`", n + 1024));
        n = fit;
    }
    say(format!("{n} idle clients against a fresh relay"));
    // Sessions come from a few loopback addresses; the per-address limit is for senders.
    let relay = stack::start_relay(
        bins,
        Ingress::Http,
        &format!("idle-relay-{n}"),
        dir,
        &[
            "--max-connections-per-ip",
            "1000000",
            "--max-connections",
            "1000000",
        ],
    )?;
    let pid = relay.proc.pid();
    let rss0 = proc::status_kib(pid, "VmRSS")?;
    let started = Instant::now();
    let sessions = bench
        .rt
        .block_on(illumitunnel_bench::idle::open(relay.addr, n, 64, "idle"));
    let took = started.elapsed();
    bench
        .rt
        .block_on(async { tokio::time::sleep(IDLE_SETTLE).await });
    let rss = proc::status_kib(pid, "VmRSS")?;
    let hwm = proc::status_kib(pid, "VmHWM")?;
    let alive = sessions.alive();
    say(format!(
        "{} welcomed, {} failed ({}), {alive} still open {:.0} s later; connected in {:.1} s",
        sessions.opened,
        sessions.failed,
        sessions.first_error.as_deref().unwrap_or("no error"),
        IDLE_SETTLE.as_secs_f64(),
        took.as_secs_f64()
    ));
    let per = (rss.saturating_sub(rss0)) as f64 / sessions.opened.max(1) as f64;
    let scaled = if n < wanted {
        format!(" (only {n} fit the open-files limit)")
    } else {
        String::new()
    };
    let complete = sessions.opened == wanted && alive == wanted;
    report.row(
        format!(
            "relay RSS with {} idle connected clients after a keepalive cycle{scaled}",
            sessions.opened
        ),
        format!(
            "{:.1} MiB ({per:.1} KiB per client; {:.1} MiB empty; peak {:.1} MiB; {alive} still open)",
            mib(rss),
            mib(rss0),
            mib(hwm)
        ),
        "≤ 10 KiB per client (100,000 in < 1 GiB)",
        if complete {
            Verdict::at_most(per, 10.0, None)
        } else {
            Verdict::Info
        },
    );
    report.info(
        format!("{} idle clients: time to connect all", sessions.opened),
        format!(
            "{:.1} s ({:.0} sessions/s, 64 handshakes at a time)",
            took.as_secs_f64(),
            sessions.opened as f64 / took.as_secs_f64().max(1e-9)
        ),
    );
    drop(sessions);
    drop(relay);
    Ok(())
}

fn full_store(
    bench: &Bench,
    bins: &Binaries,
    relay_url: &str,
    target: &Target,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let n = bench.settings.store_rows;
    let store = dir.join("full-store.db");
    say(format!("filling a capture store with {n} deliveries"));
    let took = payload::fill_store(&store, n, 5_000)?;
    let size = std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0);
    report.info(
        format!("capture store with {n} deliveries: fill time, size"),
        format!(
            "{:.1} s, {:.0} MiB",
            took.as_secs_f64(),
            size as f64 / (1024.0 * 1024.0)
        ),
    );
    let tui = inspector::have_script();
    if !tui {
        say("`script` not found: measuring `listen --no-tui` instead of the inspector");
    }
    let mut insp = inspector::start(
        bins,
        relay_url,
        "bench-store",
        target.addr,
        &store,
        dir,
        tui,
    )?;
    let ep = Endpoint::http(
        relay_url
            .split_once("://")
            .map(|(_, a)| a)
            .context("relay URL has no scheme")?
            .parse()
            .context("relay URL is not an address")?,
        "/t/bench-store",
    );
    stack::wait_until_forwarding(&ep, &bench.rt, &mut [insp.outer_mut()])?;
    bench
        .rt
        .block_on(async { tokio::time::sleep(Duration::from_secs(1)).await });
    let pid = insp.listen_pid;
    let rss0 = proc::status_kib(pid, "VmRSS")?;
    let how = if tui {
        "inspector up in a 160×40 terminal"
    } else {
        "`--no-tui`"
    };
    report.row(
        format!("client RSS with {n} stored deliveries ({how})"),
        format!("{:.1} MiB", mib(rss0)),
        "< 50 MiB",
        Verdict::at_most(mib(rss0), 50.0, None),
    );
    if tui {
        let (took, missed) = insp.keypress_latencies(40)?;
        let pct = |p: f64| {
            took.get(((p / 100.0) * took.len().saturating_sub(1) as f64).round() as usize)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        };
        report.row(
            format!(
                "keypress → frame with {n} stored, median / p99 ({} keys; one that drew nothing counts as 1 s)",
                took.len()
            ),
            format!(
                "{:.1} / {:.1} ms{}",
                pct(50.0),
                pct(99.0),
                if missed > 0 {
                    format!(", {missed} drew nothing")
                } else {
                    String::new()
                }
            ),
            "within a frame (~33 ms)",
            Verdict::at_most(pct(99.0), 34.0, None),
        );
    }
    // a burst of 1,000 deliveries a second for three seconds
    let cpu0 = proc::cpu_ticks(pid)?;
    let burst = bench
        .rt
        .block_on(load::paced(&ep, &bench.body, 1_000, 3_000))?;
    let cpu1 = proc::cpu_ticks(pid)?;
    bench
        .rt
        .block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
    let rss1 = proc::status_kib(pid, "VmRSS")?;
    let hwm = proc::status_kib(pid, "VmHWM")?;
    let cpu_us = (cpu1 - cpu0) as f64 / bench.tck as f64 * 1e6 / burst.ok.max(1) as f64;
    say(format!(
        "burst: {} ok, {} errors in {:.2} s, p50 {:.2} ms p99 {:.2} ms",
        burst.ok,
        burst.errors,
        burst.elapsed.as_secs_f64(),
        burst.percentile_ms(50.0),
        burst.percentile_ms(99.0)
    ));
    report.row(
        format!("client RSS after a 1,000/s burst (3 s) on {n} stored"),
        format!("{:.1} MiB (peak {:.1} MiB)", mib(rss1), mib(hwm)),
        "< 50 MiB",
        Verdict::at_most(mib(hwm), 50.0, None),
    );
    report.info(
        "1,000/s burst into the inspector: client CPU, sender latency",
        format!(
            "{cpu_us:.0} µs per delivery ({:.0} % of a core); p50 {:.2} ms, p99 {:.2} ms; {} errors",
            cpu_us * 1_000.0 / 1e4,
            burst.percentile_ms(50.0),
            burst.percentile_ms(99.0),
            burst.errors
        ),
    );
    drop(insp);
    Ok(())
}
