//! The inspector's keys and header as a developer meets them at 80×24: the filter like less and
//! fzf, `i` in a test diff, counters for this run and the store, the reconnect state.

use crossterm::event::KeyCode;

use super::*;
use crate::status::{ConnectionState, ListenEvent};
use crate::tui::loaded_app;
use crate::tui::tests::{delivery, draw, drive, key, sample, screen, store_with, NOW};

fn typed(app: &mut App, store: &illumitunnel::store::CaptureStore, text: &str) {
    for c in text.chars() {
        drive(app, store, key(KeyCode::Char(c)));
    }
}

#[test]
fn slash_starts_a_fresh_filter_text_instead_of_appending_to_the_old_one() {
    let (_dir, store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    drive(&mut app, &store, key(KeyCode::Char('/')));
    typed(&mut app, &store, "lead_");
    drive(&mut app, &store, key(KeyCode::Enter));
    assert_eq!(app.filter_label(), Some("lead_"));
    drive(&mut app, &store, key(KeyCode::Char('/')));
    assert_eq!(app.mode, Mode::Filter(String::new()));
    typed(&mut app, &store, "tkt_");
    drive(&mut app, &store, key(KeyCode::Enter));
    assert_eq!(app.filter_label(), Some("tkt_"));
}

#[test]
fn esc_clears_the_filter_before_it_closes_the_details() {
    let (_dir, store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    drive(&mut app, &store, key(KeyCode::Enter));
    assert!(app.details_open);
    // While typing, with the details open: esc clears what is typed and the filter.
    drive(&mut app, &store, key(KeyCode::Char('/')));
    typed(&mut app, &store, "lead_");
    drive(&mut app, &store, key(KeyCode::Esc));
    assert_eq!((app.mode.clone(), app.filter_label()), (Mode::Normal, None));
    assert_eq!(app.total, 8);
    assert!(
        app.details_open,
        "esc in the prompt leaves the details alone"
    );
    // An applied filter goes with the first esc, the details with the second.
    drive(&mut app, &store, key(KeyCode::Char('/')));
    typed(&mut app, &store, "lead_");
    drive(&mut app, &store, key(KeyCode::Enter));
    assert!(app.total < 8, "{}", app.total);
    drive(&mut app, &store, key(KeyCode::Esc));
    assert_eq!((app.filter_label(), app.total), (None, 8));
    assert!(app.details_open);
    drive(&mut app, &store, key(KeyCode::Esc));
    assert!(!app.details_open);
}

#[test]
fn at_80_columns_cut_texts_end_in_an_ellipsis_and_local_only_stays() {
    let (_dir, store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    app.public_url = "https://127.0.0.1:8443/t/brave-otter-from-a-long-name".into();
    app.forward_to = "http://localhost:3000/webhooks/illumichat/with/a/long/path".into();
    app.update(AppEvent::Listen(ListenEvent::Connection(
        ConnectionState::Reconnecting {
            in_secs: 5.0,
            cause: "could not connect to 127.0.0.1:8443: connection refused by the peer".into(),
        },
    )));
    let text = screen(&draw(&app, (80, 24)));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("(local only)"), "{text}");
    assert!(
        lines[0].contains(" https://127.0.0.1:8443/t/brave-… → "),
        "{text}"
    );
    assert!(
        lines[0].contains("→ http://localhos…  (local only)"),
        "{text}"
    );
    assert!(
        lines[1].contains("could not connect to 127.0.… this run"),
        "{text}"
    );
    assert!(lines[1].contains("this run: none · stored: 8"), "{text}");
    // The request column: every cut path ends in `…`.
    let row = lines.iter().find(|l| l.contains("tkt_8f3k2")).unwrap();
    assert!(row.contains("POST /webhooks…"), "{text}");
    // Wide enough, the warning says it all and nothing is cut.
    let text = screen(&draw(&app, (200, 40)));
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains("local only — IllumiChat cannot reach this URL"),
        "{text}"
    );
    assert!(!first.contains('…'), "{text}");
}

#[test]
fn the_header_counts_this_run_apart_from_the_store() {
    let (_dir, mut store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    assert_eq!(app.this_run().total, 0);
    let mut batch = vec![
        delivery(9, "ticket.created", "tkt_9", Some(200)),
        delivery(10, "ticket.created", "tkt_10", None),
    ];
    store.insert_batch(&mut batch).unwrap();
    for d in batch {
        app.update(AppEvent::Listen(ListenEvent::Deliveries(vec![d])));
    }
    let run = app.this_run();
    assert_eq!(
        (run.total, run.ok, run.failed, app.counts.total),
        (2, 1, 1, 10)
    );
    let text = screen(&draw(&app, (80, 24)));
    let second = text.lines().nth(1).unwrap_or_default();
    assert!(
        second.contains("this run: 1 ok · 1 err · stored: 10"),
        "{text}"
    );
}

#[test]
fn i_in_a_test_diff_ignores_the_changed_field_and_prints_the_flags() {
    let (_dir, store) = store_with(sample());
    let mut app = loaded_app(&store, (160, 40), NOW).unwrap();
    // The newest 200 (`{"ok":true}`) answers with two fields changed now.
    let Some(Effect::Test { original }) = app.update(key(KeyCode::Char('t'))) else {
        panic!("t must test");
    };
    let mut replay = delivery(9, "ticket.created", "tkt_8f3k2", Some(200));
    replay.replay_of = Some(original.clone());
    if let Some(r) = replay.response.as_mut() {
        r.body = bytes::Bytes::from_static(br#"{"ok":true,"at":"12:00","data":{"n":2}}"#);
    }
    let tested = AppEvent::Tested {
        original,
        result: Ok(Box::new(replay)),
    };
    drive(&mut app, &store, tested);
    assert!(!app.test.as_ref().unwrap().report.passed());
    let text = screen(&draw(&app, (160, 40)));
    assert!(text.contains("i ignores /at for this session"), "{text}");
    drive(&mut app, &store, key(KeyCode::Char('i')));
    assert_eq!(app.ignored, ["/at"]);
    let text = screen(&draw(&app, (160, 40)));
    assert!(
        !text.contains("+   \"at\""),
        "the diff is drawn without /at: {text}"
    );
    assert!(text.contains("i ignores /data for this session"), "{text}");
    assert!(
        text.contains("reuse with illumitunnel test --ignore /at"),
        "{text}"
    );
    drive(&mut app, &store, key(KeyCode::Char('i')));
    assert!(app.test.as_ref().unwrap().report.passed());
    assert_eq!(app.ignore_flags(), "--ignore /at --ignore /data");
    let text = screen(&draw(&app, (160, 40)));
    assert!(text.contains("test: the answer matches"), "{text}");
    // The same flags are what `illumitunnel test` parses.
    for p in &app.ignored {
        assert!(crate::regression::Pointer::parse(p).is_ok());
    }
}

#[test]
fn catching_up_clears_once_every_queued_delivery_arrived_even_one_recorded_before() {
    let (_dir, store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    app.update(AppEvent::Listen(ListenEvent::Connection(
        ConnectionState::Connected {
            queued: 1,
            expired: 0,
            dead_letters: 0,
        },
    )));
    let text = screen(&draw(&app, (80, 24)));
    assert!(
        text.contains("● connected · catching up 0/1 queued"),
        "{text}"
    );
    // The queued delivery was recorded by the last run: it is acknowledged, never shown.
    app.update(AppEvent::Listen(ListenEvent::QueuedArrived));
    let text = screen(&draw(&app, (80, 24)));
    assert!(!text.contains("catching up"), "{text}");
    assert!(text.contains("● connected · 1 queued caught up"), "{text}");
    // A failover's redelivery beyond the announced number does not count past it.
    app.update(AppEvent::Listen(ListenEvent::QueuedArrived));
    assert_eq!(app.queue.map(|q| q.arrived), Some(1));
}

#[test]
fn the_first_ctrl_c_stops_and_says_what_it_waits_for_the_second_quits_now() {
    use crossterm::event::{KeyEvent, KeyModifiers};
    let (_dir, store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    let ctrl_c = || AppEvent::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(matches!(app.update(ctrl_c()), Some(Effect::Stop)));
    app.update(AppEvent::Listen(ListenEvent::Draining {
        deliveries: 1,
        up_to: std::time::Duration::from_secs(5),
    }));
    let text = screen(&draw(&app, (80, 24)));
    assert!(
        text.contains("waiting for 1 delivery (up to 5 s); Ctrl-C again quits now"),
        "{text}"
    );
    assert!(text.contains("■ stopping"), "{text}");
    app.update(AppEvent::Tick(NOW + 2_500));
    let text = screen(&draw(&app, (80, 24)));
    assert!(text.contains("(up to 3 s)"), "{text}");
    assert!(matches!(app.update(ctrl_c()), Some(Effect::Quit)));
}
