//! SIGHUP: read `--tls-cert/--tls-key` and `--tokens-file` again. New connections get the new
//! certificate and tokens; open connections and sessions keep going (a session whose token left
//! the file is closed like a revoked one). A file that cannot be used keeps the old setting.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::access::Access;
use crate::config::{parse_tokens, Reload};
use crate::tls::{self, CertSlot};

/// Listens for SIGHUP (installed before this returns) until `shutdown`, when
/// [`Reload::on_hangup`]: an embedded relay never takes SIGHUP from its process.
pub(crate) fn spawn(
    reload: Reload,
    slot: Option<Arc<CertSlot>>,
    access: Arc<Access>,
    shutdown: CancellationToken,
) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
    if !reload.on_hangup {
        return Ok(None);
    }
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(Some(tokio::spawn(async move {
        loop {
            // Both branches are cancel-safe: a token wait and `Signal::recv`.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = hangup.recv() => if received.is_none() { return },
            }
            if reload.pem.is_none() && reload.tokens_file.is_none() {
                info!("SIGHUP: no --tls-cert or --tokens-file to reload; stored tokens and ACME certificates apply by themselves");
                continue;
            }
            info!("SIGHUP: reloading certificate and tokens");
            if let (Some((cert, key)), Some(slot)) = (&reload.pem, &slot) {
                let loaded = tls::load_certs(cert)
                    .map_err(|e| format!("{}: {e}", cert.display()))
                    .and_then(|chain| {
                        let key =
                            tls::load_key(key).map_err(|e| format!("{}: {e}", key.display()))?;
                        slot.replace(chain, key)
                    });
                match loaded {
                    Ok(()) => info!(cert = %cert.display(), "certificate reloaded"),
                    Err(err) => warn!(%err, "kept the previous certificate"),
                }
            }
            if let Some(path) = &reload.tokens_file {
                match std::fs::read_to_string(path) {
                    Ok(text) => {
                        let mut tokens: Vec<_> = parse_tokens(&text).collect();
                        if tokens.is_empty() {
                            warn!(file = %path.display(), "tokens file has no tokens; kept the previous ones (revoke stored tokens with `token revoke`)");
                            continue;
                        }
                        tokens.extend(reload.env_tokens.iter().cloned());
                        access.set_configured(&tokens);
                        info!(file = %path.display(), tokens = tokens.len(), "tokens reloaded");
                    }
                    Err(err) => {
                        warn!(%err, file = %path.display(), "could not read the tokens file; kept the previous tokens")
                    }
                }
            }
        }
    })))
}
