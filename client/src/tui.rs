//! The terminal inspector `listen` opens in a terminal: every delivery live, with its payload,
//! headers and response, and replay, edit-and-replay and copy-as-curl on a key.
//!
//! The loop here is the only part that does I/O. It feeds `AppEvent`s (keys from the input
//! thread, `ListenEvent`s, clock ticks, answers to effects) into the pure `App`, runs the effects
//! `App::update` returns (capture store reads, replays over the `ReplayRequest` channel, the
//! `$EDITOR` round trip, OSC 52), and redraws at once after a key, otherwise on a frame tick
//! and only when something changed. It only reads the capture store, through its own
//! connection, so a slow terminal never slows a delivery.
//!
//! # Layout
//! - `app` — `App`, the state and its transitions; `AppEvent`, `Effect`.
//! - `keys` — the key tables.
//! - `view` — drawing; `view/{header,list,details,help}`.
//! - `terminal` — raw mode, alternate screen and mouse, restored on drop and panic; input thread.
//! - `text` — escaping attacker-controlled bytes; JSON colouring; hex dumps.
//! - `curl` — copy as curl.

mod app;
mod curl;
mod keys;
mod layout;
mod terminal;
mod text;
mod view;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use illumitunnel::store::{CaptureStore, Filter, StoreError};
use illumitunnel::{now_ms, DeliveryId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use self::app::{App, AppEvent, Effect, Page, Query, Rows};
use self::terminal::{Input, TerminalGuard};
use crate::status::{ListenEvent, ReplayRequest};

/// Room in the channel from the input thread and replay tasks to the loop.
const APP_EVENTS: usize = 256;
/// Time between frames: at most ~30 redraws a second, and only when something changed.
const FRAME: Duration = Duration::from_millis(33);
/// How often the loop checks that its terminal still exists (a closed window or SSH session
/// may send no signal to this process).
const TTY_CHECK: Duration = Duration::from_secs(1);

/// What `listen` hands the inspector.
pub struct TuiContext {
    /// The public webhook URL, once the relay's first `Welcome` gave it.
    pub public_url: watch::Receiver<Option<String>>,
    /// Where deliveries are forwarded.
    pub forward_to: String,
    /// The web inspector's URL, when `listen` serves one.
    pub web_inspector: Option<String>,
    /// The capture store; the inspector opens its own read connection.
    pub store_path: PathBuf,
    /// Where replays are asked for.
    pub replays: mpsc::Sender<ReplayRequest>,
    /// Offset to show times in, read while the process was still single-threaded (the platform
    /// refuses to tell it later).
    pub utc_offset: time::UtcOffset,
    /// Stops `listen` (the first `q` or Ctrl-C); the inspector stays up until it has stopped.
    pub stop: CancellationToken,
    /// Gives up on deliveries still being forwarded (the second `q` or Ctrl-C): the relay
    /// sends them again.
    pub abandon: CancellationToken,
}

/// Runs the inspector until `q`, Ctrl-C, SIGTERM or the end of `events`; the terminal is restored
/// however it ends.
pub async fn run(ctx: TuiContext, events: mpsc::Receiver<ListenEvent>) -> anyhow::Result<()> {
    let store = CaptureStore::open(&ctx.store_path)?;
    let utc_offset = ctx.utc_offset;
    let (tx, rx) = mpsc::channel(APP_EVENTS);
    let mut guard = TerminalGuard::enter().context("could not open the terminal inspector")?;
    let size = guard.terminal().size()?;
    let public_url = ctx.public_url;
    let url = public_url.borrow().clone().unwrap_or_default();
    let mut app = App::new(
        url,
        ctx.forward_to,
        (size.width, size.height),
        utc_offset,
        now_ms(),
    );
    app.web_inspector = ctx.web_inspector;
    let input = Input::spawn(tx.clone())?;
    let mut inspector = Inspector {
        app,
        input,
        guard,
        store: Arc::new(Mutex::new(store)),
        tx,
        rx,
        events,
        events_open: true,
        replays: ctx.replays,
        public_url,
        stop: ctx.stop,
        abandon: ctx.abandon,
    };
    let result = inspector.run().await;
    // Fields drop in order: the input thread stops before the guard restores the terminal.
    drop(inspector);
    result
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

struct Inspector {
    app: App,
    input: Input,
    guard: TerminalGuard,
    store: Arc<Mutex<CaptureStore>>,
    tx: mpsc::Sender<AppEvent>,
    rx: mpsc::Receiver<AppEvent>,
    events: mpsc::Receiver<ListenEvent>,
    events_open: bool,
    replays: mpsc::Sender<ReplayRequest>,
    /// The tunnel URL, set on each `Welcome` before the screen hears of the connection.
    public_url: watch::Receiver<Option<String>>,
    stop: CancellationToken,
    abandon: CancellationToken,
}

impl Inspector {
    async fn run(&mut self) -> anyhow::Result<()> {
        let first = self.app.start();
        if self.run_effects(Some(first)).await? == Flow::Quit {
            return Ok(());
        }
        let mut frame = tokio::time::interval(FRAME);
        frame.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut signals = Signals::new();
        let mut tty_check = tokio::time::interval(TTY_CHECK);
        tty_check.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            // Every branch is cancel-safe: `mpsc::recv`, an interval tick, a signal stream.
            // Keys and answers to effects redraw at once (a keypress should not wait for the
            // next tick); deliveries only mark the screen dirty, so a burst costs frames, not
            // a frame per delivery.
            let (event, now) = tokio::select! {
                Some(event) = self.rx.recv() => (event, true),
                event = self.events.recv() => match event {
                    Some(event) => (AppEvent::Listen(event), false),
                    None => return Ok(()),
                },
                _ = frame.tick() => {
                    let effect = self.app.update(AppEvent::Tick(now_ms()));
                    if self.run_effects(effect).await? == Flow::Quit {
                        return Ok(());
                    }
                    if self.app.take_dirty() {
                        self.draw()?;
                    }
                    continue;
                }
                _ = tty_check.tick() => {
                    self.guard
                        .terminal()
                        .size()
                        .context("the terminal went away")?;
                    // A terminal that hung up on a process outside its session sends no
                    // signal and may still answer size queries; only a write tells. Hiding
                    // the cursor again is invisible on a live one.
                    let mut out = std::io::stdout();
                    crossterm::execute!(out, crossterm::cursor::Hide)
                        .context("the terminal went away")?;
                    continue;
                }
                _ = signals.recv() => return Ok(()),
            };
            if let AppEvent::Listen(ListenEvent::Connection(_)) = &event {
                if let Some(url) = self.public_url.borrow_and_update().clone() {
                    self.app.public_url = url;
                }
            }
            let effect = self.app.update(event);
            if self.run_effects(effect).await? == Flow::Quit {
                return Ok(());
            }
            if now && self.app.take_dirty() {
                self.draw()?;
            }
        }
    }

    fn draw(&mut self) -> anyhow::Result<()> {
        let app = &self.app;
        self.guard
            .terminal()
            .draw(|frame| view::render(app, frame))
            .context("could not draw the inspector")?;
        Ok(())
    }

    async fn run_effects(&mut self, mut next: Option<Effect>) -> anyhow::Result<Flow> {
        while let Some(effect) = next.take() {
            next = match effect {
                Effect::Quit => {
                    self.abandon.cancel();
                    self.stop.cancel();
                    return Ok(Flow::Quit);
                }
                // The loop runs on until `listen` has stopped and `events` ends.
                Effect::Stop => {
                    self.stop.cancel();
                    None
                }
                Effect::Load(query) => {
                    let event = self.load(query).await;
                    self.app.update(event)
                }
                Effect::Replay { original, body } => {
                    self.spawn_replay(original, body, false);
                    None
                }
                Effect::Test { original } => {
                    self.spawn_replay(original, None, true);
                    None
                }
                Effect::Copy { id, text } => {
                    let result = self.copy(&text);
                    self.app.update(AppEvent::Copied { id, result })
                }
                Effect::Edit { original, body } => {
                    let after = self.edit(&original, &body).await?;
                    self.app.update(AppEvent::Edited {
                        original,
                        before: body,
                        after,
                    })
                }
            };
        }
        Ok(Flow::Continue)
    }

    async fn load(&self, query: Query) -> AppEvent {
        let store = Arc::clone(&self.store);
        let read = tokio::task::spawn_blocking(move || {
            let store = store
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            run_query(&store, &query)
        });
        match read.await {
            Ok(Ok(page)) => AppEvent::Loaded(page),
            Ok(Err(err)) => AppEvent::LoadFailed(err.to_string()),
            Err(err) => AppEvent::LoadFailed(err.to_string()),
        }
    }

    /// Asks `listen` for a replay; `test` answers it as `AppEvent::Tested` instead of `Replayed`.
    fn spawn_replay(&self, original: DeliveryId, body: Option<Bytes>, test: bool) {
        let replays = self.replays.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let (reply, answer) = oneshot::channel();
            let request = ReplayRequest {
                original: original.clone(),
                body,
                edits: crate::status::ReplayEdits::default(),
                reply,
            };
            let result = match replays.send(request).await {
                Err(_) => Err("listen is shutting down".to_string()),
                Ok(()) => answer
                    .await
                    .unwrap_or_else(|_| Err("the replay was dropped before it finished".into()))
                    .map(Box::new),
            };
            let event = if test {
                AppEvent::Tested { original, result }
            } else {
                AppEvent::Replayed { original, result }
            };
            let _ = tx.send(event).await;
        });
    }

    /// Puts `text` on the clipboard through the terminal (OSC 52), which works over SSH too.
    fn copy(&mut self, text: &str) -> Result<usize, String> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        let sequence = format!("\x1b]52;c;{encoded}\x07");
        self.guard
            .write_raw(sequence.as_bytes())
            .map_err(|e| format!("could not write to the terminal: {e}"))?;
        Ok(text.len())
    }

    /// The `$EDITOR` round trip: the body goes to a private temp file, the editor gets the
    /// terminal, and the inspector takes it back and redraws whatever happened.
    async fn edit(
        &mut self,
        original: &DeliveryId,
        body: &[u8],
    ) -> anyhow::Result<Result<Vec<u8>, String>> {
        let path = match write_temp(original, body) {
            Ok(path) => path,
            Err(err) => return Ok(Err(format!("could not write a temp file: {err}"))),
        };
        self.input.pause();
        let outcome = match self.guard.suspend() {
            Ok(()) => self.wait_for_editor(&path).await,
            Err(err) => Err(format!("could not hand the terminal over: {err}")),
        };
        let resumed = self.guard.resume();
        self.input.resume();
        resumed.context("could not take the terminal back after the editor")?;
        if let Ok(size) = self.guard.terminal().size() {
            self.app.update(AppEvent::Resize(size.width, size.height));
        }
        let after = outcome.and_then(|()| {
            std::fs::read(&path).map_err(|e| format!("could not read {}: {e}", path.display()))
        });
        let _ = std::fs::remove_file(&path);
        Ok(after)
    }

    async fn wait_for_editor(&mut self, path: &Path) -> Result<(), String> {
        let editor = crate::editor::configured();
        let mut child = tokio::process::Command::from(crate::editor::command(&editor, path)?)
            .spawn()
            .map_err(|e| format!("could not start {editor}: {e}; set $VISUAL or $EDITOR"))?;
        loop {
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_err(|e| e.to_string())?;
                    return if status.success() {
                        Ok(())
                    } else {
                        Err(format!("{editor} exited with {status}"))
                    };
                }
                // Deliveries keep arriving while the editor is open; the list stays current.
                event = self.events.recv(), if self.events_open => match event {
                    Some(event) => {
                        let mut next = self.app.update(AppEvent::Listen(event));
                        while let Some(Effect::Load(query)) = next {
                            let page = self.load(query).await;
                            next = self.app.update(page);
                        }
                    }
                    None => self.events_open = false,
                },
            }
        }
    }
}

/// Reads what a [`Query`] asks for. Rows and the total stop at the newest delivery the app has
/// accounted for (or the store's head, when syncing), so later ones are counted once, as events.
pub(crate) fn run_query(store: &CaptureStore, query: &Query) -> Result<Page, StoreError> {
    let head_seq = if query.sync {
        Some(
            store
                .list_newest(&Filter::default(), 1)?
                .first()
                .map_or(0, |d| d.seq),
        )
    } else {
        None
    };
    let bound = head_seq.unwrap_or(query.seen_seq);
    let bounded = Filter {
        before_seq: Some(bound.saturating_add(1)),
        ..query.filter.clone()
    };
    let rows = match query.rows {
        Rows::Nothing => Vec::new(),
        Rows::Newest(n) => newest_first_reversed(store.list_newest(&bounded, n)?),
        Rows::Oldest(n) => store.list_oldest(&bounded, n)?,
        Rows::Before { seq, limit } => {
            let before = Filter {
                before_seq: Some(seq),
                ..query.filter.clone()
            };
            newest_first_reversed(store.list_newest(&before, limit)?)
        }
        Rows::After { seq, limit } => {
            let after = Filter {
                after_seq: Some(seq),
                ..bounded.clone()
            };
            store.list_oldest(&after, limit)?
        }
    };
    let total = if query.total {
        Some(store.count(&bounded)?)
    } else {
        None
    };
    let counts = if query.counts {
        Some(store.counts()?)
    } else {
        None
    };
    Ok(Page {
        rows_kind: query.rows,
        rows,
        total,
        counts,
        bound,
    })
}

fn newest_first_reversed(mut rows: Vec<illumitunnel::Delivery>) -> Vec<illumitunnel::Delivery> {
    rows.reverse();
    rows
}

/// The body in a new file only the user can read, named so the editor picks a syntax.
fn write_temp(id: &DeliveryId, body: &[u8]) -> std::io::Result<PathBuf> {
    let ext = if text::is_json(body) { "json" } else { "txt" };
    let name = format!("illumitunnel-{id}-{:08x}.{ext}", rand::random::<u32>());
    let path = std::env::temp_dir().join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(&path)?.write_all(body)?;
    Ok(path)
}

/// SIGTERM, SIGHUP and SIGINT (Ctrl-C is a key in raw mode, but `kill -INT` is not).
struct Signals {
    #[cfg(unix)]
    streams: Vec<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let kinds = [
                SignalKind::terminate(),
                SignalKind::hangup(),
                SignalKind::interrupt(),
            ];
            Signals {
                streams: kinds.into_iter().filter_map(|k| signal(k).ok()).collect(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.streams.is_empty() {
                return std::future::pending().await;
            }
            let waits = self.streams.iter_mut().map(|s| Box::pin(s.recv()));
            futures_util::future::select_all(waits).await;
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    }
}

/// The keypress-to-frame path, for benchmarks: applies `key` to `app`, runs the store reads it
/// causes against `store` in line, and draws one frame into `terminal`.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn key_to_frame(
    app: &mut App,
    store: &CaptureStore,
    key: crossterm::event::KeyEvent,
    terminal: &mut ratatui::Terminal<ratatui::backend::TestBackend>,
) -> anyhow::Result<()> {
    let mut next = app.update(AppEvent::Key(key));
    while let Some(Effect::Load(query)) = next {
        next = app.update(AppEvent::Loaded(run_query(store, &query)?));
    }
    terminal.draw(|frame| view::render(app, frame))?;
    Ok(())
}

/// An app of `size` loaded from `store` the way `run` starts, for benchmarks and tests.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn loaded_app(store: &CaptureStore, size: (u16, u16), now: i64) -> anyhow::Result<App> {
    let mut app = App::new(
        "https://relay.example.com/t/brave-otter".into(),
        "http://localhost:3000".into(),
        size,
        time::UtcOffset::UTC,
        now,
    );
    let mut next = Some(app.start());
    while let Some(Effect::Load(query)) = next {
        next = app.update(AppEvent::Loaded(run_query(store, &query)?));
    }
    Ok(app)
}

#[cfg(test)]
mod tests;
