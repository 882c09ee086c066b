//! Short ids against the real `illumitunnel` binary: in a capture store of 100,000 deliveries,
//! `show` names one with 6 to 8 characters, and a prefix two ids share exits 2 with a sentence.

mod support;

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::store::CaptureStore;
use illumitunnel::{Delivery, DeliveryId};
use support::{command, temp_dir, ChildGuard, Finished};

const STORED: usize = 100_000;

fn run(home: &Path, args: &[&str]) -> Finished {
    let mut cmd = command("illumitunnel", home);
    cmd.args(args);
    ChildGuard::run(cmd)
}

/// 100,000 deliveries made the way `listen` makes them (fresh ids, arrival order), in one batch.
fn fill(store: &Path) -> Vec<DeliveryId> {
    let mut deliveries: Vec<Delivery> = (0..STORED)
        .map(|i| {
            let request = RequestRecord {
                method: "POST".into(),
                path: "/webhooks/illumichat".into(),
                query: String::new(),
                headers: vec![("content-type".into(), b"application/json".to_vec())],
                body: Bytes::from(format!(
                    r#"{{"event":"ticket.created","timestamp":"2026-01-01T00:00:00Z","workspaceId":"ws","data":{{"id":"tkt_{i}"}}}}"#
                )),
            };
            let mut d = Delivery::new(
                DeliveryId::generate(),
                1_700_000_000_000 + i as i64,
                Source::Tunnel,
                request,
            );
            d.response = Some(ResponseRecord {
                status: 200,
                headers: vec![],
                body: Bytes::from_static(b"ok"),
            });
            d
        })
        .collect();
    let mut open = CaptureStore::open(store).expect("open the store");
    let inserted = open.insert_batch(&mut deliveries).expect("insert");
    assert!(inserted.iter().all(|new| *new), "every id is new");
    deliveries.into_iter().map(|d| d.id).collect()
}

/// The shortest prefix of `id` no other id starts with.
fn shortest_unique(id: &str, ids: &[DeliveryId]) -> usize {
    (1..=id.len())
        .find(|&n| {
            ids.iter()
                .filter(|other| other.as_str().starts_with(&id[..n]))
                .count()
                == 1
        })
        .unwrap_or(id.len())
}

#[test]
fn show_names_one_of_100000_deliveries_with_6_to_8_characters() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    let ids = fill(&store);
    let store = store.to_str().expect("UTF-8 path");

    // Almost every id is named by its first 6 characters, every one by 8 or fewer here.
    let mut by_prefix: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *by_prefix.entry(&id.as_str()[..6]).or_default() += 1;
    }
    let unique6 = ids
        .iter()
        .filter(|id| by_prefix[&id.as_str()[..6]] == 1)
        .count();
    assert!(
        unique6 * 100 >= STORED * 98,
        "only {unique6} of {STORED} ids have a unique 6-character prefix"
    );

    // Picked from the start, the middle and the end of the store.
    for &i in &[0, STORED / 2, STORED - 1] {
        let id = ids[i].as_str();
        let needed = shortest_unique(id, &ids).max(6);
        assert!(needed <= 8, "{id} needs {needed} characters among {STORED}");
        let prefix = &id[..needed];
        let out = run(home.path(), &["show", prefix, "--json", "--store", store]);
        assert_eq!(out.code(), 0, "show {prefix}: {out:?}");
        let shown: serde_json::Value =
            serde_json::from_str(out.stdout.trim()).expect("show --json prints one object");
        assert_eq!(shown["id"], id, "show {prefix} found another delivery");
        assert_eq!(shown["resource_id"], format!("tkt_{i}"));
    }

    // Newest first: the store lists by arrival, not by id.
    let newest = run(
        home.path(),
        &["events", "--json", "--limit", "3", "--store", store],
    );
    assert_eq!(newest.code(), 0, "{newest:?}");
    let listed: Vec<String> = newest
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one object a line");
            v["id"].as_str().expect("id").to_string()
        })
        .collect();
    let expected: Vec<String> = ids[STORED - 3..]
        .iter()
        .rev()
        .map(|id| id.as_str().to_string())
        .collect();
    assert_eq!(listed, expected);
}

#[test]
fn a_prefix_two_deliveries_share_exits_2_with_a_sentence() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    let ids = fill(&store);
    let store = store.to_str().expect("UTF-8 path");

    // The longest prefix (6 characters or more when one exists) that two ids share.
    let mut sorted: Vec<&str> = ids.iter().map(DeliveryId::as_str).collect();
    sorted.sort_unstable();
    let shared = sorted
        .windows(2)
        .map(|w| {
            let n = w[0]
                .bytes()
                .zip(w[1].bytes())
                .take_while(|(a, b)| a == b)
                .count();
            &w[0][..n]
        })
        .max_by_key(|p| p.len())
        .expect("two ids");
    assert!(shared.len() >= 4, "no shared prefix: {shared:?}");

    let out = run(home.path(), &["show", shared, "--store", store]);
    assert_eq!(out.code(), 2, "an ambiguous id is bad usage: {out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let first = out.stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("error: delivery id {shared} is ambiguous; type more of it"),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}
