//! SIGHUP: read `--tls-cert/--tls-key` and `--tokens-file` again. New connections get the new
//! certificate and tokens; open connections and sessions keep going (a session whose token left
//! the file is closed like a revoked one). The tokens file is the truth: an empty one means no
//! file tokens. A file that cannot be used — missing, unreadable, or holding a token shorter
//! than 128 bits — keeps the last good setting, with an ERROR that says why.

use std::path::Path;
use std::sync::Arc;

use illumitunnel::Token;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::access::Access;
use crate::config::{parse_tokens, Reload, MIN_TOKEN_CHARS};
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
                reload_tokens(path, &reload.env_tokens, &access);
            }
        }
    })))
}

/// Replaces the file's tokens with what `path` holds now, or keeps them and logs an ERROR.
fn reload_tokens(path: &Path, env_tokens: &[Token], access: &Access) {
    let file = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            error!(%err, %file, "could not read the tokens file; kept the last good tokens");
            return;
        }
    };
    let mut tokens = match parse_tokens(&text) {
        Ok(tokens) => tokens,
        Err(weak) => {
            error!(%file, line = weak.line, "the tokens file holds a token shorter than {MIN_TOKEN_CHARS} characters (128 bits) on line {}; kept the last good tokens", weak.line);
            return;
        }
    };
    let count = tokens.len();
    if count == 0 {
        warn!(%file, "the tokens file is empty: no client token from it is accepted any more");
    }
    tokens.extend(env_tokens.iter().cloned());
    access.set_configured(&tokens);
    info!(%file, tokens = count, "tokens reloaded");
}
