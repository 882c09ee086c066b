//! End to end for the client side: what `listen` prints, what the capture store keeps and
//! `events`/`show` report, duplicate marking, the embedded relay, trust in the relay's
//! certificate, and the relay's refusals (wrong token, a name another token owns).

mod support;

use base64::Engine;
use serde_json::Value;
use support::sender::{Request, Trust};
use support::target::{Reply, Target};
use support::{
    command, illumichat_samples, runtime, temp_dir, test_ca, ChildGuard, Listen, Relay, Stream,
};

const FORWARD_PATH: &str = "/webhooks/illumichat";

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn header<'a>(headers: &'a Value, name: &str) -> Vec<&'a str> {
    headers
        .as_array()
        .unwrap_or_else(|| panic!("headers is not a list: {headers}"))
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or_default())
        .collect()
}

#[test]
fn line_output_shows_the_start_banner_and_one_line_a_delivery() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let listen = Listen::spawn(
        Some(&relay.url),
        &target.url(FORWARD_PATH),
        "line-output",
        &[],
    );
    listen.wait_connected();
    let forwarding = listen.guard.wait_for_text(Stream::Stderr, "forwarding to");
    assert!(
        forwarding.contains(&target.url(FORWARD_PATH)),
        "{forwarding}"
    );
    let store = listen.guard.wait_for_text(Stream::Stderr, "capture store");
    assert!(
        store.contains(&listen.store.display().to_string()),
        "{store}"
    );

    let body = illumichat_samples().remove(2).2;
    let response = Request::post(&listen.url).body(body).send(&rt);
    assert_eq!(response.status, 200);

    let line = listen
        .guard
        .wait_for_line(Stream::Stdout, |l| l.contains("ticket.created"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields.len() >= 6, "{line:?}");
    let clock = fields[0];
    assert!(
        clock.len() == 8 && clock.chars().filter(|c| *c == ':').count() == 2,
        "no HH:MM:SS time first: {line:?}"
    );
    for expected in ["ticket.created", "tkt_xyz789", "POST", FORWARD_PATH, "200"] {
        assert!(
            fields.contains(&expected),
            "{expected} missing from {line:?}"
        );
    }
    assert!(fields.last().is_some_and(|f| f.ends_with("ms")), "{line:?}");
}

#[test]
fn events_and_show_report_what_the_capture_store_kept() {
    let rt = runtime();
    let target = Target::start(&rt, |_| {
        Reply::status(201)
            .header("content-type", "application/json")
            .header("x-local", "yes")
            .body(r#"{"stored":1}"#)
    });
    let relay = Relay::http(&[]);
    let listen = Listen::start(
        Some(&relay.url),
        &target.url(FORWARD_PATH),
        "store-queries",
        &[],
    );

    let samples = illumichat_samples();
    let ticket = &samples[2].2;
    let lead = &samples[4].2;
    let binary: Vec<u8> = (0u8..=255).rev().collect();
    for (body, event) in [
        (ticket.as_bytes().to_vec(), "ticket.created"),
        (lead.as_bytes().to_vec(), "lead.captured"),
        (binary.clone(), "none"),
    ] {
        let response = Request::post(&format!("{}/in?src=test", listen.url))
            .header("x-illumichat-event", event)
            .header("authorization", "Bearer sender-secret")
            .body(body)
            .send(&rt);
        assert_eq!(response.status, 201);
    }
    let printed = listen.deliveries(3);
    let ids: Vec<&str> = printed
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();

    let all = listen.client(&["events", "--json"]);
    assert_eq!(all.code(), 0, "{}", all.stderr);
    let all = json_lines(&all.stdout);
    let listed: Vec<&str> = all.iter().map(|d| d["id"].as_str().expect("id")).collect();
    assert_eq!(
        listed,
        [ids[2], ids[1], ids[0]],
        "events are not newest first"
    );
    let lead_line = &all[1];
    assert_eq!(lead_line["event"], "lead.captured");
    assert_eq!(lead_line["resource_id"], "lead_9f8e7d");
    assert_eq!(lead_line["status"], 201);
    assert_eq!(lead_line["duplicate"], false);
    assert_eq!(lead_line["skipped"], false);
    assert!(lead_line["replay_of"].is_null());
    assert!(lead_line["error"].is_null());
    assert!(lead_line["duration_ms"].is_number());
    let received_at = lead_line["received_at"].as_str().expect("received_at");
    assert!(
        received_at.len() >= 20 && received_at.as_bytes()[10] == b'T',
        "not RFC 3339: {received_at}"
    );
    assert!(all[0]["event"].is_null(), "{}", all[0]);

    let tickets = listen.client(&["events", "--event", "ticket.created", "--json"]);
    assert_eq!(tickets.code(), 0, "{}", tickets.stderr);
    let tickets = json_lines(&tickets.stdout);
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0]["id"], ids[0]);

    let newest = listen.client(&["events", "--limit", "1", "--json"]);
    assert_eq!(newest.code(), 0, "{}", newest.stderr);
    let newest = json_lines(&newest.stdout);
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0]["id"], ids[2]);

    let shown = listen.client(&["show", ids[0], "--json"]);
    assert_eq!(shown.code(), 0, "{}", shown.stderr);
    let shown: Value =
        serde_json::from_str(shown.stdout.trim()).expect("show --json is one object");
    assert_eq!(shown["id"], ids[0]);
    assert_eq!(shown["event"], "ticket.created");
    assert_eq!(shown["resource_id"], "tkt_xyz789");
    let request = &shown["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(request["path"], "/webhooks/illumichat/in");
    assert_eq!(request["query"], "src=test");
    assert_eq!(request["body"].as_str(), Some(ticket.as_str()));
    assert_eq!(
        header(&request["headers"], "x-illumichat-event"),
        ["ticket.created"]
    );
    assert_eq!(
        header(&request["headers"], "authorization"),
        ["Bearer sender-secret"],
        "the capture store keeps secrets as sent"
    );
    let response = &shown["response"];
    assert_eq!(response["status"], 201);
    assert_eq!(response["body"], r#"{"stored":1}"#);
    assert_eq!(header(&response["headers"], "x-local"), ["yes"]);

    let shown = listen.client(&["show", ids[2], "--json"]);
    assert_eq!(shown.code(), 0, "{}", shown.stderr);
    let shown: Value =
        serde_json::from_str(shown.stdout.trim()).expect("show --json is one object");
    let encoded = shown["request"]["body_base64"]
        .as_str()
        .unwrap_or_else(|| panic!("binary body not in body_base64: {shown}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("valid base64");
    assert_eq!(decoded, binary);

    for output in [
        listen.guard.stdout(),
        listen.guard.stderr(),
        relay.guard.stderr(),
    ] {
        assert!(
            !output.contains("sender-secret"),
            "a secret header was printed: {output}"
        );
    }
}

#[test]
fn a_repeated_delivery_is_marked_duplicate_and_still_forwarded() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let listen = Listen::start(
        Some(&relay.url),
        &target.url(FORWARD_PATH),
        "duplicates",
        &[],
    );

    let body = illumichat_samples().remove(3).2;
    let later = body.replace("2025-06-15T14:30:00Z", "2025-06-15T14:31:00Z");
    for payload in [&body, &body, &later] {
        let response = Request::post(&listen.url).body(payload.clone()).send(&rt);
        assert_eq!(response.status, 200);
    }
    assert_eq!(
        target.wait_for_requests(3).len(),
        3,
        "a duplicate was not forwarded"
    );
    let printed = listen.deliveries(3);
    let marks: Vec<&Value> = printed.iter().map(|d| &d["duplicate"]).collect();
    assert_eq!(marks, [false, true, false], "{printed:?}");
    assert!(printed.iter().all(|d| d["status"] == 200));
}

#[test]
fn listen_without_relay_embeds_one_reachable_over_https() {
    let rt = runtime();
    let target = Target::ok(&rt);
    // An ephemeral port: 8443 may be taken, and a taken port is an error.
    let port = support::closed_port().to_string();
    let listen = Listen::start(
        None,
        &target.url(FORWARD_PATH),
        "embedded-relay",
        &["--relay-port", &port],
    );
    let embedded = listen
        .guard
        .wait_for_text(Stream::Stderr, "embedded at https://127.0.0.1:");
    let base = support::after(&embedded, "embedded at")
        .split_whitespace()
        .next()
        .expect("embedded relay URL")
        .to_string();
    assert_eq!(listen.url, format!("{base}/t/embedded-relay"));
    // IllumiChat cannot reach 127.0.0.1: the banner says so under the URL.
    let warning = listen.guard.wait_for_text(Stream::Stderr, "local only");
    assert!(
        warning.contains("local only — IllumiChat cannot reach this URL"),
        "{warning}"
    );

    let body = illumichat_samples().remove(0).2;
    let response = Request::post(&listen.url)
        .trust(Trust::Anything)
        .header("content-type", "application/json")
        .body(body.clone())
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), r#"{"received":true}"#);
    assert!(target.wait_for_requests(1)[0].body == body.as_bytes());
    assert_eq!(listen.deliveries(1)[0]["event"], "chat.message.created");
}

#[test]
fn a_relay_certificate_from_a_ca_file_is_trusted_with_ca_and_refused_without() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let pki = temp_dir();
    let ca = test_ca(pki.path());
    let cert = ca.cert_pem.to_str().expect("UTF-8 path");
    let key = ca.key_pem.to_str().expect("UTF-8 path");
    let relay = Relay::start(&["--tls-cert", cert, "--tls-key", key, "--allow-anonymous"]);
    assert!(relay.url.starts_with("https://"), "{}", relay.url);

    let ca_pem = ca.ca_pem.to_str().expect("UTF-8 path");
    let listen = Listen::start(
        Some(&relay.url),
        &target.url(FORWARD_PATH),
        "ca-trusted",
        &["--ca", ca_pem],
    );
    let response = Request::post(&listen.url)
        .trust(Trust::Roots(vec![ca.ca_der.clone()]))
        .body("{}")
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(target.wait_for_requests(1).len(), 1);

    let home = temp_dir();
    let mut untrusting = command("illumitunnel", home.path());
    untrusting
        .args(["listen", "--relay", &relay.url, "--tunnel", "ca-missing"])
        .args([
            "--forward-to",
            &target.url(FORWARD_PATH),
            "--no-tui",
            "--store",
        ])
        .arg(home.path().join("captures.db"));
    let refused = ChildGuard::run(untrusting);
    assert_eq!(refused.code(), 1, "{refused:?}");
    assert!(
        refused.stderr.contains("certificate not trusted")
            && refused.stderr.contains("--ca FILE or --insecure"),
        "{}",
        refused.stderr
    );
}

fn tokens_file(dir: &std::path::Path, tokens: &[&str]) -> String {
    let path = dir.join("tokens");
    std::fs::write(&path, tokens.join("\n") + "\n").expect("write tokens file");
    path.to_str().expect("UTF-8 path").to_string()
}

/// A `listen` child with its own home; the child is killed before the home is removed.
struct TokenListen {
    guard: ChildGuard,
    _home: tempfile::TempDir,
}

fn listen_with_token(relay: &Relay, tunnel: &str, token: &str, forward_to: &str) -> TokenListen {
    let home = temp_dir();
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["listen", "--relay", &relay.url, "--tunnel", tunnel])
        .args(["--token", token, "--forward-to", forward_to])
        .args(["--no-tui", "--json", "--store"])
        .arg(home.path().join("captures.db"));
    TokenListen {
        guard: ChildGuard::spawn(cmd),
        _home: home,
    }
}

#[test]
fn a_wrong_token_is_refused_with_one_sentence_and_never_printed() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let dir = temp_dir();
    let tokens = tokens_file(dir.path(), &["good-token-7f3a9c-2d8e5b1c"]);
    let relay = Relay::start(&["--http", "--tokens-file", &tokens]);

    let mut wrong = listen_with_token(
        &relay,
        "token-check",
        "wrong-token-b41d",
        &target.url(FORWARD_PATH),
    );
    let status = wrong.guard.wait_for_exit();
    assert_eq!(status.code(), Some(1), "a wrong token must exit 1");
    let stderr = wrong.guard.stderr();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].to_lowercase().contains("token"), "{}", errors[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");

    let good = listen_with_token(
        &relay,
        "token-check",
        "good-token-7f3a9c-2d8e5b1c",
        &target.url(FORWARD_PATH),
    );
    good.guard
        .wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    let response = Request::post(&relay.tunnel_url("token-check"))
        .body("{}")
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());

    let relay_log = relay.guard.stderr() + &relay.guard.stdout();
    for secret in ["good-token-7f3a9c-2d8e5b1c", "wrong-token-b41d"] {
        assert!(
            !relay_log.contains(secret),
            "the relay printed a token: {relay_log}"
        );
        assert!(
            !good.guard.stderr().contains(secret),
            "the client printed its token"
        );
    }
}

#[test]
fn a_tunnel_name_owned_by_one_token_is_refused_to_another() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let dir = temp_dir();
    let tokens = tokens_file(
        dir.path(),
        &["token-alpha-11-c3f8a2e6d9b0", "token-bravo-22-e7a1d5c0b4f9"],
    );
    let relay = Relay::start(&["--http", "--tokens-file", &tokens]);

    let owner = listen_with_token(
        &relay,
        "shared-name",
        "token-alpha-11-c3f8a2e6d9b0",
        &target.url(FORWARD_PATH),
    );
    owner
        .guard
        .wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));

    let mut other = listen_with_token(
        &relay,
        "shared-name",
        "token-bravo-22-e7a1d5c0b4f9",
        &target.url(FORWARD_PATH),
    );
    assert_eq!(
        other.guard.wait_for_exit().code(),
        Some(1),
        "a taken name must exit 1"
    );
    let stderr = other.guard.stderr();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("shared-name") || errors[0].contains("taken"),
        "the refusal does not say the name is taken: {}",
        errors[0]
    );

    let response = Request::post(&relay.tunnel_url("shared-name"))
        .body("{}")
        .send(&rt);
    assert_eq!(
        response.status,
        200,
        "the owner lost its tunnel: {}",
        response.text()
    );
}

#[test]
fn two_listeners_with_one_token_both_see_a_delivery_and_the_first_answers() {
    let rt = runtime();
    let first_target = Target::start(&rt, |_| Reply::ok().header("x-listener", "first"));
    let second_target = Target::start(&rt, |_| Reply::ok().header("x-listener", "second"));
    let dir = temp_dir();
    let tokens = tokens_file(dir.path(), &["token-fan-out-33-a9c2e6f0"]);
    let relay = Relay::start(&["--http", "--tokens-file", &tokens]);

    let first = listen_with_token(
        &relay,
        "fan-out",
        "token-fan-out-33-a9c2e6f0",
        &first_target.url(FORWARD_PATH),
    );
    first
        .guard
        .wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    let second = listen_with_token(
        &relay,
        "fan-out",
        "token-fan-out-33-a9c2e6f0",
        &second_target.url(FORWARD_PATH),
    );
    second
        .guard
        .wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));

    let body = illumichat_samples().remove(5).2;
    let response = Request::post(&relay.tunnel_url("fan-out"))
        .body(body.clone())
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-listener").as_deref(), Some("first"));
    assert!(first_target.wait_for_requests(1)[0].body == body.as_bytes());
    assert!(second_target.wait_for_requests(1)[0].body == body.as_bytes());
    for listener in [&first, &second] {
        listener
            .guard
            .wait_for_line(Stream::Stdout, |l| l.contains("contact.created"));
    }
}

#[test]
fn trigger_right_after_the_banner_finds_the_running_listen() {
    // The listen record is written before the banner, so a script that runs `trigger` as soon as the
    // URL is printed never hits "no illumitunnel listen is running". Repeated: it was a race.
    let rt = runtime();
    let target = Target::ok(&rt);
    for round in 0..4 {
        let port = support::closed_port().to_string();
        let listen = Listen::spawn(
            None,
            &target.url(FORWARD_PATH),
            "ready-race",
            &["--json", "--relay-port", &port],
        );
        let running: Value = serde_json::from_str(
            &std::fs::read_to_string(listen_json(&listen)).unwrap_or_else(|e| {
                panic!("round {round}: no listen record when the banner printed: {e}")
            }),
        )
        .expect("the listen record is JSON");
        assert_eq!(running["public_url"].as_str(), Some(listen.url.as_str()));
        let out = listen.client(&["trigger", "ticket.created"]);
        assert_eq!(out.code(), 0, "round {round}: {}", out.stderr);
        assert_eq!(
            listen.deliveries(1)[0]["source"],
            "trigger",
            "round {round}"
        );
    }
}

/// The `ready-race` tunnel's record in the data dir of a home from `support::command`
/// (`ILLUMITUNNEL_HOME/data/listen/{tunnel}.json`).
fn listen_json(listen: &Listen) -> std::path::PathBuf {
    listen.home().join("data/listen/ready-race.json")
}

#[test]
fn a_flood_of_large_deliveries_stays_within_store_max_bytes() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let cap: u64 = 2 * 1024 * 1024;
    let body_len = 256 * 1024;
    let listen = Listen::start(
        Some(&relay.url),
        &target.url(FORWARD_PATH),
        "retention",
        &["--store-max-bytes", &cap.to_string()],
    );
    let on_disk = || {
        let len = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal = listen.store.with_extension("db-wal");
        len(listen.store.clone()) + len(wal)
    };
    let count = 24;
    let mut largest = 0;
    for i in 0..count {
        let mut body =
            format!(r#"{{"event":"ticket.created","data":{{"id":"tkt_{i:02}"}},"pad":""#)
                .into_bytes();
        body.resize(body_len, b'x');
        body.extend_from_slice(b"\"}");
        let response = Request::post(&listen.url).body(body).send(&rt);
        assert_eq!(response.status, 200);
        // Every delivery is printed after its commit; pruning follows on the same thread.
        listen.deliveries(i + 1);
        largest = largest.max(on_disk());
    }
    // One batch is one delivery here; the WAL holds at most that batch once pruned.
    let slack = 2 * body_len as u64 + 256 * 1024;
    assert!(
        largest <= cap + slack,
        "the store reached {largest} bytes on disk with a cap of {cap}"
    );
    let events = listen.client(&["events", "--json", "--limit", "100"]);
    let kept = json_lines(&events.stdout);
    assert!(kept.len() < count, "nothing pruned: {}", kept.len());
    let newest: Vec<&str> = kept
        .iter()
        .take(3)
        .map(|d| d["resource_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(newest, ["tkt_23", "tkt_22", "tkt_21"]);
}
