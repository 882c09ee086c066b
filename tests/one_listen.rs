//! End to end for one `listen` per tunnel per machine: a second `listen` of a tunnel in the
//! same home exits 2 naming the first, `--fan-out` records without forwarding, the record
//! `trigger` reads belongs to the forwarding `listen`, a `--fan-out` observer never answers a
//! sender (even when it is the tunnel's oldest session), and the embedded relay's port is
//! `--relay-port` / `ILLUMITUNNEL_PORT`, a taken one exiting 2.

mod support;

use support::sender::Request;
use support::target::{Reply, Target};
use support::{command, runtime, wait_for_metric, ChildGuard, Listen, Relay, Stream};

const FORWARD_PATH: &str = "/hooks";

/// `listen` for `tunnel` in `listen`'s home (the same machine), with its own store.
fn second_listen(
    first: &Listen,
    relay: &str,
    forward_to: &str,
    tunnel: &str,
    extra: &[&str],
) -> std::process::Command {
    let mut cmd = command("illumitunnel", first.home());
    cmd.args([
        "listen",
        "--relay",
        relay,
        "--forward-to",
        forward_to,
        "--tunnel",
        tunnel,
    ])
    .args(["--no-tui", "--json", "--store"])
    .arg(first.home().join("second.db"))
    .args(extra);
    cmd
}

fn post(rt: &tokio::runtime::Runtime, url: &str, n: usize) -> u16 {
    Request::post(url)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"event":"ticket.created","data":{{"id":"tkt_{n}"}}}}"#
        ))
        .send(rt)
        .status
}

#[test]
fn a_second_listen_of_a_tunnel_exits_2_naming_the_first_and_the_first_forwards_once() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let forward_to = target.url(FORWARD_PATH);
    let first = Listen::start(Some(&relay.url), &forward_to, "one-listen", &[]);

    let second = second_listen(&first, &relay.url, &forward_to, "one-listen", &[]);
    let finished = ChildGuard::run(second);
    assert_eq!(finished.code(), 2, "{}", finished.stderr);
    let pid = first.guard.pid();
    assert_eq!(
        finished.stderr.trim(),
        format!(
            "error: tunnel one-listen is already taken on this machine by listen PID {pid} forwarding to {forward_to}; stop that one, or pass --fan-out to record and show its deliveries without forwarding them"
        )
    );

    for n in 0..4 {
        assert_eq!(post(&rt, &first.url, n), 200);
    }
    assert_eq!(first.deliveries(4).len(), 4);
    assert_eq!(
        target.requests().len(),
        4,
        "each delivery reaches the handler once"
    );
    // The refused one left the first's record: trigger still finds the running listen.
    let out = first.client(&["trigger", "ticket.created"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(target.wait_for_requests(5).len(), 5);
}

#[test]
fn a_fan_out_listen_records_every_delivery_and_the_handler_gets_each_once() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let forward_to = target.url(FORWARD_PATH);
    let first = Listen::start(Some(&relay.url), &forward_to, "fan-out", &[]);
    let mut observer = ChildGuard::spawn(second_listen(
        &first,
        &relay.url,
        &forward_to,
        "fan-out",
        &["--fan-out"],
    ));
    let banner = observer.wait_for_text(Stream::Stderr, "forwarding to");
    assert!(
        banner.contains("nowhere (--fan-out: record and show only)"),
        "{banner}"
    );
    observer.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));

    for n in 0..4 {
        assert_eq!(post(&rt, &first.url, n), 200);
    }
    assert_eq!(first.deliveries(4).len(), 4);
    let seen = observer.wait_for_lines(Stream::Stdout, 4, |l| l.starts_with('{'));
    for n in 0..4 {
        let id = format!("tkt_{n}");
        assert!(seen.iter().any(|l| l.contains(&id)), "{id} not in {seen:?}");
    }
    // Its own store has them too.
    let mut events = command("illumitunnel", first.home());
    events
        .args(["events", "--json", "--store"])
        .arg(first.home().join("second.db"));
    let listed = ChildGuard::run(events);
    assert_eq!(listed.code(), 0, "{}", listed.stderr);
    assert_eq!(
        listed.stdout.lines().filter(|l| l.contains("tkt_")).count(),
        4,
        "{}",
        listed.stdout
    );
    assert_eq!(target.requests().len(), 4, "the observer forwarded too");

    // The observer's exit leaves the forwarding listen's record: trigger still finds it.
    observer.signal("TERM");
    assert!(observer.wait_for_exit().success());
    let out = first.client(&["trigger", "ticket.created"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(target.wait_for_requests(5).len(), 5);
}

/// A handler whose answer no observer could give: 201 and its own body.
fn handler_a(rt: &tokio::runtime::Runtime) -> Target {
    Target::start(rt, |_| Reply::status(201).body("handler A"))
}

/// Starts a `--fan-out` observer of `tunnel` beside `first` and waits until it is connected.
fn observer(first: &Listen, relay: &str, forward_to: &str, tunnel: &str) -> ChildGuard {
    let observer = ChildGuard::spawn(second_listen(
        first,
        relay,
        forward_to,
        tunnel,
        &["--fan-out"],
    ));
    observer.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    observer
}

#[test]
fn a_fan_out_observer_older_than_the_forwarding_listen_never_answers_the_sender() {
    let rt = runtime();
    let target = handler_a(&rt);
    let relay = Relay::http(&[]);
    let forward_to = target.url(FORWARD_PATH);
    let mut first = Listen::start(Some(&relay.url), &forward_to, "observed", &[]);
    let observer = observer(&first, &relay.url, &forward_to, "observed");
    // The forwarding listen restarts: the observer is now the tunnel's oldest session.
    first.respawn(Some(&relay.url), &forward_to, "observed", &["--json"]);
    first.wait_connected();
    wait_for_metric(&rt, &relay, "illumitunnel_sessions 2");

    let answer = Request::post(&first.url)
        .header("content-type", "application/json")
        .body(r#"{"event":"ticket.created","data":{"id":"tkt_older"}}"#)
        .send(&rt);
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (201, "handler A"),
        "the sender gets the forwarding listen's handler, not the observer"
    );
    let got = target.wait_for_requests(1);
    assert_eq!(got.len(), 1, "the handler got it once");
    assert!(String::from_utf8_lossy(&got[0].body).contains("tkt_older"));
    assert_eq!(first.deliveries(1).len(), 1);
    // The observer shows it too.
    let seen = observer.wait_for_line(Stream::Stdout, |l| l.contains("tkt_older"));
    assert!(seen.starts_with('{'), "{seen}");
    assert_eq!(target.requests().len(), 1, "the observer forwarded too");
}

#[test]
fn with_only_an_observer_connected_deliveries_queue_for_the_forwarding_listen() {
    let rt = runtime();
    let target = handler_a(&rt);
    let relay = Relay::http(&[]);
    let forward_to = target.url(FORWARD_PATH);
    let mut first = Listen::start(Some(&relay.url), &forward_to, "observed-only", &[]);
    let observer = observer(&first, &relay.url, &forward_to, "observed-only");
    first.guard.kill_now();
    wait_for_metric(&rt, &relay, "illumitunnel_sessions 1");

    assert_eq!(
        post(&rt, &relay.tunnel_url("observed-only"), 7),
        202,
        "an observer alone does not answer: the delivery is queued"
    );
    assert!(target.requests().is_empty());
    assert!(
        !observer.stdout().contains("tkt_7"),
        "{}",
        observer.stdout()
    );

    // The forwarding listen comes back: the queued delivery reaches the handler, once.
    first.respawn(Some(&relay.url), &forward_to, "observed-only", &["--json"]);
    first.wait_connected();
    let got = target.wait_for_requests(1);
    assert!(String::from_utf8_lossy(&got[0].body).contains("tkt_7"));
    assert_eq!(first.deliveries(1).len(), 1);
    wait_for_metric(&rt, &relay, "illumitunnel_sessions 2");
    assert_eq!(target.requests().len(), 1, "the handler got it once");
}

#[test]
fn a_taken_embedded_relay_port_exits_2_naming_relay_port() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let home = support::temp_dir();
    let expected = format!(
        "error: port {port} is taken (by another program, or another listen on this machine); pass --relay-port PORT or set ILLUMITUNNEL_PORT"
    );

    let mut by_flag = command("illumitunnel", home.path());
    by_flag.args([
        "listen",
        "--forward-to",
        &target.url(FORWARD_PATH),
        "--no-tui",
        "--relay-port",
        &port,
    ]);
    let finished = ChildGuard::run(by_flag);
    assert_eq!(finished.code(), 2, "{}", finished.stderr);
    assert_eq!(finished.stderr.trim(), expected);

    let mut by_env = command("illumitunnel", home.path());
    by_env
        .args([
            "listen",
            "--forward-to",
            &target.url(FORWARD_PATH),
            "--no-tui",
        ])
        .env("ILLUMITUNNEL_PORT", &port);
    let finished = ChildGuard::run(by_env);
    assert_eq!(finished.code(), 2, "{}", finished.stderr);
    assert_eq!(finished.stderr.trim(), expected);
    drop(taken);
}

#[test]
fn illumitunnel_port_sets_the_embedded_relays_port() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let port = support::closed_port();
    let home = support::temp_dir();
    let mut cmd = command("illumitunnel", home.path());
    cmd.args([
        "listen",
        "--forward-to",
        &target.url(FORWARD_PATH),
        "--no-tui",
    ])
    .env("ILLUMITUNNEL_PORT", port.to_string());
    let guard = ChildGuard::spawn(cmd);
    let line = guard.wait_for_text(Stream::Stderr, "webhook URL");
    let url = support::after(&line, "webhook URL");
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{port}/")),
        "{line}"
    );
    let relay = guard.wait_for_text(Stream::Stderr, "relay");
    assert!(!relay.contains("instead"), "{relay}");
}

#[test]
fn a_second_embedded_listen_of_a_tunnel_names_the_first_rather_than_the_port() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let port = support::closed_port().to_string();
    let forward_to = target.url(FORWARD_PATH);
    let first = Listen::start(None, &forward_to, "embedded-one", &["--relay-port", &port]);
    let mut cmd = command("illumitunnel", first.home());
    cmd.args([
        "listen",
        "--forward-to",
        &forward_to,
        "--tunnel",
        "embedded-one",
    ])
    .args(["--no-tui", "--relay-port", &port]);
    let finished = ChildGuard::run(cmd);
    assert_eq!(finished.code(), 2, "{}", finished.stderr);
    let pid = first.guard.pid();
    assert!(
        finished.stderr.contains(&format!(
            "already taken on this machine by listen PID {pid} forwarding to {forward_to}; "
        )),
        "{}",
        finished.stderr
    );
    assert_eq!(post(&rt, &first.url, 0), 200);
    assert_eq!(target.wait_for_requests(1).len(), 1);
}
