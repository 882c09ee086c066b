//! `config.toml` in the config dir: what `login` remembers (`relay`, `token`, `ca`, `insecure`, `allow_http`) and what
//! a user may set by hand (`forward_to`, `tunnel`), so `listen` needs no flags and the token
//! stays out of the process list and the shell history. Flags win over environment variables,
//! which win over this file (see [`layer`]). The file is written readable by its owner only.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use illumitunnel::paths;
use serde::{Deserialize, Serialize};

use crate::usage::UsageError;

/// The settings file's name in the config dir.
pub const FILE_NAME: &str = "config.toml";

/// What `config.toml` holds; every key is optional.
#[derive(Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Relay base URL, as `--relay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Client token, as `--token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Local server, as `--forward-to` or `listen TARGET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
    /// Tunnel name, as `--tunnel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
    /// PEM file trusted for the relay, as `--ca`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// `login --allow-http` was given for `relay`: an http:// relay off this machine that
    /// `listen` may send the token to (only that relay, never one given by flag).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_http: bool,
    /// `login --insecure` was given for `relay`: any certificate it presents is accepted (only
    /// that relay, never one given by flag), as `listen --insecure`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("relay", &self.relay)
            .field("token", &self.token.as_ref().map(|_| "MASKED"))
            .field("forward_to", &self.forward_to)
            .field("tunnel", &self.tunnel)
            .field("ca", &self.ca)
            .field("allow_http", &self.allow_http)
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// The first value present: the flag (clap has already put an environment variable's value
/// there when the flag was not given), else the settings file's.
pub fn layer<T: Clone>(flag_or_env: Option<&T>, file: Option<&T>) -> Option<T> {
    flag_or_env.or(file).cloned()
}

impl Settings {
    /// `config.toml` in the config dir.
    pub fn path() -> PathBuf {
        paths::config_dir().join(FILE_NAME)
    }

    /// Reads `config.toml`; a missing file is empty settings, a broken one a usage error.
    pub fn load() -> Result<Settings, UsageError> {
        Self::load_from(&Self::path())
    }

    /// Reads settings from `path` (see [`Settings::load`]).
    pub fn load_from(path: &Path) -> Result<Settings, UsageError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => {
                return Err(UsageError(format!(
                    "could not read {}: {e}; fix its permissions or remove it",
                    path.display()
                )))
            }
        };
        // It holds the token: a copy made readable by others (by hand, or a restore) is fixed.
        if let Err(err) = paths::tighten_file(path) {
            tracing::warn!(%err, path = %path.display(), "could not make config.toml private (0600)");
        }
        toml::from_str(&text).map_err(|e| {
            let why = e.message().trim().to_string();
            UsageError(format!(
                "could not read {}: {why}; the keys are relay, token, forward_to, tunnel, ca and allow_http",
                path.display()
            ))
        })
    }

    /// Writes `config.toml` whole (a temp file renamed over it), readable by its owner only.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = Self::path();
        self.save_to(&path)?;
        Ok(path)
    }

    /// Writes settings to `path` (see [`Settings::save`]).
    pub fn save_to(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        if let Some(dir) = path.parent() {
            paths::ensure_own_dir(dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
        }
        let text = toml::to_string(self).context("could not write the settings")?;
        let tmp = path.with_extension("toml.tmp");
        paths::create_private(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("could not write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_win_over_the_file() {
        let s = |v: &str| Some(v.to_string());
        // (flag or env as clap resolved it, file) → used
        for (given, file, want) in [
            (s("https://flag"), s("https://file"), s("https://flag")),
            (None, s("https://file"), s("https://file")),
            (s("https://env"), None, s("https://env")),
            (None, None, None),
        ] {
            assert_eq!(layer(given.as_ref(), file.as_ref()), want);
        }
    }

    #[cfg(unix)]
    #[test]
    fn round_trips_private_and_refuses_unknown_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config").join(FILE_NAME);
        assert_eq!(Settings::load_from(&path).unwrap(), Settings::default());
        let settings = Settings {
            relay: Some("https://relay.example.com".into()),
            token: Some("secret-token".into()),
            ca: Some(PathBuf::from("/etc/relay-ca.pem")),
            allow_http: true,
            ..Settings::default()
        };
        settings.save_to(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Settings::load_from(&path).unwrap(), settings);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("allow_http = true"));
        assert!(!format!("{settings:?}").contains("secret-token"));
        // Without it, the key is left out rather than written as false.
        Settings::default().save_to(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Settings::load_from(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a loose config.toml is tightened when read");

        std::fs::write(&path, "relya = \"https://x\"\n").unwrap();
        let err = Settings::load_from(&path).unwrap_err().to_string();
        assert!(
            err.contains("relya") && err.contains("the keys are relay"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
