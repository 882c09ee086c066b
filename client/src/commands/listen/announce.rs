//! What `listen` leaves for other commands and later runs: the tunnel URL in its record (see
//! `record`, for `trigger`), the remembered tunnel name and the claim key a relay
//! gave for it (config dir), and, with `--register`, an IllumiChat webhook pointed at the
//! tunnel while `listen` runs.

use std::path::PathBuf;

use illumitunnel::{paths, TunnelName};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::record::{write_private, Running};
use crate::illumichat::Api;
use crate::session::{OnWelcome, Welcomed};

/// What the session runs on each `Welcome`, before the banner: keeps a new claim key for
/// `tunnel` (`kept` is the one sent in `Hello`) and writes its record, so `trigger` right
/// after the banner finds this `listen`.
pub(super) fn on_welcome(
    tunnel: TunnelName,
    mut kept: String,
    record: Option<Running>,
    ca_pem: Option<String>,
) -> OnWelcome {
    Box::new(move |welcomed: &Welcomed<'_>| {
        if !welcomed.claim_key.is_empty() && welcomed.claim_key != kept {
            kept = welcomed.claim_key.to_string();
            remember_claim_key(&tunnel, &kept);
        }
        // A `--fan-out` listen holds no record: `trigger` goes to the one that forwards.
        let Some(record) = &record else { return };
        let running = Running {
            public_url: welcomed.public_url.to_string(),
            ca_pem: ca_pem.as_ref().map(|_| Running::ca_path(tunnel.as_str())),
            ..record.clone()
        };
        if let Err(err) = running.write(ca_pem.as_deref()) {
            tracing::warn!(%err, "could not write the listen record; trigger will need --url");
        }
    })
}

/// After the first `Welcome` (the session wrote the record): with `--register`, points an
/// IllumiChat webhook at the tunnel. At shutdown: disables that webhook.
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
            return Ok(());
        }
    };
    let checked = match &register {
        Some(_) => crate::illumichat::check_registrable(&url, allow_private_url),
        None => Ok(()),
    };
    if let Err(refused) = checked {
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
