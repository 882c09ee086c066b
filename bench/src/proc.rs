//! Child processes the bench starts (relay, client, peers) and what `/proc` says about them.
//!
//! Every child is stopped by its own PID when its [`Proc`] is dropped; nothing is ever
//! signalled by name.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often readiness conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// A running child process, killed (by PID) and reaped on drop.
pub struct Proc {
    name: String,
    child: Child,
    /// File the child's stdout goes to (when spawned with [`Proc::spawn_logged`]).
    pub stdout_log: PathBuf,
    /// File the child's stderr goes to (when spawned with [`Proc::spawn_logged`]).
    pub stderr_log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout/stderr written to `{dir}/{name}.out|.err`.
    pub fn spawn_logged(name: &str, mut cmd: Command, dir: &Path) -> Result<Self> {
        let stdout_log = dir.join(format!("{name}.out"));
        let stderr_log = dir.join(format!("{name}.err"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&stdout_log).context("could not create a log file")?)
            .stderr(File::create(&stderr_log).context("could not create a log file")?);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            stdout_log,
            stderr_log,
        })
    }

    /// Wraps a child the caller configured itself (e.g. with piped stdin).
    pub fn adopt(name: &str, child: Child) -> Self {
        Proc {
            name: name.to_string(),
            child,
            stdout_log: PathBuf::new(),
            stderr_log: PathBuf::new(),
        }
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, e.g. to take its stdin.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Fails when the child has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); see {} and {}",
                self.name,
                self.stdout_log.display(),
                self.stderr_log.display()
            );
        }
        Ok(())
    }

    /// Waits until a line containing `needle` appears in the stdout (or stderr) log and
    /// returns that line.
    pub fn wait_for_line(
        &mut self,
        needle: &str,
        stderr: bool,
        within: Duration,
    ) -> Result<String> {
        let log = if stderr {
            self.stderr_log.clone()
        } else {
            self.stdout_log.clone()
        };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            self.check_alive()?;
            std::thread::sleep(POLL);
        }
        bail!(
            "{} did not print {needle:?} within {within:?}; see {}",
            self.name,
            log.display()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Child::kill signals this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGKILL to one PID (a grandchild the bench located itself), via `kill PID`.
pub fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// CPU time (user + system) the process has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("could not read /proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("malformed /proc stat field")
    };
    // after the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc)
    Ok(num(11)? + num(12)?)
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("could not read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("malformed {field} line"))
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that is unavailable).
pub fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// All descendants of `pid` (children, grandchildren, …), at most 64 of them.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if found.len() >= 64 {
            break;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                found.push(c);
                todo.push(c);
            }
        }
    }
    found
}

/// The process name (`/proc/PID/comm`).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The soft limit on open files of this process (`/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// One line about the machine: CPU count, model, kernel, load average.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs, {model}, Linux {}, load average {}",
        kernel.trim(),
        load_average()
    )
}

/// `/proc/loadavg`'s first three fields.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
