//! `listen` with its terminal inspector up, inside a real pseudo-terminal (util-linux
//! `script`), so its resident memory and its keypress-to-frame time are those of a developer's
//! session. Without `script`, `listen --no-tui --json` is measured instead.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proc::{self, Proc};
use crate::stack::{Binaries, WEBHOOK_PATH};

/// Screen size the inspector is given.
const ROWS_COLS: &str = "rows 40 cols 160";
/// A key with no frame drawn after this long counts as missed.
const KEY_TIMEOUT: Duration = Duration::from_secs(1);
/// The screen counts as settled after this long without output.
const QUIET: Duration = Duration::from_millis(150);

/// A running `listen`.
pub struct Inspector {
    outer: Proc,
    /// PID of the `illumitunnel listen` process itself.
    pub listen_pid: u32,
    /// Whether the inspector (TUI) is up, rather than line output.
    pub tui: bool,
    stdin: Option<ChildStdin>,
    frames: Option<Receiver<Instant>>,
}

/// Whether util-linux `script` is available to provide a terminal.
pub fn have_script() -> bool {
    Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Starts `listen` on tunnel `name` of the relay at `relay_url`, forwarding to `target`, with
/// the capture store `store`; with `tui`, inside a 160×40 pseudo-terminal.
pub fn start(
    bins: &Binaries,
    relay_url: &str,
    name: &str,
    target: SocketAddr,
    store: &Path,
    dir: &Path,
    tui: bool,
) -> Result<Inspector> {
    let home = dir.join(format!("{name}-home"));
    let listen_args = [
        "listen".to_string(),
        "--relay".into(),
        relay_url.into(),
        "--tunnel".into(),
        name.into(),
        "--forward-to".into(),
        format!("http://{target}{WEBHOOK_PATH}"),
        "--store".into(),
        store.display().to_string(),
    ];
    if !tui {
        let mut cmd = Command::new(&bins.client);
        cmd.args(listen_args)
            .args(["--no-tui", "--json"])
            .env("ILLUMITUNNEL_HOME", &home)
            .env("RUST_LOG", "warn");
        let outer = Proc::spawn_logged(&format!("{name}-client"), cmd, dir)?;
        let listen_pid = outer.pid();
        return Ok(Inspector {
            outer,
            listen_pid,
            tui: false,
            stdin: None,
            frames: None,
        });
    }
    let inner = std::iter::once(bins.client.display().to_string())
        .chain(listen_args)
        .map(|a| quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let child = Command::new("script")
        .args(["-q", "-f", "-e", "-c"])
        .arg(format!("stty {ROWS_COLS} 2>/dev/null; exec {inner}"))
        .arg("/dev/null")
        .env("ILLUMITUNNEL_HOME", &home)
        .env("TERM", "xterm-256color")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("could not start `script`")?;
    let mut outer = Proc::adopt("script", child);
    let stdin = outer.child_mut().stdin.take();
    let mut stdout = outer
        .child_mut()
        .stdout
        .take()
        .context("no stdout from `script`")?;
    let (tx, frames) = sync_channel::<Instant>(4096);
    std::thread::Builder::new()
        .name("pty-reader".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            // ends when `script` exits and its stdout closes
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // never block the terminal: when nobody is listening, frames are dropped
                let _ = tx.try_send(Instant::now());
            }
        })
        .context("could not start the pty reader")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let listen_pid = loop {
        if let Some(pid) = proc::descendants(outer.pid())
            .into_iter()
            .find(|p| proc::comm(*p) == "illumitunnel")
        {
            break pid;
        }
        outer.check_alive()?;
        if Instant::now() > deadline {
            bail!("`script` did not start illumitunnel within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Inspector {
        outer,
        listen_pid,
        tui: true,
        stdin,
        frames: Some(frames),
    })
}

impl Inspector {
    /// The process to check for liveness while waiting.
    pub fn outer_mut(&mut self) -> &mut Proc {
        &mut self.outer
    }

    /// Presses `k`/`j` alternately `n` times, each once the screen has settled, and returns the
    /// time from the key reaching the terminal to the first output drawn after it (a key that
    /// drew nothing within [`KEY_TIMEOUT`] counts as that long, so it weighs in the p99 instead
    /// of dropping out of it), plus the number of such keys.
    pub fn keypress_latencies(&mut self, n: usize) -> Result<(Vec<Duration>, usize)> {
        let (Some(stdin), Some(frames)) = (self.stdin.as_mut(), self.frames.as_ref()) else {
            bail!("the inspector is not running in a terminal");
        };
        let mut took = Vec::with_capacity(n);
        let mut missed = 0;
        for i in 0..n {
            settle(frames);
            let key: &[u8] = if i % 2 == 0 { b"k" } else { b"j" };
            let t0 = Instant::now();
            stdin.write_all(key)?;
            stdin.flush()?;
            match frames.recv_timeout(KEY_TIMEOUT) {
                Ok(at) => took.push(at.saturating_duration_since(t0)),
                Err(RecvTimeoutError::Timeout) => {
                    missed += 1;
                    took.push(KEY_TIMEOUT);
                }
                Err(RecvTimeoutError::Disconnected) => bail!("the terminal closed"),
            }
        }
        took.sort_unstable();
        Ok((took, missed))
    }
}

/// Waits until no output has arrived for [`QUIET`] (at most two seconds).
fn settle(frames: &Receiver<Instant>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match frames.recv_timeout(QUIET) {
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

impl Drop for Inspector {
    fn drop(&mut self) {
        if self.tui {
            // the grandchild first, by its PID; `script` itself goes when `outer` drops
            proc::kill_pid(self.listen_pid);
        }
    }
}
