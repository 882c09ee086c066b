//! `illumitunnel listen`: connect to a relay (or start one in-process), forward every delivery
//! to `--forward-to` (or its `--route`, or nowhere when `--events` leaves it out), record it,
//! and show it. While it runs, its record in `{data dir}/listen/` tells `trigger` the tunnel URL;
//! with `--register` it keeps an IllumiChat webhook pointed at the tunnel while it runs.
//!
//! # Layout
//! - `config` — arguments checked into `ListenConfig`, with the defaults.
//! - `embedded` — the in-process relay used without `--relay`.
//! - `announce` — the remembered tunnel name and claim key, `--register`.
//! - `record` — one `listen` per tunnel per machine: the lock and the record `trigger` reads.

mod announce;
mod config;
mod embedded;
mod record;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use illumitunnel::store::CaptureStore;
use illumitunnel_relay::server::cancel_on_signal;
use illumitunnel_relay::RelayError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cli::ListenArgs;
use crate::forward::{Forwarder, Target};
use crate::output::{self, Banner, Format};
use crate::recorder::{self, ScreenSink};
use crate::replay;
use crate::session::tls::{self, Trust};
use crate::session::{self, RelayUrl, Session, SessionConfig};
use crate::status::{ListenEvent, ReplayRequest};
use crate::usage::UsageError;

use announce::{announce, on_welcome};
pub(crate) use announce::{remembered_claim_key, remembered_tunnel};
pub use config::{ListenConfig, TrustChoice, DEFAULT_KEEPALIVE, DEFAULT_MAX_BODY};
use embedded::{start_embedded, Embedded};
pub use record::Running;

/// Events waiting for the screen.
const SCREEN_QUEUE: usize = 1024;
/// How long shutdown waits for the capture store writer and the embedded relay.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits to disable the IllumiChat webhook.
const ANNOUNCE_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// `listen`'s screen.
enum Screen {
    /// Line or JSON output on stdout.
    Lines(Format),
    /// The terminal inspector.
    Inspector,
}

/// Whether `listen` opens the inspector: not with `--json` or `--no-tui`, and only when both
/// stdin and stdout are terminals (never in CI, containers, `nohup` or pipes). `main` asks too,
/// to send logs to a file instead of the screen.
pub fn wants_inspector(json: bool, no_tui: bool) -> bool {
    !json && !no_tui && std::io::stdout().is_terminal() && std::io::stdin().is_terminal()
}

fn choose_screen(config: &ListenConfig) -> Screen {
    match config.format {
        Format::Json => Screen::Lines(Format::Json),
        _ if wants_inspector(false, config.no_tui) => Screen::Inspector,
        format => Screen::Lines(format),
    }
}

/// Runs `listen` until Ctrl-C / SIGTERM (exit 0) or a refusal (exit 1).
pub async fn run(args: ListenArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let (config, forwarder, store, tunnel, mut claim) = prepare(&args, ctx)?;
    // Bound before connecting, so a taken `--inspect` port stops `listen` before anything else.
    let web_listener = crate::web::bind(config.inspect).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let mut link = connect_to(&config, &shutdown).await?;
    let screen_choice = choose_screen(&config);
    let inspector = matches!(screen_choice, Screen::Inspector);
    let (screen_tx, screen_rx) = mpsc::channel(SCREEN_QUEUE);
    let (public_url_tx, public_url_rx) = watch::channel(None);
    // The inspector's second Ctrl-C: stop waiting for deliveries still being forwarded.
    let abandon = CancellationToken::new();
    let (recorder, recorder_thread) =
        spawn_recorder(store, &screen_choice, screen_tx.clone(), &config)?;
    // Replays asked for by the inspector: its `TuiContext::replays` is this sender.
    let (replays, replay_server) = replay::spawn_server(
        ctx.store.clone(),
        forwarder.clone(),
        recorder.clone(),
        shutdown.clone(),
    );
    let sources = |replays: &mpsc::Sender<ReplayRequest>| crate::web::Sources {
        store: ctx.store.clone(),
        committed: recorder.committed(),
        replays: replays.clone(),
    };
    let web = web_listener
        .map(|listener| start_web(listener, sources(&replays), claim.as_mut(), &shutdown));
    let shown = ShownAs {
        forward_to: shown_target(&config),
        embedded_relay: link.embedded_url(),
        web_inspector: web.as_ref().map(crate::web::Started::url),
        replays: replays.clone(),
        abandon: abandon.clone(),
    };
    let screen = spawn_screen(
        screen_choice,
        shown,
        screen_rx,
        public_url_rx.clone(),
        ctx,
        &shutdown,
    );
    let announce = spawn_announce(public_url_rx, &config, &shutdown);
    let claim_key = remembered_claim_key(&tunnel);
    let record = claim.as_ref().map(|c| c.record.clone());
    let on_welcome = on_welcome(
        tunnel.clone(),
        claim_key.clone(),
        record,
        link.ca_pem.take(),
    );
    let session = Session {
        config: Arc::new(link.session_config(&config, tunnel, claim_key)),
        forwarder: session_forwarder(forwarder, &config),
        recorder,
        screen: screen_tx,
        public_url: public_url_tx,
        on_welcome,
        abandon,
    };
    let result = run_session(session, &mut link.relay_task, &shutdown).await;
    let stopping = Stopping {
        web: web.map(|w| w.task),
        replays,
        replay_server,
        announce,
        recorder_thread,
        screen,
        relay_task: link.relay_task,
    };
    let result = stopping.stop(result, inspector).await;
    // The record goes only now, after the last thing this `listen` did.
    drop(claim);
    result
}

/// What `listen` settles before it connects: its configuration, the local forwarder, the
/// capture store, the tunnel and this machine's claim on it (none for `--fan-out`).
type Prepared = (
    ListenConfig,
    Forwarder,
    CaptureStore,
    illumitunnel::TunnelName,
    Option<record::Claim>,
);

/// Reads the settings and flags, opens the capture store and claims the tunnel on this machine.
fn prepare(args: &ListenArgs, ctx: &Ctx) -> anyhow::Result<Prepared> {
    let settings = crate::settings::Settings::load()?;
    let config = ListenConfig::try_from((args, &settings))?;
    let forwarder = local_forwarder(&config)?;
    if let Some(warning) = &config.cleartext_warning {
        eprintln!("{warning}");
    }
    let store = CaptureStore::open(&ctx.store)?;
    let tunnel = config.tunnel.clone().unwrap_or_else(remembered_tunnel);
    let claim = claim_tunnel(&config, &tunnel, ctx)?;
    Ok((config, forwarder, store, tunnel, claim))
}

/// Starts the capture store's writer, showing what it commits on the chosen screen.
fn spawn_recorder(
    store: CaptureStore,
    screen: &Screen,
    events: mpsc::Sender<ListenEvent>,
    config: &ListenConfig,
) -> anyhow::Result<(recorder::RecorderHandle, std::thread::JoinHandle<()>)> {
    let sink = ScreenSink {
        events,
        // The inspector re-reads the store when it falls behind; lines must not be lost.
        lossless: matches!(screen, Screen::Lines(_)),
    };
    recorder::spawn(store, sink, config.retention)
        .context("could not start the capture store writer")
}

/// Starts the web inspector on its bound port and names its address and token in this
/// `listen`'s record, where scripts find them (the record is readable by its owner only).
fn start_web(
    listener: tokio::net::TcpListener,
    sources: crate::web::Sources,
    claim: Option<&mut record::Claim>,
    shutdown: &CancellationToken,
) -> crate::web::Started {
    let web = crate::web::start(listener, sources, shutdown.clone());
    if let Some(claim) = claim {
        claim.record.inspect = Some(web.url());
        claim.record.inspect_token = Some(web.token.clone());
        if let Err(err) = claim.record.write(None) {
            tracing::warn!(%err, "could not write the web inspector's address to the listen record");
        }
    }
    web
}

/// The relay a session connects to and how: the embedded one (started here) or `--relay`.
struct Link {
    relay: RelayUrl,
    token: Option<illumitunnel::Token>,
    tls: Arc<rustls::ClientConfig>,
    /// The embedded relay's certificate, for `trigger`.
    ca_pem: Option<String>,
    embedded_port: Option<u16>,
    /// The embedded relay, until it stops.
    relay_task: Option<JoinHandle<Result<(), RelayError>>>,
}

impl Link {
    /// The session's settings: this relay, its token and trust, and the tunnel to claim.
    fn session_config(
        &self,
        config: &ListenConfig,
        tunnel: illumitunnel::TunnelName,
        claim_key: String,
    ) -> SessionConfig {
        SessionConfig {
            relay: self.relay.clone(),
            token: self.token.clone(),
            tunnel,
            tls: self.tls.clone(),
            keepalive: config.keepalive,
            max_body: config.max_body,
            claim_key,
            observer: config.fan_out,
        }
    }

    /// The embedded relay's URL, for the banner.
    fn embedded_url(&self) -> Option<String> {
        self.embedded_port
            .map(|port| format!("https://127.0.0.1:{port}"))
    }
}

/// Starts the embedded relay without `--relay`, and says how to reach and trust the relay.
async fn connect_to(config: &ListenConfig, shutdown: &CancellationToken) -> anyhow::Result<Link> {
    let (relay, trust, embedded) = relay_and_trust(config, shutdown).await?;
    let tls = tls::client_config(trust).map_err(anyhow::Error::msg)?;
    Ok(match embedded {
        // The embedded relay accepts only its own per-process token.
        Some(embedded) => Link {
            relay,
            token: Some(embedded.token),
            tls,
            ca_pem: Some(embedded.cert_pem),
            embedded_port: Some(embedded.port),
            relay_task: Some(embedded.task),
        },
        None => Link {
            relay,
            token: config.token.clone(),
            tls,
            ca_pem: None,
            embedded_port: None,
            relay_task: None,
        },
    })
}

/// One `listen` per tunnel per machine, checked before the embedded relay takes its port so a
/// second `listen` learns which one runs; `--fan-out` observes and holds nothing.
fn claim_tunnel(
    config: &ListenConfig,
    tunnel: &illumitunnel::TunnelName,
    ctx: &Ctx,
) -> anyhow::Result<Option<record::Claim>> {
    if config.fan_out {
        return Ok(None);
    }
    Ok(Some(record::claim(
        tunnel,
        &config.target.to_string(),
        ctx.store.clone(),
    )?))
}

/// Keeps the `--register` webhook pointed at the public URL once the relay announces it.
fn spawn_announce(
    public_url: watch::Receiver<Option<String>>,
    config: &ListenConfig,
    shutdown: &CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(announce(
        public_url,
        config.register.clone(),
        config.allow_private_url,
        config.rules.only.clone(),
        shutdown.clone(),
    ))
}

/// Where deliveries go, as the banner and the inspector show it: an observer says so wherever
/// the target is shown.
fn shown_target(config: &ListenConfig) -> String {
    if config.fan_out {
        "nowhere (--fan-out: record and show only)".to_string()
    } else {
        config.target.to_string()
    }
}

/// The session's forwarder: `--events`, `--route` and `--max-body` applied, and with
/// `--fan-out` an observer that answers without sending.
fn session_forwarder(forwarder: Forwarder, config: &ListenConfig) -> Forwarder {
    let forwarder = forwarder
        .with_rules(&config.rules)
        .with_max_body(config.max_body);
    if config.fan_out {
        forwarder.observer()
    } else {
        forwarder
    }
}

/// What the screen shows besides the deliveries.
struct ShownAs {
    forward_to: String,
    embedded_relay: Option<String>,
    web_inspector: Option<String>,
    replays: mpsc::Sender<ReplayRequest>,
    abandon: CancellationToken,
}

/// Starts the line output or the inspector on the screen events.
fn spawn_screen(
    choice: Screen,
    shown: ShownAs,
    events: mpsc::Receiver<ListenEvent>,
    public_url: watch::Receiver<Option<String>>,
    ctx: &Ctx,
    shutdown: &CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let clock = ctx.clock;
    match choice {
        Screen::Lines(format) => {
            let banner = Banner {
                forward_to: shown.forward_to,
                store: ctx.store.clone(),
                embedded_relay: shown.embedded_relay,
                web_inspector: shown.web_inspector,
            };
            tokio::task::spawn_blocking(move || {
                output::run_lines(events, public_url, banner, format, clock)
            })
        }
        Screen::Inspector => tokio::spawn(run_inspector(
            InspectorStart {
                forward_to: shown.forward_to,
                web_inspector: shown.web_inspector,
                store_path: ctx.store.clone(),
                replays: shown.replays,
                utc_offset: clock.offset(),
                abandon: shown.abandon,
            },
            events,
            public_url,
            shutdown.clone(),
        )),
    }
}

/// Runs the session until it ends or the embedded relay stops.
async fn run_session(
    session: Session,
    relay_task: &mut Option<JoinHandle<Result<(), RelayError>>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let session_run = session::run(session, shutdown.clone());
    tokio::pin!(session_run);
    let result = tokio::select! {
        result = &mut session_run => result,
        // On Ctrl-C / SIGTERM the embedded relay may stop first: that is no failure, and the
        // session still drains what it is forwarding.
        stopped = wait_relay(relay_task) => if shutdown.is_cancelled() {
            session_run.await
        } else {
            Err(stopped)
        },
    };
    shutdown.cancel();
    result
}

/// What is still running once the session has ended, stopped in order by [`Stopping::stop`].
struct Stopping {
    /// The web inspector, which ends on shutdown with every connection it has open.
    web: Option<JoinHandle<()>>,
    replays: mpsc::Sender<ReplayRequest>,
    replay_server: JoinHandle<()>,
    announce: JoinHandle<anyhow::Result<()>>,
    recorder_thread: std::thread::JoinHandle<()>,
    screen: JoinHandle<std::io::Result<()>>,
    relay_task: Option<JoinHandle<Result<(), RelayError>>>,
}

impl Stopping {
    /// Stops replays, `--register`, the capture store writer, the screen and the embedded
    /// relay, each within its timeout; the first failure wins over the session's success.
    async fn stop(self, result: anyhow::Result<()>, inspector: bool) -> anyhow::Result<()> {
        if let Some(web) = self.web {
            let _ = tokio::time::timeout(STOP_TIMEOUT, web).await;
        }
        drop(self.replays);
        let _ = tokio::time::timeout(STOP_TIMEOUT, self.replay_server).await;
        let result = match tokio::time::timeout(ANNOUNCE_STOP_TIMEOUT, self.announce).await {
            Ok(Ok(Err(e))) if result.is_ok() => Err(e),
            Ok(Ok(Err(e))) => {
                eprintln!("error: {}", illumitunnel::escape::escape(&format!("{e:#}")));
                result
            }
            _ => result,
        };
        // Every recorder handle is gone with the session: the writer commits what is left and
        // ends, which ends the screen once it has shown the last delivery.
        let recorder_thread = self.recorder_thread;
        let joined = tokio::time::timeout(
            STOP_TIMEOUT,
            tokio::task::spawn_blocking(move || recorder_thread.join()),
        )
        .await;
        if joined.is_err() {
            tracing::warn!("the capture store writer did not stop in time");
        }
        let screen_result = tokio::time::timeout(STOP_TIMEOUT, self.screen).await;
        if let Some(task) = self.relay_task {
            let _ = tokio::time::timeout(STOP_TIMEOUT, task).await;
        }
        let screen_result = match screen_result {
            Ok(joined) => joined.map_err(std::io::Error::other).and_then(|r| r),
            Err(_) => Ok(()),
        };
        result.and(screen_outcome(inspector, screen_result))
    }
}

/// The relay to connect to and how its certificate is trusted: `--relay` with `--ca` or
/// `--insecure`, or an embedded relay started here whose own certificate is the only one trusted.
async fn relay_and_trust(
    config: &ListenConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<(RelayUrl, Trust, Option<Embedded>)> {
    let Some(url) = &config.relay else {
        let embedded = start_embedded(config.relay_port, shutdown).await?;
        return Ok((
            RelayUrl::loopback(true, embedded.port),
            Trust::Only(vec![embedded.cert.clone()]),
            Some(embedded),
        ));
    };
    let trust = match &config.trust {
        TrustChoice::Default => Trust::System(Vec::new()),
        TrustChoice::Ca(path) => Trust::System(tls::load_ca(path).map_err(UsageError)?),
        TrustChoice::Insecure => Trust::Insecure,
    };
    Ok((url.clone(), trust, None))
}

/// The client for the local server, trusting an https one as `--forward-ca` or
/// `--forward-insecure` say.
fn local_forwarder(config: &ListenConfig) -> anyhow::Result<Forwarder> {
    forwarder_trusting(config.target.clone(), &config.forward_trust)
}

/// A client for `target` that trusts an https local server as `trust` says; an unreadable
/// `--forward-ca` file is a usage error.
pub fn forwarder_trusting(target: Target, trust: &TrustChoice) -> anyhow::Result<Forwarder> {
    let trust = match trust {
        TrustChoice::Default => Trust::System(Vec::new()),
        TrustChoice::Ca(path) => {
            Trust::System(tls::load_pem_certs("--forward-ca", path).map_err(UsageError)?)
        }
        TrustChoice::Insecure => Trust::Insecure,
    };
    let tls = tls::client_config(trust).map_err(anyhow::Error::msg)?;
    Ok(Forwarder::with_tls(target, (*tls).clone())
        .with_trust_remedy(crate::forward::FORWARD_TRUST_REMEDY))
}

/// How the screen's end counts for `listen`'s exit: an inspector that could not start or
/// failed is an error (exit 1); line output cut by a closed pipe is not.
fn screen_outcome(inspector: bool, ended: std::io::Result<()>) -> anyhow::Result<()> {
    match ended {
        Ok(()) => Ok(()),
        Err(e) if inspector => Err(anyhow::anyhow!(
            "the inspector stopped: {e}; pass --no-tui for line output"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => {
            tracing::warn!(%e, "could not write to stdout");
            Ok(())
        }
    }
}

/// What the inspector needs besides the public URL, which arrives with the first `Welcome`.
struct InspectorStart {
    forward_to: String,
    web_inspector: Option<String>,
    store_path: PathBuf,
    replays: mpsc::Sender<crate::status::ReplayRequest>,
    utc_offset: time::UtcOffset,
    abandon: CancellationToken,
}

/// Runs the inspector at once, before the relay answers: the header shows the connection state
/// (connecting, reconnecting in N s) and the public URL once the first `Welcome` gives it, and the
/// terminal is in raw mode from the start, so keys typed while it waits are never echoed.
/// Quitting it (`q`, Ctrl-C) stops `listen`.
async fn run_inspector(
    start: InspectorStart,
    events: mpsc::Receiver<ListenEvent>,
    public_url: watch::Receiver<Option<String>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ctx = crate::tui::TuiContext {
        public_url,
        forward_to: start.forward_to,
        web_inspector: start.web_inspector,
        store_path: start.store_path,
        replays: start.replays,
        utc_offset: start.utc_offset,
        stop: shutdown.clone(),
        abandon: start.abandon,
    };
    // However the inspector ends, `listen` stops with it: on `q`, a signal, an error, or a
    // panic that unwinds through here.
    let _stop = shutdown.drop_guard();
    let result = crate::tui::run(ctx, events).await;
    result.map_err(|e| std::io::Error::other(format!("{e:#}")))
}

async fn wait_relay(task: &mut Option<JoinHandle<Result<(), RelayError>>>) -> anyhow::Error {
    let Some(handle) = task.as_mut() else {
        return std::future::pending().await;
    };
    let outcome = handle.await;
    *task = None;
    match outcome {
        Ok(Ok(())) => anyhow::anyhow!("the embedded relay stopped"),
        Ok(Err(e)) => anyhow::anyhow!("the embedded relay stopped: {e}"),
        Err(e) => anyhow::anyhow!("the embedded relay crashed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_inspector_fails_listen_with_one_sentence() {
        let err = screen_outcome(true, Err(std::io::Error::other("the terminal went away")))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the inspector stopped: the terminal went away; pass --no-tui for line output"
        );
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(screen_outcome(false, Err(pipe)).is_ok());
        assert!(screen_outcome(true, Ok(())).is_ok());
    }
}
