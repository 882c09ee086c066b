//! The capture store writer: one thread owns the [`CaptureStore`] and commits everything that
//! is waiting in one transaction, so recording never sits on the forwarding path. Only after a
//! commit does a delivery reach the screen, and only then does the relay hear `Recorded` for a
//! queued delivery (so it may drop it from its offline queue).

use std::thread::JoinHandle;

use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::protocol::ClientMessage;
use illumitunnel::store::CaptureStore;
use illumitunnel::{Delivery, DeliveryId};
use tokio::sync::{mpsc, oneshot};

use crate::session::Outbound;
use crate::status::ListenEvent;

/// Deliveries waiting for the writer before forwarders wait for it.
const QUEUE: usize = 4096;
/// Most deliveries committed in one transaction.
const MAX_BATCH: usize = 1024;

/// A forwarded delivery on its way to the capture store.
#[derive(Debug)]
pub struct Capture {
    /// Delivery id from the relay.
    pub id: DeliveryId,
    /// When the relay received it, Unix ms.
    pub received_at_ms: i64,
    /// Tunnel it came through.
    pub tunnel: String,
    /// Whether it came from the relay's offline queue (acknowledged with `Recorded`).
    pub queued: bool,
    /// Full URL it was forwarded to.
    pub target: String,
    /// The request as it arrived.
    pub request: RequestRecord,
    /// The local answer, or why there was none.
    pub result: Result<ResponseRecord, String>,
    /// Forwarding time, microseconds.
    pub duration_us: i64,
    /// Tunnel, or Trigger when `trigger` sent it through the tunnel.
    pub source: Source,
    /// Whether `--events` left it out (answered 200, not forwarded).
    pub skipped: bool,
}

impl Capture {
    fn into_delivery(self) -> Delivery {
        // Parsing the envelope happens here, on the writer thread, off the forwarding path.
        let mut d = Delivery::new(self.id, self.received_at_ms, self.source, self.request);
        d.tunnel = Some(self.tunnel);
        d.queued = self.queued;
        d.skipped = self.skipped;
        // A skipped delivery went nowhere.
        d.target = if self.skipped {
            String::new()
        } else {
            self.target
        };
        d.duration_us = self.duration_us;
        match self.result {
            Ok(response) => d.response = Some(response),
            Err(error) => d.error = Some(error),
        }
        d
    }
}

enum Command {
    Record(Box<Capture>),
    /// A finished delivery (a replay), answered with itself once committed.
    Insert(Box<Delivery>, oneshot::Sender<Delivery>),
    Answer(DeliveryId, oneshot::Sender<Option<Recorded>>),
}

/// The local server's answer to a delivery already recorded, or why there was none.
pub type Recorded = Result<ResponseRecord, String>;

fn recorded_answer(d: &Delivery) -> Recorded {
    match (&d.response, &d.error) {
        (Some(response), _) => Ok(response.clone()),
        (None, Some(error)) => Err(error.clone()),
        (None, None) => Err("the local server's answer was not recorded".into()),
    }
}

/// A delivery waiting for the next commit, and who wants to hear when it is stored.
struct Pending {
    delivery: Delivery,
    committed: Option<oneshot::Sender<Delivery>>,
}

/// Where committed deliveries are shown.
pub struct ScreenSink {
    /// The screen's channel.
    pub events: mpsc::Sender<ListenEvent>,
    /// Line and JSON output must show every delivery (wait for the screen); the inspector
    /// re-reads the store instead (drop the event, send `StoreChanged`).
    pub lossless: bool,
}

/// Sends work to the writer thread; the thread ends when every handle is dropped.
#[derive(Clone)]
pub struct RecorderHandle {
    tx: mpsc::Sender<Command>,
}

impl RecorderHandle {
    /// Queues a delivery for the next commit; waits only when the writer is far behind.
    pub async fn record(&self, capture: Capture) {
        if self
            .tx
            .send(Command::Record(Box::new(capture)))
            .await
            .is_err()
        {
            tracing::error!("the capture store writer stopped; a delivery was not recorded");
        }
    }

    /// Commits a finished delivery (a replay) and returns it as stored (`seq` set), after it
    /// reached the screen; `None` when the writer has stopped.
    pub async fn insert(&self, delivery: Delivery) -> Option<Delivery> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Insert(Box::new(delivery), tx))
            .await
            .ok()?;
        rx.await.ok()
    }

    /// The recorded answer to a delivery with this id, if it is stored (or about to be), after
    /// everything queued before; a redelivery is answered with it instead of forwarding again.
    pub async fn answer(&self, id: DeliveryId) -> Option<Recorded> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Answer(id, tx)).await.ok()?;
        rx.await.ok().flatten()
    }
}

/// Starts the writer thread. `acks` carries `Recorded` back to the relay.
pub fn spawn(
    store: CaptureStore,
    screen: ScreenSink,
    acks: mpsc::Sender<Outbound>,
) -> std::io::Result<(RecorderHandle, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("capture-store".into())
        .spawn(move || {
            Writer {
                store,
                screen,
                acks,
                screen_behind: false,
            }
            .run(rx)
        })?;
    Ok((RecorderHandle { tx }, thread))
}

/// How long the writer waits for more deliveries before committing a batch.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

struct Writer {
    store: CaptureStore,
    screen: ScreenSink,
    acks: mpsc::Sender<Outbound>,
    screen_behind: bool,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch: Vec<Pending> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            let mut gathered = false;
            loop {
                while let Some(command) = next.take() {
                    match command {
                        Command::Record(capture) => batch.push(Pending {
                            delivery: capture.into_delivery(),
                            committed: None,
                        }),
                        Command::Insert(delivery, reply) => batch.push(Pending {
                            delivery: *delivery,
                            committed: Some(reply),
                        }),
                        Command::Answer(id, reply) => {
                            let found = match batch.iter().find(|p| p.delivery.id == id) {
                                Some(p) => Some(recorded_answer(&p.delivery)),
                                // `contains` first: `get` would also accept another id with this prefix.
                                None if self.store.contains(&id).unwrap_or(false) => self
                                    .store
                                    .get(id.as_str())
                                    .ok()
                                    .flatten()
                                    .map(|d| recorded_answer(&d)),
                                None => None,
                            };
                            let _ = reply.send(found);
                        }
                    }
                    if batch.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if gathered || batch.is_empty() || batch.len() >= MAX_BATCH {
                    break;
                }
                // Let a burst gather: one transaction and one wake-up of this thread (and of the
                // screen) for many deliveries instead of one each. Nobody waits on this: the
                // senders were answered before their deliveries got here.
                std::thread::sleep(GATHER);
                gathered = true;
                next = rx.try_recv().ok();
                if next.is_none() {
                    break;
                }
            }
            self.commit(&mut batch);
        }
        self.commit(&mut batch);
    }

    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let (mut deliveries, replies): (Vec<Delivery>, Vec<_>) =
            batch.drain(..).map(|p| (p.delivery, p.committed)).unzip();
        let inserted = match self.store.insert_batch(&mut deliveries) {
            Ok(inserted) => inserted,
            Err(err) => {
                tracing::error!(%err, count = deliveries.len(), "could not record deliveries");
                // Still show them: the user should see traffic even when the store fails.
                vec![true; deliveries.len()]
            }
        };
        for ((d, is_new), reply) in deliveries.into_iter().zip(inserted).zip(replies) {
            if d.queued {
                let ack = Outbound::any(ClientMessage::Recorded { id: d.id.clone() });
                // The session is gone when this fails; the relay redelivers and we dedupe by id.
                let _ = self.acks.blocking_send(ack);
            }
            match reply {
                Some(reply) => {
                    if is_new {
                        self.show(ListenEvent::Delivery(Box::new(d.clone())));
                    }
                    let _ = reply.send(d);
                }
                None if is_new => self.show(ListenEvent::Delivery(Box::new(d))),
                None => {}
            }
        }
        if self.screen_behind
            && self
                .screen
                .events
                .try_send(ListenEvent::StoreChanged)
                .is_ok()
        {
            self.screen_behind = false;
        }
    }

    fn show(&mut self, event: ListenEvent) {
        if self.screen.lossless {
            let _ = self.screen.events.blocking_send(event);
        } else if let Err(mpsc::error::TrySendError::Full(_)) = self.screen.events.try_send(event) {
            self.screen_behind = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use illumitunnel::delivery::Source;

    fn capture(id: &str, queued: bool) -> Capture {
        Capture {
            id: DeliveryId::parse(id).unwrap(),
            received_at_ms: 1,
            tunnel: "my-app".into(),
            queued,
            target: "http://127.0.0.1:3000/".into(),
            request: RequestRecord {
                method: "POST".into(),
                path: "/".into(),
                body: Bytes::from_static(
                    br#"{"event":"ticket.created","timestamp":"t","data":{"id":"tkt_1"}}"#,
                ),
                ..Default::default()
            },
            result: Ok(ResponseRecord {
                status: 200,
                ..Default::default()
            }),
            duration_us: 5,
            source: Source::Tunnel,
            skipped: false,
        }
    }

    #[tokio::test]
    async fn commits_then_shows_then_acknowledges_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
        let (screen_tx, mut screen_rx) = mpsc::channel(16);
        let (ack_tx, mut ack_rx) = mpsc::channel(16);
        let (handle, thread) = spawn(
            store,
            ScreenSink {
                events: screen_tx,
                lossless: true,
            },
            ack_tx,
        )
        .unwrap();
        handle.record(capture("aaa1", false)).await;
        handle.record(capture("aaa2", true)).await;
        assert!(handle
            .answer(DeliveryId::parse("zzz9").unwrap())
            .await
            .is_none());
        let answer = handle.answer(DeliveryId::parse("aaa2").unwrap()).await;
        assert_eq!(answer.map(|a| a.map(|r| r.status)), Some(Ok(200)));
        assert!(
            handle
                .answer(DeliveryId::parse("aaa").unwrap())
                .await
                .is_none(),
            "a prefix is not an id"
        );
        // A redelivery of a stored id is acknowledged again but not shown twice.
        handle.record(capture("aaa2", true)).await;
        drop(handle);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();

        let mut shown = Vec::new();
        while let Ok(ListenEvent::Delivery(d)) = screen_rx.try_recv() {
            assert!(d.seq > 0, "shown before commit");
            shown.push(d);
        }
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].event.as_deref(), Some("ticket.created"));
        assert!(shown[1].duplicate, "same dedup key as the first");
        let mut acks = 0;
        while let Ok(a) = ack_rx.try_recv() {
            assert_eq!(
                a.message,
                ClientMessage::Recorded {
                    id: DeliveryId::parse("aaa2").unwrap()
                }
            );
            acks += 1;
        }
        assert_eq!(acks, 2);
        let store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
        assert_eq!(store.count(&Default::default()).unwrap(), 2);
    }

    #[tokio::test]
    async fn inserted_deliveries_come_back_committed_and_shown() {
        let dir = tempfile::tempdir().unwrap();
        let store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
        let (screen_tx, mut screen_rx) = mpsc::channel(16);
        let (ack_tx, _ack_rx) = mpsc::channel(16);
        let (handle, thread) = spawn(
            store,
            ScreenSink {
                events: screen_tx,
                lossless: true,
            },
            ack_tx,
        )
        .unwrap();
        let mut skipped = capture("ccc1", false);
        skipped.skipped = true;
        skipped.source = Source::Trigger;
        handle.record(skipped).await;
        let mut replay = capture("ccc2", false).into_delivery();
        replay.source = Source::Replay;
        replay.replay_of = DeliveryId::parse("ccc1");
        let committed = handle.insert(replay).await.unwrap();
        assert!(committed.seq > 0);
        assert!(!committed.duplicate, "replays are never duplicates");
        drop(handle);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        let Ok(ListenEvent::Delivery(first)) = screen_rx.try_recv() else {
            panic!("no delivery shown")
        };
        assert!(first.skipped && first.target.is_empty());
        assert_eq!(first.source, Source::Trigger);
        let Ok(ListenEvent::Delivery(second)) = screen_rx.try_recv() else {
            panic!("replay not shown")
        };
        assert_eq!(second.replay_of.as_ref().map(|d| d.as_str()), Some("ccc1"));
    }

    #[tokio::test]
    async fn lossy_screen_gets_store_changed_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
        let (screen_tx, mut screen_rx) = mpsc::channel(1);
        let (ack_tx, _ack_rx) = mpsc::channel(16);
        let (handle, thread) = spawn(
            store,
            ScreenSink {
                events: screen_tx,
                lossless: false,
            },
            ack_tx,
        )
        .unwrap();
        for i in 0..5 {
            handle.record(capture(&format!("b{i}"), false)).await;
        }
        drop(handle);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        let mut events = 0;
        while screen_rx.try_recv().is_ok() {
            events += 1;
        }
        assert!((1..5).contains(&events), "{events}");
    }
}
