//! End to end for the developer workflow with real processes: `trigger` straight to a local
//! server and through a real relay + `listen`, `replay` (by id, `--last`, `--event --since`,
//! `--forward-to`, `--edit` with a scripted editor), `listen --events` / `--route`, `webhooks`
//! and `listen --register` against a stand-in of IllumiChat's API, and their error paths.

#[path = "support/illumichat.rs"]
mod illumichat;
mod support;

use std::path::Path;

use illumichat::IllumiChat;
use serde_json::Value;
use support::sender::Request;
use support::target::Target;
use support::{
    closed_port, command, runtime, temp_dir, ChildGuard, Finished, Listen, Relay, Stream,
};

const TOKEN: &str = "ic-test-token-5f1e";

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// `illumitunnel ARGS --store HOME/captures.db` with `home` as its home, to completion.
fn client(home: &Path, args: &[&str]) -> Finished {
    client_env(home, args, &[])
}

fn client_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut cmd = command("illumitunnel", home);
    cmd.args(args)
        .arg("--store")
        .arg(home.join("captures.db"))
        .env_remove("ILLUMICHAT_TOKEN")
        .env_remove("ILLUMICHAT_API_BASE")
        .env_remove("VISUAL")
        .env_remove("EDITOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildGuard::run(cmd)
}

fn ok(out: &Finished) {
    assert_eq!(
        out.code(),
        0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

fn fails(out: &Finished, code: i32, needle: &str) {
    assert_eq!(
        out.code(),
        code,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {}", out.stderr);
    assert!(lines[0].starts_with("error: "), "{}", out.stderr);
    assert!(
        out.stderr.contains(needle),
        "{needle:?} not in {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn trigger_straight_to_the_local_server_records_one_row_each() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let home = temp_dir();
    let url = target.url("/webhooks/illumichat");

    let out = client(
        home.path(),
        &[
            "trigger",
            "ticket.created",
            "--forward-to",
            &url,
            "--set",
            "data.priority=high",
            "--set",
            "data.vip=true",
        ],
    );
    ok(&out);
    let line = out.stdout.trim();
    assert!(line.contains("ticket.created"), "{line}");
    assert!(line.contains("POST /webhooks/illumichat  200  "), "{line}");
    let got = target.wait_for_requests(1).remove(0);
    assert_eq!(got.path, "/webhooks/illumichat");
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(got
        .header("user-agent")
        .unwrap_or_default()
        .starts_with("illumitunnel-trigger/"));
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["event"], "ticket.created");
    assert_eq!(body["workspaceId"], "ws_sample01");
    assert!(body["data"]["id"].as_str().unwrap().starts_with("tkt_"));
    assert_eq!(body["data"]["priority"], "high");
    assert_eq!(body["data"]["vip"], true);

    // --count 2 --duplicate: two fresh samples, each sent twice; the second of each is a duplicate.
    let out = client(
        home.path(),
        &[
            "trigger",
            "lead.captured",
            "--forward-to",
            &url,
            "--count",
            "2",
            "--duplicate",
            "--json",
        ],
    );
    ok(&out);
    let sent = json_lines(&out.stdout);
    assert_eq!(sent.len(), 4, "{}", out.stdout);
    let dups: Vec<bool> = sent
        .iter()
        .map(|v| v["duplicate"].as_bool().unwrap())
        .collect();
    assert_eq!(dups, [false, true, false, true]);
    assert!(sent
        .iter()
        .all(|v| v["source"] == "trigger" && v["status"] == 200));
    assert_eq!(sent[0]["resource_id"], sent[1]["resource_id"]);
    assert_ne!(sent[0]["resource_id"], sent[2]["resource_id"]);
    let requests = target.wait_for_requests(5);
    assert_eq!(
        requests[1].body, requests[2].body,
        "--duplicate resends the same bytes"
    );

    let listed = client(home.path(), &["events", "--json"]);
    ok(&listed);
    assert_eq!(
        json_lines(&listed.stdout).len(),
        5,
        "one row per triggered delivery"
    );

    // --file with --set.
    let payload = home.path().join("payload.json");
    std::fs::write(&payload, r#"{"event":"contact.created","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_1","data":{"id":"ct_1"}}"#).unwrap();
    let out = client(
        home.path(),
        &[
            "trigger",
            "contact.created",
            "--forward-to",
            &url,
            "--file",
            payload.to_str().unwrap(),
            "--set",
            "data.name=Ana",
        ],
    );
    ok(&out);
    let body: Value = serde_json::from_slice(&target.wait_for_requests(6)[5].body).unwrap();
    assert_eq!(body["data"]["id"], "ct_1");
    assert_eq!(body["data"]["name"], "Ana");
}

#[test]
fn trigger_goes_through_the_running_listen_and_is_recorded_once() {
    let rt = runtime();
    let target = Target::ok(&rt);
    // The embedded relay: trigger finds the URL and the certificate from the listen record.
    let port = support::closed_port().to_string();
    let listen = Listen::start(
        None,
        &target.url("/hooks"),
        "trigger-embedded",
        &["--relay-port", &port],
    );
    let out = listen.client(&["trigger", "chat.message.created"]);
    ok(&out);
    assert!(
        out.stdout.contains("chat.message.created"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("  200  "), "{}", out.stdout);
    let shown = listen.deliveries(1).remove(0);
    assert_eq!(shown["source"], "trigger");
    assert_eq!(shown["event"], "chat.message.created");
    let got = target.wait_for_requests(1).remove(0);
    assert_eq!(got.header("x-illumitunnel-trigger").as_deref(), Some("1"));
    let events = listen.client(&["events", "--json"]);
    assert_eq!(
        json_lines(&events.stdout).len(),
        1,
        "exactly one row: {}",
        events.stdout
    );

    // --url through another relay's tunnel, from a machine with no listen of its own.
    let relay = Relay::http(&[]);
    let other = Listen::start(Some(&relay.url), &target.url("/hooks"), "trigger-url", &[]);
    let home = temp_dir();
    let out = client(
        home.path(),
        &["trigger", "ticket.updated", "--url", &other.url, "--json"],
    );
    ok(&out);
    let sent = json_lines(&out.stdout).remove(0);
    assert_eq!(sent["status"], 200);
    assert_eq!(sent["id"], Value::Null);
    let shown = other.deliveries(1).remove(0);
    assert_eq!(shown["source"], "trigger");
    assert!(
        client(home.path(), &["events", "--json"])
            .stdout
            .trim()
            .is_empty(),
        "nothing recorded on the sending side"
    );
}

#[test]
fn trigger_errors_are_one_sentence() {
    let home = temp_dir();
    let out = client(
        home.path(),
        &[
            "trigger",
            "ticket.deleted",
            "--forward-to",
            "http://127.0.0.1:9",
        ],
    );
    fails(&out, 2, "chat.message.created, chat.session.created, ticket.created, ticket.updated, lead.captured, contact.created");
    let out = client(home.path(), &["trigger", "ticket.created"]);
    fails(&out, 1, "no illumitunnel listen is running on this machine; start one, or pass --forward-to URL or --url PUBLIC_URL");
    let port = closed_port();
    let out = client(
        home.path(),
        &[
            "trigger",
            "ticket.created",
            "--forward-to",
            &format!("http://127.0.0.1:{port}/h"),
        ],
    );
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("connection refused to 127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    let bad = home.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let out = client(
        home.path(),
        &[
            "trigger",
            "ticket.created",
            "--forward-to",
            "http://127.0.0.1:9",
            "--file",
            bad.to_str().unwrap(),
        ],
    );
    fails(&out, 2, "is not valid JSON");
    let out = client(
        home.path(),
        &[
            "trigger",
            "ticket.created",
            "--forward-to",
            "http://127.0.0.1:9",
            "--set",
            "nothing",
        ],
    );
    fails(&out, 2, "is not PATH=VALUE");
}

#[test]
fn replay_by_id_last_event_and_edit() {
    let rt = runtime();
    let target = Target::echo(&rt);
    let home = temp_dir();
    let url = target.url("/hooks");
    for event in ["ticket.created", "lead.captured", "ticket.created"] {
        ok(&client(
            home.path(),
            &["trigger", event, "--forward-to", &url, "--json"],
        ));
    }
    let stored = json_lines(&client(home.path(), &["events", "--json"]).stdout);
    let first_ticket = stored[2]["id"].as_str().unwrap().to_string();

    // By id (a prefix works too): same method, path and body, recorded with replay_of.
    let out = client(home.path(), &["replay", &first_ticket, "--json"]);
    ok(&out);
    let replayed = json_lines(&out.stdout).remove(0);
    assert_eq!(replayed["replay_of"], first_ticket.as_str());
    assert_eq!(replayed["source"], "replay");
    assert_eq!(replayed["status"], 200);
    let requests = target.wait_for_requests(4);
    assert_eq!(requests[3].path, "/hooks");
    assert_eq!(requests[3].body, requests[0].body);

    // --last is the newest original, not the replay just made.
    let out = client(home.path(), &["replay", "--last"]);
    ok(&out);
    assert!(
        out.stdout
            .contains(&format!("replay of {}", stored[0]["id"].as_str().unwrap())),
        "{}",
        out.stdout
    );

    // --event --since: both ticket.created originals, oldest first, to --forward-to.
    let other = Target::ok(&rt);
    let out = client(
        home.path(),
        &[
            "replay",
            "--event",
            "ticket.created",
            "--since",
            "1h",
            "--forward-to",
            &other.url("/v2?k=1"),
            "--json",
        ],
    );
    ok(&out);
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert_eq!(lines[0]["replay_of"], first_ticket.as_str());
    let got = other.wait_for_requests(2);
    assert!(got
        .iter()
        .all(|r| r.path == "/v2" && r.query.as_deref() == Some("k=1")));

    // --edit with an editor that rewrites the file.
    let editor = home.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/Cannot reset my password/Edited subject/' \"$1\"\n",
    )
    .unwrap();
    make_executable(&editor);
    let out = client_env(
        home.path(),
        &["replay", &first_ticket, "--edit"],
        &[("EDITOR", editor.to_str().unwrap())],
    );
    ok(&out);
    let edited = target.wait_for_requests(6).remove(5);
    let body: Value = serde_json::from_slice(&edited.body).unwrap();
    assert_eq!(body["data"]["subject"], "Edited subject");
    assert_eq!(
        edited.header("content-length").as_deref(),
        Some(edited.body.len().to_string().as_str())
    );

    // An edit that breaks the JSON sends nothing.
    let breaker = home.path().join("breaker.sh");
    std::fs::write(&breaker, "#!/bin/sh\necho '{broken' > \"$1\"\n").unwrap();
    make_executable(&breaker);
    let out = client_env(
        home.path(),
        &["replay", &first_ticket, "--edit"],
        &[("VISUAL", breaker.to_str().unwrap())],
    );
    fails(&out, 1, "is not valid JSON");
    assert!(out.stderr.contains("nothing was sent"), "{}", out.stderr);
    assert_eq!(target.requests().len(), 6);

    fails(
        // An unknown id is bad usage (exit 2), as for show and test.
        &client(home.path(), &["replay", "ffffffffffff"]),
        2,
        "no delivery with id ffffffffffff; list ids with illumitunnel events",
    );
    fails(
        &client(home.path(), &["replay", "--event", "ticket.nope"]),
        2,
        "unknown event type",
    );
    fails(
        &client(home.path(), &["replay", "--event", "contact.created"]),
        1,
        "no contact.created deliveries",
    );
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("make the editor script executable");
}

#[test]
fn listen_events_skips_and_route_sends_elsewhere() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let listen = Listen::start(
        Some(&relay.url),
        &target.url("/hooks"),
        "events-route",
        &[
            "--events",
            "ticket.created,contact.created",
            "--route",
            "ticket.created=/tickets",
        ],
    );
    let send = |body: &str| {
        Request::post(&format!("{}/sub?x=1", listen.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send(&rt)
    };

    let skipped = send(
        r#"{"event":"lead.captured","timestamp":"2025-06-15T14:30:00Z","data":{"id":"lead_1"}}"#,
    );
    assert_eq!(skipped.status, 200);
    assert_eq!(skipped.json()["skipped"], true);
    let routed = send(
        r#"{"event":"ticket.created","timestamp":"2025-06-15T14:30:00Z","data":{"id":"tkt_1"}}"#,
    );
    assert_eq!(routed.status, 200);
    let plain = send(
        r#"{"event":"contact.created","timestamp":"2025-06-15T14:30:00Z","data":{"id":"ct_1"}}"#,
    );
    assert_eq!(plain.status, 200);
    let no_event = send("not json at all");
    assert_eq!(no_event.status, 200);

    let got = target.wait_for_requests(3);
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/tickets/sub", "/hooks/sub", "/hooks/sub"]);
    assert!(got.iter().all(|r| r.query.as_deref() == Some("x=1")));
    // Recording runs beside answering, so the screen order may differ from the sending order.
    let shown = listen.deliveries(4);
    for d in &shown {
        assert_eq!(d["skipped"], d["event"] == "lead.captured", "{d}");
        if d["skipped"] == true {
            assert_eq!(d["status"], 200);
            assert_eq!(d["target"], "");
        }
    }
    let line = listen.client(&["events", "--event", "lead.captured"]);
    assert!(line.stdout.contains("skipped"), "{}", line.stdout);

    for (args, needle) in [
        (
            &["--events", "ticket.nope"][..],
            "unknown event type \"ticket.nope\"; use one of chat.message.created",
        ),
        (&["--route", "lead.nope=/x"][..], "unknown event type"),
        (
            &["--route", "lead.captured=crm"][..],
            "PATH must start with /",
        ),
        (&["--route", "lead.captured"][..], "is not TYPE=PATH"),
    ] {
        let home = temp_dir();
        let mut all = vec!["listen", "--forward-to", "http://127.0.0.1:9"];
        all.extend_from_slice(args);
        fails(&client(home.path(), &all), 2, needle);
    }
}

#[test]
fn webhooks_commands_against_the_api() {
    let rt = runtime();
    let api = IllumiChat::start(&rt, TOKEN);
    let home = temp_dir();
    let base = api.base();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--api-base", &base]);
        client_env(home.path(), &all, &[("ILLUMICHAT_TOKEN", TOKEN)])
    };
    let out = run(&["webhooks", "list"]);
    ok(&out);
    assert!(
        out.stdout.contains("no IllumiChat webhooks"),
        "{}",
        out.stdout
    );

    let out = run(&[
        "webhooks",
        "register",
        "--url",
        "https://relay.example/t/my-app",
        "--events",
        "ticket.created,lead.captured",
    ]);
    ok(&out);
    assert_eq!(
        out.stdout.trim(),
        "registered IllumiChat webhook wh_1 for https://relay.example/t/my-app"
    );
    let calls = api.calls();
    assert_eq!(
        calls[1].body["events"],
        serde_json::json!(["ticket.created", "lead.captured"])
    );
    assert_eq!(calls[1].body["active"], true);

    let out = run(&["webhooks", "disable", "wh_1"]);
    ok(&out);
    assert_eq!(out.stdout.trim(), "disabled IllumiChat webhook wh_1");
    assert_eq!(api.hooks()[0]["active"], false);
    let out = run(&["webhooks", "list"]);
    assert!(
        out.stdout.contains(
            "wh_1  disabled  https://relay.example/t/my-app  ticket.created,lead.captured"
        ),
        "{}",
        out.stdout
    );
    ok(&run(&["webhooks", "enable", "wh_1"]));
    assert_eq!(api.hooks()[0]["active"], true);
    let out = run(&["webhooks", "list", "--json"]);
    let listed: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(listed[0]["id"], "wh_1");
    ok(&run(&["webhooks", "delete", "wh_1"]));
    assert!(api.hooks().is_empty());

    // Error answers, one sentence each; the token never shows.
    let out = run(&["webhooks", "delete", "wh_1"]);
    fails(
        &out,
        1,
        "no IllumiChat webhook with id wh_1; list them with illumitunnel webhooks list",
    );
    let out = client(
        home.path(),
        &[
            "webhooks",
            "list",
            "--api-base",
            &base,
            "--api-token",
            "wrong-token",
        ],
    );
    fails(
        &out,
        1,
        "IllumiChat rejected the API token; check ILLUMICHAT_TOKEN or --api-token",
    );
    let port = closed_port();
    let out = client_env(
        home.path(),
        &[
            "webhooks",
            "list",
            "--api-base",
            &format!("http://127.0.0.1:{port}"),
        ],
        &[("ILLUMICHAT_TOKEN", TOKEN)],
    );
    fails(
        &out,
        1,
        &format!("could not reach IllumiChat at http://127.0.0.1:{port}: connection refused"),
    );
    assert!(
        out.stderr.contains("check --api-base or your network"),
        "{}",
        out.stderr
    );
    let out = client(home.path(), &["webhooks", "list", "--api-base", &base]);
    fails(&out, 2, "missing IllumiChat API token");
    assert!(!out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN));
}

#[test]
fn listen_register_enables_on_start_and_disables_on_sigterm() {
    let rt = runtime();
    let api = IllumiChat::start(&rt, TOKEN);
    let target = Target::ok(&rt);
    let base = api.base();
    // A relay of the test's own: the second start must get the same URL, which the embedded
    // relay cannot promise when another process holds its port. Each start has a home of its
    // own (another machine, as far as anonymous claim keys go), so both use one token.
    let dir = temp_dir();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{RELAY_TOKEN}\n")).expect("write tokens");
    let relay = Relay::start(&[
        "--http",
        "--tokens-file",
        tokens.to_str().expect("UTF-8 path"),
    ]);

    // The relay is on 127.0.0.1 over http: IllumiChat could never deliver there, so without
    // --allow-private-url nothing is registered and listen stops with a usage error.
    let home = temp_dir();
    let mut refused = command("illumitunnel", home.path());
    refused
        .args(["listen", &target.url("/hooks"), "--relay", &relay.url])
        .args([
            "--tunnel",
            "register-refused",
            "--json",
            "--register",
            "--token",
            RELAY_TOKEN,
        ])
        .args(["--api-base", &base, "--api-token", TOKEN, "--store"])
        .arg(home.path().join("captures.db"));
    let refused = ChildGuard::run(refused);
    assert_eq!(refused.code(), 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("error: refusing to register http://127.0.0.1:"),
        "{refused:?}"
    );
    assert!(api.hooks().is_empty());

    let listen = Listen::spawn(
        Some(&relay.url),
        &target.url("/hooks"),
        "register-me",
        &[
            "--json",
            "--register",
            "--allow-private-url",
            "--events",
            "ticket.created",
            "--api-base",
            &base,
            "--token",
            RELAY_TOKEN,
            "--api-token",
            TOKEN,
        ],
    );
    let line = listen
        .guard
        .wait_for_text(Stream::Stderr, "registered IllumiChat webhook");
    assert_eq!(
        line.trim(),
        format!("registered IllumiChat webhook wh_1 for {}", listen.url)
    );
    let hooks = api.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["url"], listen.url.as_str());
    assert_eq!(hooks[0]["events"], serde_json::json!(["ticket.created"]));
    assert_eq!(hooks[0]["active"], true);

    stop(listen);
    assert_eq!(api.hooks()[0]["active"], false);

    // A second start finds the same webhook by URL and re-activates it instead of adding one.
    let listen = Listen::spawn(
        Some(&relay.url),
        &target.url("/hooks"),
        "register-me",
        &[
            "--json",
            "--register",
            "--allow-private-url",
            "--api-base",
            &base,
            "--token",
            RELAY_TOKEN,
            "--api-token",
            TOKEN,
        ],
    );
    listen
        .guard
        .wait_for_text(Stream::Stderr, "registered IllumiChat webhook wh_1");
    let hooks = api.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["active"], true);
    assert_eq!(hooks[0]["events"].as_array().unwrap().len(), 6);
    stop(listen);

    // A rejected token stops listen with the sentence.
    let mut listen = Listen::spawn(
        Some(&relay.url),
        &target.url("/hooks"),
        "register-bad",
        &[
            "--json",
            "--register",
            "--allow-private-url",
            "--api-base",
            &base,
            "--token",
            RELAY_TOKEN,
            "--api-token",
            "nope",
        ],
    );
    let status = listen.guard.wait_for_exit();
    assert_eq!(status.code(), Some(1));
    assert!(
        listen
            .guard
            .stderr()
            .contains("error: IllumiChat rejected the API token"),
        "{}",
        listen.guard.stderr()
    );
    assert!(!listen.guard.stderr().contains("nope"));
}

/// The client token of the register test's relay.
const RELAY_TOKEN: &str = "token-register-44-d6b2f8a1c5e9";

/// SIGTERM to the listen this test started (by PID), then waits for it to say it disabled the webhook.
fn stop(mut listen: Listen) {
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &listen.guard.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = listen.guard.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{}", listen.guard.stderr());
    assert!(
        listen
            .guard
            .stderr()
            .contains("disabled IllumiChat webhook wh_1"),
        "{}",
        listen.guard.stderr()
    );
}
