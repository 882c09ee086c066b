//! Line, detail, JSON, banner and state-line rendering, byte for byte.

use super::*;
use bytes::Bytes;
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::DeliveryId;

fn delivery() -> Delivery {
    let body = br#"{"event":"ticket.created","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_abc123","data":{"id":"tkt_xyz789"}}"#;
    let mut d = Delivery::new(
        DeliveryId::parse("0192a3b4c5d6e7f8").unwrap(),
        // 2025-06-15T14:30:00Z
        1_749_997_800_000,
        Source::Tunnel,
        RequestRecord {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Bytes::from_static(body),
        },
    );
    d.target = "http://127.0.0.1:3000/webhooks/illumichat".into();
    d.response = Some(ResponseRecord {
        status: 200,
        headers: vec![("content-type".into(), b"text/plain".to_vec())],
        body: Bytes::from_static(b"ok"),
    });
    d.duration_us = 12_300;
    d
}

#[test]
fn line_matches_the_spec_format() {
    let utc = LocalClock::fixed(UtcOffset::UTC);
    assert_eq!(
        line(&delivery(), &utc),
        "14:30:00  ticket.created        tkt_xyz789   POST /webhooks/illumichat  200  12ms"
    );
    let plus2 = LocalClock::fixed(UtcOffset::from_hms(2, 0, 0).unwrap());
    assert!(line(&delivery(), &plus2).starts_with("16:30:00  "));
}

#[test]
fn line_shows_markers_and_errors() {
    let mut d = delivery();
    d.duplicate = true;
    d.queued = true;
    d.replay_of = DeliveryId::parse("abc");
    d.duration_us = 400;
    let l = line(&d, &LocalClock::fixed(UtcOffset::UTC));
    assert!(
        l.ends_with("200  0.4ms  replay dup queued  replay of abc"),
        "{l}"
    );

    let mut d = delivery();
    d.response = None;
    d.error = Some("connection refused to 127.0.0.1:3000".into());
    let l = line(&d, &LocalClock::fixed(UtcOffset::UTC));
    assert!(
        l.ends_with("ERR  12ms  connection refused to 127.0.0.1:3000"),
        "{l}"
    );
}

#[test]
fn line_without_envelope_and_with_control_characters() {
    let mut d = Delivery::new(
        DeliveryId::parse("abc").unwrap(),
        0,
        Source::Tunnel,
        RequestRecord {
            method: "GET".into(),
            path: "/x\u{1b}[2J".into(),
            ..Default::default()
        },
    );
    d.duration_us = 1_000;
    let l = line(&d, &LocalClock::fixed(UtcOffset::UTC));
    assert!(
        l.starts_with("00:00:00  -                     -            GET /x^[[2J  ERR"),
        "{l}"
    );
    assert!(!l.contains('\u{1b}'));
}

/// A delivery whose sender-controlled fields hold every kind of character the inspector
/// escapes: NUL, ESC, a bidi override, a zero-width space, a bidi isolate, tab, newline.
fn hostile() -> Delivery {
    let evil = "x\0\x1b[2J\u{202e}\u{200b}\u{2066}\t\ny";
    let mut d = delivery();
    d.event = Some(format!("ticket{evil}"));
    d.resource_id = Some(format!("tkt{evil}"));
    d.request.path = format!("/p{evil}");
    d.target = String::new();
    d.response = None;
    d.error = Some(format!("refused{evil}"));
    d.request
        .headers
        .push(("x-evil".into(), evil.as_bytes().to_vec()));
    d.request.body = Bytes::from(format!("body{evil}"));
    d
}

const ESCAPED: &str = "x^@^[[2J\\u{202e}\\u{200b}\\u{2066}^I^Jy";

#[test]
fn line_and_detail_escape_what_the_inspector_escapes() {
    let d = hostile();
    let l = line(&d, &LocalClock::fixed(UtcOffset::UTC));
    assert!(!l.chars().any(illumitunnel::escape::is_unsafe), "{l:?}");
    for field in ["ticket", "tkt", "/p", "refused"] {
        assert!(l.contains(&format!("{field}{ESCAPED}")), "{field}: {l}");
    }
    let mut listing = Vec::new();
    write_listing(
        &mut listing,
        std::slice::from_ref(&d),
        Format::Lines,
        &LocalClock::fixed(UtcOffset::UTC),
        0,
    )
    .unwrap();
    let listing = String::from_utf8(listing).unwrap();
    assert_eq!(
        listing.lines().count(),
        2,
        "a header and one row: {listing}"
    );
    assert!(
        listing
            .lines()
            .all(|l| !l.chars().any(illumitunnel::escape::is_unsafe)),
        "{listing:?}"
    );

    let mut detail = Vec::new();
    write_detail(&mut detail, &d, false).unwrap();
    let detail = String::from_utf8(detail).unwrap();
    assert!(detail.contains(&format!("x-evil: {ESCAPED}")), "{detail}");
    // A text body keeps its tabs and newlines, nothing else.
    assert!(
        detail.contains("bodyx^@^[[2J\\u{202e}\\u{200b}\\u{2066}\t\ny"),
        "{detail}"
    );
    assert!(
        !detail
            .chars()
            .any(|c| illumitunnel::escape::is_unsafe(c) && c != '\n' && c != '\t'),
        "{detail:?}"
    );
}

#[test]
fn json_output_is_valid_exact_and_terminal_safe() {
    let d = hostile();
    let clock = LocalClock::fixed(UtcOffset::UTC);
    let mut summary = Vec::new();
    write_delivery(&mut summary, &d, Format::Json, &clock).unwrap();
    let mut listing = Vec::new();
    write_listing(
        &mut listing,
        std::slice::from_ref(&d),
        Format::Json,
        &clock,
        0,
    )
    .unwrap();
    let mut detail = Vec::new();
    write_detail(&mut detail, &d, true).unwrap();
    for (text, want) in [
        (summary, d.summary_json()),
        (listing, d.summary_json()),
        (detail, d.detail_json()),
    ] {
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            !text.trim_end().chars().any(illumitunnel::escape::is_unsafe),
            "{text:?}"
        );
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, want);
    }
}

#[test]
fn json_line_is_the_summary() {
    let mut buf = Vec::new();
    write_delivery(
        &mut buf,
        &delivery(),
        Format::Json,
        &LocalClock::fixed(UtcOffset::UTC),
    )
    .unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["id"], "0192a3b4c5d6e7f8");
    assert_eq!(v["status"], 200);
    assert_eq!(v["event"], "ticket.created");
}

#[test]
fn detail_pretty_prints_json_and_names_binary() {
    let mut d = delivery();
    if let Some(r) = d.response.as_mut() {
        r.body = Bytes::from_static(&[0xff, 0x00, 0x01]);
    }
    let mut buf = Vec::new();
    write_detail(&mut buf, &d, false).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.contains("id           0192a3b4c5d6e7f8\n"), "{text}");
    assert!(text.contains("  POST /\n"), "{text}");
    assert!(
        text.contains("  content-type: application/json\n"),
        "{text}"
    );
    assert!(text.contains("\"id\": \"tkt_xyz789\""), "{text}");
    assert!(text.contains("response\n  200\n"), "{text}");
    assert!(text.contains("(3 bytes of binary data"), "{text}");
}

#[test]
fn state_lines() {
    assert_eq!(
        state_line(&ConnectionState::Connected {
            queued: 0,
            expired: 0,
            dead_letters: 0,
        })
        .unwrap(),
        "connected"
    );
    assert_eq!(
        state_line(&ConnectionState::Connected {
            queued: 3,
            expired: 1,
            dead_letters: 0,
        })
        .unwrap(),
        "connected, 3 queued deliveries follow, 1 queued deliveries expired"
    );
    assert_eq!(
        state_line(&ConnectionState::Connected {
            queued: 0,
            expired: 0,
            dead_letters: 2,
        })
        .unwrap(),
        "connected, 2 dead letters set aside in the relay's data dir"
    );
    assert_eq!(
        dead_letter_line(
            &illumitunnel::DeliveryId::parse("d1").unwrap(),
            "rejected 3 times"
        ),
        "the relay set delivery d1 aside as a dead letter: rejected 3 times"
    );
    assert_eq!(
        state_line(&ConnectionState::Reconnecting {
            in_secs: 1.42,
            cause: "relay closed the connection".into()
        })
        .unwrap(),
        "reconnecting in 1.4 s: relay closed the connection"
    );
    assert_eq!(state_line(&ConnectionState::Refused("x".into())), None);
}

#[test]
fn banner_rows_line_up() {
    let b = Banner {
        forward_to: "http://localhost:3000/hooks".into(),
        store: PathBuf::from("/tmp/c.db"),
        embedded_relay: Some("https://127.0.0.1:8443".into()),
        web_inspector: Some("http://127.0.0.1:4040".into()),
    };
    assert_eq!(
        banner_lines(&b, "https://127.0.0.1:8443/t/quiet-otter-1234"),
        "webhook URL    https://127.0.0.1:8443/t/quiet-otter-1234\n\
         \x20              local only — IllumiChat cannot reach this URL; use a public relay: illumitunnel login --relay https://…\n\
         forwarding to  http://localhost:3000/hooks\n\
         capture store  /tmp/c.db\n\
         web inspector  http://127.0.0.1:4040\n\
         relay          embedded at https://127.0.0.1:8443 (self-signed, trusted by this client)\n"
    );
    let public = banner_lines(&b, "https://relay.example.com/t/quiet-otter-1234");
    assert!(!public.contains("local only"), "{public}");
}

#[test]
fn what_a_relay_sends_is_escaped_in_the_banner_and_state_lines() {
    let b = Banner {
        forward_to: "http://localhost:3000/hooks".into(),
        store: PathBuf::from("/tmp/c.db"),
        embedded_relay: None,
        web_inspector: None,
    };
    let banner = banner_lines(&b, "https://relay.example.com/t/x\x1b]0;owned\x07\u{202e}");
    assert!(
        banner.starts_with("webhook URL    https://relay.example.com/t/x^[]0;owned^G\\u{202e}\n"),
        "{banner}"
    );
    let line = state_line(&ConnectionState::Reconnecting {
        in_secs: 1.0,
        cause: "relay said \x1b[2J\u{202e}".into(),
    })
    .unwrap();
    assert_eq!(line, "reconnecting in 1.0 s: relay said ^[[2J\\u{202e}");
}

#[test]
fn store_health_lines_say_what_failed_and_when_it_recovers() {
    let failing = StoreHealth::Failing(
        "capture store failing: database or disk is full; free disk space or pass --store PATH"
            .into(),
    );
    assert_eq!(
        store_line(&failing),
        "capture store failing: database or disk is full; free disk space or pass --store PATH"
    );
    assert_eq!(
        store_line(&StoreHealth::Failing("bad\x1b[2J".into())),
        "bad^[[2J",
        "escaped"
    );
    assert_eq!(
        store_line(&StoreHealth::Recovered),
        "capture store recovered: deliveries are recorded again"
    );
}

/// Rows of `events` for `deliveries` listed at `now_ms`, UTC.
fn listing(deliveries: &[Delivery], now_ms: i64) -> Vec<String> {
    let mut out = Vec::new();
    write_listing(
        &mut out,
        deliveries,
        Format::Lines,
        &LocalClock::fixed(UtcOffset::UTC),
        now_ms,
    )
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn events_listing_has_a_header_fixed_columns_dates_and_marks() {
    let mut chat = delivery();
    chat.event = Some("chat.message.created".into());
    chat.resource_id = Some("msg_0123456789abcdef".into());
    chat.duration_us = 15_004_000;
    chat.source = Source::Trigger;
    chat.retry = Some(2);
    let mut dup = delivery();
    dup.duplicate = true;
    dup.duration_us = 312_000;
    // The day before, at 23:59:59 UTC.
    dup.received_at_ms = 1_749_945_599_000;
    let rows = listing(&[chat.clone(), dup], 1_749_997_800_000 + 60_000);
    assert_eq!(
        rows,
        vec![
            "ID                TIME                 EVENT                 RESOURCE          REQUEST                       STATUS  LATENCY  MARKS",
            "0192a3b4c5d6e7f8  14:30:00             chat.message.created  msg_0123456789a…  POST /webhooks/illumichat     200       15.0s  trigger retry 2",
            "0192a3b4c5d6e7f8  2025-06-14 23:59:59  ticket.created        tkt_xyz789        POST /webhooks/illumichat     200       312ms  dup",
        ]
    );
    // Only today: the time column is the time alone.
    let rows = listing(&[chat], 1_749_997_800_000);
    assert!(
        rows[1].starts_with("0192a3b4c5d6e7f8  14:30:00  chat.message.created  "),
        "{rows:?}"
    );
}
