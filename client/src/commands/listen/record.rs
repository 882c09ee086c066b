//! One `listen` per tunnel per machine: the first `listen` for a tunnel holds an exclusive lock
//! on `{data dir}/listen/{tunnel}.lock` for as long as it runs and keeps its record beside it
//! in `{tunnel}.json` (PID, target, tunnel URL, store), which `trigger` reads. A record whose
//! process is gone is stale and taken over; a record is removed only by the process that wrote it.

use std::fs::File;
use std::path::PathBuf;

use illumitunnel::{paths, TunnelName};

use crate::usage::UsageError;

/// What `{data dir}/listen/{tunnel}.json` says about the `listen` running a tunnel on this
/// machine, so `trigger` can send through it without being told the URL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Running {
    /// The tunnel's public URL (empty until the relay welcomed the session).
    pub public_url: String,
    /// The `listen` process.
    pub pid: u32,
    /// Its capture store.
    pub store: PathBuf,
    /// The embedded relay's self-signed certificate, when it runs one.
    #[serde(default)]
    pub ca_pem: Option<PathBuf>,
    /// The tunnel name.
    #[serde(default)]
    pub tunnel: String,
    /// Where it forwards deliveries.
    #[serde(default)]
    pub target: String,
    /// When it started, in seconds since the Unix epoch.
    #[serde(default)]
    pub started: u64,
    /// The web inspector's URL, e.g. `http://127.0.0.1:4040`, when it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspect: Option<String>,
    /// The token the web inspector's state-changing calls need (`X-Illumitunnel-Token`); this
    /// file is readable by its owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspect_token: Option<String>,
}

/// `{data dir}/listen`, where the per-tunnel records live.
fn dir() -> PathBuf {
    paths::data_dir().join("listen")
}

impl Running {
    /// The record of `tunnel`.
    pub fn path(tunnel: &str) -> PathBuf {
        dir().join(format!("{tunnel}.json"))
    }

    /// The embedded relay's certificate for `tunnel`.
    pub(super) fn ca_path(tunnel: &str) -> PathBuf {
        dir().join(format!("{tunnel}-ca.pem"))
    }

    /// The running `listen` with a tunnel URL, the most recently started when several tunnels
    /// run; records whose process is gone are ignored.
    pub fn find() -> Option<Running> {
        let entries = std::fs::read_dir(dir()).ok()?;
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| read(&e.path()))
            .filter(|r| !r.public_url.is_empty() && is_alive(r.pid))
            .max_by_key(|r| r.started)
    }

    /// The record of the `listen` running `tunnel` on this machine, if its process lives.
    pub fn live(tunnel: &str) -> Option<Running> {
        read(&Self::path(tunnel)).filter(|r| is_alive(r.pid))
    }

    /// Writes the record (and the embedded relay's certificate), whole then renamed, so
    /// `trigger` never reads half a file.
    pub(super) fn write(&self, ca_pem: Option<&str>) -> std::io::Result<()> {
        paths::ensure_own_dir(&paths::data_dir())?;
        paths::ensure_own_dir(&dir())?;
        if let (Some(pem), Some(path)) = (ca_pem, &self.ca_pem) {
            write_private(path, pem.as_bytes())?;
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let path = Self::path(&self.tunnel);
        let tmp = path.with_extension("json.tmp");
        write_private(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, path)
    }
}

fn read(path: &std::path::Path) -> Option<Running> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// This process's hold on a tunnel: the lock file, held open, and the record. Dropping it
/// removes the record if it is still this process's, then releases the lock.
pub struct Claim {
    /// The record as written at start, without the tunnel URL.
    pub record: Running,
    tunnel: String,
    _lock: File,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let path = Running::path(&self.tunnel);
        if read(&path).is_some_and(|r| r.pid == std::process::id()) {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(Running::ca_path(&self.tunnel));
        }
    }
}

/// Takes `tunnel` for this process and writes its record (without URL yet), or refuses with
/// the sentence naming the `listen` that holds it (exit 2).
pub fn claim(tunnel: &TunnelName, target: &str, store: PathBuf) -> anyhow::Result<Claim> {
    let name = tunnel.as_str();
    let lock_path = dir().join(format!("{name}.lock"));
    let lock = paths::ensure_own_dir(&paths::data_dir())
        .and_then(|()| paths::ensure_own_dir(&dir()))
        .and_then(|()| paths::append_private(&lock_path))
        .map_err(|e| {
            anyhow::anyhow!(
                "could not create {}: {e}; check that the data dir is writable or set ILLUMITUNNEL_HOME",
                lock_path.display()
            )
        })?;
    let existing = read(&Running::path(name));
    let free = match try_lock(&lock) {
        Some(free) => free,
        // Without file locks, a record whose process lives holds the tunnel.
        None => !existing
            .as_ref()
            .is_some_and(|r| r.pid != std::process::id() && is_alive(r.pid)),
    };
    if !free {
        return Err(UsageError(taken_sentence(name, existing.as_ref())).into());
    }
    let running = Running {
        public_url: String::new(),
        pid: std::process::id(),
        store,
        ca_pem: None,
        tunnel: name.to_string(),
        target: target.to_string(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        inspect: None,
        inspect_token: None,
    };
    if let Err(err) = running.write(None) {
        tracing::warn!(%err, "could not write the listen record; trigger will need --url");
    }
    Ok(Claim {
        record: running,
        tunnel: name.to_string(),
        _lock: lock,
    })
}

/// The sentence for a second `listen` of a tunnel on this machine.
fn taken_sentence(tunnel: &str, holder: Option<&Running>) -> String {
    let who = match holder {
        Some(r) => format!("listen PID {} forwarding to {}", r.pid, r.target),
        None => "another listen".to_string(),
    };
    format!(
        "tunnel {tunnel} is already taken on this machine by {who}; stop that one, or pass --fan-out to record and show its deliveries without forwarding them"
    )
}

/// Tries the exclusive lock without waiting: `Some(true)` taken here, `Some(false)` held by
/// another process, `None` where file locks are not available.
#[cfg(target_os = "linux")]
fn try_lock(file: &File) -> Option<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Some(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Some(false),
        Err(_) => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn try_lock(_file: &File) -> Option<bool> {
    None
}

/// Whether process `pid` exists; where `/proc` is missing the record is trusted.
fn is_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// Writes `bytes` to a file only its owner can read (an existing one is tightened first).
pub(super) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    paths::create_private(path)?.write_all(bytes)
}
