//! The web inspector's local API against real processes over loopback: a relay, `listen` with
//! `--inspect 127.0.0.1:0`, and a local handler. Every endpoint, its bad input, the `Host` and
//! token checks, the security headers, paging with the cursor, the live stream, and the
//! `--inspect` / `--no-inspect` flags.

// Helpers here are test code too; `allow-unwrap-in-tests` only covers `#[test]` functions.
#![allow(clippy::unwrap_used)]

#[path = "web_api/client.rs"]
mod client;
mod support;
#[path = "web_api/terminal.rs"]
mod terminal;

use serde_json::{json, Value};
use tokio::runtime::Runtime;

use client::{request, EventStream, Inspector};
use support::sender::Request;
use support::target::{Recorded, Reply, Target};
use support::{runtime, ChildGuard, Listen, Relay, Stream, DEADLINE};
use terminal::Terminal;

/// A webhook through the relay's tunnel URL.
fn send_webhook(rt: &Runtime, listen: &Listen, n: usize) {
    let body = format!(
        r#"{{"event":"ticket.created","timestamp":"2026-01-01T00:00:{:02}Z","data":{{"id":"tkt_{n}"}}}}"#,
        n % 60
    );
    let response = Request::post(&format!("{}/hooks", listen.url))
        .header("content-type", "application/json")
        .header("authorization", "Bearer very-secret")
        .body(body)
        .send(rt);
    assert_eq!(response.status, 200, "{}", response.text());
}

/// The local handler: answers JSON naming what it got.
fn handler(rt: &Runtime) -> Target {
    Target::start(rt, |req: &Recorded| {
        Reply::status(200)
            .header("content-type", "application/json")
            .body(format!(r#"{{"handled":"{}"}}"#, req.path))
    })
}

/// A handler, a relay and a `listen` of `tunnel` with its web inspector on a port of its own.
fn inspected(rt: &Runtime, tunnel: &str) -> (Target, Relay, Listen, Inspector) {
    let target = handler(rt);
    let relay = Relay::http(&[]);
    let listen = Listen::start(
        Some(&relay.url),
        &target.url(""),
        tunnel,
        &["--inspect", "127.0.0.1:0"],
    );
    let inspector = Inspector::of(&listen, tunnel);
    (target, relay, listen, inspector)
}

#[test]
fn every_endpoint_answers_with_the_documented_shapes_statuses_and_headers() {
    let rt = runtime();
    let tunnel = "web-api-endpoints";
    let (target, _relay, listen, inspector) = inspected(&rt, tunnel);

    // The page and its assets, with the token in the page; the security headers everywhere.
    let page = inspector.get(&rt, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains(&format!(
            r#"<meta name="illumitunnel-token" content="{}">"#,
            inspector.token
        )),
        "{html}"
    );
    for (path, content_type) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
    ] {
        let asset = inspector.get(&rt, path);
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.header("content-type"), Some(content_type));
    }
    assert_eq!(inspector.get(&rt, "/favicon.ico").status, 204);
    let head = inspector.call(&rt, "HEAD", "/assets/app.js", &[], "");
    assert_eq!((head.status, head.body.len()), (200, 0));
    for answer in [&page, &inspector.get(&rt, "/api/deliveries/nope")] {
        let csp = answer.header("content-security-policy").expect("CSP");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
        assert!(
            !answer
                .headers
                .keys()
                .any(|k| k.as_str().starts_with("access-control-")),
            "no CORS: {:?}",
            answer.headers
        );
    }

    let mut stream = rt.block_on(EventStream::open(&inspector));
    for n in 0..3 {
        send_webhook(&rt, &listen, n);
    }
    let printed = listen.deliveries(3);
    let streamed = rt.block_on(stream.next_delivery());
    assert_eq!(
        streamed, printed[0],
        "the stream sends what events --json prints"
    );

    // The list: newest first, each item exactly an `events --json` line.
    let list = inspector.get(&rt, "/api/deliveries");
    assert_eq!(list.status, 200);
    let list = list.json();
    let items = list["deliveries"].as_array().unwrap();
    let newest_first: Vec<Value> = printed.iter().rev().cloned().collect();
    assert_eq!(items, &newest_first);
    assert_eq!(list["next_cursor"], Value::Null);
    // Other processes reading the store (`events`, `show`) while `listen` serves the inspector:
    // the replays below are still recorded (an open in `listen` used to drop its SQLite locks, and
    // then its writer failed with "no column named retry").
    let events = listen.client(&["events", "--json"]);
    let events: Vec<Value> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items, &events);

    // One delivery: `show --json`, secrets hidden unless asked for.
    let id = printed[0]["id"].as_str().unwrap().to_string();
    let shown: Value =
        serde_json::from_str(&listen.client(&["show", &id, "--json"]).stdout).unwrap();
    let revealed = inspector.get(&rt, &format!("/api/deliveries/{id}?include_secrets=true"));
    assert_eq!(revealed.status, 200);
    assert_eq!(revealed.json(), shown);
    let hidden = inspector.get(&rt, &format!("/api/deliveries/{id}")).json();
    let authorization = |d: &Value| {
        d["request"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "authorization")
            .map(|h| h[1].clone())
    };
    assert_eq!(authorization(&hidden), Some(json!("REDACTED")));
    assert_eq!(authorization(&shown), Some(json!("Bearer very-secret")));

    // Its raw bodies.
    let body = inspector.get(&rt, &format!("/api/deliveries/{id}/body"));
    assert_eq!(body.status, 200);
    assert_eq!(body.header("content-type"), Some("application/json"));
    assert_eq!(body.header("content-disposition"), Some("attachment"));
    assert_eq!(
        body.body,
        shown["request"]["body"].as_str().unwrap().as_bytes()
    );
    let answered = inspector.get(&rt, &format!("/api/deliveries/{id}/body?part=response"));
    assert_eq!(answered.body, br#"{"handled":"/hooks"}"#);

    // Replay: the token is required; with it, the edited request reaches the handler.
    let before = target.requests().len();
    let replay_path = format!("/api/deliveries/{id}/replay");
    let no_token = inspector.call(&rt, "POST", &replay_path, &[], "");
    assert!(no_token.error(403).contains("X-Illumitunnel-Token"));
    let wrong = inspector.call(
        &rt,
        "POST",
        &replay_path,
        &[("x-illumitunnel-token", "not-the-token")],
        "",
    );
    wrong.error(403);
    assert_eq!(
        target.requests().len(),
        before,
        "a refused replay sends nothing"
    );
    let edits = json!({
        "method": "PUT",
        "path": "/edited/path?x=1",
        "headers": {"X-Edited": "yes", "authorization": "REDACTED"},
        "body": "changed body",
    });
    let replayed = inspector.post(&rt, &replay_path, &edits.to_string());
    assert_eq!(
        replayed.status,
        201,
        "{}",
        String::from_utf8_lossy(&replayed.body)
    );
    let replayed = replayed.json();
    assert_eq!(replayed["source"], "replay");
    assert_eq!(replayed["replay_of"], json!(id));
    assert_eq!(replayed["status"], 200);
    let got = target.wait_for_requests(before + 1);
    let got = &got[before];
    assert_eq!(got.method, "PUT");
    assert_eq!(got.path, "/edited/path");
    assert_eq!(got.query.as_deref(), Some("x=1"));
    assert_eq!(got.header("x-edited").as_deref(), Some("yes"));
    assert_eq!(
        got.header("authorization").as_deref(),
        Some("Bearer very-secret"),
        "a secret sent back as REDACTED keeps its stored value"
    );
    assert_eq!(got.body, b"changed body");
    // The new delivery is stored and streamed like any other.
    let replay_id = replayed["id"].as_str().unwrap();
    let streamed = rt.block_on(async {
        loop {
            let d = stream.next_delivery().await;
            if d["id"] == replay_id {
                break d;
            }
        }
    });
    assert_eq!(streamed["source"], "replay");
    assert_eq!(
        inspector
            .get(&rt, &format!("/api/deliveries/{replay_id}"))
            .json()["request"]["method"],
        "PUT"
    );
    // An empty body replays the stored request as it was.
    let plain = inspector.post(&rt, &replay_path, "");
    assert_eq!(plain.status, 201);
    let got = target.wait_for_requests(before + 2);
    assert_eq!(got[before + 1].method, "POST");
    assert_eq!(got[before + 1].path, "/hooks");

    // The test comparison, as `test --json` prints it.
    let tested = inspector.post(&rt, "/api/test", &json!({"ids": [id]}).to_string());
    assert_eq!(
        tested.status,
        200,
        "{}",
        String::from_utf8_lossy(&tested.body)
    );
    let tested = tested.json();
    assert_eq!(
        (tested["passed"].as_u64(), tested["failed"].as_u64()),
        (Some(1), Some(0))
    );
    let case = &tested["results"][0];
    assert_eq!(case["id"], json!(id));
    assert_eq!(case["passed"], true);
    assert_eq!(case["expected_status"], 200);
    assert!(case["replay_id"].is_string(), "{case}");

    // Bad input: JSON errors with the documented statuses.
    inspector
        .get(&rt, "/api/deliveries/0123456789abcdef")
        .error(404);
    inspector
        .get(&rt, "/api/deliveries/0123456789abcdef/body")
        .error(404);
    inspector
        .post(&rt, "/api/deliveries/0123456789abcdef/replay", "")
        .error(404);
    inspector
        .post(&rt, "/api/test", r#"{"ids":["0123456789abcdef"]}"#)
        .error(404);
    assert!(inspector
        .get(&rt, "/api/deliveries?cursor=not-a-cursor")
        .error(400)
        .contains("cursor"));
    inspector.get(&rt, "/api/deliveries?limit=0").error(400);
    inspector.get(&rt, "/api/deliveries?status=9xx").error(400);
    inspector.get(&rt, "/api/deliveries?since=soon").error(400);
    inspector.post(&rt, &replay_path, "{not json").error(400);
    inspector
        .post(&rt, &replay_path, r#"{"headers":{"content-length":"1"}}"#)
        .error(400);
    inspector.post(&rt, "/api/test", "[]").error(400);
    inspector.get(&rt, "/api/nothing-here").error(404);
    inspector
        .call(&rt, "DELETE", "/api/stream", &[], "")
        .error(405);

    // Host: the bound address or localhost with its port, nothing else.
    let evil = rt.block_on(request(
        &inspector.addr,
        "GET",
        "/api/deliveries",
        &[("host", "evil.example")],
        "",
    ));
    assert!(evil.error(403).contains("loopback address"));
    let token = inspector.token.clone();
    let evil_post = rt.block_on(request(
        &inspector.addr,
        "POST",
        &replay_path,
        &[("host", "evil.example"), ("x-illumitunnel-token", &token)],
        "",
    ));
    evil_post.error(403);
    let port = inspector.addr.rsplit(':').next().unwrap();
    let localhost = format!("localhost:{port}");
    let by_name = rt.block_on(request(
        &inspector.addr,
        "GET",
        "/api/deliveries",
        &[("host", &localhost)],
        "",
    ));
    assert_eq!(by_name.status, 200);
}

#[test]
fn paging_with_the_cursor_returns_every_delivery_once_in_order() {
    let rt = runtime();
    let tunnel = "web-api-paging";
    let (_target, _relay, listen, inspector) = inspected(&rt, tunnel);
    let total = 23;
    for n in 0..total {
        send_webhook(&rt, &listen, n);
    }
    let printed: Vec<String> = listen
        .deliveries(total)
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/deliveries?limit=5&cursor={c}"),
            None => "/api/deliveries?limit=5".to_string(),
        };
        let page = inspector.get(&rt, &path);
        assert_eq!(page.status, 200);
        let page = page.json();
        let items = page["deliveries"].as_array().unwrap();
        assert!(items.len() <= 5);
        seen.extend(items.iter().map(|d| d["id"].as_str().unwrap().to_string()));
        pages += 1;
        if pages == 1 {
            // A delivery recorded while paging does not shift the pages after the first.
            send_webhook(&rt, &listen, 99);
            listen.deliveries(total + 1);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    let newest_first: Vec<String> = printed.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "each once, newest first");
    assert_eq!(pages, 5);

    // Filters page too: an event type, a status class and free text.
    let filtered = inspector
        .get(
            &rt,
            "/api/deliveries?event=ticket.created&status=2xx&q=tkt_7&limit=500",
        )
        .json();
    let ids: Vec<&str> = filtered["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["resource_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tkt_7"]);
    let none = inspector.get(&rt, "/api/deliveries?status=5xx").json();
    assert_eq!(none["deliveries"], json!([]));
}

/// Runs `listen` with `extra` flags against `relay` and returns its banner's inspector URL line,
/// if any, once it is connected.
fn banner_inspector(listen: &Listen) -> Option<String> {
    listen.wait_connected();
    listen
        .guard
        .stderr()
        .lines()
        .find(|l| l.starts_with("web inspector"))
        .map(str::to_string)
}

#[test]
fn inspect_moves_past_a_taken_port_and_no_inspect_serves_nothing() {
    let rt = runtime();
    let target = handler(&rt);
    let relay = Relay::http(&[]);

    // A taken port: the next free one.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let asked = format!("127.0.0.1:{port}");
    let moved = Listen::start(
        Some(&relay.url),
        &target.url(""),
        "web-api-moved",
        &["--inspect", &asked],
    );
    let inspector = Inspector::of(&moved, "web-api-moved");
    let got: u16 = inspector.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(got > port && got <= port + 9, "{got} after taken {port}");
    assert_eq!(inspector.get(&rt, "/api/deliveries").status, 200);

    // --no-inspect: no banner line, nothing in the record.
    let off = Listen::start(
        Some(&relay.url),
        &target.url(""),
        "web-api-off",
        &["--no-inspect"],
    );
    assert_eq!(banner_inspector(&off), None);
    let record: Value = serde_json::from_slice(
        &std::fs::read(off.home().join("data/listen/web-api-off.json")).unwrap(),
    )
    .unwrap();
    assert!(record.get("inspect").is_none() && record.get("inspect_token").is_none());
    // With `--relay`, `listen` listens on nothing but its inspector: none at all here.
    #[cfg(target_os = "linux")]
    {
        assert_eq!(listening_ports(off.guard.pid()), Vec::<u16>::new());
        assert_eq!(listening_ports(moved.guard.pid()), vec![got]);
    }

    // The default: 4040, or the next free port up to 4049 (other programs on this machine may
    // hold some), or a line saying all ten are taken.
    let home = support::temp_dir();
    let mut cmd = support::command("illumitunnel", home.path());
    cmd.env_remove("ILLUMITUNNEL_INSPECT")
        .args([
            "listen",
            "--relay",
            &relay.url,
            "--forward-to",
            &target.url(""),
        ])
        .args(["--tunnel", "web-api-default", "--no-tui", "--store"])
        .arg(home.path().join("captures.db"));
    let default = ChildGuard::spawn(cmd);
    default.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    match default
        .stderr()
        .lines()
        .find(|l| l.starts_with("web inspector"))
    {
        Some(line) => {
            let addr = support::after(line, "http://").to_string();
            let port: u16 = addr.strip_prefix("127.0.0.1:").unwrap().parse().unwrap();
            assert!((4040..=4049).contains(&port), "{line}");
            let answer = rt.block_on(request(&addr, "GET", "/", &[("host", &addr)], ""));
            assert_eq!(answer.status, 200);
        }
        None => assert!(
            default.stderr().contains("web inspector not started"),
            "{}",
            default.stderr()
        ),
    }
    // ILLUMITUNNEL_INSPECT=off is --no-inspect.
    let home = support::temp_dir();
    let mut cmd = support::command("illumitunnel", home.path());
    cmd.env("ILLUMITUNNEL_INSPECT", "off")
        .args([
            "listen",
            "--relay",
            &relay.url,
            "--forward-to",
            &target.url(""),
        ])
        .args(["--tunnel", "web-api-env-off", "--no-tui", "--store"])
        .arg(home.path().join("captures.db"));
    let off = ChildGuard::spawn(cmd);
    off.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    assert!(!off.stderr().contains("web inspector"), "{}", off.stderr());
}

/// The TCP ports process `pid` listens on, from `/proc`.
#[cfg(target_os = "linux")]
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is `IP:PORT` in hex, st `0A` is LISTEN, inode the 10th field.
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap_or_default();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[test]
fn an_inspect_address_off_this_machine_is_refused_with_the_usage_exit_code() {
    let home = support::temp_dir();
    for addr in ["0.0.0.0:4040", "192.168.1.10:4040", "[::]:4040"] {
        let mut cmd = support::command("illumitunnel", home.path());
        cmd.args(["listen", "3000", "--no-tui", "--inspect", addr]);
        let done = ChildGuard::run(cmd);
        assert_eq!(done.code(), 2, "{done:?}");
        assert_eq!(
            done.stderr.trim(),
            format!("error: --inspect {addr} is not a loopback address and the inspector serves this machine only; pass 127.0.0.1:PORT or [::1]:PORT"),
        );
    }
    let mut cmd = support::command("illumitunnel", home.path());
    cmd.args([
        "listen",
        "3000",
        "--inspect",
        "127.0.0.1:4040",
        "--no-inspect",
    ]);
    assert_eq!(ChildGuard::run(cmd).code(), 2);
}

#[test]
fn the_web_inspector_runs_beside_the_terminal_inspector_on_the_same_store() {
    if !Terminal::available() {
        return;
    }
    let rt = runtime();
    let target = handler(&rt);
    let relay = Relay::http(&[]);
    let tunnel = "web-beside-tui";
    let home = support::temp_dir();
    let args: Vec<String> = [
        "listen",
        "--relay",
        &relay.url,
        "--forward-to",
        &target.url(""),
        "--tunnel",
        tunnel,
        "--store",
        &home.path().join("captures.db").display().to_string(),
        "--inspect",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let terminal = Terminal::start(home.path(), &args);
    terminal.wait_for("● connected");
    let record_path = home.path().join(format!("data/listen/{tunnel}.json"));
    let record: Value = support::poll_until("the inspector in the listen record", DEADLINE, || {
        std::fs::read(&record_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .filter(|r| r["inspect"].is_string())
            .ok_or_else(|| format!("{}", record_path.display()))
    });
    let url = record["inspect"].as_str().unwrap();
    terminal.wait_for(&format!("· web {url}"));
    let inspector = Inspector {
        addr: url.trim_start_matches("http://").to_string(),
        token: record["inspect_token"].as_str().unwrap().to_string(),
    };

    let response = Request::post(&format!("{}/t/{tunnel}/hooks", relay.url))
        .header("content-type", "application/json")
        .body(r#"{"event":"ticket.created","timestamp":"2026-01-01T00:00:00Z","data":{"id":"tkt_both"}}"#)
        .send(&rt);
    assert_eq!(response.status, 200);
    terminal.wait_for("tkt_both");
    let list = inspector.get(&rt, "/api/deliveries").json();
    let id = list["deliveries"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list["deliveries"][0]["resource_id"], "tkt_both");

    // A replay from the web shows up in the terminal inspector, marked replay.
    let replayed = inspector.post(&rt, &format!("/api/deliveries/{id}/replay"), "");
    assert_eq!(replayed.status, 201);
    assert_eq!(target.wait_for_requests(2).len(), 2);
    let screen = terminal.wait_until("two tkt_both rows", |s| s.matches("tkt_both").count() == 2);
    let replay_row = screen
        .lines()
        .filter(|l| l.contains("tkt_both"))
        .nth(1)
        .unwrap_or_default();
    assert!(replay_row.contains("replay"), "{screen}");
    assert_eq!(
        inspector.get(&rt, "/api/deliveries").json()["deliveries"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn an_inspect_port_whose_ten_ports_are_all_taken_is_one_sentence_and_exit_1() {
    // Ten consecutive ports held here, below the ephemeral range: there, every connection the
    // other tests open takes a port, and ten free in a row were sometimes not found in 20 tries
    // while the whole suite ran. Bases are tried in steps of ten from a place this process picks.
    let start = 20_000 + (std::process::id() % 1_000) as u16 * 10;
    let held: Vec<std::net::TcpListener> = (0..1_000u16)
        .map(|i| 20_000 + (start - 20_000 + i * 10) % 10_000)
        .find_map(|base| {
            (base..base + 10)
                .map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
                .collect::<Option<Vec<_>>>()
        })
        .expect("ten consecutive free ports on 127.0.0.1 between 20000 and 29999");
    let base = held[0].local_addr().unwrap().port();
    let home = support::temp_dir();
    let mut cmd = support::command("illumitunnel", home.path());
    cmd.args([
        "listen",
        "3000",
        "--no-tui",
        "--relay",
        &format!("http://127.0.0.1:{}", support::closed_port()),
        "--inspect",
        &format!("127.0.0.1:{base}"),
    ]);
    let done = ChildGuard::run(cmd);
    assert_eq!(done.code(), 1, "{done:?}");
    let stderr = done.stderr.trim();
    assert!(
        stderr.starts_with(&format!(
            "error: could not serve the web inspector on 127.0.0.1:{base}-{}: ",
            base + 9
        )),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("; pass --inspect with a free port, or --no-inspect"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
