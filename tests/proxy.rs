//! The relay behind a proxy, through real processes and a small TCP proxy in the test: what a
//! sender may claim about its address (nothing, unless the peer is a `--trusted-proxy`), the
//! real sender behind the proxy (`X-Forwarded-For` or a PROXY protocol v1/v2 header) reaching
//! the handler and the per-address limits, `/metrics` kept off the ingress port, and no relay
//! starting without tokens.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::proxy::{Header, TcpProxy};
use support::sender::Request;
use support::target::{Reply, Target};
use support::{
    closed_port, command, poll_until, runtime, temp_dir, ChildGuard, Listen, Relay, DEADLINE,
};
use tokio::io::AsyncReadExt;

const HOOK: &str = "/hook";
/// The relay's default `--max-connections-per-ip`.
const PER_IP: usize = 256;
/// Connections or requests "real sender A" opens: well past its limit.
const FLOOD: usize = 300;
/// Deliveries "real sender B" sends meanwhile; every one must be answered.
const DELIVERIES: usize = 60;
const SENDER_A: &str = "198.51.100.7";
const SENDER_B: &str = "203.0.113.9";

fn addr(relay: &Relay) -> SocketAddr {
    relay.authority().parse().expect("relay address")
}

#[test]
fn a_senders_own_origin_headers_never_reach_the_handler() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let _listen = Listen::start(Some(&relay.url), &target.url(HOOK), "no-forgery", &[]);
    let proxy = TcpProxy::start(&rt, addr(&relay), Header::None);
    let response = Request::post(&proxy.url("/t/no-forgery"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("X-Real-IP", "6.6.6.7")
        .header("Forwarded", "for=6.6.6.8;proto=https;host=evil.example")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Port", "443")
        .header("x-kept", "yes")
        .body("{}")
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    let got = &target.wait_for_requests(1)[0];
    assert_eq!(got.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(got.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        got.header("x-forwarded-host"),
        Some(proxy.addr.to_string()),
        "the Host the relay received"
    );
    for forged in ["x-real-ip", "forwarded", "x-forwarded-port"] {
        assert_eq!(got.header(forged), None, "{forged} reached the handler");
    }
    assert_eq!(got.header("x-kept").as_deref(), Some("yes"));
    let all = format!("{:?}", got.headers);
    assert!(!all.contains("6.6.6") && !all.contains("evil"), "{all}");
}

#[test]
fn a_trusted_proxy_names_the_real_sender_to_the_handler() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&["--trusted-proxy", "127.0.0.1/32"]);
    let _listen = Listen::start(Some(&relay.url), &target.url(HOOK), "behind-proxy", &[]);
    let proxy = TcpProxy::start(&rt, addr(&relay), Header::None);
    // What nginx's `$proxy_add_x_forwarded_for` sends: the sender's own claim, then the
    // address the proxy saw.
    let response = Request::post(&proxy.url("/t/behind-proxy"))
        .header("x-forwarded-for", format!("6.6.6.6, {SENDER_A}"))
        .header("x-real-ip", SENDER_A)
        .body("{}")
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    let got = &target.wait_for_requests(1)[0];
    assert_eq!(
        got.header("x-forwarded-for"),
        Some(format!("{SENDER_A}, 127.0.0.1")),
        "the real sender first, the forged entry dropped, the proxy appended"
    );
    assert_eq!(got.header("x-real-ip"), None);
}

/// Answers of sender A's requests, as they come.
type Answers = Arc<Mutex<Vec<Result<(u16, String, Option<String>), String>>>>;

#[test]
fn behind_the_proxy_one_senders_held_requests_leave_anothers_deliveries_answered() {
    let rt = runtime();
    // A's requests wait on a local server that answers late: each is in flight all along.
    let slow = Target::start(&rt, |_| Reply::ok().delay(Duration::from_secs(50)));
    let fast = Target::ok(&rt);
    let relay = Relay::http(&["--trusted-proxy", "127.0.0.1", "--response-timeout", "60"]);
    let _slow_listen = Listen::start(Some(&relay.url), &slow.url(HOOK), "slow-a", &[]);
    let _fast_listen = Listen::start(Some(&relay.url), &fast.url(HOOK), "fast-b", &[]);
    let proxy = TcpProxy::start(&rt, addr(&relay), Header::None);

    let answers: Answers = Arc::default();
    for i in 0..FLOOD {
        let (answers, url) = (answers.clone(), proxy.url("/t/slow-a"));
        rt.spawn(async move {
            let answer = Request::post(&url)
                .header("x-forwarded-for", SENDER_A)
                .body(format!("a{i}"))
                .try_send()
                .await
                .map(|r| (r.status, r.text(), r.header("retry-after")));
            answers.lock().unwrap().push(answer);
        });
    }
    let refused = FLOOD - PER_IP;
    poll_until(
        "A's requests over its limit to be refused",
        DEADLINE,
        || {
            let answers = answers.lock().unwrap();
            match answers.len() >= refused {
                true => Ok(()),
                false => Err(format!("{} answered: {:?}", answers.len(), answers.first())),
            }
        },
    );
    {
        let answers = answers.lock().unwrap();
        assert_eq!(answers.len(), refused, "{answers:?}");
        for answer in answers.iter() {
            let (status, text, retry) = answer.as_ref().expect("an answer");
            assert_eq!(*status, 429, "{text}");
            assert_eq!(
                text,
                &format!(
                    r#"{{"error":"too many requests in flight from {SENDER_A} (--max-connections-per-ip); wait for the answers before sending more"}}"#
                )
            );
            assert_eq!(retry.as_deref(), Some("5"));
        }
    }

    for i in 0..DELIVERIES {
        let response = Request::post(&proxy.url("/t/fast-b"))
            .header("x-forwarded-for", SENDER_B)
            .body(format!("b{i}"))
            .send(&rt);
        assert_eq!(response.status, 200, "delivery {i}: {}", response.text());
    }
    let got = fast.wait_for_requests(DELIVERIES);
    assert_eq!(got.len(), DELIVERIES);
    assert!(got
        .iter()
        .all(|r| r.header("x-forwarded-for") == Some(format!("{SENDER_B}, 127.0.0.1"))));
    assert_eq!(
        answers.lock().unwrap().len(),
        refused,
        "A's requests in flight are still held"
    );
}

/// Opens `count` connections to `proxy` that never send a byte; records, for each one the relay
/// closes, how long after its connect that came.
fn silent_sockets(
    rt: &tokio::runtime::Runtime,
    proxy: &TcpProxy,
    count: usize,
) -> Arc<Mutex<Vec<Duration>>> {
    let closed = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..count {
        let (closed, to) = (closed.clone(), proxy.addr);
        rt.spawn(async move {
            let started = std::time::Instant::now();
            let Ok(mut socket) = tokio::net::TcpStream::connect(to).await else {
                return;
            };
            let mut byte = [0u8; 1];
            // Ends only when the relay (through the proxy) closes the connection.
            let _ = socket.read(&mut byte).await;
            let mut closed = closed.lock().unwrap_or_else(|e| e.into_inner());
            closed.push(started.elapsed());
        });
    }
    closed
}

#[test]
fn behind_a_proxy_protocol_proxy_one_senders_silent_sockets_leave_anothers_deliveries_answered() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&["--proxy-protocol", "--trusted-proxy", "127.0.0.1"]);
    let relay_addr = addr(&relay);
    let clients = TcpProxy::start(
        &rt,
        relay_addr,
        Header::V1("192.0.2.50:40000".parse().unwrap()),
    );
    let _listen = Listen::start(Some(&clients.url("")), &target.url(HOOK), "silent", &[]);
    let a = TcpProxy::start(
        &rt,
        relay_addr,
        Header::V1(format!("{SENDER_A}:1234").parse().unwrap()),
    );
    let b = TcpProxy::start(
        &rt,
        relay_addr,
        Header::V2(format!("{SENDER_B}:4321").parse().unwrap()),
    );

    let closed = silent_sockets(&rt, &a, FLOOD);
    let refused = FLOOD - PER_IP;
    poll_until("A's sockets over its limit to be closed", DEADLINE, || {
        let closed = closed.lock().unwrap();
        match closed.len() >= refused {
            true => Ok(()),
            false => Err(format!("{} closed", closed.len())),
        }
    });
    {
        let closed = closed.lock().unwrap();
        assert_eq!(closed.len(), refused, "{closed:?}");
    }
    for i in 0..DELIVERIES {
        let response = Request::post(&b.url("/t/silent"))
            .body(format!("b{i}"))
            .send(&rt);
        assert_eq!(response.status, 200, "delivery {i}: {}", response.text());
    }
    let got = target.wait_for_requests(DELIVERIES);
    assert!(
        got.iter()
            .all(|r| r.header("x-forwarded-for").as_deref() == Some(SENDER_B)),
        "{:?}",
        got[0].headers
    );
}

#[test]
fn proxy_protocol_v1_and_v2_name_the_sender_and_anything_else_is_closed() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&["--proxy-protocol", "--trusted-proxy", "127.0.0.1"]);
    let relay_addr = addr(&relay);
    let v1 = TcpProxy::start(
        &rt,
        relay_addr,
        Header::V1(format!("{SENDER_A}:1234").parse().unwrap()),
    );
    let v2 = TcpProxy::start(
        &rt,
        relay_addr,
        Header::V2("[2001:db8::7]:4321".parse().unwrap()),
    );
    let _listen = Listen::start(Some(&v1.url("")), &target.url(HOOK), "proxied", &[]);

    for proxy in [&v1, &v2] {
        let response = Request::post(&proxy.url("/t/proxied"))
            .header("x-forwarded-for", "6.6.6.6")
            .body("{}")
            .send(&rt);
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let got = target.wait_for_requests(2);
    let senders: Vec<_> = got.iter().map(|r| r.header("x-forwarded-for")).collect();
    assert_eq!(
        senders,
        [Some(SENDER_A.to_string()), Some("2001:db8::7".to_string())]
    );

    // A trusted peer that sends no header is closed, as is /metrics behind the proxy.
    let direct = rt.block_on(
        Request::post(&format!("{}/t/proxied", relay.url))
            .body("{}")
            .try_send(),
    );
    assert!(direct.is_err(), "{direct:?}");
    let metrics = Request::new("GET", &v1.url("/metrics")).send(&rt);
    assert_eq!(metrics.status, 404, "{}", metrics.text());
    assert_eq!(target.requests().len(), 2);

    // With TLS the header comes first, then the handshake.
    let tls = Relay::start(&[
        "--self-signed",
        "--allow-anonymous",
        "--proxy-protocol",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    let tls_proxy = TcpProxy::start(
        &rt,
        addr(&tls),
        Header::V2(format!("{SENDER_B}:1").parse().unwrap()),
    );
    let health = Request::new("GET", &format!("https://{}/healthz", tls_proxy.addr)).send(&rt);
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));

    // A peer outside --trusted-proxy is closed, even with a valid header.
    let elsewhere = Relay::http(&["--proxy-protocol", "--trusted-proxy", "10.0.0.0/8"]);
    let forged = TcpProxy::start(
        &rt,
        addr(&elsewhere),
        Header::V1(format!("{SENDER_A}:1").parse().unwrap()),
    );
    let answer = rt.block_on(Request::new("GET", &forged.url("/healthz")).try_send());
    assert!(answer.is_err(), "{answer:?}");
}

#[test]
fn a_relay_without_tokens_refuses_to_start_on_loopback_and_proxy_flags_are_checked() {
    let home = temp_dir();
    let data = home.path().join("relay");
    let run = |extra: &[&str]| {
        let mut cmd = command("illumitunnel-relay", home.path());
        cmd.args(["--listen", "127.0.0.1:0", "--http", "--data-dir"])
            .arg(&data)
            .args(extra);
        ChildGuard::run(cmd)
    };
    let cases: [(&[&str], &str); 3] = [
        (&[], "error: refusing to listen on 127.0.0.1:0 without client tokens: any client could open tunnels on it, also through a proxy on loopback; add one with `illumitunnel-relay token add NAME`, pass --tokens-file FILE (or set ILLUMITUNNEL_RELAY_TOKENS), or pass --allow-anonymous to accept any client"),
        (&["--allow-anonymous", "--proxy-protocol"], "error: --proxy-protocol needs --trusted-proxy CIDR naming the proxies that send the header (e.g. --trusted-proxy 10.0.0.0/8); connections from anyone else are closed"),
        (&["--allow-anonymous", "--trusted-proxy", "10.0.0.0/33"], "error: invalid value '10.0.0.0/33' for '--trusted-proxy <CIDR>': \"10.0.0.0/33\" is not an address or network; use e.g. 127.0.0.1, 10.0.0.0/8 or fd00::/8"),
    ];
    for (extra, want) in cases {
        let out = run(extra);
        assert_eq!(out.code(), 2, "{extra:?}: {out:?}");
        let first = out.stderr.lines().next().unwrap_or_default();
        assert_eq!(first, want, "{extra:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    // Said out loud, it starts.
    let relay = Relay::start(&["--http", "--allow-anonymous"]);
    assert!(relay.url.starts_with("http://127.0.0.1:"));
}

#[test]
fn metrics_are_served_on_metrics_listen_only_behind_a_trusted_proxy() {
    let rt = runtime();
    let metrics_addr = format!("127.0.0.1:{}", closed_port());
    let relay = Relay::http(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--metrics-listen",
        &metrics_addr,
    ]);
    let proxy = TcpProxy::start(&rt, addr(&relay), Header::None);
    let through = Request::new("GET", &proxy.url("/metrics"))
        .header("x-forwarded-for", SENDER_A)
        .send(&rt);
    assert_eq!(through.status, 404, "{}", through.text());
    let direct = Request::new("GET", &format!("{}/metrics", relay.url)).send(&rt);
    assert_eq!(direct.status, 404, "{}", direct.text());
    let own = poll_until("the metrics listener", DEADLINE, || {
        let url = format!("http://{metrics_addr}/metrics");
        rt.block_on(Request::new("GET", &url).try_send())
    });
    assert_eq!(own.status, 200);
    assert!(own.text().contains("illumitunnel_"), "{}", own.text());

    // Without a proxy in front, a loopback relay still serves it on its own port.
    let plain = Relay::http(&[]);
    let metrics = Request::new("GET", &format!("{}/metrics", plain.url)).send(&rt);
    assert_eq!(metrics.status, 200, "{}", metrics.text());
}
