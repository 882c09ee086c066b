use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use illumitunnel::store::Filter;

use super::*;
use crate::tui::tests::{delivery, drive, key, sample, store_with, NOW};
use crate::tui::{loaded_app, run_query};

fn listen(d: Delivery) -> AppEvent {
    AppEvent::Listen(ListenEvent::Deliveries(vec![d]))
}

/// Commits `d` to the store (as `listen` does before telling the screen) and returns it.
fn commit(store: &mut illumitunnel::store::CaptureStore, d: Delivery) -> Delivery {
    let mut batch = vec![d];
    store.insert_batch(&mut batch).unwrap();
    batch.pop().unwrap()
}

fn mouse(kind: MouseEventKind, column: u16, row: u16) -> AppEvent {
    AppEvent::Mouse(MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

#[test]
fn starts_at_the_newest_and_follows_new_deliveries() {
    let (_dir, mut store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    assert_eq!((app.total, app.selected, app.counts.total), (8, 7, 8));
    assert!(app.is_following());
    let d = commit(
        &mut store,
        delivery(9, "ticket.created", "tkt_9", Some(200)),
    );
    assert!(app.update(listen(d.clone())).is_none());
    assert_eq!(app.selected_delivery().map(|d| d.seq), Some(9));
    assert_eq!((app.counts.total, app.counts.ok), (9, 5));
    // The same delivery told twice is one row and one count.
    app.update(listen(d));
    assert_eq!((app.total, app.counts.total), (9, 9));
}

#[test]
fn scrolling_up_or_pausing_stops_following() {
    let (_dir, mut store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    drive(&mut app, &store, key(KeyCode::Char('k')));
    assert!(!app.is_following());
    let d = commit(
        &mut store,
        delivery(9, "ticket.created", "tkt_9", Some(200)),
    );
    app.update(listen(d));
    assert_eq!((app.total, app.selected), (9, 6));
    // Back on the newest row, following resumes.
    drive(&mut app, &store, key(KeyCode::Char('G')));
    assert!(app.is_following());
    drive(&mut app, &store, key(KeyCode::Char('p')));
    assert!(app.paused && !app.is_following());
    let d = commit(
        &mut store,
        delivery(10, "ticket.created", "tkt_10", Some(200)),
    );
    app.update(listen(d));
    assert_eq!(app.selected, 8);
    drive(&mut app, &store, key(KeyCode::Char('p')));
    assert_eq!(app.selected, 9);
    assert!(app.is_following());
}

#[test]
fn details_tabs_and_back() {
    let (_dir, store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    drive(&mut app, &store, key(KeyCode::Enter));
    assert!(app.details_open);
    assert_eq!(app.tab, Tab::Payload);
    drive(&mut app, &store, key(KeyCode::Tab));
    assert_eq!(app.tab, Tab::RequestHeaders);
    drive(
        &mut app,
        &store,
        AppEvent::Key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)),
    );
    drive(
        &mut app,
        &store,
        AppEvent::Key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)),
    );
    assert_eq!(app.tab, Tab::Raw);
    drive(&mut app, &store, key(KeyCode::Char('J')));
    assert_eq!(app.details_scroll, 1);
    drive(&mut app, &store, key(KeyCode::Char('k')));
    assert_eq!(app.details_scroll, 0, "a new selection starts at the top");
    drive(&mut app, &store, key(KeyCode::Esc));
    assert!(!app.details_open);
    assert!(matches!(
        drive(&mut app, &store, key(KeyCode::Char('q'))),
        Some(Effect::Stop)
    ));
    // The second quits at once, whatever `listen` still waits for.
    let ctrl_c = AppEvent::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(matches!(app.update(ctrl_c), Some(Effect::Quit)));
}

#[test]
fn filter_by_event_type_or_text_and_esc_clears() {
    let (_dir, mut store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    drive(&mut app, &store, key(KeyCode::Char('/')));
    for c in "ticket.created".chars() {
        drive(&mut app, &store, key(KeyCode::Char(c)));
    }
    drive(&mut app, &store, key(KeyCode::Enter));
    assert_eq!(app.filter.event.as_deref(), Some("ticket.created"));
    assert_eq!(app.total, 3);
    // A live delivery of another type does not join the filtered list; one that matches does.
    let other = commit(
        &mut store,
        delivery(9, "lead.captured", "lead_9", Some(200)),
    );
    app.update(listen(other));
    assert_eq!(app.total, 3);
    let same = commit(
        &mut store,
        delivery(10, "ticket.created", "tkt_10", Some(200)),
    );
    app.update(listen(same));
    assert_eq!(app.total, 4);
    assert_eq!(app.counts.total, 10);
    // Text filters match resource ids, paths, status and bodies, case-insensitively.
    drive(&mut app, &store, key(KeyCode::Char('/')));
    drive(
        &mut app,
        &store,
        AppEvent::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)),
    );
    for c in "LEAD_".chars() {
        drive(&mut app, &store, key(KeyCode::Char(c)));
    }
    drive(&mut app, &store, key(KeyCode::Enter));
    assert_eq!(app.filter.text.as_deref(), Some("LEAD_"));
    assert_eq!(app.total, 2);
    drive(&mut app, &store, key(KeyCode::Esc));
    assert_eq!(app.filter_label(), None);
    assert_eq!(app.total, 10);
    // Esc inside the prompt clears too.
    drive(&mut app, &store, key(KeyCode::Char('/')));
    drive(&mut app, &store, key(KeyCode::Char('x')));
    drive(&mut app, &store, key(KeyCode::Esc));
    assert_eq!((app.mode.clone(), app.total), (Mode::Normal, 10));
}

#[test]
fn in_memory_filter_agrees_with_the_store() {
    let (_dir, store) = store_with(sample());
    let all = store.list_oldest(&Filter::default(), 100).unwrap();
    for filter in [
        Filter::default(),
        Filter {
            event: Some("ticket.created".into()),
            ..Filter::default()
        },
        Filter {
            text: Some("TKT_8F".into()),
            ..Filter::default()
        },
        Filter {
            text: Some("404".into()),
            ..Filter::default()
        },
        Filter {
            text: Some("printer".into()),
            ..Filter::default()
        },
        Filter {
            text: Some("webhooks/illu".into()),
            ..Filter::default()
        },
    ] {
        let here = all.iter().filter(|d| window::matches(&filter, d)).count() as u64;
        assert_eq!(here, store.count(&filter).unwrap(), "{filter:?}");
    }
}

#[test]
fn replay_selects_the_new_row_when_it_arrives() {
    let (_dir, mut store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    drive(&mut app, &store, key(KeyCode::Char('g')));
    let Some(Effect::Replay {
        original,
        body: None,
    }) = app.update(key(KeyCode::Char('r')))
    else {
        panic!("r must replay");
    };
    assert_eq!(original.as_str(), "0000000000000001");
    let mut replay = delivery(9, "ticket.created", "tkt_8f3k2", Some(200));
    replay.replay_of = Some(original.clone());
    let replay = commit(&mut store, replay);
    app.update(AppEvent::Replayed {
        original: original.clone(),
        result: Ok(Box::new(replay.clone())),
    });
    assert!(app
        .message
        .as_ref()
        .unwrap()
        .text
        .contains("0000000000000009: 200"));
    assert!(
        app.message
            .as_ref()
            .unwrap()
            .text
            .contains(&format!(" to {} as ", replay.target)),
        "the replay says where it went"
    );
    assert_eq!(app.selected, 0, "not held yet");
    drive(&mut app, &store, listen(replay));
    assert_eq!(app.selected_delivery().map(|d| d.seq), Some(9));
    app.update(AppEvent::Replayed {
        original,
        result: Err("connection refused".into()),
    });
    let message = app.message.clone().unwrap();
    assert!(message.is_error && message.text.contains("connection refused"));
}

#[test]
fn edit_checks_json_and_asks_when_unchanged() {
    let (_dir, store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    let Some(Effect::Edit { original, body }) = app.update(key(KeyCode::Char('e'))) else {
        panic!("e must edit");
    };
    // Invalid JSON: a message, nothing sent.
    let effect = app.update(AppEvent::Edited {
        original: original.clone(),
        before: body.clone(),
        after: Ok(b"{\"event\": ".to_vec()),
    });
    assert!(effect.is_none());
    let message = app.message.clone().unwrap();
    assert!(
        message.is_error && message.text.contains("not valid JSON"),
        "{}",
        message.text
    );
    // Unchanged (but for the newline editors add): ask first.
    let mut same = body.to_vec();
    same.push(b'\n');
    let effect = app.update(AppEvent::Edited {
        original: original.clone(),
        before: body.clone(),
        after: Ok(same),
    });
    assert!(effect.is_none());
    assert_eq!(app.mode, Mode::Confirm(original.clone()));
    assert!(app.update(key(KeyCode::Char('x'))).is_none());
    let Some(Effect::Replay { body: None, .. }) = app.update(key(KeyCode::Char('y'))) else {
        panic!("y must replay the stored body");
    };
    app.mode = Mode::Confirm(original.clone());
    assert!(app.update(key(KeyCode::Char('n'))).is_none());
    assert_eq!(app.mode, Mode::Normal);
    // Changed and valid: replayed with the new body, the editor's newline dropped.
    let effect = app.update(AppEvent::Edited {
        original,
        before: body,
        after: Ok(b"{\"event\":\"ticket.created\"}\n".to_vec()),
    });
    let Some(Effect::Replay {
        body: Some(sent), ..
    }) = effect
    else {
        panic!("an edited body must be replayed");
    };
    assert_eq!(&sent[..], b"{\"event\":\"ticket.created\"}");
}

#[test]
fn binary_bodies_are_not_edited_and_copy_builds_curl() {
    let mut d = delivery(1, "ticket.created", "tkt_1", Some(200));
    d.request.body = Bytes::from_static(&[0xff, 0x00]);
    let (_dir, store) = store_with(vec![d]);
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    assert!(app.update(key(KeyCode::Char('e'))).is_none());
    assert!(app.message.as_ref().unwrap().is_error);
    let Some(Effect::Copy { id, text }) = app.update(key(KeyCode::Char('c'))) else {
        panic!("c must copy");
    };
    assert!(
        text.contains("curl -X 'POST' 'http://localhost:3000/webhooks/illumichat'"),
        "{text}"
    );
    app.update(AppEvent::Copied {
        id,
        result: Ok(text.len()),
    });
    assert!(app.message.as_ref().unwrap().text.contains("clipboard"));
}

#[test]
fn connection_states_and_the_clock() {
    let (_dir, store) = store_with(Vec::new());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    assert!(app.take_dirty());
    app.update(AppEvent::Listen(ListenEvent::Connection(
        ConnectionState::Reconnecting {
            in_secs: 4.2,
            cause: "relay closed the connection".into(),
        },
    )));
    assert_eq!(app.reconnect_in_secs(), 5);
    assert!(app.take_dirty());
    app.update(AppEvent::Tick(NOW + 100));
    assert!(!app.take_dirty(), "same second, nothing to redraw");
    app.update(AppEvent::Tick(NOW + 1_300));
    assert_eq!(app.reconnect_in_secs(), 3);
    assert!(app.take_dirty());
    app.update(AppEvent::Listen(ListenEvent::Connection(
        ConnectionState::Connected {
            queued: 2,
            expired: 1,
            dead_letters: 0,
        },
    )));
    app.update(AppEvent::Listen(ListenEvent::QueuedArrived));
    assert_eq!(
        app.queue,
        Some(QueueProgress {
            expected: 2,
            arrived: 1,
            expired: 1
        })
    );
    // Messages expire on the clock.
    app.update(key(KeyCode::Char('p')));
    assert!(app.message.is_some());
    app.update(AppEvent::Tick(NOW + 1_300 + MESSAGE_MS + 1));
    assert!(app.message.is_none());
}

#[test]
fn store_changed_resyncs_counts_and_rows() {
    let (_dir, mut store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    // Two deliveries whose events were dropped, then one that arrives as an event.
    commit(
        &mut store,
        delivery(9, "ticket.created", "tkt_9", Some(200)),
    );
    commit(
        &mut store,
        delivery(10, "ticket.created", "tkt_10", Some(500)),
    );
    assert!(app
        .update(AppEvent::Listen(ListenEvent::StoreChanged))
        .is_none());
    assert!(app
        .update(AppEvent::Listen(ListenEvent::StoreChanged))
        .is_none());
    let Some(Effect::Load(query)) = app.update(AppEvent::Tick(NOW + 10)) else {
        panic!("StoreChanged must re-read the store on the next tick");
    };
    assert!(
        app.update(AppEvent::Tick(NOW + 20)).is_none(),
        "one read for both"
    );
    assert!(query.sync && query.counts);
    app.update(AppEvent::Loaded(run_query(&store, &query).unwrap()));
    assert_eq!(
        (app.total, app.counts.total, app.counts.server_error),
        (10, 10, 2)
    );
    assert_eq!(app.selected_delivery().map(|d| d.seq), Some(10));
    let late = commit(
        &mut store,
        delivery(11, "ticket.created", "tkt_11", Some(200)),
    );
    app.update(listen(late));
    assert_eq!((app.total, app.counts.total), (11, 11));
}

#[test]
fn mouse_wheel_scrolls_and_click_selects() {
    let (_dir, store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    drive(&mut app, &store, mouse(MouseEventKind::ScrollUp, 10, 8));
    assert_eq!(app.selected, 6);
    drive(&mut app, &store, mouse(MouseEventKind::ScrollDown, 10, 8));
    assert_eq!(app.selected, 7);
    // Rows start on line 4 (two header lines, the list title, the column names).
    drive(
        &mut app,
        &store,
        mouse(MouseEventKind::Down(MouseButton::Left), 10, 6),
    );
    assert_eq!(app.selected, 2);
    drive(
        &mut app,
        &store,
        mouse(MouseEventKind::Down(MouseButton::Left), 10, 20),
    );
    assert_eq!(
        app.selected, 2,
        "a click below the last row selects nothing"
    );
    // In the details the wheel scrolls them, and a click on a tab title opens it.
    drive(&mut app, &store, key(KeyCode::Enter));
    let details = layout::areas(Rect::new(0, 0, 80, 24), true)
        .details
        .unwrap();
    drive(
        &mut app,
        &store,
        mouse(MouseEventKind::ScrollDown, 10, details.y + 3),
    );
    assert_eq!((app.selected, app.details_scroll), (2, WHEEL_LINES));
    drive(
        &mut app,
        &store,
        mouse(MouseEventKind::Down(MouseButton::Left), 37, details.y),
    );
    assert_eq!(app.tab, Tab::Response);
}

#[test]
fn help_opens_and_any_key_closes_it() {
    let (_dir, store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    drive(&mut app, &store, key(KeyCode::Char('?')));
    assert_eq!(app.mode, Mode::Help);
    assert!(drive(&mut app, &store, key(KeyCode::Char('j'))).is_none());
    assert_eq!((app.mode.clone(), app.selected), (Mode::Normal, 7));
    drive(&mut app, &store, key(KeyCode::Char('?')));
    assert!(matches!(
        app.update(key(KeyCode::Char('q'))),
        Some(Effect::Stop)
    ));
}

#[test]
fn resize_keeps_the_selection_visible() {
    let many: Vec<Delivery> = (1..=200)
        .map(|i| delivery(i, "ticket.created", &format!("tkt_{i}"), Some(200)))
        .collect();
    let (_dir, store) = store_with(many);
    let mut app = loaded_app(&store, (160, 40), NOW).unwrap();
    drive(
        &mut app,
        &store,
        AppEvent::Key(KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE)),
    );
    drive(&mut app, &store, AppEvent::Resize(80, 24));
    let visible: Vec<u64> = app.visible_rows().map(|(i, _)| i).collect();
    assert!(visible.contains(&app.selected));
    assert!(app.visible_rows().all(|(_, d)| d.is_some()));
}

#[test]
fn out_of_order_and_repeated_events_count_once() {
    let (_dir, mut store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    let a = commit(
        &mut store,
        delivery(9, "ticket.created", "tkt_9", Some(200)),
    );
    let b = commit(
        &mut store,
        delivery(10, "ticket.created", "tkt_10", Some(200)),
    );
    app.update(listen(b.clone()));
    app.update(listen(a));
    app.update(listen(b));
    assert_eq!((app.total, app.counts.total), (10, 10));
    let seqs: Vec<i64> = app
        .visible_rows()
        .filter_map(|(_, d)| d.map(|d| d.seq))
        .collect();
    assert_eq!(seqs[seqs.len() - 2..], [9, 10]);
    // A store read made while an event is still on its way counts that delivery once.
    let c = commit(
        &mut store,
        delivery(11, "ticket.created", "tkt_11", Some(200)),
    );
    drive(&mut app, &store, key(KeyCode::Char('/')));
    drive(&mut app, &store, key(KeyCode::Enter));
    assert_eq!(
        app.total, 10,
        "reads stop at the newest delivery already told"
    );
    app.update(listen(c));
    assert_eq!((app.total, app.counts.total), (11, 11));
    assert_eq!(app.selected_delivery().map(|d| d.seq), Some(11));
}

#[test]
fn t_tests_the_selected_delivery_and_keeps_the_verdict_for_its_details() {
    let (_dir, mut store) = store_with(sample());
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    drive(&mut app, &store, key(KeyCode::Char('g')));
    let Some(Effect::Test { original }) = app.update(key(KeyCode::Char('t'))) else {
        panic!("t must test");
    };
    assert_eq!(original.as_str(), "0000000000000001");
    let mut replay = delivery(9, "ticket.created", "tkt_8f3k2", Some(500));
    replay.replay_of = Some(original.clone());
    let replay = commit(&mut store, replay);
    app.update(AppEvent::Tested {
        original: original.clone(),
        result: Ok(Box::new(replay.clone())),
    });
    let message = app.message.clone().unwrap();
    assert!(
        message.is_error && message.text.contains("differs"),
        "{message:?}"
    );
    let test = app.test.clone().unwrap();
    assert_eq!((test.original, test.replay), (original, replay.id));
    assert_eq!(test.report.actual_status, Some(500));
    assert!(app.details_open);

    // A delivery with no recorded answer has nothing to compare with.
    let (_dir, store) = store_with(vec![delivery(1, "lead.captured", "lead_1", None)]);
    let mut app = loaded_app(&store, (80, 24), NOW).unwrap();
    assert!(app.update(key(KeyCode::Char('t'))).is_none());
    assert!(app.message.unwrap().text.contains("no recorded answer"));
}
