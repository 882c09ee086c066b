//! Starting what is measured: an illumitunnel relay + `listen` client pair (plain HTTP or TLS
//! ingress), a relay alone, or bore (the raw TCP tunnel peer) when it is installed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::load::{self, Endpoint};
use crate::payload;
use crate::proc::Proc;

/// Path the client forwards to on the target.
pub const WEBHOOK_PATH: &str = "/webhooks/illumichat";
/// Longest a relay, client or peer may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `illumitunnel-relay`.
    pub relay: PathBuf,
    /// `illumitunnel`.
    pub client: PathBuf,
}

/// Relay flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// `--http`.
    Http,
    /// `--self-signed` (ECDSA P-256), the client with `--insecure`.
    Tls,
}

/// A running relay.
pub struct Relay {
    /// The process.
    pub proc: Proc,
    /// Its address.
    pub addr: SocketAddr,
    /// Its base URL (`http://…` or `https://…`).
    pub url: String,
}

/// The log filter of the processes under test: `BENCH_LOG`, else `warn`.
fn log_filter() -> String {
    std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into())
}

/// Starts a relay on an ephemeral loopback port with its own data dir under `dir`.
pub fn start_relay(
    bins: &Binaries,
    ingress: Ingress,
    name: &str,
    dir: &Path,
    extra: &[&str],
) -> Result<Relay> {
    let mut cmd = Command::new(&bins.relay);
    cmd.args(["--listen", "127.0.0.1:0", "--allow-anonymous", "--data-dir"])
        .arg(dir.join(format!("{name}-data")))
        .arg(match ingress {
            Ingress::Http => "--http",
            Ingress::Tls => "--self-signed",
        })
        .args(extra)
        .env("RUST_LOG", log_filter());
    let mut proc = Proc::spawn_logged(name, cmd, dir)?;
    let line = proc.wait_for_line("listening on", false, READY_TIMEOUT)?;
    let url = line
        .rsplit(' ')
        .next()
        .context("relay printed no URL")?
        .trim()
        .to_string();
    let addr: SocketAddr = url
        .split_once("://")
        .map(|(_, a)| a.trim_end_matches('/'))
        .context("relay URL has no scheme")?
        .parse()
        .with_context(|| format!("relay URL {url} is not an address"))?;
    Ok(Relay { proc, addr, url })
}

/// A relay and a `listen` client forwarding one tunnel to the target.
pub struct Tunnel {
    /// The relay.
    pub relay: Relay,
    /// The client (`listen --no-tui --json`).
    pub client: Proc,
    /// The public webhook URL as an endpoint.
    pub endpoint: Endpoint,
}

impl Tunnel {
    /// PIDs whose CPU time is the tunnel's cost.
    pub fn pids(&self) -> Vec<u32> {
        vec![self.relay.proc.pid(), self.client.pid()]
    }
}

/// Starts a relay and a client for tunnel `name` forwarding to `target`, and waits until a
/// webhook passes end to end.
pub fn start_tunnel(
    bins: &Binaries,
    ingress: Ingress,
    name: &str,
    target: SocketAddr,
    dir: &Path,
    relay_extra: &[&str],
    rt: &tokio::runtime::Runtime,
) -> Result<Tunnel> {
    let relay = start_relay(bins, ingress, &format!("{name}-relay"), dir, relay_extra)?;
    let (client, endpoint) = start_client(bins, &relay, ingress, name, target, dir, rt)?;
    Ok(Tunnel {
        relay,
        client,
        endpoint,
    })
}

/// Starts a `listen` client for tunnel `name` on a running relay, forwarding to `target`, and
/// waits until a webhook passes end to end; returns it with the tunnel's public endpoint.
pub fn start_client(
    bins: &Binaries,
    relay: &Relay,
    ingress: Ingress,
    name: &str,
    target: SocketAddr,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
) -> Result<(Proc, Endpoint)> {
    let mut cmd = Command::new(&bins.client);
    cmd.args([
        "listen",
        "--relay",
        &relay.url,
        "--tunnel",
        name,
        "--forward-to",
    ])
    .arg(format!("http://{target}{WEBHOOK_PATH}"))
    .args(["--no-tui", "--json", "--store"])
    .arg(dir.join(format!("{name}.db")))
    .env("ILLUMITUNNEL_HOME", dir.join(format!("{name}-home")))
    .env("RUST_LOG", log_filter());
    if ingress == Ingress::Tls {
        cmd.arg("--insecure");
    }
    let mut client = Proc::spawn_logged(&format!("{name}-client"), cmd, dir)?;
    client.wait_for_line("connected", true, READY_TIMEOUT)?;
    let mut endpoint = Endpoint::http(relay.addr, &format!("/t/{name}"));
    if ingress == Ingress::Tls {
        endpoint.tls = Some(load::insecure_tls());
    }
    wait_until_forwarding(&endpoint, rt, &mut [&mut client])?;
    Ok((client, endpoint))
}

/// Posts the envelope until it is answered 200 with the target's body.
pub fn wait_until_forwarding(
    ep: &Endpoint,
    rt: &tokio::runtime::Runtime,
    procs: &mut [&mut Proc],
) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let body = payload::envelope();
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        for p in procs.iter_mut() {
            p.check_alive()?;
        }
        match rt.block_on(load::post_once(ep, &body)) {
            Ok((200, answer)) if answer.as_ref() == crate::target::ANSWER => return Ok(()),
            Ok((status, answer)) => last = format!("{status} {}", String::from_utf8_lossy(&answer)),
            Err(err) => last = format!("{err:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{}{} did not forward within {READY_TIMEOUT:?}: last answer {last}",
        ep.addr,
        ep.path
    )
}

/// bore (`bore server` + `bore local`), the raw TCP tunnel SPEC compares against.
pub struct Bore {
    /// `bore server`.
    pub server: Proc,
    /// `bore local`.
    pub client: Proc,
    /// The public port as an endpoint.
    pub endpoint: Endpoint,
}

impl Bore {
    /// PIDs whose CPU time is the tunnel's cost.
    pub fn pids(&self) -> Vec<u32> {
        vec![self.server.pid(), self.client.pid()]
    }
}

/// The bore binary: `$BORE`, else `~/.cargo/bin/bore` when it exists.
pub fn find_bore() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BORE") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let bore = home.join("bin").join("bore");
    bore.exists().then_some(bore)
}

/// Starts bore's server (control port 7835, fixed by bore) and client forwarding to `target`.
pub fn start_bore(
    bore: &Path,
    target: SocketAddr,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
) -> Result<Bore> {
    let port = free_port()?.to_string();
    let mut cmd = Command::new(bore);
    cmd.args([
        "server",
        "--bind-addr",
        "127.0.0.1",
        "--min-port",
        &port,
        "--max-port",
        &port,
    ]);
    let mut server = Proc::spawn_logged("bore-server", cmd, dir)?;
    std::thread::sleep(Duration::from_millis(300));
    server.check_alive()?;
    let mut cmd = Command::new(bore);
    cmd.args([
        "local",
        &target.port().to_string(),
        "--local-host",
        "127.0.0.1",
    ])
    .args(["--to", "127.0.0.1", "--port", &port]);
    let mut client = Proc::spawn_logged("bore-client", cmd, dir)?;
    let endpoint = Endpoint::http(
        format!("127.0.0.1:{port}")
            .parse()
            .context("bad bore address")?,
        WEBHOOK_PATH,
    );
    wait_until_forwarding(&endpoint, rt, &mut [&mut server, &mut client])?;
    Ok(Bore {
        server,
        client,
        endpoint,
    })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("could not find a free port")?;
    Ok(l.local_addr()?.port())
}
