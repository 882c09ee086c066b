//! The queue's pure decisions: the byte cap and fair share, dedupe ids and windows, body
//! names and how a refused publish is read.

use std::time::Duration;

use super::*;

const MIB: u64 = 1024 * 1024;

#[test]
fn under_the_cap_nothing_is_refused() {
    let usage = Usage {
        bytes: 3 * MIB,
        messages: 3,
        queues: 1,
        mine: 3,
    };
    assert!(!usage.at_cap(MIB, 4 * MIB));
    assert!(!over_fair_share(&usage, MIB, 4 * MIB));
}

#[test]
fn large_bodies_in_the_object_store_count_toward_the_cap() {
    // Three queued heads of a few hundred bytes whose 1.5 MiB bodies sit in the object
    // store: counted, the fourth body is over a 4 MiB cap for the only queue.
    let usage = Usage {
        bytes: 3 * 400 + 3 * 3 * MIB / 2,
        messages: 3,
        queues: 1,
        mine: 3,
    };
    assert!(over_fair_share(&usage, 3 * MIB / 2, 4 * MIB));
    // Without the object store's bytes the same queue looked nearly empty.
    let heads_only = Usage {
        bytes: 3 * 400,
        ..usage
    };
    assert!(!over_fair_share(&heads_only, 3 * MIB / 2, 4 * MIB));
}

#[test]
fn at_the_cap_only_a_tunnel_over_its_fair_share_is_refused() {
    // 10 MiB cap, full; four tunnels with a queue, 1 MiB a message on average.
    let full = |mine| Usage {
        bytes: 10 * MIB,
        messages: 10,
        queues: 4,
        mine,
    };
    // The share is 10 MiB ÷ 4 = 2.5 MiB.
    assert!(!over_fair_share(&full(1), MIB, 10 * MIB));
    assert!(over_fair_share(&full(2), MIB, 10 * MIB));
    assert!(over_fair_share(&full(7), MIB, 10 * MIB));
    // A tunnel with no queue yet counts itself in: 10 MiB ÷ 5 = 2 MiB.
    assert!(!over_fair_share(&full(0), MIB, 10 * MIB));
    assert!(over_fair_share(&full(0), 3 * MIB, 10 * MIB));
}

#[test]
fn an_empty_stream_divides_by_nothing() {
    let usage = Usage::default();
    assert!(
        over_fair_share(&usage, 10, 5),
        "one body over the whole cap"
    );
    assert!(!over_fair_share(&usage, 5, 5));
}

#[test]
fn copies_are_recognised_by_the_delivery_id_within_the_window() {
    let id = DeliveryId::parse("1a2526d6e09e163d001c00cb").expect("an id");
    assert_eq!(dedupe_id(&id), "1a2526d6e09e163d001c00cb");
    assert_eq!(dedupe_id(&id), dedupe_id(&id.clone()));
    assert_eq!(
        crate::cluster::dedupe_window(Duration::ZERO),
        crate::cluster::DEDUPE_WINDOW
    );
    assert_eq!(
        crate::cluster::dedupe_window(Duration::from_secs(72 * 3600)),
        crate::cluster::DEDUPE_WINDOW
    );
    // JetStream refuses a window longer than the age limit.
    assert_eq!(
        crate::cluster::dedupe_window(Duration::from_secs(30)),
        Duration::from_secs(30)
    );
}

#[test]
fn only_a_refusal_by_the_streams_limits_frees_the_stored_body() {
    let count = Refusal::of("nats: maximum messages per subject exceeded", false);
    let bytes = Refusal::of("nats: maximum bytes exceeded", false);
    assert_eq!((count, bytes), (Refusal::FullCount, Refusal::FullBytes));
    assert!(count.never_stored() && bytes.never_stored());
    let late = Refusal::of("timed out: didn't receive ack in time", true);
    assert_eq!(late, Refusal::TimedOut);
    assert!(
        !late.never_stored(),
        "a late ack may still have been stored"
    );
    assert!(!Refusal::of("no responders", false).never_stored());
}

#[test]
fn every_queued_copy_stores_its_body_under_its_own_name() {
    let id = DeliveryId::parse("abc").expect("an id");
    let first = queued_body_name(&id, &DeliveryId::generate());
    let second = queued_body_name(&id, &DeliveryId::generate());
    assert!(first.starts_with("queued-abc-"), "{first}");
    assert_ne!(first, second);
}
