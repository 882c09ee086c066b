//! What `listen` leaves for other commands and later runs: `listen.json` in the data dir (the
//! running tunnel's URL, for `trigger`), the remembered tunnel name and the claim key a relay
//! gave for it (config dir), and, with `--register`, an IllumiChat webhook pointed at the
//! tunnel while `listen` runs.

use std::path::PathBuf;

use illumitunnel::{paths, TunnelName};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::illumichat::Api;
use crate::session::{OnWelcome, Welcomed};

/// What `listen.json` in the data dir says about the `listen` running on this machine, so
/// `trigger` can send through its tunnel without being told the URL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Running {
    /// The tunnel's public URL.
    pub public_url: String,
    /// The `listen` process.
    pub pid: u32,
    /// Its capture store.
    pub store: PathBuf,
    /// The embedded relay's self-signed certificate (`listen-ca.pem`), when it runs one.
    #[serde(default)]
    pub ca_pem: Option<PathBuf>,
}

impl Running {
    /// `listen.json` in the data dir.
    pub fn path() -> PathBuf {
        paths::data_dir().join("listen.json")
    }

    fn ca_path() -> PathBuf {
        paths::data_dir().join("listen-ca.pem")
    }

    /// The running `listen`, if its record exists and its process is alive.
    pub fn find() -> Option<Running> {
        let text = std::fs::read_to_string(Self::path()).ok()?;
        let running: Running = serde_json::from_str(&text).ok()?;
        is_alive(running.pid).then_some(running)
    }

    fn write(&self, ca_pem: Option<&str>) -> std::io::Result<()> {
        paths::ensure_own_dir(&paths::data_dir())?;
        if let (Some(pem), Some(path)) = (ca_pem, &self.ca_pem) {
            write_private(path, pem.as_bytes())?;
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        // Written whole, then renamed, so `trigger` never reads half a file.
        let tmp = Self::path().with_extension("json.tmp");
        write_private(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, Self::path())
    }

    /// Removes the record if it is still this process's (a newer `listen` may have replaced it).
    fn remove_if_mine() {
        let mine = std::fs::read_to_string(Self::path())
            .ok()
            .and_then(|t| serde_json::from_str::<Running>(&t).ok())
            .is_some_and(|r| r.pid == std::process::id());
        if mine {
            let _ = std::fs::remove_file(Self::path());
            let _ = std::fs::remove_file(Self::ca_path());
        }
    }
}

/// What the session runs on each `Welcome`, before the banner: keeps a new claim key for
/// `tunnel` (`kept` is the one sent in `Hello`) and writes `listen.json`, so `trigger` right
/// after the banner finds this `listen`.
pub(super) fn on_welcome(
    tunnel: TunnelName,
    mut kept: String,
    store: PathBuf,
    ca_pem: Option<String>,
) -> OnWelcome {
    Box::new(move |welcomed: &Welcomed<'_>| {
        if !welcomed.claim_key.is_empty() && welcomed.claim_key != kept {
            kept = welcomed.claim_key.to_string();
            remember_claim_key(&tunnel, &kept);
        }
        let running = Running {
            public_url: welcomed.public_url.to_string(),
            pid: std::process::id(),
            store: store.clone(),
            ca_pem: ca_pem.as_ref().map(|_| Running::ca_path()),
        };
        if let Err(err) = running.write(ca_pem.as_deref()) {
            tracing::warn!(%err, "could not write listen.json; trigger will need --url");
        }
    })
}

/// Whether process `pid` exists; where `/proc` is missing the record is trusted.
fn is_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// After the first `Welcome` (the session wrote `listen.json`): with `--register`, points an
/// IllumiChat webhook at the tunnel. At shutdown: disables that webhook and removes the record.
pub(super) async fn announce(
    mut public_url: watch::Receiver<Option<String>>,
    register: Option<Api>,
    allow_private_url: bool,
    events: Option<Vec<String>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let url = tokio::select! {
        url = public_url.wait_for(Option::is_some) => match url {
            Ok(url) => url.clone().unwrap_or_default(),
            Err(_) => return Ok(()),
        },
        _ = shutdown.cancelled() => {
            Running::remove_if_mine();
            return Ok(());
        }
    };
    let checked = match &register {
        Some(_) => crate::illumichat::check_registrable(&url, allow_private_url),
        None => Ok(()),
    };
    if let Err(refused) = checked {
        Running::remove_if_mine();
        shutdown.cancel();
        return Err(refused.into());
    }
    let registered = match &register {
        Some(api) => match register_webhook(api, &url, events).await {
            Ok(id) => {
                eprintln!(
                    "registered IllumiChat webhook {} for {}",
                    illumitunnel::escape::escape(&id),
                    illumitunnel::escape::escape(&url)
                );
                Some(id)
            }
            Err(e) => {
                Running::remove_if_mine();
                shutdown.cancel();
                return Err(e.into());
            }
        },
        None => None,
    };
    shutdown.cancelled().await;
    let mut outcome = Ok(());
    if let (Some(api), Some(id)) = (&register, registered) {
        match api
            .update(&id, &serde_json::json!({ "active": false }))
            .await
        {
            Ok(_) => eprintln!(
                "disabled IllumiChat webhook {}",
                illumitunnel::escape::escape(&id)
            ),
            Err(e) => {
                outcome = Err(anyhow::anyhow!(
                    "could not disable IllumiChat webhook {id}: {e}"
                ))
            }
        }
    }
    Running::remove_if_mine();
    outcome
}

/// Re-activates the webhook for `url` with `events` (all six when `None`), or creates one.
async fn register_webhook(
    api: &Api,
    url: &str,
    events: Option<Vec<String>>,
) -> Result<String, crate::illumichat::ApiError> {
    let events = events.unwrap_or_else(|| {
        illumitunnel::event::EventType::ALL
            .iter()
            .map(|e| e.as_str().to_string())
            .collect()
    });
    let same = |u: &str| u.trim_end_matches('/') == url.trim_end_matches('/');
    let existing = api.list().await?.into_iter().find(|h| same(&h.url));
    match existing {
        Some(hook) => {
            let patch = serde_json::json!({ "active": true, "events": events });
            api.update(&hook.id, &patch).await?;
            Ok(hook.id)
        }
        None => Ok(api.create(url, &events).await?.id),
    }
}

/// The tunnel name kept in the config dir, created on first use so the URL survives restarts.
pub(crate) fn remembered_tunnel() -> TunnelName {
    let path = paths::config_dir().join("tunnel");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(name) = TunnelName::parse(text.trim()) {
            // An older release wrote it 0644.
            if let Err(err) = paths::tighten_file(&path) {
                tracing::warn!(%err, path = %path.display(), "could not make the remembered tunnel name private");
            }
            return name;
        }
    }
    let name = TunnelName::random();
    let saved = paths::ensure_own_dir(&paths::config_dir())
        .and_then(|()| write_private(&path, format!("{name}\n").as_bytes()));
    if let Err(err) = saved {
        tracing::warn!(%err, path = %path.display(), "could not remember the tunnel name; the URL will change next time");
    }
    name
}

/// Where the claim key for `tunnel` is kept: beside the remembered name, readable only by the
/// user, since it is what lets this machine re-join an anonymous tunnel.
fn claim_key_path(tunnel: &TunnelName) -> PathBuf {
    paths::config_dir().join("claims").join(tunnel.as_str())
}

/// The claim key a relay gave for `tunnel` before, or empty.
pub(crate) fn remembered_claim_key(tunnel: &TunnelName) -> String {
    std::fs::read_to_string(claim_key_path(tunnel))
        .map(|k| k.trim().to_string())
        .unwrap_or_default()
}

/// Keeps the claim key a relay gave for `tunnel`, so the next `listen` re-joins it.
fn remember_claim_key(tunnel: &TunnelName, key: &str) {
    let path = claim_key_path(tunnel);
    let saved = paths::ensure_own_dir(&paths::config_dir())
        .and_then(|()| path.parent().map_or(Ok(()), paths::ensure_own_dir))
        .and_then(|()| write_private(&path, format!("{key}\n").as_bytes()));
    if let Err(err) = saved {
        tracing::warn!(%err, path = %path.display(), "could not keep the tunnel's claim key; another machine may take the name after this listen stops");
    }
}

/// Writes `bytes` to a file only its owner can read (an existing one is tightened first).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    paths::create_private(path)?.write_all(bytes)
}
