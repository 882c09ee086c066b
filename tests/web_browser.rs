//! The web inspector of `listen` in a real headless Chromium driven through WebDriver: a
//! triggered event appears in the list without a reload, its JSON tree expands, j/k/Enter, r, e
//! and / work, the filters narrow the list (and the live stream), Replay and Edit-and-replay reach
//! the local handler (changed as edited) and are recorded marked replay, secret header values stay
//! hidden until revealed, a test run shows the JSON-aware diff, bodies are shown safely (a JSON
//! syntax error marked, binary as hex, control and bidi characters visible, markup as text),
//! duplicates are marked, the page is light or dark as the system prefers, and copy as curl gives
//! the command. Screenshots go to `target/web-inspector.png` (copied to `docs/` for the README)
//! and `target/web-inspector-dark.png`. Without Chromium and chromedriver these tests fail, naming
//! the Debian packages to install. `figures` (ignored) measures for `docs/benchmarks.md`.

mod support;

#[path = "web_browser/figures.rs"]
mod figures;

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use support::sender::Request;
use support::target::{Reply, Target};
use support::webdriver::{target_dir, tools_on, Browser};
use support::{closed_port, poll_until, runtime, Listen, Relay, DEADLINE};

/// A relay, a local handler, `listen --inspect` on a free port and a browser on its page.
struct Inspector {
    rt: tokio::runtime::Runtime,
    target: Target,
    listen: Listen,
    browser: Browser,
    _relay: Relay,
}

impl Inspector {
    /// Everything started; the page open (in a dark system theme when `dark`) with its live
    /// stream connected.
    fn start(
        dark: bool,
        tunnel: &str,
        handler: impl Fn(&support::target::Recorded) -> Reply + Send + Sync + 'static,
    ) -> Inspector {
        let browser = Browser::start(dark);
        let rt = runtime();
        let target = Target::start(&rt, handler);
        let relay = Relay::http(&[]);
        let port = closed_port();
        let addr = format!("127.0.0.1:{port}");
        let listen = Listen::start(
            Some(&relay.url),
            &target.url("/hooks"),
            tunnel,
            &["--inspect", &addr],
        );
        poll_until("the inspector to listen", DEADLINE, || {
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())
        });
        let page = format!("http://{addr}/");
        browser.goto(&page);
        browser.find("#live.on");
        browser.wait_js(
            "the first page of the list",
            "return document.getElementById('list-foot').textContent.includes('no deliveries');",
            vec![],
        );
        Inspector {
            rt,
            target,
            listen,
            browser,
            _relay: relay,
        }
    }

    /// Runs `illumitunnel trigger EVENT` against this listen; returns the recorded id.
    fn trigger(&self, event: &str, nth: usize) -> String {
        let out = self.listen.client(&["trigger", event]);
        assert_eq!(out.code(), 0, "{out:?}");
        self.recorded(nth)
    }

    /// The id of the `nth` (1-based) delivery `listen --json` printed.
    fn recorded(&self, nth: usize) -> String {
        let line = self.listen.deliveries(nth).remove(nth - 1);
        line["id"].as_str().expect("an id").to_string()
    }

    /// The ids of the list's rows, top to bottom.
    fn rows(&self) -> Vec<String> {
        let ids = self.browser.js(
            "return [...document.querySelectorAll('#list .row')].map(r => r.dataset.id);",
            vec![],
        );
        serde_json::from_value(ids).expect("a list of ids")
    }

    /// Waits until the list's rows are exactly `ids`.
    fn wait_rows(&self, what: &str, ids: &[&str]) {
        poll_until(what, DEADLINE, || {
            let rows = self.rows();
            if rows == ids {
                Ok(())
            } else {
                Err(format!("rows {rows:?}, want {ids:?}"))
            }
        });
    }

    /// Waits until the details pane shows delivery `id`.
    fn wait_details(&self, id: &str) {
        self.browser.wait_js(
            &format!("the details of {id}"),
            "const dd = document.querySelector('#details .facts dd'); \
             return dd !== null && dd.textContent === arguments[0];",
            vec![json!(id)],
        );
    }

    /// The page's background and text colours as the browser computed them.
    fn colours(&self) -> serde_json::Value {
        self.browser.js(
            "const s = getComputedStyle(document.body); return [s.backgroundColor, s.color];",
            vec![],
        )
    }

    /// The row of `id` as a CSS selector.
    fn row(id: &str) -> String {
        format!("#list .row[data-id=\"{id}\"]")
    }
}

#[test]
fn a_triggered_event_appears_live_its_tree_expands_and_keys_and_filters_work() {
    let ins = Inspector::start(false, "web-live", |_| Reply::ok());
    let b = &ins.browser;
    assert_eq!(
        ins.colours(),
        json!(["rgb(255, 255, 255)", "rgb(29, 35, 42)"]),
        "light by default"
    );
    b.js("window.sameDocument = true;", vec![]);

    let created = ins.trigger("ticket.created", 1);
    b.find(&Inspector::row(&created));
    assert_eq!(
        b.js("return window.sameDocument === true;", vec![]),
        json!(true),
        "the row came without a reload"
    );
    let row_text = b.js(
        "const r = document.querySelector(arguments[0]); \
         return [r.querySelector('.event').textContent, r.querySelector('.mark-trigger') !== null, \
                 r.querySelector('.status').textContent];",
        vec![json!(Inspector::row(&created))],
    );
    assert_eq!(row_text, json!(["ticket.created", true, "200"]));
    let updated = ins.trigger("ticket.updated", 2);
    ins.wait_rows("the second trigger on top", &[&updated, &created]);

    // j selects the top row, then moves down; k up; Enter opens the selected one.
    let selected = || {
        b.js(
            "const s = document.querySelector('#list .row.selected'); return s && s.dataset.id;",
            vec![],
        )
    };
    b.type_into("#list", "j", false);
    assert_eq!(selected(), json!(updated));
    b.type_into("#list", "j", false);
    assert_eq!(selected(), json!(created));
    b.type_into("#list", "k", false);
    assert_eq!(selected(), json!(updated));
    b.type_into("#list", "j", false);
    b.type_into("#list", "\u{e007}", false);
    ins.wait_details(&created);

    // The body is a tree: the root open, `data` closed and its children drawn on opening.
    b.find("#details .tree details.j-node[open]");
    let data = "[...document.querySelectorAll('#details .tree details.j-node')]\
                .find(d => d.querySelector(':scope > summary > .j-key')?.textContent === '\"data\"')";
    assert_eq!(
        b.js(
            &format!("const d = {data}; return [d.open, d.querySelectorAll(':scope .j-kids .j-key').length];"),
            vec![]
        ),
        json!([false, 0]),
        "`data` starts closed with nothing drawn"
    );
    b.js(&format!("{data}.querySelector('summary').click();"), vec![]);
    let subject = b.wait_js(
        "the `subject` key of data",
        &format!(
            "const d = {data}; const k = [...d.querySelectorAll('.j-key')]\
             .find(k => k.textContent === '\"subject\"'); \
             return k && k.offsetParent !== null && k.nextElementSibling.textContent;"
        ),
        vec![],
    );
    assert_eq!(subject, json!("\"Cannot reset my password\""));

    // The event filter narrows to one row; the status filter to none; cleared, both return.
    let choose = |id: &str, value: &str| {
        b.js(
            "const s = document.getElementById(arguments[0]); s.value = arguments[1]; \
             s.dispatchEvent(new Event('change'));",
            vec![json!(id), json!(value)],
        );
    };
    choose("f-event", "ticket.created");
    ins.wait_rows("only ticket.created", &[&created]);
    choose("f-event", "");
    ins.wait_rows("both rows again", &[&updated, &created]);
    choose("f-status", "5xx");
    ins.wait_rows("no 5xx rows", &[]);
    choose("f-status", "");
    ins.wait_rows("both rows again", &[&updated, &created]);

    // Filtered by text, a new delivery that does not match stays out of the list: the one
    // after it (which matches) arrives, it does not.
    b.type_into("#list", "/", false);
    assert_eq!(
        b.js("return document.activeElement.id;", vec![]),
        json!("f-q"),
        "/ goes to the text filter"
    );
    b.type_into("#f-q", "ticket.updated", false);
    ins.wait_rows("only the text match", &[&updated]);
    let third = ins.trigger("ticket.created", 3);
    let fourth = ins.trigger("ticket.updated", 4);
    ins.wait_rows("the new match only", &[&fourth, &updated]);
    b.type_into("#f-q", "", true);
    b.js(
        "document.getElementById('f-q').dispatchEvent(new Event('input'));",
        vec![],
    );
    ins.wait_rows(
        "all four once the text is cleared",
        &[&fourth, &third, &updated, &created],
    );

    // The timeline counts the last hour's deliveries and draws them.
    b.wait_js(
        "the timeline's count",
        "return document.getElementById('timeline-note').textContent.startsWith('last hour: 4 deliveries');",
        vec![],
    );
    // A bar at the bottom of the middle column of the last minute (or the one before, when the
    // deliveries straddled a minute).
    let bar = b.js(
        "const c = document.getElementById('timeline'); const g = c.getContext('2d'); \
         const w = c.width / 60; \
         return [58.5, 59.5].some(i => g.getImageData(Math.floor(i * w), c.height - 1, 1, 1).data[3] > 0);",
        vec![],
    );
    assert_eq!(bar, json!(true), "the last minute has a bar");

    // "expand all" opens every level of the tree (of another delivery, so that the pane is
    // drawn anew before the click).
    b.click(&Inspector::row(&updated));
    ins.wait_details(&updated);
    b.click("#details .tree-tools button");
    b.find("#details .tree details.j-node[open] details.j-node[open]");
}

#[test]
fn replay_and_edit_and_replay_reach_the_handler_and_secrets_stay_hidden() {
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    // Each answer differs from the last, so a test run shows a JSON diff.
    let ins = Inspector::start(false, "web-replay", move |_| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::status(200)
            .header("content-type", "application/json")
            .body(format!("{{\"answer\":{n},\"ok\":true}}"))
    });
    let b = &ins.browser;
    let secret = "Bearer s3cr3t-value-for-the-web-test";
    let sent = Request::post(&ins.listen.url)
        .header("content-type", "application/json")
        .header("authorization", secret)
        .body("{\"event\":\"ticket.created\",\"data\":{\"id\":\"tkt_1\",\"n\":1}}")
        .send(&ins.rt);
    assert_eq!(sent.status, 200, "{}", sent.text());
    let original = ins.recorded(1);
    b.click(&Inspector::row(&original));
    ins.wait_details(&original);

    // The secret is not in the page until revealed.
    let html = || b.js("return document.documentElement.outerHTML;", vec![]);
    assert!(!html().to_string().contains("s3cr3t"), "secret in the page");
    b.find("#details button.secret");

    // Replay: a new delivery marked replay, which the handler receives as it was.
    b.click("#btn-replay");
    let got = ins.target.wait_for_requests(2);
    assert_eq!(got[1].body, got[0].body);
    assert_eq!(got[1].path, "/hooks");
    assert_eq!(got[1].header("authorization").as_deref(), Some(secret));
    let replayed = ins.listen.deliveries(2).remove(1);
    assert_eq!(replayed["source"], "replay");
    assert_eq!(replayed["replay_of"], json!(original));
    let first_replay = replayed["id"].as_str().expect("id").to_string();
    b.find(&format!("{} .mark-replay", Inspector::row(&first_replay)));
    ins.wait_details(&first_replay);

    // Edit and replay: another path, a new header, another body; the hidden secret goes as
    // recorded. The replay's "replay of" leads back to the original.
    b.click("#details .facts button.link");
    ins.wait_details(&original);
    b.type_into("#list", "e", false);
    b.type_into("#edit-path", "/hooks/edited?via=web", true);
    b.type_into("#edit-headers", "\nx-edited: yes", false);
    b.type_into("#edit-body", "{\"n\":2}", true);
    b.click("#edit-send");
    let got = ins.target.wait_for_requests(3);
    assert_eq!(got[2].method, "POST");
    assert_eq!(got[2].path, "/hooks/edited");
    assert_eq!(got[2].query.as_deref(), Some("via=web"));
    assert_eq!(got[2].header("x-edited").as_deref(), Some("yes"));
    assert_eq!(got[2].header("authorization").as_deref(), Some(secret));
    assert_eq!(got[2].body, b"{\"n\":2}");
    let edited = ins.listen.deliveries(3).remove(2);
    assert_eq!(edited["source"], "replay");
    assert_eq!(edited["path"], "/hooks/edited");
    let edited_id = edited["id"].as_str().expect("id").to_string();
    b.find(&format!("{} .mark-replay", Inspector::row(&edited_id)));
    ins.wait_details(&edited_id);

    // r replays the open delivery (the edited one) again.
    b.type_into("#list", "r", false);
    let got = ins.target.wait_for_requests(4);
    assert_eq!(got[3].path, "/hooks/edited");
    assert_eq!(got[3].body, b"{\"n\":2}");
    let again = ins.listen.deliveries(4).remove(3);
    assert_eq!(again["replay_of"], json!(edited_id));
    ins.wait_details(again["id"].as_str().expect("id"));

    // A test run of the original: the answer changed, so it fails with a JSON-aware diff.
    b.click(&Inspector::row(&original));
    ins.wait_details(&original);
    b.click("#btn-test");
    let verdict = b.wait_js(
        "the test run's verdict",
        "const v = document.querySelector('#test-run .verdict'); return v && v.textContent;",
        vec![],
    );
    assert_eq!(verdict, json!("FAIL"));
    let diff = b.js(
        "return [[...document.querySelectorAll('#test-run .d-del')].map(e => e.textContent), \
                 [...document.querySelectorAll('#test-run .d-add')].map(e => e.textContent)];",
        vec![],
    );
    let text = diff.to_string();
    assert!(
        text.contains("\\\"answer\\\": 1") && text.contains("\\\"answer\\\": 5"),
        "{diff}"
    );

    // For people to look at: replays marked in the list, the failed test run's diff.
    b.js(
        "document.getElementById('details').scrollTop = 0; \
         document.getElementById('toast').classList.add('hidden');",
        vec![],
    );
    let shot = target_dir().join("web-inspector.png");
    let size = b.screenshot(&shot);
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && size > 10_000, "{size} bytes");
    eprintln!("screenshot: {}", shot.display());

    // Revealed on a click.
    b.click("#details button.secret");
    b.wait_js(
        "the revealed secret",
        "return document.getElementById('details').innerText.includes(arguments[0]);",
        vec![json!(secret)],
    );
}

#[test]
fn bodies_are_shown_safely_in_the_dark_duplicates_marked_and_curl_copied() {
    let ins = Inspector::start(true, "web-hostile", |_| Reply::ok());
    let b = &ins.browser;
    assert_eq!(
        ins.colours(),
        json!(["rgb(20, 24, 28)", "rgb(221, 227, 234)"]),
        "dark when the system prefers it"
    );
    let send = |content_type: &str, body: Vec<u8>| {
        let sent = Request::post(&ins.listen.url)
            .header("content-type", content_type)
            .body(body)
            .send(&ins.rt);
        assert_eq!(sent.status, 200, "{}", sent.text());
    };
    send("application/json", b"{\"a\": 1,\n \"b\": }".to_vec());
    send(
        "application/octet-stream",
        vec![0xff, 0xfe, 0x00, 0x01, b'A'],
    );
    send(
        "text/plain",
        "red \x1b[31m <img src=x id=injected> \u{202e}desrever\x07 end\n"
            .as_bytes()
            .to_vec(),
    );
    send(
        "application/json",
        b"{\"note\":\"\\u001b[2J cleared?\"}".to_vec(),
    );
    let ids: Vec<String> = (1..=4).map(|n| ins.recorded(n)).collect();
    let open = |n: usize| {
        b.click(&Inspector::row(&ids[n]));
        ins.wait_details(&ids[n]);
    };

    // The JSON syntax error: where it is, and the character marked.
    open(0);
    let error = b.wait_js(
        "the marked syntax error",
        "const m = document.querySelector('#details mark.json-error'); \
         return m && [m.textContent, m.closest('.body').querySelector('p').textContent];",
        vec![],
    );
    assert_eq!(
        error,
        json!([
            "}",
            "not valid JSON: unexpected character at line 2, column 7"
        ])
    );

    // Binary as hex.
    open(1);
    let hex = b.wait_js(
        "the hex dump",
        "const h = document.querySelector('#details pre.hex'); return h && h.textContent;",
        vec![],
    );
    assert!(
        hex.as_str()
            .is_some_and(|h| h.contains("00000000  ff fe 00 01 41") && h.contains("..A")),
        "{hex}"
    );

    // Control and bidi characters visible as the terminal shows them; markup stays text.
    open(2);
    let shown = b.wait_js(
        "the escaped text body",
        "const pre = document.querySelector('#details .body pre.text'); \
         return pre && [[...pre.querySelectorAll('.ctl')].map(c => c.textContent), pre.textContent];",
        vec![],
    );
    assert_eq!(shown[0], json!(["^[", "\\u{202e}", "^G"]), "{shown}");
    assert!(
        shown[1]
            .as_str()
            .is_some_and(|t| t.contains("<img src=x id=injected>")),
        "{shown}"
    );
    assert_eq!(
        b.js(
            "return document.getElementById('injected') === null;",
            vec![]
        ),
        json!(true)
    );
    open(3);
    let in_tree = b.wait_js(
        "the escaped JSON string",
        "const s = document.querySelector('#details .tree .j-str'); \
         return s && [s.textContent, s.querySelector('.ctl') && s.querySelector('.ctl').textContent];",
        vec![],
    );
    assert_eq!(in_tree, json!(["\"^[[2J cleared?\"", "^["]));

    // The dark page, for people to look at.
    let shot = target_dir().join("web-inspector-dark.png");
    assert!(b.screenshot(&shot) > 10_000);

    // The same IllumiChat event twice: the second is marked a duplicate.
    let event = b"{\"event\":\"ticket.created\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"data\":{\"id\":\"tkt_dup\"}}";
    send("application/json", event.to_vec());
    send("application/json", event.to_vec());
    let (first, second) = (ins.recorded(5), ins.recorded(6));
    b.find(&format!("{} .mark-dup", Inspector::row(&second)));
    assert_eq!(
        b.js(
            "return document.querySelector(arguments[0]).querySelector('.mark') === null;",
            vec![json!(Inspector::row(&first))]
        ),
        json!(true),
        "the first delivery has no mark"
    );

    // Copy as curl: the command is shown (and put on the clipboard when the browser lets it).
    b.click("#btn-curl");
    let curl = b.wait_js(
        "the curl command",
        "const c = document.getElementById('curl'); return c && c.textContent;",
        vec![],
    );
    let want = format!(
        "curl -X 'POST' '{}' -H 'content-type: application/json'",
        ins.target.url("/hooks")
    );
    assert!(
        curl.as_str().is_some_and(|c| c.starts_with(&want)
            && c.ends_with("--data-binary '{\"note\":\"\\u001b[2J cleared?\"}'")),
        "{curl}"
    );
}

#[test]
fn without_chromium_the_browser_tests_fail_naming_the_packages() {
    let empty = support::temp_dir();
    let why = tools_on(empty.path().as_os_str()).expect_err("nothing is installed there");
    assert!(
        why.contains("install the Debian packages chromium and chromium-driver"),
        "{why}"
    );
}
