//! The capture store against real SQLite files: round trips, filters, retention, the write-ahead
//! log's bounds, durable commits, migrations and file modes.

use super::rows::LARGE_BODY;
use super::*;
use crate::delivery::{RequestRecord, ResponseRecord};

fn delivery(id: &str, body: &str) -> Delivery {
    let request = RequestRecord {
        method: "POST".into(),
        path: "/webhooks/illumichat".into(),
        query: String::new(),
        headers: vec![("x-raw".into(), vec![0xff, 0x01])],
        body: Bytes::from(body.to_string()),
    };
    let mut d = Delivery::new(
        DeliveryId::parse(id).unwrap(),
        1_000,
        Source::Tunnel,
        request,
    );
    d.response = Some(ResponseRecord {
        status: 200,
        headers: vec![],
        body: Bytes::from_static(&[0, 1, 2]),
    });
    d
}

const TICKET: &str =
    r#"{"event":"ticket.created","timestamp":"2025-06-15T14:30:00Z","data":{"id":"tkt_1"}}"#;

#[test]
fn round_trip_dedup_and_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CaptureStore::open(&dir.path().join("sub/c.db")).unwrap();
    let mut batch = vec![
        delivery("aaa1", TICKET),
        delivery("bbb2", TICKET),
        delivery("ccc3", "not json"),
    ];
    assert_eq!(
        store.insert_batch(&mut batch).unwrap(),
        vec![true, true, true]
    );
    assert!(!batch[0].duplicate);
    assert!(batch[1].duplicate);
    let got = store.get("bbb2").unwrap().unwrap();
    assert_eq!(got, batch[1]);
    // Same id again (a queue redelivery) is not stored twice.
    let mut again = vec![delivery("aaa1", TICKET)];
    assert_eq!(store.insert_batch(&mut again).unwrap(), vec![false]);
    assert_eq!(store.count(&Filter::default()).unwrap(), 3);
    assert!(store.contains(&DeliveryId::parse("ccc3").unwrap()).unwrap());
}

#[test]
fn prefix_lookup_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let mut batch = vec![
        delivery("abc1", TICKET),
        delivery("abc2", "x"),
        delivery("xyz9", "y"),
    ];
    store.insert_batch(&mut batch).unwrap();
    assert_eq!(store.get("xy").unwrap().unwrap().id.as_str(), "xyz9");
    assert!(matches!(store.get("abc"), Err(StoreError::Ambiguous(_))));
    assert!(store.get("nope").unwrap().is_none());
    assert!(store.get("%").unwrap().is_none());
    let ev = Filter {
        event: Some("ticket.created".into()),
        ..Filter::default()
    };
    assert_eq!(store.list_newest(&ev, 10).unwrap().len(), 1);
    let newest = store.list_newest(&Filter::default(), 2).unwrap();
    assert_eq!(
        newest.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["xyz9", "abc2"]
    );
    let text = Filter {
        text: Some("tkt_".into()),
        ..Filter::default()
    };
    assert_eq!(store.count(&text).unwrap(), 1);
    let counts = store.counts().unwrap();
    assert_eq!((counts.total, counts.ok), (3, 3));
}

#[test]
fn large_bodies_round_trip_byte_exact() {
    // Also through the listing path, which fills bodies the same way.
    let dir = tempfile::tempdir().unwrap();
    let mut store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let big: Vec<u8> = (0..(LARGE_BODY * 3 + 7))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let mut d = delivery("big1", "x");
    d.request.body = Bytes::from(big.clone());
    d.response.as_mut().unwrap().body = Bytes::from(big[..LARGE_BODY + 1].to_vec());
    store.insert_batch(&mut [d]).unwrap();
    let got = store.get("big1").unwrap().unwrap();
    assert_eq!(got.request.body.as_ref(), big.as_slice());
    assert_eq!(got.response.unwrap().body.as_ref(), &big[..LARGE_BODY + 1]);
    let listed = store.list_newest(&Filter::default(), 1).unwrap();
    assert_eq!(listed[0].request.body.len(), big.len());
}

#[test]
fn prune_keeps_the_newest_within_the_cap_and_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut store = CaptureStore::open(&path).unwrap();
    for i in 0..20 {
        let mut d = delivery(&format!("big{i:02}"), "x");
        d.received_at_ms = 1_000 + i;
        d.request.body = Bytes::from(vec![b'a'; LARGE_BODY * 2]);
        store.insert_batch(std::slice::from_mut(&mut d)).unwrap();
    }
    store
        .conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let full = std::fs::metadata(&path).unwrap().len();
    let cap = 3 * LARGE_BODY as u64 * 2;
    let pruned = store.prune(cap, 1_002).unwrap();
    assert!(store.used_bytes().unwrap() <= cap);
    let left = store.list_oldest(&Filter::default(), 100).unwrap();
    assert!(!left.is_empty() && left.len() < 4, "{}", left.len());
    assert_eq!(left.last().unwrap().id.as_str(), "big19", "newest stays");
    assert_eq!(pruned.deliveries, 20 - left.len() as u64);
    let now = std::fs::metadata(&path).unwrap().len();
    assert!(now <= cap + 64 * 1024, "file {now} bytes, was {full}");
    assert!(pruned.released_bytes > 0);
    // Age alone: everything older than the newest goes.
    store.prune(u64::MAX, 1_019).unwrap();
    assert_eq!(store.count(&Filter::default()).unwrap(), 1);
}

#[test]
fn a_wal_past_the_cap_is_emptied_without_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    // One commit each: every commit rewrites index and table pages into the WAL.
    for i in 0..20 {
        let mut d = delivery(&format!("small{i:02}"), TICKET);
        store.insert_batch(std::slice::from_mut(&mut d)).unwrap();
    }
    let cap = 512 * 1024;
    assert!(store.used_bytes().unwrap() < cap);
    assert!(store.disk_bytes() > cap, "{} bytes", store.disk_bytes());
    let pruned = store.prune(cap, 0).unwrap();
    assert_eq!(pruned.deliveries, 0);
    assert!(store.disk_bytes() <= cap, "{} bytes", store.disk_bytes());
    assert_eq!(store.count(&Filter::default()).unwrap(), 20);
}

#[test]
fn answered_originals_are_counted_after_replays_and_skips_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let mut rows = vec![delivery("orig1", TICKET)];
    let mut unanswered = delivery("noanswer", TICKET);
    unanswered.response = None;
    rows.push(unanswered);
    let mut skipped = delivery("skipped", TICKET);
    skipped.skipped = true;
    rows.push(skipped);
    for i in 0..300 {
        let mut replay = delivery(&format!("replay{i:03}"), TICKET);
        replay.source = Source::Replay;
        rows.push(replay);
    }
    store.insert_batch(&mut rows).unwrap();
    let originals = Filter {
        answered_originals: true,
        ..Filter::default()
    };
    let newest = store.list_newest(&originals, 1).unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].id.as_str(), "orig1");
    assert_eq!(store.count(&originals).unwrap(), 1);
}

#[test]
fn a_capped_store_keeps_its_wal_to_an_eighth_of_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut store = CaptureStore::open(&path).unwrap();
    let cap: u64 = 1024 * 1024;
    store.limit_wal(cap).unwrap();
    let wal = || std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
    let mut largest = 0;
    for i in 0..40 {
        let mut d = delivery(&format!("wal{i:02}"), TICKET);
        d.request.body = Bytes::from(vec![b'a'; 8 * 1024]);
        store.insert_batch(std::slice::from_mut(&mut d)).unwrap();
        largest = largest.max(wal());
    }
    // A checkpoint follows the commit that passes cap / 8; one commit here is a few pages.
    assert!(
        largest <= cap / 8 + 192 * 1024,
        "the WAL reached {largest} bytes"
    );
    assert_eq!(store.count(&Filter::default()).unwrap(), 40);
}

#[test]
fn an_old_store_switches_to_incremental_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
            .unwrap();
        let mode: i64 = conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 0);
    }
    let store = CaptureStore::open(&path).unwrap();
    let mode: i64 = store
        .conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, AUTO_VACUUM_INCREMENTAL);
}

#[test]
fn a_full_store_fails_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CaptureStore::open_capped(&dir.path().join("c.db"), 16).unwrap();
    let mut d = delivery("full1", "x");
    d.request.body = Bytes::from(vec![b'a'; LARGE_BODY * 2]);
    let err = store
        .insert_batch(std::slice::from_mut(&mut d))
        .unwrap_err();
    assert_eq!(
        err.failing_sentence(),
        "capture store failing: database or disk is full; free disk space or pass --store PATH"
    );
}

#[test]
fn file_is_private_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    drop(CaptureStore::open(&path).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(CaptureStore::open(&path).is_ok());
}

#[cfg(unix)]
#[test]
fn store_wal_shm_and_a_new_folder_are_private_and_an_old_store_is_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/c.db");
    let mut store = CaptureStore::open(&path).unwrap();
    store
        .insert_batch(std::slice::from_mut(&mut delivery("w1", "x")))
        .unwrap();
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    for file in [path.clone(), sidecar(&path, "-wal"), sidecar(&path, "-shm")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(store);

    let old = dir.path().join("old.db");
    drop(CaptureStore::open(&old).unwrap());
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = CaptureStore::open(&old).unwrap();
    assert_eq!(mode(&old), 0o600);
    assert_eq!(mode(&sidecar(&old, "-wal")), 0o600);
    drop(store);
}

#[test]
fn unwritable_location_is_a_clear_error() {
    let err = CaptureStore::open(Path::new("/proc/illumitunnel/c.db"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("pass --store PATH"), "{err}");
}

#[test]
fn a_durable_commit_runs_at_synchronous_full_and_the_others_at_normal() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let synchronous = |s: &CaptureStore| -> i64 {
        s.conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    };
    const NORMAL: i64 = 1;
    const FULL: i64 = 2;
    assert_eq!(synchronous(&store), NORMAL);
    let mut batch = vec![delivery("durable1", "{}")];
    let during = store
        .durably(|s| {
            let during = synchronous(s);
            s.insert_batch(&mut batch)
                .map(|inserted| (during, inserted))
        })
        .unwrap();
    assert_eq!(during, (FULL, vec![true]));
    assert_eq!(
        synchronous(&store),
        NORMAL,
        "back to NORMAL after the commit"
    );
    assert!(store.contains(&batch[0].id).unwrap());
    // A failed write leaves the connection at NORMAL too.
    let failed =
        store.durably(|_| -> Result<(), StoreError> { Err(StoreError::Ambiguous("x".into())) });
    assert!(failed.is_err());
    assert_eq!(synchronous(&store), NORMAL);
    store.sync().unwrap();
}

#[test]
fn retries_after_failures_are_numbered_and_a_repeat_of_a_delivered_one_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let failed = |id: &str, status: Option<u16>| {
        let mut d = delivery(id, TICKET);
        d.response = status.map(|status| ResponseRecord {
            status,
            headers: vec![],
            body: Bytes::new(),
        });
        if status.is_none() {
            d.error = Some("connection refused".into());
        }
        d
    };
    let mut slow = delivery("r4", TICKET);
    slow.duration_us = 15_000_000;
    let mut batch = vec![
        failed("r1", Some(500)),
        failed("r2", None),
        delivery("r3", TICKET),
    ];
    batch[2].response.as_mut().unwrap().status = 503;
    store.insert_batch(&mut batch).unwrap();
    let mut later = vec![slow, delivery("r5", TICKET), delivery("r6", TICKET)];
    store.insert_batch(&mut later).unwrap();
    let marks: Vec<(bool, Option<u32>)> = batch
        .iter()
        .chain(&later)
        .map(|d| (d.duplicate, d.retry))
        .collect();
    assert_eq!(
        marks,
        vec![
            (false, None),
            (false, Some(1)),
            (false, Some(2)),
            // Answered 200, but after IllumiChat's 10 s: still a failure it retries.
            (false, Some(3)),
            (false, Some(4)),
            // r5 was delivered: what comes after is a true duplicate.
            (true, None),
        ]
    );
    assert_eq!(store.get("r3").unwrap().unwrap().retry, Some(2));
    assert!(store.get("r6").unwrap().unwrap().duplicate);
}

#[test]
fn the_retry_count_stops_at_its_cap_and_a_delivered_event_repeated_stays_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let failing = |n: usize| {
        let mut d = delivery(&format!("f{n}"), TICKET);
        d.response.as_mut().unwrap().status = 500;
        d
    };
    let mut failures: Vec<Delivery> = (0..super::rows::MAX_ATTEMPTS_READ + 5)
        .map(failing)
        .collect();
    store.insert_batch(&mut failures).unwrap();
    let cap = super::rows::MAX_ATTEMPTS_READ as u32;
    assert_eq!(failures[3].retry, Some(3));
    assert_eq!(failures.last().unwrap().retry, Some(cap));

    // Another event, delivered once and then sent again and again: every repeat is a duplicate.
    let other =
        r#"{"event":"lead.captured","timestamp":"2025-06-15T14:31:00Z","data":{"id":"lead_1"}}"#;
    let mut repeats: Vec<Delivery> = (0..200)
        .map(|n| delivery(&format!("d{n}"), other))
        .collect();
    store.insert_batch(&mut repeats).unwrap();
    assert_eq!((repeats[0].duplicate, repeats[0].retry), (false, None));
    assert!(repeats[1..]
        .iter()
        .all(|d| d.duplicate && d.retry.is_none()));
}

// Web inspector: status filters and body-less listings.

#[test]
fn status_filters_and_summaries_without_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CaptureStore::open(&dir.path().join("c.db")).unwrap();
    let mut not_found = delivery("bbb2", "x");
    not_found.response.as_mut().unwrap().status = 404;
    let mut failed = delivery("ccc3", "y");
    failed.response = None;
    failed.error = Some("connection refused".into());
    let mut large = delivery("ddd4", &"z".repeat(LARGE_BODY + 1));
    large.response.as_mut().unwrap().status = 201;
    let mut batch = vec![delivery("aaa1", TICKET), not_found, failed, large];
    store.insert_batch(&mut batch).unwrap();
    let ids =
        |status: Option<StatusFilter>| {
            let filter = Filter {
                status,
                ..Filter::default()
            };
            let found = store.list_newest_summaries(&filter, 10).unwrap();
            assert!(found.iter().all(|d| d.request.body.is_empty()
                && d.response.as_ref().is_none_or(|r| r.body.is_empty())));
            found
                .iter()
                .map(|d| d.id.as_str().to_string())
                .collect::<Vec<_>>()
        };
    assert_eq!(ids(StatusFilter::parse("2XX")), ["ddd4", "aaa1"]);
    assert_eq!(ids(StatusFilter::parse("4xx")), ["bbb2"]);
    assert_eq!(ids(StatusFilter::parse("404")), ["bbb2"]);
    assert_eq!(ids(StatusFilter::parse("err")), ["ccc3"]);
    assert_eq!(ids(None), ["ddd4", "ccc3", "bbb2", "aaa1"]);
    for bad in ["6xx", "0xx", "22xx", "99", "600", "abc", ""] {
        assert_eq!(StatusFilter::parse(bad), None, "{bad}");
    }
}
