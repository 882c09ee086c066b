//! The store's files: the `-wal` and `-shm` sidecars' names, and creating the store file
//! private (0600) before SQLite opens it.

use std::path::Path;

/// `captures.db-wal` for `captures.db` and `-wal`.
pub(super) fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Creates the store file with mode 0600 when it does not exist yet. An existing one is left
/// alone: opening and closing a descriptor of a database this process already has open would
/// drop every POSIX lock SQLite holds on it in this process (closing any descriptor of a file
/// releases them all), and another process would then take its shared memory for unused and
/// reset it, leaving this process's connections with a stale schema. `CaptureStore::open`
/// checks writability through SQLite instead.
#[cfg(unix)]
pub(super) fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the store file, or checks that an existing one is writable.
#[cfg(not(unix))]
pub(super) fn create_private(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(|_| ())
}
