//! Screens drawn into a `TestBackend` at 80×24 and 160×40 with a fixed clock and fixed ids
//! (snapshots in `snapshots/`), the escaping of hostile payloads, and paging against a real
//! capture store.

use bytes::Bytes;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use illumitunnel::delivery::{RequestRecord, ResponseRecord, Source};
use illumitunnel::store::CaptureStore;
use illumitunnel::{Delivery, DeliveryId};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::{App, AppEvent, Effect};
use super::{key_to_frame, loaded_app, run_query, view};
use crate::status::{ConnectionState, ListenEvent};

/// The fixed clock: 2025-06-15T15:06:40Z.
pub const NOW: i64 = 1_750_000_000_000;

/// A delivery with a fixed id (`seq` as 16 hex digits) received `seq` seconds before [`NOW`].
pub fn delivery(seq: u32, event: &str, resource: &str, status: Option<u16>) -> Delivery {
    let body = format!(
        r#"{{"event":"{event}","timestamp":"2025-06-15T14:{:02}:00Z","workspaceId":"ws_1","data":{{"id":"{resource}","subject":"Printer on fire"}}}}"#,
        seq % 60
    );
    let request = RequestRecord {
        method: "POST".into(),
        path: "/webhooks/illumichat".into(),
        query: String::new(),
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("x-illumichat-signature".into(), b"sha256=5f2b9c".to_vec()),
            ("user-agent".into(), b"IllumiChat-Webhooks/1.0".to_vec()),
        ],
        body: Bytes::from(body),
    };
    let id = DeliveryId::parse(&format!("{seq:016x}")).expect("fixed id");
    let mut d = Delivery::new(
        id,
        NOW - 600_000 + i64::from(seq) * 1_000,
        Source::Tunnel,
        request,
    );
    d.target = "http://localhost:3000/webhooks/illumichat".into();
    d.duration_us = 1_000 + i64::from(seq) * 1_250;
    match status {
        Some(status) => {
            d.response = Some(ResponseRecord {
                status,
                headers: vec![("content-type".into(), b"application/json".to_vec())],
                body: Bytes::from_static(br#"{"ok":true}"#),
            })
        }
        None => d.error = Some("connection refused to 127.0.0.1:3000".into()),
    }
    d
}

/// Eight deliveries covering every marker and outcome.
pub fn sample() -> Vec<Delivery> {
    let mut out = vec![
        delivery(1, "ticket.created", "tkt_8f3k2", Some(200)),
        delivery(2, "chat.message.created", "msg_77aa1", Some(201)),
        delivery(3, "lead.captured", "lead_0042", Some(404)),
        delivery(4, "ticket.created", "tkt_8f3k2", Some(200)),
        delivery(5, "contact.created", "ct_19", Some(200)),
        delivery(6, "ticket.updated", "tkt_8f3k2", Some(500)),
        delivery(7, "chat.session.created", "ses_5", None),
        delivery(8, "ticket.created", "tkt_8f3k2", Some(200)),
    ];
    // Same dedup key as the first: a redelivery by IllumiChat.
    out[3].request.body = out[0].request.body.clone();
    out[3].dedup_key = out[0].dedup_key.clone();
    out[4].skipped = true;
    out[4].target = String::new();
    out[4].response = None;
    out[4].error = None;
    out[5].queued = true;
    out[7].source = Source::Replay;
    out[7].replay_of = Some(out[0].id.clone());
    out
}

/// A capture store in a temp dir holding `deliveries`.
pub fn store_with(deliveries: Vec<Delivery>) -> (tempfile::TempDir, CaptureStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = CaptureStore::open(&dir.path().join("c.db")).expect("store");
    let mut deliveries = deliveries;
    store.insert_batch(&mut deliveries).expect("insert");
    (dir, store)
}

/// Runs `event` and every store read it leads to.
pub fn drive(app: &mut App, store: &CaptureStore, event: AppEvent) -> Option<Effect> {
    let mut next = app.update(event);
    while let Some(Effect::Load(query)) = next {
        next = app.update(AppEvent::Loaded(run_query(store, &query).expect("query")));
    }
    next
}

pub fn key(code: KeyCode) -> AppEvent {
    AppEvent::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn connected(app: &mut App) {
    app.update(AppEvent::Listen(ListenEvent::Connection(
        ConnectionState::Connected {
            queued: 1,
            expired: 0,
            dead_letters: 0,
        },
    )));
}

pub fn draw(app: &App, size: (u16, u16)) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(size.0, size.1)).expect("terminal");
    terminal
        .draw(|frame| view::render(app, frame))
        .expect("draw");
    terminal
}

pub fn screen(terminal: &Terminal<TestBackend>) -> String {
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            out.push_str(buffer[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

fn sample_app(size: (u16, u16)) -> (tempfile::TempDir, CaptureStore, App) {
    let (dir, store) = store_with(sample());
    let mut app = loaded_app(&store, size, NOW).expect("app");
    connected(&mut app);
    (dir, store, app)
}

#[test]
fn list_80x24() {
    let (_dir, _store, app) = sample_app((80, 24));
    insta::assert_snapshot!(draw(&app, (80, 24)).backend());
}

#[test]
fn list_160x40() {
    let (_dir, _store, app) = sample_app((160, 40));
    insta::assert_snapshot!(draw(&app, (160, 40)).backend());
}

#[test]
fn payload_80x24() {
    let (_dir, store, mut app) = sample_app((80, 24));
    drive(&mut app, &store, key(KeyCode::Up));
    drive(&mut app, &store, key(KeyCode::Enter));
    insta::assert_snapshot!(draw(&app, (80, 24)).backend());
}

#[test]
fn tabs_160x40() {
    let (_dir, store, mut app) = sample_app((160, 40));
    drive(&mut app, &store, key(KeyCode::Char('k')));
    drive(&mut app, &store, key(KeyCode::Char('k')));
    drive(&mut app, &store, key(KeyCode::Tab));
    insta::assert_snapshot!("payload_160x40", draw(&app, (160, 40)).backend());
    drive(&mut app, &store, key(KeyCode::Tab));
    insta::assert_snapshot!("request_headers_160x40", draw(&app, (160, 40)).backend());
    drive(&mut app, &store, key(KeyCode::Tab));
    insta::assert_snapshot!("response_160x40", draw(&app, (160, 40)).backend());
    drive(&mut app, &store, key(KeyCode::Tab));
    insta::assert_snapshot!("raw_160x40", draw(&app, (160, 40)).backend());
}

#[test]
fn a_test_verdict_and_diff_sit_above_the_details_160x40() {
    let (_dir, store, mut app) = sample_app((160, 40));
    drive(&mut app, &store, key(KeyCode::Char('k')));
    drive(&mut app, &store, key(KeyCode::Char('k')));
    let Some(Effect::Test { original }) = app.update(key(KeyCode::Char('t'))) else {
        panic!("t must test");
    };
    let mut replay = delivery(9, "ticket.created", "tkt_8f3k2", Some(202));
    replay.replay_of = Some(original.clone());
    if let Some(r) = replay.response.as_mut() {
        r.body = Bytes::from_static(br#"{"ok":false}"#);
    }
    drive(
        &mut app,
        &store,
        AppEvent::Tested {
            original,
            result: Ok(Box::new(replay)),
        },
    );
    drive(&mut app, &store, key(KeyCode::Char('3')));
    insta::assert_snapshot!(draw(&app, (160, 40)).backend());
}

#[test]
fn help_filter_and_messages_80x24() {
    let (_dir, store, mut app) = sample_app((80, 24));
    drive(&mut app, &store, key(KeyCode::Char('?')));
    insta::assert_snapshot!("help_80x24", draw(&app, (80, 24)).backend());
    drive(&mut app, &store, key(KeyCode::Esc));
    drive(&mut app, &store, key(KeyCode::Char('/')));
    for c in "tkt_8f".chars() {
        drive(&mut app, &store, key(KeyCode::Char(c)));
    }
    insta::assert_snapshot!("filter_prompt_80x24", draw(&app, (80, 24)).backend());
    drive(&mut app, &store, key(KeyCode::Enter));
    insta::assert_snapshot!("filtered_80x24", draw(&app, (80, 24)).backend());
    assert_eq!(app.total, 4);
}

#[test]
fn empty_and_reconnecting_80x24() {
    let (_dir, store) = store_with(Vec::new());
    let mut app = loaded_app(&store, (80, 24), NOW).expect("app");
    app.update(AppEvent::Listen(ListenEvent::Connection(
        ConnectionState::Reconnecting {
            in_secs: 4.2,
            cause: "relay closed the connection".into(),
        },
    )));
    insta::assert_snapshot!(draw(&app, (80, 24)).backend());
}

#[test]
fn too_small_says_so() {
    let (_dir, _store, app) = sample_app((79, 24));
    let terminal = draw(&app, (79, 24));
    insta::assert_snapshot!(terminal.backend());
    assert!(screen(&terminal).contains("terminal too small (need 80×24)"));
    let text = screen(&draw(&app, (120, 10)));
    assert!(text.contains("terminal too small (need 80×24)"), "{text}");
}

#[test]
fn hostile_bytes_are_drawn_escaped() {
    let mut d = delivery(1, "ticket.created", "tkt_1", Some(200));
    d.resource_id = Some("tkt_\x1b[31m".into());
    d.request.body = Bytes::from_static(b"before\x1b[2J\0after \x07\x1b]52;c;aGk=\x07 \xc2\x9b6n");
    d.request
        .headers
        .push(("x-evil".into(), b"\x1b[2J\r\n\0".to_vec()));
    d.response = Some(ResponseRecord {
        status: 200,
        headers: vec![("x-evil".into(), b"\x1b[?1049l".to_vec())],
        body: Bytes::from_static(b"\x1b[H\x1b[2J"),
    });
    let (_dir, store) = store_with(vec![d]);
    let mut app = loaded_app(&store, (160, 40), NOW).expect("app");
    for tab in ['1', '2', '3', '4'] {
        drive(&mut app, &store, key(KeyCode::Char(tab)));
        let terminal = draw(&app, (160, 40));
        let text = screen(&terminal);
        for cell in terminal.backend().buffer().content() {
            assert!(
                !cell.symbol().chars().any(|c| c.is_control()),
                "raw control character {:?} in tab {tab}",
                cell.symbol()
            );
        }
        match tab {
            '1' => {
                assert!(
                    text.contains("before^[[2J^@after ^G^[]52;c;aGk=^G \\u{9b}6n"),
                    "{text}"
                );
            }
            '2' => assert!(text.contains("x-evil: ^[[2J^M^J^@"), "{text}"),
            '3' => {
                assert!(text.contains("x-evil: ^[[?1049l"), "{text}");
                assert!(text.contains("^[[H^[[2J"), "{text}");
            }
            _ => assert!(text.contains("before^[[2J^@after"), "{text}"),
        }
    }
    // The list row escapes the resource id too.
    assert!(screen(&draw(&app, (160, 40))).contains("tkt_^[[31m"));
}

#[test]
fn binary_payload_is_a_hex_dump() {
    let mut d = delivery(1, "ticket.created", "tkt_1", Some(200));
    d.request.body = Bytes::from_static(&[0xff, 0xfe, 0x00, 0x41, 0x1b]);
    let (_dir, store) = store_with(vec![d]);
    let mut app = loaded_app(&store, (80, 24), NOW).expect("app");
    drive(&mut app, &store, key(KeyCode::Enter));
    let text = screen(&draw(&app, (80, 24)));
    assert!(text.contains("00000000  ff fe 00 41 1b"), "{text}");
    assert!(text.contains("|...A.|"), "{text}");
}

#[test]
fn only_the_window_is_held_with_many_deliveries() {
    let many: Vec<Delivery> = (1..=5_000)
        .map(|i| delivery(i, "ticket.created", &format!("tkt_{i}"), Some(200)))
        .collect();
    let (_dir, store) = store_with(many);
    let mut app = loaded_app(&store, (80, 24), NOW).expect("app");
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    assert_eq!(app.total, 5_000);
    assert!(app.held_rows() <= 64, "{}", app.held_rows());
    let page_up = KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE);
    for _ in 0..300 {
        key_to_frame(&mut app, &store, page_up, &mut terminal).expect("frame");
        assert!(app.held_rows() <= 64, "{}", app.held_rows());
        assert!(app.visible_rows().all(|(_, d)| d.is_some()));
    }
    // 300 pages of 19 rows reach the oldest delivery.
    assert_eq!(app.selected, 0);
    assert_eq!(
        app.visible_rows()
            .next()
            .and_then(|(_, d)| d)
            .map(|d| d.seq),
        Some(1)
    );
    let down = KeyEvent::new(KeyCode::Char('j'), KeyModifiers::NONE);
    for _ in 0..100 {
        key_to_frame(&mut app, &store, down, &mut terminal).expect("frame");
    }
    assert_eq!(app.selected_delivery().map(|d| d.seq), Some(101));
    let last = KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT);
    key_to_frame(&mut app, &store, last, &mut terminal).expect("frame");
    assert_eq!(app.selected_delivery().map(|d| d.seq), Some(5_000));
    assert!(app.is_following());
    let first = KeyEvent::new(KeyCode::Char('g'), KeyModifiers::NONE);
    key_to_frame(&mut app, &store, first, &mut terminal).expect("frame");
    assert_eq!(app.selected_delivery().map(|d| d.seq), Some(1));
    assert!(app.held_rows() <= 64);
}

/// The real loop in a real terminal, for a person or tmux to drive:
/// `tmux new -d 'cargo test -p illumitunnel-client live_terminal -- --ignored --nocapture'`.
/// A delivery arrives a second after start; `r` and `e` replays are answered as `listen` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real terminal"]
async fn live_terminal() {
    use tokio::sync::mpsc;

    let (dir, store) = store_with(sample());
    let store_path = dir.path().join("c.db");
    drop(store);
    let (events_tx, events_rx) = mpsc::channel(64);
    let (replays_tx, mut replays_rx) = mpsc::channel::<crate::status::ReplayRequest>(8);
    let writer_path = store_path.clone();
    tokio::spawn(async move {
        let mut store = CaptureStore::open(&writer_path).expect("store");
        let connected = ConnectionState::Connected {
            queued: 0,
            expired: 0,
            dead_letters: 0,
        };
        let _ = events_tx.send(ListenEvent::Connection(connected)).await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let mut next_seq = 100;
        let mut fresh = vec![delivery(next_seq, "ticket.updated", "tkt_live", Some(200))];
        store.insert_batch(&mut fresh).expect("insert");
        for d in fresh {
            let _ = events_tx.send(ListenEvent::Deliveries(vec![d])).await;
        }
        while let Some(request) = replays_rx.recv().await {
            next_seq += 1;
            let Ok(Some(original)) = store.get(request.original.as_str()) else {
                let _ = request.reply.send(Err("unknown delivery".into()));
                continue;
            };
            let mut replay = delivery(next_seq, "ticket.created", "tkt_replay", Some(200));
            replay.request.body = request.body.unwrap_or(original.request.body);
            replay.source = Source::Replay;
            replay.replay_of = Some(original.id);
            let mut batch = vec![replay];
            store.insert_batch(&mut batch).expect("insert");
            let replay = batch.remove(0);
            let _ = events_tx
                .send(ListenEvent::Deliveries(vec![replay.clone()]))
                .await;
            let _ = request.reply.send(Ok(replay));
        }
    });
    let ctx = super::TuiContext {
        public_url: tokio::sync::watch::channel(Some(
            "https://relay.example.com/t/brave-otter".to_string(),
        ))
        .1,
        forward_to: "http://localhost:3000".into(),
        web_inspector: None,
        store_path,
        replays: replays_tx,
        utc_offset: time::UtcOffset::UTC,
        stop: tokio_util::sync::CancellationToken::new(),
        abandon: tokio_util::sync::CancellationToken::new(),
    };
    super::run(ctx, events_rx).await.expect("inspector");
}

/// Keypress-to-frame timings with 100,000 stored deliveries, printed, never asserted (numbers
/// belong to the benchmark, not to a test): `cargo test -p illumitunnel-client --release
/// key_to_frame_figures -- --ignored --nocapture`.
#[test]
#[ignore = "prints timings; run by hand"]
fn key_to_frame_figures() {
    let many: Vec<Delivery> = (1..=100_000)
        .map(|i| delivery(i, "ticket.created", &format!("tkt_{i}"), Some(200)))
        .collect();
    let (_dir, store) = store_with(many);
    let mut app = loaded_app(&store, (160, 40), NOW).expect("app");
    let mut terminal = Terminal::new(TestBackend::new(160, 40)).expect("terminal");
    let keys = [
        KeyCode::PageUp,
        KeyCode::Up,
        KeyCode::Enter,
        KeyCode::Tab,
        KeyCode::PageDown,
    ];
    let mut times = Vec::new();
    for i in 0..2_000 {
        let key = KeyEvent::new(keys[i % keys.len()], KeyModifiers::NONE);
        let start = std::time::Instant::now();
        key_to_frame(&mut app, &store, key, &mut terminal).expect("frame");
        times.push(start.elapsed());
    }
    times.sort();
    let g = KeyEvent::new(KeyCode::Char('g'), KeyModifiers::NONE);
    let start = std::time::Instant::now();
    key_to_frame(&mut app, &store, g, &mut terminal).expect("frame");
    let first = start.elapsed();
    eprintln!(
        "key to frame, 100000 deliveries, 160x40: median {:?}, p99 {:?}, max {:?}; g (oldest) {:?}; held rows {}",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1],
        first,
        app.held_rows()
    );
}

#[test]
fn a_failing_store_is_in_the_header_until_it_recovers() {
    let (_dir, _store, mut app) = sample_app((160, 40));
    let sentence =
        "capture store failing: database or disk is full; free disk space or pass --store PATH";
    app.update(AppEvent::Listen(ListenEvent::Store(
        crate::status::StoreHealth::Failing(sentence.into()),
    )));
    let text = screen(&draw(&app, (160, 40)));
    let header = text.lines().nth(1).unwrap_or_default();
    assert!(header.contains(sentence), "{text}");
    assert!(header.contains("connected"), "{text}");
    app.update(AppEvent::Listen(ListenEvent::Store(
        crate::status::StoreHealth::Recovered,
    )));
    let text = screen(&draw(&app, (160, 40)));
    assert!(!text.contains("capture store failing"), "{text}");
}

#[test]
fn dead_letters_are_counted_in_the_header() {
    let (_dir, _store, mut app) = sample_app((160, 40));
    app.update(AppEvent::Listen(ListenEvent::Connection(
        ConnectionState::Connected {
            queued: 0,
            expired: 0,
            dead_letters: 2,
        },
    )));
    let text = screen(&draw(&app, (160, 40)));
    assert!(text.contains("2 dead letters"), "{text}");
    app.update(AppEvent::Listen(ListenEvent::DeadLettered {
        id: DeliveryId::parse("dl1").expect("id"),
        reason: "rejected 3 times in a row".into(),
    }));
    let text = screen(&draw(&app, (160, 40)));
    assert!(text.contains("3 dead letters"), "{text}");
    assert!(
        text.contains("the relay set delivery dl1 aside as a dead letter: rejected 3 times"),
        "{text}"
    );
}

#[test]
fn a_loopback_webhook_url_is_marked_local_only_in_the_header() {
    let (_dir, _store, mut app) = sample_app((160, 40));
    let text = screen(&draw(&app, (160, 40)));
    assert!(!text.contains("local only"), "{text}");
    app.public_url = "https://127.0.0.1:8443/t/brave-otter".into();
    let text = screen(&draw(&app, (160, 40)));
    let header = text.lines().next().unwrap_or_default();
    assert!(
        header.contains("local only — IllumiChat cannot reach this URL"),
        "{text}"
    );
}

#[test]
fn everything_a_relay_sends_is_escaped_in_the_inspector() {
    const HOSTILE: &str = "\x1b]0;owned\x07\u{202e}";
    let (_dir, _store, mut app) = sample_app((160, 40));
    app.public_url = format!("https://relay.example.com/t/x{HOSTILE}");
    app.update(AppEvent::Listen(ListenEvent::Connection(
        ConnectionState::Reconnecting {
            in_secs: 1.0,
            cause: format!("lost{HOSTILE}"),
        },
    )));
    app.update(AppEvent::Listen(ListenEvent::DeadLettered {
        id: DeliveryId::parse("dl1").expect("id"),
        reason: format!("why{HOSTILE}"),
    }));
    let text = screen(&draw(&app, (160, 40)));
    assert!(
        !text
            .chars()
            .any(|c: char| c != '\n' && illumitunnel::escape::is_unsafe(c)),
        "{text:?}"
    );
    assert!(text.contains("x^[]0;owned^G\\u{202e}"), "{text}");
    assert!(text.contains("lost^[]0;owned^G"), "{text}");
    assert!(text.contains("why^[]0;owned^G"), "{text}");
    app.update(AppEvent::Listen(ListenEvent::Connection(
        ConnectionState::Refused(format!("no{HOSTILE}")),
    )));
    let text = screen(&draw(&app, (160, 40)));
    assert!(text.contains("no^[]0;owned^G"), "{text}");
}

#[test]
fn a_retry_reads_retry_n_in_the_list_as_in_events() {
    // Same event and resource: one dedup key. A failed answer, then a retry that is answered,
    // then a repeat of a delivered one.
    let failed = delivery(1, "ticket.created", "tkt_1", Some(500));
    let mut retried = delivery(2, "ticket.created", "tkt_1", Some(200));
    let mut repeated = delivery(3, "ticket.created", "tkt_1", Some(200));
    retried.dedup_key = failed.dedup_key.clone();
    repeated.dedup_key = failed.dedup_key.clone();
    let (_dir, store) = store_with(vec![failed, retried, repeated]);
    let app = loaded_app(&store, (160, 40), NOW).expect("app");
    let text = screen(&draw(&app, (160, 40)));
    assert!(text.contains("retry 1"), "{text}");
    assert!(text.contains("dup"), "{text}");
}

// Web inspector: its address in the header.

#[test]
fn the_web_inspector_address_is_in_the_header() {
    let (_dir, _store, mut app) = sample_app((160, 40));
    let text = screen(&draw(&app, (160, 40)));
    assert!(!text.contains("· web "), "{text}");
    app.web_inspector = Some("http://127.0.0.1:4041".into());
    let text = screen(&draw(&app, (160, 40)));
    let state_line = text.lines().nth(1).unwrap_or_default();
    assert!(
        state_line.contains("connected") && state_line.contains("· web http://127.0.0.1:4041"),
        "{text}"
    );
}
