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
use crate::status::ListenEvent;
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
    let settings = crate::settings::Settings::load()?;
    let config = ListenConfig::try_from((&args, &settings))?;
    let forwarder = local_forwarder(&config)?;
    if let Some(warning) = &config.cleartext_warning {
        eprintln!("{warning}");
    }
    let store = CaptureStore::open(&ctx.store)?;
    let tunnel = match config.tunnel.clone() {
        Some(t) => t,
        None => remembered_tunnel(),
    };
    // One `listen` per tunnel per machine, checked before the embedded relay takes its port so
    // a second `listen` learns which one runs; `--fan-out` observes and holds nothing.
    let claim = if config.fan_out {
        None
    } else {
        Some(record::claim(
            &tunnel,
            &config.target.to_string(),
            ctx.store.clone(),
        )?)
    };
    let record = claim.as_ref().map(|c| c.record.clone());
    // An observer says so wherever the target is shown.
    let shown_target = if config.fan_out {
        "nowhere (--fan-out: record and show only)".to_string()
    } else {
        config.target.to_string()
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(illumitunnel_relay::server::cancel_on_signal(
        shutdown.clone(),
    ));

    let (relay, trust, embedded) = relay_and_trust(&config, &shutdown).await?;
    // The embedded relay accepts only its own per-process token.
    let token = match &embedded {
        Some(embedded) => Some(embedded.token.clone()),
        None => config.token.clone(),
    };
    let ca_pem = embedded.as_ref().map(|e| e.cert_pem.clone());
    let tls = tls::client_config(trust).map_err(anyhow::Error::msg)?;

    let screen_choice = choose_screen(&config);
    let inspector = matches!(screen_choice, Screen::Inspector);
    let (screen_tx, screen_rx) = mpsc::channel(SCREEN_QUEUE);
    let (public_url_tx, public_url_rx) = watch::channel(None);
    let (recorder, recorder_thread) = recorder::spawn(
        store,
        ScreenSink {
            events: screen_tx.clone(),
            // The inspector re-reads the store when it falls behind; lines must not be lost.
            lossless: matches!(screen_choice, Screen::Lines(_)),
        },
        config.retention,
    )
    .context("could not start the capture store writer")?;
    let banner = Banner {
        forward_to: shown_target.clone(),
        store: ctx.store.clone(),
        embedded_relay: embedded
            .as_ref()
            .map(|e| format!("https://127.0.0.1:{}", e.port)),
    };
    let clock = ctx.clock;
    let announced = public_url_rx.clone();
    // Replays asked for by the inspector: its `TuiContext::replays` is this sender.
    let (replays, replay_server) = replay::spawn_server(
        ctx.store.clone(),
        forwarder.clone(),
        recorder.clone(),
        shutdown.clone(),
    );

    let screen = match screen_choice {
        Screen::Lines(format) => tokio::task::spawn_blocking(move || {
            output::run_lines(screen_rx, public_url_rx, banner, format, clock)
        }),
        Screen::Inspector => tokio::spawn(run_inspector(
            InspectorStart {
                forward_to: shown_target,
                store_path: ctx.store.clone(),
                replays: replays.clone(),
                utc_offset: clock.offset(),
            },
            screen_rx,
            public_url_rx,
            shutdown.clone(),
        )),
    };
    let announce = tokio::spawn(announce(
        announced,
        config.register.clone(),
        config.allow_private_url,
        config.rules.only.clone(),
        shutdown.clone(),
    ));
    let claim_key = remembered_claim_key(&tunnel);
    let on_welcome = on_welcome(tunnel.clone(), claim_key.clone(), record, ca_pem);
    let session = Session {
        config: Arc::new(SessionConfig {
            relay,
            token,
            tunnel,
            tls,
            keepalive: config.keepalive,
            max_body: config.max_body,
            claim_key,
        }),
        forwarder: {
            let forwarder = forwarder
                .with_rules(&config.rules)
                .with_max_body(config.max_body);
            if config.fan_out {
                forwarder.observer()
            } else {
                forwarder
            }
        },
        recorder,
        screen: screen_tx,
        public_url: public_url_tx,
        on_welcome,
    };
    let mut relay_task = embedded.map(|e| e.task);
    let session_run = session::run(session, shutdown.clone());
    tokio::pin!(session_run);
    let result = tokio::select! {
        result = &mut session_run => result,
        // On Ctrl-C / SIGTERM the embedded relay may stop first: that is no failure, and the
        // session still drains what it is forwarding.
        stopped = wait_relay(&mut relay_task) => if shutdown.is_cancelled() {
            session_run.await
        } else {
            Err(stopped)
        },
    };
    shutdown.cancel();
    drop(replays);
    let _ = tokio::time::timeout(STOP_TIMEOUT, replay_server).await;
    let result = match tokio::time::timeout(ANNOUNCE_STOP_TIMEOUT, announce).await {
        Ok(Ok(Err(e))) if result.is_ok() => Err(e),
        Ok(Ok(Err(e))) => {
            eprintln!("error: {}", illumitunnel::escape::escape(&format!("{e:#}")));
            result
        }
        _ => result,
    };

    // Every recorder handle is gone with the session: the writer commits what is left and ends,
    // which ends the screen once it has shown the last delivery.
    let joined = tokio::time::timeout(
        STOP_TIMEOUT,
        tokio::task::spawn_blocking(move || recorder_thread.join()),
    )
    .await;
    if joined.is_err() {
        tracing::warn!("the capture store writer did not stop in time");
    }
    let screen_result = tokio::time::timeout(STOP_TIMEOUT, screen).await;
    if let Some(task) = relay_task {
        let _ = tokio::time::timeout(STOP_TIMEOUT, task).await;
    }
    let screen_result = match screen_result {
        Ok(joined) => joined.map_err(std::io::Error::other).and_then(|r| r),
        Err(_) => Ok(()),
    };
    // The record goes only now, after the last thing this `listen` did.
    drop(claim);
    result.and(screen_outcome(inspector, screen_result))
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
    store_path: PathBuf,
    replays: mpsc::Sender<crate::status::ReplayRequest>,
    utc_offset: time::UtcOffset,
}

/// Shows connection states on stderr until the first `Welcome` gives the public URL, then runs
/// the inspector; quitting it (`q`, Ctrl-C) stops `listen`.
async fn run_inspector(
    start: InspectorStart,
    mut events: mpsc::Receiver<ListenEvent>,
    mut public_url: watch::Receiver<Option<String>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut last_state = None;
    let url = loop {
        tokio::select! {
            url = public_url.wait_for(Option::is_some) => match url {
                Ok(url) => break url.clone().unwrap_or_default(),
                Err(_) => return Ok(()),
            },
            event = events.recv() => match event {
                Some(ListenEvent::Connection(state)) => {
                    if let Some(line) = output::state_line(&state) {
                        eprintln!("{line}");
                    }
                    last_state = Some(state);
                }
                Some(_) => {}
                None => return Ok(()),
            },
            () = shutdown.cancelled() => return Ok(()),
        }
    };
    // The state that came with the URL was read above: hand it to the inspector first.
    let (tx, rx) = mpsc::channel(SCREEN_QUEUE);
    if let Some(state) = last_state {
        let _ = tx.try_send(ListenEvent::Connection(state));
    }
    let forward = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    let ctx = crate::tui::TuiContext {
        public_url: url,
        forward_to: start.forward_to,
        store_path: start.store_path,
        replays: start.replays,
        utc_offset: start.utc_offset,
    };
    // However the inspector ends, `listen` stops with it: on `q`, a signal, an error, or a
    // panic that unwinds through here.
    let _stop = shutdown.drop_guard();
    let result = crate::tui::run(ctx, rx).await;
    forward.abort();
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
