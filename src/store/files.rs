//! The store's files: the `-wal` and `-shm` sidecars' names, and creating the store file
//! private (0600) before SQLite opens it.

use std::path::Path;

/// `captures.db-wal` for `captures.db` and `-wal`.
pub(super) fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Creates the store file with mode 0600, or checks that an existing one is writable.
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
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Opening for write checks that an existing store is writable, so the error is
            // the clear "not writable" one instead of SQLite's "readonly database" later.
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map(|_| ())
        }
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
