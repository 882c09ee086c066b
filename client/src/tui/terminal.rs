//! The terminal while the inspector owns it: raw mode, the alternate screen and mouse capture,
//! undone by a Drop guard and by a panic hook, so `?`, a panic, Ctrl-C and SIGTERM all leave
//! the shell as it was. Input is read on its own thread, which can be paused while `$EDITOR`
//! has the terminal.

use std::io::{self, Write};
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossterm::event::{
    self, DisableMouseCapture, EnableMouseCapture, Event, KeyEventKind, MouseEventKind,
};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

use super::app::AppEvent;

/// How long the input thread waits for an event before checking whether to pause or stop.
const INPUT_POLL: Duration = Duration::from_millis(50);
/// The longest `Input::pause` waits for the input thread to stop reading.
const PAUSE_WAIT: Duration = Duration::from_millis(500);

type PanicHook = dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static;

/// The terminal in inspector mode; dropping it restores the terminal and the panic hook.
pub struct TerminalGuard {
    /// Always `Some` until dropped.
    terminal: Option<DefaultTerminal>,
    previous_hook: Arc<PanicHook>,
}

impl TerminalGuard {
    /// Enters raw mode, the alternate screen and mouse capture.
    pub fn enter() -> io::Result<Self> {
        let previous_hook: Arc<PanicHook> = Arc::from(std::panic::take_hook());
        let chained = Arc::clone(&previous_hook);
        // Ours first, so ratatui's (installed by `try_init`) runs before it and the message
        // prints last, on a restored screen.
        std::panic::set_hook(Box::new(move |info| {
            let _ = execute!(io::stdout(), DisableMouseCapture);
            chained(info);
        }));
        let terminal = match ratatui::try_init() {
            Ok(terminal) => terminal,
            Err(err) => {
                restore();
                reset_hook(&previous_hook);
                return Err(err);
            }
        };
        let guard = TerminalGuard {
            terminal: Some(terminal),
            previous_hook,
        };
        execute!(io::stdout(), EnableMouseCapture)?;
        Ok(guard)
    }

    /// The ratatui terminal.
    pub fn terminal(&mut self) -> &mut DefaultTerminal {
        self.terminal
            .as_mut()
            .expect("the terminal is held until the guard drops")
    }

    /// Hands the terminal back to the shell for a child process (the editor).
    pub fn suspend(&mut self) -> io::Result<()> {
        execute!(io::stdout(), DisableMouseCapture, LeaveAlternateScreen)?;
        disable_raw_mode()
    }

    /// Takes the terminal back after [`TerminalGuard::suspend`] and forces a full redraw.
    pub fn resume(&mut self) -> io::Result<()> {
        enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)?;
        self.terminal().clear()
    }

    /// Writes an escape sequence (OSC 52) straight to the terminal.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut out = io::stdout();
        out.write_all(bytes)?;
        out.flush()
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
        // When the terminal is gone (its window closed, SSH dropped), ratatui's own drop fails
        // to show the cursor and reports it with `eprintln!`, which panics on the closed stderr
        // and would take `listen`'s shutdown with it. `restore` already showed the cursor where
        // it could, so such a terminal is let go without its drop.
        if let Some(mut terminal) = self.terminal.take() {
            if terminal.show_cursor().is_err() {
                std::mem::forget(terminal);
            }
        }
        reset_hook(&self.previous_hook);
    }
}

fn restore() {
    let _ = execute!(io::stdout(), DisableMouseCapture);
    let _ = ratatui::try_restore();
    let _ = execute!(io::stdout(), crossterm::cursor::Show);
}

fn reset_hook(previous: &Arc<PanicHook>) {
    let previous = Arc::clone(previous);
    std::panic::set_hook(Box::new(move |info| previous(info)));
}

#[derive(Default)]
struct InputFlags {
    paused: AtomicBool,
    idle: AtomicBool,
    stop: AtomicBool,
}

/// The thread reading keys, mouse and resizes into the app's channel; stops when dropped.
pub struct Input {
    flags: Arc<InputFlags>,
    thread: Option<JoinHandle<()>>,
}

impl Input {
    /// Starts reading terminal events into `tx`.
    pub fn spawn(tx: mpsc::Sender<AppEvent>) -> io::Result<Self> {
        let flags = Arc::new(InputFlags::default());
        let thread_flags = Arc::clone(&flags);
        let thread = std::thread::Builder::new()
            .name("tui-input".into())
            .spawn(move || read_events(&thread_flags, &tx))?;
        Ok(Input {
            flags,
            thread: Some(thread),
        })
    }

    /// Stops reading (so a child process gets every key) and waits until the thread is idle.
    pub fn pause(&self) {
        self.flags.idle.store(false, Ordering::SeqCst);
        self.flags.paused.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + PAUSE_WAIT;
        while !self.flags.idle.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reads again after [`Input::pause`].
    pub fn resume(&self) {
        self.flags.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        self.flags.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + PAUSE_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // When the terminal is gone, crossterm's read can spin forever inside one call; joining
        // would hang the exit, so such a thread is left to end with the process.
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

fn read_events(flags: &InputFlags, tx: &mpsc::Sender<AppEvent>) {
    while !flags.stop.load(Ordering::SeqCst) {
        if flags.paused.load(Ordering::SeqCst) {
            flags.idle.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match event::poll(INPUT_POLL) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => {
                std::thread::sleep(INPUT_POLL);
                continue;
            }
        }
        let app_event = match event::read() {
            Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => AppEvent::Key(key),
            // Plain pointer motion would flood the channel and changes nothing.
            Ok(Event::Mouse(mouse)) if !matches!(mouse.kind, MouseEventKind::Moved) => {
                AppEvent::Mouse(mouse)
            }
            Ok(Event::Resize(w, h)) => AppEvent::Resize(w, h),
            Ok(_) => continue,
            Err(_) => {
                std::thread::sleep(INPUT_POLL);
                continue;
            }
        };
        if tx.blocking_send(app_event).is_err() {
            return;
        }
    }
}
