//! Where the tool keeps its files: the platform data dir (capture store, logs, relay data)
//! and config dir (the remembered tunnel name). `ILLUMITUNNEL_HOME` puts both under one folder,
//! which tests and containers use.

use std::path::PathBuf;

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
