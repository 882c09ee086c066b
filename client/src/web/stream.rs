//! `GET /api/stream`: every delivery committed after the stream opened, as server-sent events
//! (`event: delivery`, `id: SEQ`, `data:` the `events --json` object), oldest first. The
//! recorder's committed-seq signal wakes it at each commit, and it reads what is new from the
//! capture store, so a burst the stream could not keep up with is still sent, in order. A
//! reconnecting `EventSource` sends `Last-Event-ID` and continues after it. The list's filters
//! (`event`, `status`, `q`) apply; a comment every 15 s keeps proxies and browsers from closing it.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use illumitunnel::store::Filter;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::api::{filter_from, Query, MAX_LIMIT};
use super::reads::Reads;
use super::respond::{error, Reply};
use super::state::State;

/// How often an idle stream sends a comment.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Events waiting for a slow reader before the stream stops reading the store.
const BUFFERED: usize = 64;

/// Opens a stream of deliveries committed from now on (or after `Last-Event-ID`).
pub fn open(state: &State, query: Option<&str>, last_event_id: Option<&str>) -> Reply {
    let mut filter = match filter_from(&Query::parse(query)) {
        Ok(filter) => filter,
        Err(sentence) => return error(StatusCode::BAD_REQUEST, &sentence),
    };
    filter.before_seq = None;
    let mut committed = state.committed.clone();
    let now = *committed.borrow_and_update();
    let after = last_event_id
        .and_then(|id| id.trim().parse::<i64>().ok())
        .filter(|&seq| seq >= 0 && seq <= now)
        .unwrap_or(now);
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFERED);
    tokio::spawn(follow(
        Following {
            reads: state.reads.clone(),
            filter,
            after,
            committed,
            shutdown: state.shutdown.clone(),
        },
        tx,
    ));
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    Reply::stream(
        StreamBody::new(frames).boxed_unsync(),
        "text/event-stream; charset=utf-8",
    )
}

/// What one stream follows.
struct Following {
    reads: Reads,
    filter: Filter,
    /// The newest `seq` already looked at.
    after: i64,
    committed: watch::Receiver<i64>,
    shutdown: CancellationToken,
}

/// Sends what each commit adds until the reader goes, `listen` stops, or the recorder ends.
async fn follow(mut f: Following, tx: mpsc::Sender<Bytes>) {
    if tx
        .send(Bytes::from_static(b"retry: 1000\n\n"))
        .await
        .is_err()
    {
        return;
    }
    // Anything committed between the handshake and now goes out at once.
    let mut behind = *f.committed.borrow_and_update() > f.after;
    loop {
        if !behind {
            tokio::select! {
                changed = f.committed.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = f.shutdown.cancelled() => return,
            }
            f.committed.borrow_and_update();
        }
        // Everything up to this seq is committed, so the query below sees it.
        let committed = *f.committed.borrow();
        let filter = Filter {
            after_seq: Some(f.after),
            ..f.filter.clone()
        };
        let page = f
            .reads
            .read(move |store| store.list_oldest_summaries(&filter, MAX_LIMIT))
            .await;
        let page = match page {
            Ok(page) => page,
            Err(sentence) => {
                tracing::warn!(%sentence, "the web inspector's stream could not read the capture store");
                return;
            }
        };
        behind = page.len() == MAX_LIMIT;
        for d in &page {
            f.after = f.after.max(d.seq);
            let data = illumitunnel::escape::json_string(&d.summary_json());
            let event = format!("event: delivery\nid: {}\ndata: {data}\n\n", d.seq);
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
        // Rows the filter left out still move the stream on.
        if !behind {
            f.after = f.after.max(committed);
        }
    }
}
