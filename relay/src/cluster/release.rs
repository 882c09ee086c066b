//! `illumitunnel-relay tunnel release NAME --cluster …`: frees a name in the owners bucket and
//! purges its queue and dead letters.

use super::{DEAD_SUBJECT, QUEUE_SUBJECT};
use crate::config::NatsLink;
use crate::tunnel::release::{Names, ReleaseError};

/// The names of the cluster `link` reaches.
pub struct NatsNames<'a>(pub &'a NatsLink);

#[async_trait::async_trait]
impl Names for NatsNames<'_> {
    async fn release(&self, name: &str) -> Result<Option<u64>, ReleaseError> {
        release_in_cluster(self.0, name)
            .await
            .map_err(ReleaseError::Cluster)
    }

    fn place(&self) -> (String, &'static str) {
        (
            format!("the cluster at {}", self.0.servers_text()),
            "--cluster",
        )
    }
}

/// `tunnel release NAME --cluster …`: deletes the name's owner from the owners bucket and
/// purges its queue and dead letters; nodes forget the name once no client of it is
/// connected. Returns how many queued deliveries went; `None` when no tunnel has the name.
async fn release_in_cluster(link: &NatsLink, name: &str) -> Result<Option<u64>, String> {
    let js = super::tokens::connect(link).await?;
    let Ok(owners) = js.get_key_value(super::OWNERS_BUCKET).await else {
        return Ok(None);
    };
    match owners.entry(name).await.map_err(|e| e.to_string())? {
        Some(entry) if !entry.value.is_empty() => {}
        _ => return Ok(None),
    }
    owners.purge(name).await.map_err(|e| e.to_string())?;
    let mut dropped = 0;
    for (stream, subject) in [
        (super::QUEUE_STREAM, format!("{QUEUE_SUBJECT}.{name}")),
        (super::DEAD_STREAM, format!("{DEAD_SUBJECT}.{name}")),
    ] {
        if let Ok(stream) = js.get_stream(stream).await {
            let purged = stream
                .purge()
                .filter(subject)
                .await
                .map_err(|e| e.to_string())?;
            if stream.cached_info().config.name == super::QUEUE_STREAM {
                dropped = purged.purged;
            }
        }
    }
    Ok(Some(dropped))
}
