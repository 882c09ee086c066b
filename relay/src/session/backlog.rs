//! A session's backlog task: while its session owns the tunnel's backlog, it streams the
//! offline queue to the client in arrival order, a page at a time (the writer's bounded queue
//! paces it), and looks again each time it is woken. A row stays queued until the client says
//! `Recorded`, so a session that ends mid-way leaves the rest for the next one.

use std::sync::Arc;

use illumitunnel::TunnelName;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Outbound, SessionHandle};
use crate::metrics::Outcome;
use crate::server::Shared;

pub(super) async fn run(
    shared: Arc<Shared>,
    handle: SessionHandle,
    name: TunnelName,
    token: CancellationToken,
) {
    let tunnel = name.as_str();
    // Rows up to this one were sent on this session; a new backlog owner starts from the top.
    let mut after_seq = 0i64;
    let mut owned = false;
    let mut revealed = false;
    loop {
        // Both branches are cancel-safe: `Notify::notified` and a token wait.
        tokio::select! {
            _ = token.cancelled() => return,
            _ = handle.backlog.notified() => {}
        }
        if !shared.registry.has_backlog(tunnel, handle.id()) {
            owned = false;
            continue;
        }
        if !owned {
            owned = true;
            after_seq = 0;
        }
        let mut sent = 0u64;
        loop {
            let page = tokio::select! {
                _ = token.cancelled() => return,
                page = shared.queue.page(tunnel, after_seq) => page,
            };
            let page = match page {
                Ok(page) => page,
                Err(err) => {
                    warn!(%err, "could not read the offline queue; the rest waits for the next session");
                    break;
                }
            };
            if page.is_empty() {
                if revealed {
                    break;
                }
                // Visible to senders from now on; a delivery queued just before is caught by
                // one more look.
                shared.registry.reveal(tunnel, &handle);
                revealed = true;
                continue;
            }
            for row in page {
                after_seq = row.seq;
                let outbound = Outbound::new(row.delivery, true);
                if handle.redeliver(&outbound).await.is_err() {
                    return;
                }
                shared
                    .metrics
                    .delivery(Outcome::redelivered, std::time::Duration::ZERO);
                sent += 1;
            }
        }
        if !revealed {
            shared.registry.reveal(tunnel, &handle);
            revealed = true;
        }
        if sent > 0 {
            info!(sent, "sent queued deliveries");
        } else {
            debug!("offline queue empty");
        }
    }
}
