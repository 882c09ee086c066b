//! Replay: a stored delivery's request sent again to the local server, and recorded as a new
//! delivery with `replay_of` set. One core for the `replay` command and for the replays the
//! inspector asks `listen` for over its [`ReplayRequest`] channel.
//!
//! Where it goes ([`Route`]): the origin the `listen` running for the delivery's tunnel forwards
//! to now (its live record, `{data dir}/listen/{tunnel}.json`, read by the commands), else the origin of the stored
//! delivery's `target` (`--to-recorded` asks for that one always), with the path and query the
//! local server saw then; or, with an override (`replay --forward-to URL`), exactly that URL
//! plus the stored query. Method, headers and body are the stored ones, less hop-by-hop
//! headers, Host and Content-Length, which are recomputed for the request actually sent.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, Source};
use illumitunnel::headers::{is_hop_by_hop, Header};
use illumitunnel::store::CaptureStore;
use illumitunnel::{now_ms, Delivery, DeliveryId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::forward::{Forwarder, Target};
use crate::recorder::RecorderHandle;
use crate::status::{ReplayEdits, ReplayRequest};

/// Replay requests waiting for `listen` to serve them.
pub const REPLAY_QUEUE: usize = 16;

/// Where a replay goes.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// The origin the delivery went to when recorded, with the path the local server saw.
    Recorded,
    /// This target's origin (the current `listen` target), with the path the local server saw.
    Origin(&'a Target),
    /// Exactly this URL (`--forward-to`), plus the stored query.
    Exactly(&'a Target),
}

/// The route for `original`: `forward_to` when given; else, unless `to_recorded`, the current
/// target of the `listen` running for its tunnel (for a delivery that was forwarded then); else
/// where it went when recorded. The second
/// value names a current target that differs from the recorded one, for the line that says so.
pub fn route<'a>(
    original: &Delivery,
    forward_to: Option<&'a Target>,
    to_recorded: bool,
    current: Option<&'a (Target, u32)>,
) -> (Route<'a>, Option<String>) {
    if let Some(to) = forward_to {
        return (Route::Exactly(to), None);
    }
    // A delivery never forwarded (`--events` skipped it) is replayed only where the user says.
    match current.filter(|_| !to_recorded && !original.target.is_empty()) {
        Some((target, pid)) => {
            let recorded = Target::parse(&original.target).ok().map(|t| t.origin());
            let note = (recorded.as_ref() != Some(&target.origin())).then(|| {
                format!(
                    "sending {} to {}, the current target of listen PID {pid} (it was recorded at {}); --to-recorded sends to the recorded one",
                    original.id,
                    target.origin(),
                    recorded.map_or_else(|| "no target".to_string(), |t| t.to_string()),
                )
            });
            (Route::Origin(target), note)
        }
        None => (Route::Recorded, None),
    }
}

/// Where a replay of `original` goes and what it sends: the target and the request for it.
/// `route` says where; `body` replaces the stored body.
pub fn prepare(
    original: &Delivery,
    route: Route<'_>,
    body: Option<Bytes>,
) -> Result<(Target, RequestRecord), String> {
    let stored = &original.request;
    let headers = resend_headers(&stored.headers);
    let body = body.unwrap_or_else(|| stored.body.clone());
    let (target, path) = match route {
        // `uri_for("")` is the target's own path; the stored query is appended to its own.
        Route::Exactly(target) => (target.clone(), String::new()),
        // A delivery `--events` skipped has no recorded path below a target: it goes to the
        // target itself, as `listen` would forward it now.
        Route::Origin(target) if original.target.is_empty() => (target.clone(), String::new()),
        Route::Origin(target) => (target.origin(), stored.path.clone()),
        Route::Recorded => {
            let target = Target::parse(&original.target).map_err(|_| {
                if original.skipped {
                    format!(
                        "delivery {} was skipped by --events and never forwarded; pass --forward-to URL to replay it",
                        original.id
                    )
                } else {
                    format!(
                        "delivery {} has no target to replay to; pass --forward-to URL",
                        original.id
                    )
                }
            })?;
            (target.origin(), stored.path.clone())
        }
    };
    let request = RequestRecord {
        method: stored.method.clone(),
        path,
        query: stored.query.clone(),
        headers,
        body,
    };
    Ok((target, request))
}

/// The stored headers to send again: all but hop-by-hop ones, Host and Content-Length, which
/// belong to the request actually sent.
pub fn resend_headers(headers: &[Header]) -> Vec<Header> {
    headers
        .iter()
        .filter(|(name, _)| {
            !is_hop_by_hop(name)
                && !name.eq_ignore_ascii_case("host")
                && !name.eq_ignore_ascii_case("content-length")
        })
        .cloned()
        .collect()
}

/// A prepared replay with the web inspector's edits: its method; its path, sent to the target's
/// origin (`?query` in it replaces the stored query, which is kept otherwise); and its headers,
/// each set one replacing every header of that name. A secret header sent back as `REDACTED`
/// (what the inspector shows for it) keeps its stored value.
pub fn apply_edits(
    target: Target,
    mut request: RequestRecord,
    edits: &ReplayEdits,
) -> (Target, RequestRecord) {
    if let Some(method) = &edits.method {
        request.method = method.clone();
    }
    let target = match &edits.path {
        Some(path) => {
            match path.split_once('?') {
                Some((path, query)) => {
                    request.path = path.to_string();
                    request.query = query.to_string();
                }
                None => request.path = path.clone(),
            }
            target.origin()
        }
        None => target,
    };
    for (name, value) in &edits.headers {
        let unchanged_secret = illumitunnel::headers::is_secret(name)
            && value.as_deref() == Some(illumitunnel::headers::REDACTED.as_bytes());
        if unchanged_secret {
            continue;
        }
        request
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            request.headers.push((name.clone(), value.clone()));
        }
    }
    (target, request)
}

/// Sends a prepared replay and builds the new delivery (not yet stored).
pub async fn send(original: &Delivery, forwarder: &Forwarder, request: RequestRecord) -> Delivery {
    let received_at_ms = now_ms();
    let started = Instant::now();
    let forwarded = forwarder.forward(&request).await;
    let duration_us = started.elapsed().as_micros() as i64;
    let mut request = request;
    request.path = forwarded.uri.path().to_string();
    request.query = forwarded.uri.query().unwrap_or_default().to_string();
    let mut d = Delivery::new(
        DeliveryId::generate(),
        received_at_ms,
        Source::Replay,
        request,
    );
    d.replay_of = Some(original.id.clone());
    d.tunnel = original.tunnel.clone();
    d.target = forwarded.uri.to_string();
    d.duration_us = duration_us;
    match forwarded.result {
        Ok(response) => d.response = Some(response),
        Err(error) => d.error = Some(error),
    }
    d
}

/// Serves the inspector's replay requests for `listen` until `shutdown` or until every sender
/// is gone. Each replay goes through the recorder, so it is stored and shown like any delivery;
/// `listen`'s forwarder (its target, and its trust in an https local server) sends them, to the
/// origin of its current target (see [`Route::Origin`]).
pub fn spawn_server(
    store_path: PathBuf,
    fallback: Forwarder,
    recorder: RecorderHandle,
    shutdown: CancellationToken,
) -> (mpsc::Sender<ReplayRequest>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<ReplayRequest>(REPLAY_QUEUE);
    let task = tokio::spawn(async move {
        loop {
            // `mpsc::Receiver::recv` is cancel-safe: no request is lost to the shutdown branch.
            let request = tokio::select! {
                request = rx.recv() => request,
                _ = shutdown.cancelled() => None,
            };
            let Some(request) = request else { break };
            let outcome = serve_one(&store_path, &fallback, &recorder, &request).await;
            let _ = request.reply.send(outcome);
        }
        // Dropping the recorder handle here lets the capture store writer finish.
        drop(recorder);
    });
    (tx, task)
}

async fn serve_one(
    store_path: &std::path::Path,
    fallback: &Forwarder,
    recorder: &RecorderHandle,
    request: &ReplayRequest,
) -> Result<Delivery, String> {
    let path = store_path.to_path_buf();
    let id = request.original.clone();
    let original = tokio::task::spawn_blocking(move || {
        CaptureStore::open(&path)
            .and_then(|store| store.get(id.as_str()))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("could not read the capture store: {e}"))??
    .ok_or_else(|| format!("no delivery with id {}", request.original))?;
    // `listen`'s own target is the current one: replays follow a restart on another port.
    let (target, prepared) = prepare(
        &original,
        Route::Origin(fallback.target()),
        request.body.clone(),
    )?;
    let (target, prepared) = apply_edits(target, prepared, &request.edits);
    let replayed = send(&original, &fallback.retarget(target), prepared).await;
    recorder.insert(replayed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(target: &str) -> Delivery {
        let mut d = Delivery::new(
            DeliveryId::parse("abc123").unwrap(),
            1,
            Source::Tunnel,
            RequestRecord {
                method: "POST".into(),
                path: "/hooks/sub".into(),
                query: "a=1".into(),
                headers: vec![
                    ("host".into(), b"relay.example".to_vec()),
                    ("content-length".into(), b"2".to_vec()),
                    ("connection".into(), b"close".to_vec()),
                    ("x-sig".into(), b"s".to_vec()),
                ],
                body: Bytes::from_static(b"{}"),
            },
        );
        d.target = target.into();
        d
    }

    #[test]
    fn replays_to_the_stored_origin_and_path() {
        let d = stored("http://127.0.0.1:3000/hooks/sub?a=1");
        let (target, request) = prepare(&d, Route::Recorded, None).unwrap();
        assert_eq!(
            target.uri_for(&request.path, &request.query).to_string(),
            "http://127.0.0.1:3000/hooks/sub?a=1"
        );
        let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-sig"]);
    }

    #[test]
    fn forward_to_is_exactly_that_url_plus_the_query() {
        let d = stored("http://127.0.0.1:3000/hooks/sub?a=1");
        let to = Target::parse("http://127.0.0.1:4000/v2").unwrap();
        let (target, request) =
            prepare(&d, Route::Exactly(&to), Some(Bytes::from_static(b"[1]"))).unwrap();
        assert_eq!(
            target.uri_for(&request.path, &request.query).to_string(),
            "http://127.0.0.1:4000/v2?a=1"
        );
        assert_eq!(request.body, Bytes::from_static(b"[1]"));
    }

    #[test]
    fn edits_change_method_path_and_headers_and_keep_a_hidden_secret() {
        let mut d = stored("http://127.0.0.1:3000/hooks/sub?a=1");
        d.request
            .headers
            .push(("Authorization".into(), b"Bearer real".to_vec()));
        let (target, request) = prepare(&d, Route::Recorded, None).unwrap();
        let edits = ReplayEdits {
            method: Some("PUT".into()),
            path: Some("/other".into()),
            headers: vec![
                ("X-SIG".into(), Some(b"changed".to_vec())),
                ("authorization".into(), Some(b"REDACTED".to_vec())),
                ("x-new".into(), Some(b"1".to_vec())),
            ],
        };
        let (target, request) = apply_edits(target, request, &edits);
        assert_eq!(request.method, "PUT");
        assert_eq!(
            target.uri_for(&request.path, &request.query).to_string(),
            "http://127.0.0.1:3000/other?a=1"
        );
        assert_eq!(
            request.headers,
            vec![
                ("Authorization".to_string(), b"Bearer real".to_vec()),
                ("X-SIG".to_string(), b"changed".to_vec()),
                ("x-new".to_string(), b"1".to_vec()),
            ]
        );
        let removing = ReplayEdits {
            path: Some("/q?b=2".into()),
            headers: vec![("authorization".into(), None)],
            ..ReplayEdits::default()
        };
        let (target, request) = apply_edits(target, request, &removing);
        assert_eq!(
            target.uri_for(&request.path, &request.query).to_string(),
            "http://127.0.0.1:3000/q?b=2"
        );
        assert!(!request.headers.iter().any(|(n, _)| n == "Authorization"));
    }

    /// A local server that answers every request 200 with its body, on 127.0.0.1:0.
    async fn echo_server() -> (std::net::SocketAddr, mpsc::Receiver<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 64 * 1024];
                let mut len = 0;
                // Read the head and a Content-Length body; these requests are small.
                let body = loop {
                    let n = stream.read(&mut buf[len..]).await.unwrap();
                    len += n;
                    let text = String::from_utf8_lossy(&buf[..len]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let want: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if len >= end + 4 + want {
                            break buf[end + 4..end + 4 + want].to_vec();
                        }
                    }
                    assert!(n > 0, "connection closed early");
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await.unwrap();
                stream.write_all(&body).await.unwrap();
                let _ = tx.send(body).await;
            }
        });
        (addr, rx)
    }

    /// Asks the replay server for a replay of `original`, as the inspector does.
    async fn ask(
        replays: &mpsc::Sender<ReplayRequest>,
        original: DeliveryId,
        body: Option<Bytes>,
    ) -> Result<Delivery, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        replays
            .send(ReplayRequest {
                original,
                body,
                edits: ReplayEdits::default(),
                reply,
            })
            .await
            .unwrap();
        answer.await.unwrap()
    }

    #[tokio::test]
    async fn listen_serves_inspector_replays_through_the_recorder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let (addr, mut received) = echo_server().await;
        let original = stored(&format!("http://{addr}/hooks/sub?a=1"));
        // Recorded while listen forwarded to another port: replays follow listen's target now.
        let mut moved = stored("http://127.0.0.1:9/hooks/sub?a=1");
        moved.id = DeliveryId::parse("def456").unwrap();
        CaptureStore::open(&path)
            .unwrap()
            .insert_batch(&mut [original.clone(), moved.clone()])
            .unwrap();
        let (screen_tx, mut screen_rx) = mpsc::channel(16);
        let (recorder, thread) = crate::recorder::spawn(
            CaptureStore::open(&path).unwrap(),
            crate::recorder::ScreenSink {
                events: screen_tx,
                lossless: true,
            },
            crate::recorder::Retention::UNLIMITED,
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let fallback = Forwarder::new(Target::parse(&format!("http://{addr}/hooks")).unwrap());
        let (replays, task) = spawn_server(path.clone(), fallback, recorder, shutdown.clone());

        let replayed = ask(
            &replays,
            original.id.clone(),
            Some(Bytes::from_static(b"{\"edited\":true}")),
        )
        .await
        .unwrap();
        assert!(replayed.seq > 0, "committed");
        assert_eq!(replayed.replay_of, Some(original.id.clone()));
        assert_eq!(replayed.status(), Some(200));
        assert_eq!(replayed.target, format!("http://{addr}/hooks/sub?a=1"));
        assert_eq!(received.recv().await.unwrap(), b"{\"edited\":true}");

        let replayed_moved = ask(&replays, moved.id.clone(), None).await.unwrap();
        assert_eq!(replayed_moved.status(), Some(200), "{replayed_moved:?}");
        assert_eq!(
            replayed_moved.target,
            format!("http://{addr}/hooks/sub?a=1")
        );
        assert_eq!(received.recv().await.unwrap(), b"{}");

        let unknown = ask(&replays, DeliveryId::parse("zzz").unwrap(), None).await;
        assert!(unknown.unwrap_err().contains("no delivery with id zzz"));

        shutdown.cancel();
        task.await.unwrap();
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        let Ok(crate::status::ListenEvent::Deliveries(shown)) = screen_rx.try_recv() else {
            panic!("the replay was not shown")
        };
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].id, replayed.id);
    }

    #[test]
    fn the_current_listen_target_wins_unless_to_recorded_or_forward_to() {
        let d = stored("http://127.0.0.1:3000/hooks/sub?a=1");
        let moved = (Target::parse("http://127.0.0.1:4000/hooks").unwrap(), 42);
        let uri = |route: Route<'_>| {
            let (target, request) = prepare(&d, route, None).unwrap();
            target.uri_for(&request.path, &request.query).to_string()
        };
        let (r, note) = route(&d, None, false, Some(&moved));
        assert_eq!(uri(r), "http://127.0.0.1:4000/hooks/sub?a=1");
        let note = note.unwrap();
        assert!(
            note.contains("http://127.0.0.1:4000/, the current target of listen PID 42")
                && note.contains("recorded at http://127.0.0.1:3000/")
                && note.contains("--to-recorded"),
            "{note}"
        );
        let (r, note) = route(&d, None, true, Some(&moved));
        assert_eq!(uri(r), "http://127.0.0.1:3000/hooks/sub?a=1");
        assert_eq!(note, None);
        let to = Target::parse("http://127.0.0.1:5000/v2").unwrap();
        let (r, note) = route(&d, Some(&to), false, Some(&moved));
        assert_eq!(uri(r), "http://127.0.0.1:5000/v2?a=1");
        assert_eq!(note, None);
        // The same origin as recorded: nothing to say.
        let same = (Target::parse("http://127.0.0.1:3000/other").unwrap(), 42);
        assert_eq!(route(&d, None, false, Some(&same)).1, None);
        let (r, _) = route(&d, None, false, None);
        assert_eq!(uri(r), "http://127.0.0.1:3000/hooks/sub?a=1");
    }

    #[test]
    fn skipped_deliveries_need_a_target() {
        let mut d = stored("");
        d.skipped = true;
        // Not even a running listen's: the user names where with --forward-to.
        let running = (Target::parse("http://127.0.0.1:4000/hooks").unwrap(), 42);
        assert!(matches!(
            route(&d, None, false, Some(&running)),
            (Route::Recorded, None)
        ));
        let err = prepare(&d, Route::Recorded, None).err().unwrap();
        assert!(err.contains("pass --forward-to URL"), "{err}");
    }
}
