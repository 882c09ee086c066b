//! `illumitunnel listen`: connect to a relay (or start one in-process), forward every delivery
//! to `--forward-to` (or its `--route`, or nowhere when `--events` leaves it out), record it,
//! and show it. While it runs, `listen.json` in the data dir tells `trigger` the tunnel URL;
//! with `--register` it keeps an IllumiChat webhook pointed at the tunnel while it runs.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use illumitunnel::store::CaptureStore;
use illumitunnel::{paths, Token, TunnelName};
use illumitunnel_relay::tls::SelfSigned;
use illumitunnel_relay::{Config, OfflinePolicy, RelayError, TlsConfig};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{parse_event_type, Ctx, UsageError};
use crate::cli::ListenArgs;
use crate::forward::{Forwarder, Rules, Target};
use crate::illumichat::Api;
use crate::output::{self, Banner, Format};
use crate::recorder::{self, Retention, ScreenSink};
use crate::replay;
use crate::session::tls::{self, Trust};
use crate::session::{self, RelayUrl, Session, SessionConfig};
use crate::status::ListenEvent;

/// Where the embedded relay listens when the port is free.
pub const EMBEDDED_ADDR: &str = "127.0.0.1:8443";
/// Websocket ping interval unless `--keepalive-ms` says otherwise.
pub const DEFAULT_KEEPALIVE: Duration = illumitunnel_relay::config::DEFAULT_KEEPALIVE;
/// Events waiting for the screen.
const SCREEN_QUEUE: usize = 1024;
/// How long shutdown waits for the capture store writer and the embedded relay.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body taken from the relay, and local response body passed back.
pub const DEFAULT_MAX_BODY: usize = illumitunnel_relay::config::DEFAULT_MAX_BODY;
/// The capture store is pruned, oldest first, beyond this many bytes.
pub const DEFAULT_STORE_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Deliveries older than this are pruned from the capture store.
pub const DEFAULT_STORE_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
/// How long shutdown waits to disable the IllumiChat webhook and remove `listen.json`.
const ANNOUNCE_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How the relay's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustChoice {
    /// Web PKI roots.
    Default,
    /// Web PKI roots plus the certificates in this PEM file.
    Ca(PathBuf),
    /// Anything.
    Insecure,
}

/// `listen`'s arguments, validated.
#[derive(Debug)]
pub struct ListenConfig {
    /// Where deliveries go.
    pub target: Target,
    /// The relay; `None` starts one in-process.
    pub relay: Option<RelayUrl>,
    /// Client token.
    pub token: Option<Token>,
    /// Tunnel name; `None` uses the remembered one.
    pub tunnel: Option<TunnelName>,
    /// Relay certificate trust.
    pub trust: TrustChoice,
    /// How deliveries are shown.
    pub format: Format,
    /// Whether the user asked for lines even in a terminal.
    pub no_tui: bool,
    /// Websocket ping interval.
    pub keepalive: Duration,
    /// `--events` and `--route`.
    pub rules: Rules,
    /// `--register`: the IllumiChat API to register the tunnel URL with.
    pub register: Option<Api>,
    /// `--max-body`.
    pub max_body: usize,
    /// `--store-max-bytes` and `--store-max-age`.
    pub retention: Retention,
}

/// `--events` and `--route` checked: known event types, routes to absolute paths.
fn parse_rules(args: &ListenArgs) -> Result<Rules, UsageError> {
    let only = args
        .events
        .as_ref()
        .map(|events| {
            events
                .iter()
                .filter(|e| !e.trim().is_empty())
                .map(|e| parse_event_type(e).map(|t| t.as_str().to_string()))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if only.as_ref().is_some_and(Vec::is_empty) {
        return Err(UsageError(format!(
            "--events needs at least one event type; use some of {}",
            illumitunnel::event::EventType::list()
        )));
    }
    let mut routes: Vec<(String, String)> = Vec::new();
    for route in &args.route {
        let (event, path) = route.split_once('=').ok_or_else(|| {
            UsageError(format!(
                "--route {route:?} is not TYPE=PATH; write it like --route lead.captured=/crm/leads"
            ))
        })?;
        let event = parse_event_type(event)?.as_str().to_string();
        let path_ok = path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\'));
        if !path_ok {
            return Err(UsageError(format!(
                "--route {route:?}: PATH must start with / and hold no spaces, ? or #; write it like --route {event}=/crm/leads"
            )));
        }
        if routes.iter().any(|(e, _)| *e == event) {
            return Err(UsageError(format!(
                "--route names {event} twice; give each event type one path"
            )));
        }
        routes.push((event, path.to_string()));
    }
    Ok(Rules { only, routes })
}

impl TryFrom<&ListenArgs> for ListenConfig {
    type Error = UsageError;

    fn try_from(args: &ListenArgs) -> Result<Self, UsageError> {
        let usage = |e: &dyn std::fmt::Display| UsageError(e.to_string());
        let forward_to = args.forward_to.as_deref().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            UsageError(
                "missing --forward-to URL; pass your local server's webhook URL, e.g. --forward-to http://localhost:3000/webhooks/illumichat"
                    .into(),
            )
        })?;
        let target = Target::parse(forward_to).map_err(|e| usage(&e))?;
        let relay = args
            .relay
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(RelayUrl::parse)
            .transpose()
            .map_err(|e| usage(&e))?;
        let tunnel = args
            .tunnel
            .as_deref()
            .map(TunnelName::parse)
            .transpose()
            .map_err(|e| UsageError(format!("{e}; pass another with --tunnel NAME")))?;
        let trust = match (&args.ca, args.insecure) {
            (Some(_), true) => {
                return Err(UsageError(
                    "--ca and --insecure contradict each other; pass one of them".into(),
                ))
            }
            (Some(path), false) => TrustChoice::Ca(path.clone()),
            (None, true) => TrustChoice::Insecure,
            (None, false) => TrustChoice::Default,
        };
        if relay.is_none() && trust != TrustChoice::Default {
            return Err(UsageError(
                "--ca and --insecure only apply with --relay; the embedded relay is trusted already".into(),
            ));
        }
        let max_body = match args.max_body {
            None => DEFAULT_MAX_BODY,
            Some(0) => return Err(UsageError("--max-body must be at least 1".into())),
            Some(n) => n,
        };
        let max_bytes = match args.store_max_bytes {
            None => DEFAULT_STORE_MAX_BYTES,
            Some(0) => return Err(UsageError("--store-max-bytes must be at least 1".into())),
            Some(n) => n,
        };
        let max_age = match args.store_max_age.as_deref() {
            None => DEFAULT_STORE_MAX_AGE,
            Some(text) => illumitunnel::parse_duration(text)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    UsageError(format!(
                        "--store-max-age {text:?} is not a duration; write it like 12h or 30d"
                    ))
                })?,
        };
        let keepalive = match args.keepalive_ms {
            None => DEFAULT_KEEPALIVE,
            Some(0) => return Err(UsageError("--keepalive-ms must be at least 1".into())),
            Some(ms) => Duration::from_millis(ms),
        };
        Ok(ListenConfig {
            target,
            relay,
            token: args
                .token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Token::new),
            tunnel,
            trust,
            format: if args.json {
                Format::Json
            } else {
                Format::Lines
            },
            no_tui: args.no_tui,
            keepalive,
            rules: parse_rules(args)?,
            register: if args.register {
                Some(Api::new(&args.api)?)
            } else {
                None
            },
            max_body,
            retention: Retention { max_bytes, max_age },
        })
    }
}

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
    let config = ListenConfig::try_from(&args)?;
    let store = CaptureStore::open(&ctx.store)?;
    let tunnel = match config.tunnel.clone() {
        Some(t) => t,
        None => remembered_tunnel(),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let (relay, trust, embedded) = match &config.relay {
        Some(url) => {
            let trust = match &config.trust {
                TrustChoice::Default => Trust::WebPki(Vec::new()),
                TrustChoice::Ca(path) => Trust::WebPki(tls::load_ca(path).map_err(UsageError)?),
                TrustChoice::Insecure => Trust::Insecure,
            };
            (url.clone(), trust, None)
        }
        None => {
            let embedded = start_embedded(&shutdown).await?;
            (
                RelayUrl::loopback(true, embedded.port),
                Trust::Only(vec![embedded.cert.clone()]),
                Some(embedded),
            )
        }
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
        forward_to: config.target.to_string(),
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
        config.target.clone(),
        recorder.clone(),
        shutdown.clone(),
    );

    let screen = match screen_choice {
        Screen::Lines(format) => tokio::task::spawn_blocking(move || {
            output::run_lines(screen_rx, public_url_rx, banner, format, clock)
        }),
        Screen::Inspector => tokio::spawn(run_inspector(
            InspectorStart {
                forward_to: config.target.to_string(),
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
        config.rules.only.clone(),
        shutdown.clone(),
    ));
    let store_path = ctx.store.clone();
    let claimed = tunnel.clone();
    let mut kept_key = remembered_claim_key(&tunnel);
    let claim_key = kept_key.clone();
    // Runs before the banner: `trigger` right after it finds this `listen`.
    let on_welcome: session::OnWelcome = Box::new(move |welcomed: &session::Welcomed<'_>| {
        if !welcomed.claim_key.is_empty() && welcomed.claim_key != kept_key {
            kept_key = welcomed.claim_key.to_string();
            remember_claim_key(&claimed, &kept_key);
        }
        let running = Running {
            public_url: welcomed.public_url.to_string(),
            pid: std::process::id(),
            store: store_path.clone(),
            ca_pem: ca_pem.as_ref().map(|_| Running::ca_path()),
        };
        if let Err(err) = running.write(ca_pem.as_deref()) {
            tracing::warn!(%err, "could not write listen.json; trigger will need --url");
        }
    });
    let session = Session {
        config: Arc::new(SessionConfig {
            relay,
            token: config.token.clone(),
            tunnel,
            tls,
            keepalive: config.keepalive,
            max_body: config.max_body,
            claim_key,
        }),
        forwarder: Forwarder::new(config.target.clone())
            .with_rules(&config.rules)
            .with_max_body(config.max_body),
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
            eprintln!("error: {e:#}");
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
    result.and(screen_outcome(inspector, screen_result))
}

/// How the screen's end counts for `listen`'s exit: an inspector that could not start or
/// failed is an error (exit 1); line output cut by a closed pipe is not.
fn screen_outcome(inspector: bool, ended: std::io::Result<()>) -> anyhow::Result<()> {
    match ended {
        Ok(()) => Ok(()),
        Err(e) if inspector => {
            let why = e.to_string();
            if why.contains("--no-tui") {
                Err(anyhow::anyhow!("the inspector stopped: {why}"))
            } else {
                Err(anyhow::anyhow!(
                    "the inspector stopped: {why}; pass --no-tui for line output"
                ))
            }
        }
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

struct Embedded {
    port: u16,
    cert: CertificateDer<'static>,
    cert_pem: String,
    task: JoinHandle<Result<(), RelayError>>,
}

/// Starts the relay library in this process on 127.0.0.1:8443 (or a free port) with a fresh
/// self-signed certificate that only this client trusts.
async fn start_embedded(shutdown: &CancellationToken) -> anyhow::Result<Embedded> {
    let cert = SelfSigned::generate(&["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(|e| anyhow::anyhow!("could not create the embedded relay's certificate: {e}"))?;
    let listener = match TcpListener::bind(EMBEDDED_ADDR).await {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("could not start the embedded relay on 127.0.0.1")?;
            let port = listener
                .local_addr()
                .context("could not start the embedded relay")?
                .port();
            eprintln!("port 8443 is in use; the embedded relay uses port {port} instead");
            listener
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("could not start the embedded relay on {EMBEDDED_ADDR}"))
        }
    };
    let port = listener
        .local_addr()
        .context("could not start the embedded relay")?
        .port();
    let config = Config {
        tls: TlsConfig::Certified {
            chain: vec![cert.cert.clone()],
            key: cert.key.clone_key(),
        },
        public_url: Some(format!("https://127.0.0.1:{port}")),
        tokens: Vec::new(),
        allow_anonymous: true,
        data_dir: paths::default_relay_data_dir(),
        max_body: illumitunnel_relay::config::DEFAULT_MAX_BODY,
        response_timeout: illumitunnel_relay::config::DEFAULT_RESPONSE_TIMEOUT,
        offline: OfflinePolicy::Queue,
        keepalive: illumitunnel_relay::config::DEFAULT_KEEPALIVE,
        queue: Default::default(),
    };
    let task = tokio::spawn(illumitunnel_relay::run(
        config,
        listener,
        shutdown.child_token(),
    ));
    Ok(Embedded {
        port,
        cert_pem: cert.cert_pem.clone(),
        cert: cert.cert,
        task,
    })
}

/// What `listen.json` in the data dir says about the `listen` running on this machine, so
/// `trigger` can send through its tunnel without being told the URL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Running {
    /// The tunnel's public URL.
    pub public_url: String,
    /// The `listen` process.
    pub pid: u32,
    /// Its capture store.
    pub store: PathBuf,
    /// The embedded relay's self-signed certificate (`listen-ca.pem`), when it runs one.
    #[serde(default)]
    pub ca_pem: Option<PathBuf>,
}

impl Running {
    /// `listen.json` in the data dir.
    pub fn path() -> PathBuf {
        paths::data_dir().join("listen.json")
    }

    fn ca_path() -> PathBuf {
        paths::data_dir().join("listen-ca.pem")
    }

    /// The running `listen`, if its record exists and its process is alive.
    pub fn find() -> Option<Running> {
        let text = std::fs::read_to_string(Self::path()).ok()?;
        let running: Running = serde_json::from_str(&text).ok()?;
        is_alive(running.pid).then_some(running)
    }

    fn write(&self, ca_pem: Option<&str>) -> std::io::Result<()> {
        std::fs::create_dir_all(paths::data_dir())?;
        if let (Some(pem), Some(path)) = (ca_pem, &self.ca_pem) {
            std::fs::write(path, pem)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        // Written whole, then renamed, so `trigger` never reads half a file.
        let tmp = Self::path().with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, Self::path())
    }

    /// Removes the record if it is still this process's (a newer `listen` may have replaced it).
    fn remove_if_mine() {
        let mine = std::fs::read_to_string(Self::path())
            .ok()
            .and_then(|t| serde_json::from_str::<Running>(&t).ok())
            .is_some_and(|r| r.pid == std::process::id());
        if mine {
            let _ = std::fs::remove_file(Self::path());
            let _ = std::fs::remove_file(Self::ca_path());
        }
    }
}

/// Whether process `pid` exists; where `/proc` is missing the record is trusted.
fn is_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// After the first `Welcome` (the session wrote `listen.json`): with `--register`, points an
/// IllumiChat webhook at the tunnel. At shutdown: disables that webhook and removes the record.
async fn announce(
    mut public_url: watch::Receiver<Option<String>>,
    register: Option<Api>,
    events: Option<Vec<String>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let url = tokio::select! {
        url = public_url.wait_for(Option::is_some) => match url {
            Ok(url) => url.clone().unwrap_or_default(),
            Err(_) => return Ok(()),
        },
        _ = shutdown.cancelled() => {
            Running::remove_if_mine();
            return Ok(());
        }
    };
    let registered = match &register {
        Some(api) => match register_webhook(api, &url, events).await {
            Ok(id) => {
                eprintln!("registered IllumiChat webhook {id} for {url}");
                Some(id)
            }
            Err(e) => {
                Running::remove_if_mine();
                shutdown.cancel();
                return Err(e.into());
            }
        },
        None => None,
    };
    shutdown.cancelled().await;
    let mut outcome = Ok(());
    if let (Some(api), Some(id)) = (&register, registered) {
        match api
            .update(&id, &serde_json::json!({ "active": false }))
            .await
        {
            Ok(_) => eprintln!("disabled IllumiChat webhook {id}"),
            Err(e) => {
                outcome = Err(anyhow::anyhow!(
                    "could not disable IllumiChat webhook {id}: {e}"
                ))
            }
        }
    }
    Running::remove_if_mine();
    outcome
}

/// Re-activates the webhook for `url` with `events` (all six when `None`), or creates one.
async fn register_webhook(
    api: &Api,
    url: &str,
    events: Option<Vec<String>>,
) -> Result<String, crate::illumichat::ApiError> {
    let events = events.unwrap_or_else(|| {
        illumitunnel::event::EventType::ALL
            .iter()
            .map(|e| e.as_str().to_string())
            .collect()
    });
    let same = |u: &str| u.trim_end_matches('/') == url.trim_end_matches('/');
    let existing = api.list().await?.into_iter().find(|h| same(&h.url));
    match existing {
        Some(hook) => {
            let patch = serde_json::json!({ "active": true, "events": events });
            api.update(&hook.id, &patch).await?;
            Ok(hook.id)
        }
        None => Ok(api.create(url, &events).await?.id),
    }
}

/// The tunnel name kept in the config dir, created on first use so the URL survives restarts.
fn remembered_tunnel() -> TunnelName {
    let path = paths::config_dir().join("tunnel");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(name) = TunnelName::parse(text.trim()) {
            return name;
        }
    }
    let name = TunnelName::random();
    let saved = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, format!("{name}\n")));
    if let Err(err) = saved {
        tracing::warn!(%err, path = %path.display(), "could not remember the tunnel name; the URL will change next time");
    }
    name
}

/// Where the claim key for `tunnel` is kept: beside the remembered name, readable only by the
/// user, since it is what lets this machine re-join an anonymous tunnel.
fn claim_key_path(tunnel: &TunnelName) -> PathBuf {
    paths::config_dir().join("claims").join(tunnel.as_str())
}

/// The claim key a relay gave for `tunnel` before, or empty.
fn remembered_claim_key(tunnel: &TunnelName) -> String {
    std::fs::read_to_string(claim_key_path(tunnel))
        .map(|k| k.trim().to_string())
        .unwrap_or_default()
}

/// Keeps the claim key a relay gave for `tunnel`, so the next `listen` re-joins it.
fn remember_claim_key(tunnel: &TunnelName, key: &str) {
    let path = claim_key_path(tunnel);
    let saved = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| write_private(&path, format!("{key}\n").as_bytes()));
    if let Err(err) = saved {
        tracing::warn!(%err, path = %path.display(), "could not keep the tunnel's claim key; another machine may take the name after this listen stops");
    }
}

/// Writes `bytes` to a file only its owner can read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = shutdown.cancelled() => return,
            }
            shutdown.cancel();
            return;
        }
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => shutdown.cancel(),
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ListenConfig, UsageError> {
        let mut argv = vec!["illumitunnel", "listen"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        match cli.command {
            crate::cli::Command::Listen(a) => ListenConfig::try_from(&a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn validates_arguments() {
        let ok = parse(&[
            "--forward-to",
            "http://localhost:3000/hooks",
            "--tunnel",
            "my-app",
        ])
        .unwrap();
        assert_eq!(ok.target.to_string(), "http://localhost:3000/hooks");
        assert_eq!(ok.tunnel.unwrap().as_str(), "my-app");
        assert!(ok.relay.is_none());
        assert_eq!(ok.keepalive, DEFAULT_KEEPALIVE);

        let ok = parse(&[
            "--forward-to",
            "https://localhost:3000",
            "--relay",
            "https://relay.example.com",
            "--insecure",
            "--keepalive-ms",
            "250",
        ])
        .unwrap();
        assert_eq!(ok.trust, TrustChoice::Insecure);
        assert_eq!(ok.keepalive, Duration::from_millis(250));
        assert_eq!(ok.relay.unwrap().to_string(), "wss://relay.example.com:443");

        for (args, needle) in [
            (&[][..], "missing --forward-to URL"),
            (&["--forward-to", ""][..], "missing --forward-to URL"),
            (&["--forward-to", "localhost:3000"][..], "missing http://"),
            (
                &["--forward-to", "ftp://x"][..],
                "only http:// and https://",
            ),
            (
                &["--forward-to", "http://x", "--tunnel", "No_Way"][..],
                "invalid tunnel name",
            ),
            (
                &["--forward-to", "http://x", "--relay", "relay.example.com"][..],
                "invalid --relay",
            ),
            (
                &["--forward-to", "http://x", "--insecure"][..],
                "only apply with --relay",
            ),
            (
                &["--forward-to", "http://x", "--keepalive-ms", "0"][..],
                "at least 1",
            ),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

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

    #[test]
    fn limits_and_retention_have_defaults_and_are_checked() {
        let c = parse(&["--forward-to", "http://x"]).unwrap();
        assert_eq!(c.max_body, 10 * 1024 * 1024);
        assert_eq!(c.retention.max_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(c.retention.max_age, Duration::from_secs(30 * 86_400));
        let c = parse(&[
            "--forward-to",
            "http://x",
            "--max-body",
            "4096",
            "--store-max-bytes",
            "1000000",
            "--store-max-age",
            "12h",
        ])
        .unwrap();
        assert_eq!(c.max_body, 4096);
        assert_eq!(c.retention.max_bytes, 1_000_000);
        assert_eq!(c.retention.max_age, Duration::from_secs(12 * 3600));
        for (args, needle) in [
            (&["--max-body", "0"][..], "--max-body must be at least 1"),
            (
                &["--store-max-bytes", "0"][..],
                "--store-max-bytes must be at least 1",
            ),
            (&["--store-max-age", "soon"][..], "write it like 12h or 30d"),
            (&["--store-max-age", "0d"][..], "write it like 12h or 30d"),
        ] {
            let mut argv = vec!["--forward-to", "http://x"];
            argv.extend_from_slice(args);
            let err = parse(&argv).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn empty_token_means_none() {
        let c = parse(&["--forward-to", "http://x", "--token", ""]).unwrap();
        assert!(c.token.is_none());
    }
}
