//! Where the tool keeps its files: the platform data dir (capture store, logs, relay data)
//! and config dir (the remembered tunnel name). `ILLUMITUNNEL_HOME` puts both under one folder,
//! which tests and containers use. Both dirs, and every file the tool writes, are readable by
//! the user only (0700 and 0600 on Unix).

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

/// Creates `dir` and any missing parents, each readable by the user only (0700 on Unix). A
/// dir that exists already is left as it is: it may be the user's (a `--store` file's folder).
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates one of the tool's own dirs ([`data_dir`], [`config_dir`], or a folder inside them)
/// like [`create_private_dir_all`], and tightens it to 0700 when it exists with looser
/// permissions (an older release made them 0755). Never call it on a dir the user named.
pub fn ensure_own_dir(dir: &Path) -> std::io::Result<()> {
    create_private_dir_all(dir)?;
    tighten(dir, 0o700)
}

/// Tightens the tool's own dirs ([`data_dir`] and [`config_dir`]) to 0700 where they exist with
/// looser permissions; creates nothing. The client runs this on every start.
pub fn tighten_own_dirs() -> std::io::Result<()> {
    for dir in [data_dir(), config_dir()] {
        if dir.is_dir() {
            tighten(&dir, 0o700)?;
        }
    }
    Ok(())
}

/// Takes group and other permissions away from an existing file of the tool's (0600), e.g. one
/// an older release wrote 0644; a missing file is no error.
pub fn tighten_file(path: &Path) -> std::io::Result<()> {
    match tighten(path, 0o600) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Sets `path` to `mode` when group or others have any permission on it.
fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = std::fs::metadata(path)?.permissions().mode();
        if current & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
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
    fn own_dirs_are_0700_new_or_old_and_a_given_dir_is_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let given = dir.path().join("given");
        std::fs::create_dir(&given).unwrap();
        std::fs::set_permissions(&given, std::fs::Permissions::from_mode(0o755)).unwrap();
        let nested = given.join("a/b");
        create_private_dir_all(&nested).unwrap();
        assert_eq!(mode(&given), 0o755, "an existing parent is the user's");
        assert_eq!(mode(&given.join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);

        let own = dir.path().join("own");
        std::fs::create_dir(&own).unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_own_dir(&own).unwrap();
        assert_eq!(mode(&own), 0o700);

        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        tighten_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        tighten_file(&dir.path().join("missing")).unwrap();
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
