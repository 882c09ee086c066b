//! The store writer against real SQLite files: commit before show and acknowledge, a store that
//! really fills up (nothing acknowledged, failing and recovered on the screen), a lagging
//! inspector told to re-read, and retention under a flood.

use super::*;
use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};

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

fn big(id: &str, queued: bool, len: usize) -> Capture {
    let mut c = capture(id, queued);
    c.received_at_ms = illumitunnel::now_ms();
    c.request.body = Bytes::from(vec![b'x'; len]);
    c
}

fn start(
    store: CaptureStore,
    capacity: usize,
    lossless: bool,
    retention: Retention,
) -> (RecorderHandle, JoinHandle<()>, mpsc::Receiver<ListenEvent>) {
    let (screen_tx, screen_rx) = mpsc::channel(capacity);
    let (handle, thread) = spawn(
        store,
        ScreenSink {
            events: screen_tx,
            lossless,
        },
        retention,
    )
    .unwrap();
    (handle, thread, screen_rx)
}

async fn stop(handle: RecorderHandle, thread: JoinHandle<()>) {
    drop(handle);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}

/// The next event on the screen within 10 s.
async fn next_event(rx: &mut mpsc::Receiver<ListenEvent>) -> ListenEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no screen event within 10 s")
        .expect("screen channel closed")
}

#[tokio::test]
async fn commits_then_shows_then_acknowledges_redeliveries() {
    let dir = tempfile::tempdir().unwrap();
    let store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let (handle, thread, mut screen_rx) = start(store, 16, true, Retention::UNLIMITED);
    handle.record(capture("aaa1", false)).await;
    assert_eq!(handle.record_committed(capture("aaa2", true)).await, Ok(()));
    assert!(handle
        .answer(DeliveryId::parse("zzz9").unwrap())
        .await
        .is_none());
    let known = handle
        .answer(DeliveryId::parse("aaa2").unwrap())
        .await
        .unwrap();
    assert_eq!(known.answer.map(|r| r.status), Ok(200));
    assert!(known.committed);
    assert!(
        handle
            .answer(DeliveryId::parse("aaa").unwrap())
            .await
            .is_none(),
        "a prefix is not an id"
    );
    // A redelivery of a stored id is committed (already there) but not shown twice.
    assert_eq!(handle.record_committed(capture("aaa2", true)).await, Ok(()));
    stop(handle, thread).await;

    let mut shown = Vec::new();
    while let Ok(event) = screen_rx.try_recv() {
        let ListenEvent::Deliveries(batch) = event else {
            panic!("unexpected {event:?}")
        };
        assert!(!batch.is_empty(), "an empty batch shown");
        for d in batch {
            assert!(d.seq > 0, "shown before commit");
            shown.push(d);
        }
    }
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[0].event.as_deref(), Some("ticket.created"));
    assert!(shown[1].duplicate, "same dedup key as the first");
    let store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    assert_eq!(store.count(&Default::default()).unwrap(), 2);
}

#[tokio::test]
async fn inserted_deliveries_come_back_committed_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let (handle, thread, mut screen_rx) = start(store, 16, true, Retention::UNLIMITED);
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
    stop(handle, thread).await;
    let mut shown = Vec::new();
    while let Ok(ListenEvent::Deliveries(batch)) = screen_rx.try_recv() {
        shown.extend(batch);
    }
    let [first, second] = &shown[..] else {
        panic!("shown: {shown:?}")
    };
    assert!(first.skipped && first.target.is_empty());
    assert_eq!(first.source, Source::Trigger);
    assert_eq!(second.replay_of.as_ref().map(|d| d.as_str()), Some("ccc1"));
}

#[tokio::test]
async fn lossy_screen_gets_store_changed_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let (handle, thread, mut screen_rx) = start(store, 1, false, Retention::UNLIMITED);
    // The first commit fills the screen's one slot; the second finds it full.
    assert_eq!(handle.record_committed(capture("b0", false)).await, Ok(()));
    assert_eq!(handle.record_committed(capture("b1", false)).await, Ok(()));
    let first = next_event(&mut screen_rx).await;
    assert!(
        matches!(&first, ListenEvent::Deliveries(d) if d.len() == 1 && d[0].id.as_str() == "b0"),
        "{first:?}"
    );
    // Room again: the writer tells the screen to re-read instead of the dropped events,
    // even though nothing else arrives.
    let second = next_event(&mut screen_rx).await;
    assert!(matches!(second, ListenEvent::StoreChanged), "{second:?}");
    stop(handle, thread).await;
    assert!(
        screen_rx.try_recv().is_err(),
        "nothing more after the re-read"
    );
}

#[tokio::test]
async fn a_full_store_acknowledges_nothing_and_says_so_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = CaptureStore::open_capped(&dir.path().join("c.db"), 40).unwrap();
    let (handle, thread, mut screen_rx) = start(store, 16, true, Retention::UNLIMITED);

    let failed = handle
        .record_committed(big("full1", true, 512 * 1024))
        .await;
    let sentence =
        "capture store failing: database or disk is full; free disk space or pass --store PATH";
    assert_eq!(failed, Err(sentence.to_string()));
    let event = next_event(&mut screen_rx).await;
    assert!(
        matches!(&event, ListenEvent::Store(StoreHealth::Failing(s)) if s == sentence),
        "{event:?}"
    );
    assert!(handle
        .answer(DeliveryId::parse("full1").unwrap())
        .await
        .is_none());

    // A delivery that fits commits: the store is healthy again.
    assert_eq!(
        handle.record_committed(capture("small1", true)).await,
        Ok(())
    );
    let event = next_event(&mut screen_rx).await;
    assert!(
        matches!(&event, ListenEvent::Deliveries(d) if d.len() == 1 && d[0].id.as_str() == "small1"),
        "{event:?}"
    );
    let event = next_event(&mut screen_rx).await;
    assert!(
        matches!(event, ListenEvent::Store(StoreHealth::Recovered)),
        "{event:?}"
    );

    // A live delivery that cannot be stored is kept (a redelivery of it is answered from
    // memory) and never shown as if it were recorded.
    handle.record(big("live1", false, 512 * 1024)).await;
    let event = next_event(&mut screen_rx).await;
    assert!(
        matches!(event, ListenEvent::Store(StoreHealth::Failing(_))),
        "{event:?}"
    );
    let kept = handle
        .answer(DeliveryId::parse("live1").unwrap())
        .await
        .unwrap();
    assert_eq!(kept.answer.map(|r| r.status), Ok(200));
    assert!(!kept.committed, "only in memory: no Recorded for it yet");
    // A replay that cannot be stored says why.
    let replay = big("rep1", false, 512 * 1024).into_delivery();
    assert_eq!(handle.insert(replay).await.unwrap_err(), sentence);
    stop(handle, thread).await;
    while let Ok(event) = screen_rx.try_recv() {
        assert!(!matches!(event, ListenEvent::Deliveries(_)), "{event:?}");
    }
    let store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    assert_eq!(store.count(&Default::default()).unwrap(), 1);
}

#[tokio::test]
async fn a_flood_stays_within_the_size_cap_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let cap: u64 = 2 * 1024 * 1024;
    let body = 300 * 1024;
    let store = CaptureStore::open(&path).unwrap();
    let retention = Retention {
        max_bytes: cap,
        max_age: Duration::from_secs(3600),
    };
    let (handle, thread, _screen_rx) = start(store, 4096, false, retention);
    // One delivery per batch: the file may pass the cap by one batch, never more.
    let batch = body as u64 + 64 * 1024;
    let on_disk = || {
        let len = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        len(path.clone()) + len(dir.path().join("c.db-wal"))
    };
    for i in 0..40 {
        let id = format!("flood{i:02}");
        assert_eq!(handle.record_committed(big(&id, false, body)).await, Ok(()));
        // Pruning follows the commit on the same thread: a lookup waits for it.
        handle.answer(DeliveryId::parse(&id).unwrap()).await;
        let size = on_disk();
        assert!(
            size <= cap + batch,
            "after {id}: {size} bytes on disk (file and WAL)"
        );
    }
    stop(handle, thread).await;
    let store = CaptureStore::open(&path).unwrap();
    let left = store.list_newest(&Default::default(), 100).unwrap();
    assert!(left.len() < 40 && left.len() >= 4, "{} left", left.len());
    let newest: Vec<&str> = left.iter().take(3).map(|d| d.id.as_str()).collect();
    assert_eq!(newest, ["flood39", "flood38", "flood37"]);
}

#[test]
fn only_a_batch_the_session_waits_on_is_committed_durably() {
    let (session, _rx) = oneshot::channel();
    let (replay, _replay_rx) = oneshot::channel();
    assert!(needs_durable_commit(&[
        Waiter::Nobody,
        Waiter::Session(session)
    ]));
    assert!(!needs_durable_commit(&[
        Waiter::Nobody,
        Waiter::Replay(replay)
    ]));
    assert!(!needs_durable_commit(&[]));
}

// Web inspector: the newest committed seq, for its live stream.

#[tokio::test]
async fn the_newest_committed_seq_changes_with_each_commit_and_not_for_a_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let (handle, thread, _screen_rx) = start(store, 16, false, Retention::UNLIMITED);
    let mut committed = handle.committed();
    assert_eq!(*committed.borrow_and_update(), 0);
    assert_eq!(
        handle.record_committed(capture("aaa1", false)).await,
        Ok(())
    );
    assert!(committed.has_changed().unwrap());
    let first = *committed.borrow_and_update();
    assert!(first > 0);
    assert_eq!(
        handle.record_committed(capture("aaa1", false)).await,
        Ok(())
    );
    assert!(
        !committed.has_changed().unwrap(),
        "a redelivery commits nothing new"
    );
    assert_eq!(
        handle.record_committed(capture("aaa2", false)).await,
        Ok(())
    );
    assert!(*committed.borrow_and_update() > first);
    stop(handle, thread).await;
}
