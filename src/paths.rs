//! Where the tool keeps its files: the platform data dir (capture store, logs, relay data)
//! and config dir (the remembered tunnel name). `ILLUMITUNNEL_HOME` puts both under one folder,
//! which tests and containers use.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Environment variable that overrides both data and config dirs.
pub const HOME_ENV: &str = "ILLUMITUNNEL_HOME";

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "illumitunnel")
}

/// Data dir, e.g. `~/.local/share/illumitunnel`.
pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os(HOME_ENV) {
        return PathBuf::from(home).join("data");
    }
    project_dirs()
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".illumitunnel"))
}

/// Config dir, e.g. `~/.config/illumitunnel`.
pub fn config_dir() -> PathBuf {
    if let Some(home) = std::env::var_os(HOME_ENV) {
        return PathBuf::from(home).join("config");
    }
    project_dirs()
        .map(|d| d.config_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".illumitunnel"))
}

/// Default capture store path.
pub fn default_store() -> PathBuf {
    data_dir().join("captures.db")
}

/// Default relay data dir (offline queue, tunnel ownership).
pub fn default_relay_data_dir() -> PathBuf {
    data_dir().join("relay")
}

/// Creates or empties `path` for writing, readable by the user only (0600 on Unix).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    open_private(
        path,
        OpenOptions::new().write(true).create(true).truncate(true),
    )
}

/// Opens `path` for appending (created if missing), readable by the user only (0600 on Unix).
pub fn append_private(path: &Path) -> std::io::Result<File> {
    open_private(path, OpenOptions::new().append(true).create(true))
}

/// A new file gets 0600 from the start, so it is never readable by others, not even between
/// creation and a later chmod; an existing one (say a 0644 file from an older version) is
/// tightened to 0600.
fn open_private(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = options.mode(0o600).open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_new_or_old() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        create_private(&path).unwrap().write_all(b"one\n").unwrap();
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        append_private(&path).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        create_private(&path)
            .unwrap()
            .write_all(b"three\n")
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }
}
