//! The in-flight budget against real relay processes: senders that declare large bodies and
//! trickle them (over HTTP/1 and over one HTTP/2 connection) leave another tunnel's deliveries
//! all answered; a body slower than `--min-body-rate` gets 408 and a close; answers nobody reads
//! keep the relay's memory within the budget and their connections are dropped after the write
//! timeout; a sender that writes a whole too-large body before reading still reads the 413.

mod support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::sender::Request;
use support::target::{Reply, Target};
use support::{poll_until, runtime, Listen, Relay, DEADLINE};
use tokio::sync::mpsc;

/// What each attacking request declares: 8 MiB.
const DECLARED: usize = 8 * 1024 * 1024;
/// Deliveries sent to the other tunnel while the attack goes on.
const DELIVERIES: usize = 60;

/// A raw HTTP/1 request head for `path` declaring `length` body bytes.
fn head(path: &str, length: usize) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n")
}

/// Sends `DELIVERIES` deliveries to `url` one after another; returns their statuses.
fn deliver_all(rt: &tokio::runtime::Runtime, url: &str) -> Vec<u16> {
    (0..DELIVERIES)
        .map(|i| {
            Request::post(url)
                .header("content-type", "application/json")
                .body(format!(r#"{{"n":{i}}}"#))
                .send(rt)
                .status
        })
        .collect()
}

/// Writes one byte every 4 s to each socket until dropped.
struct Trickler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<StdTcpStream>>>,
}

impl Trickler {
    fn start(mut sockets: Vec<StdTcpStream>) -> Trickler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !flag.load(Ordering::SeqCst) {
                if last.elapsed() >= Duration::from_secs(4) {
                    for socket in &mut sockets {
                        let _ = socket.write_all(b" ");
                    }
                    last = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            sockets
        });
        Trickler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops trickling and hands the sockets back.
    fn stop(mut self) -> Vec<StdTcpStream> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Waits until the relay has read every byte sent on the connections from our local `ports`
/// (nothing in flight on either side), so the attack is in place before anything is measured.
fn wait_until_relay_read_all(authority: &str, ports: &[u16]) {
    let relay_port: u16 = authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("relay port");
    poll_until(
        "the relay to read every attacking request",
        DEADLINE,
        || {
            let table = std::fs::read_to_string("/proc/net/tcp").map_err(|e| e.to_string())?;
            let queued = |local: u16, remote: u16| {
                let (l, r) = (format!(":{local:04X}"), format!(":{remote:04X}"));
                table.lines().skip(1).find_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    (f.get(1)?.ends_with(&l) && f.get(2)?.ends_with(&r))
                        .then(|| f.get(4).map(|q| q.to_string()))?
                })
            };
            for port in ports {
                let ours = queued(*port, relay_port);
                let theirs = queued(relay_port, *port);
                if ours.as_deref() != Some("00000000:00000000")
                    || theirs.as_deref() != Some("00000000:00000000")
                {
                    return Err(format!(
                        "port {port}: ours {ours:?}, the relay's {theirs:?}"
                    ));
                }
            }
            Ok(())
        },
    );
}

/// Whether the relay has said nothing yet on `socket` (no answer, no close).
fn still_waiting(socket: &mut StdTcpStream) -> bool {
    socket.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 64];
    let waiting =
        matches!(socket.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    socket.set_nonblocking(false).expect("blocking");
    waiting
}

#[test]
fn thirty_two_slow_http1_senders_declaring_8_mib_leave_another_tunnel_all_its_deliveries() {
    let rt = runtime();
    let target = Target::ok(&rt);
    // The minimum body rate is off, so only the budget stands between the attack and tunnel B.
    let relay = Relay::http(&["--min-body-rate", "0"]);
    let _a = Listen::start(Some(&relay.url), &target.url("/a"), "attacked-a", &[]);
    let b = Listen::start(Some(&relay.url), &target.url("/b"), "other-b", &[]);

    let sockets: Vec<StdTcpStream> = (0..32)
        .map(|_| {
            let mut s = StdTcpStream::connect(relay.authority()).expect("connect");
            s.write_all(head("/t/attacked-a/hook", DECLARED).as_bytes())
                .expect("head");
            s.write_all(b"{").expect("first byte");
            s
        })
        .collect();
    let ports: Vec<u16> = sockets
        .iter()
        .map(|s| s.local_addr().expect("local address").port())
        .collect();
    wait_until_relay_read_all(relay.authority(), &ports);
    let trickler = Trickler::start(sockets);

    let statuses = deliver_all(&rt, &b.url);
    let answered = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(answered, DELIVERIES, "statuses to tunnel B: {statuses:?}");
    let reached = target
        .wait_for_requests(DELIVERIES)
        .iter()
        .filter(|r| r.path == "/b")
        .count();
    assert_eq!(reached, DELIVERIES, "deliveries the handler of B answered");

    let mut sockets = trickler.stop();
    let open = sockets.iter_mut().map(still_waiting).filter(|w| *w).count();
    assert_eq!(open, 32, "the attack lasted the whole test");
}

/// An HTTP/2 request body fed from a channel: the test sends its bytes when it likes.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[test]
fn one_http2_connection_with_32_slow_streams_declaring_8_mib_leaves_another_tunnel_all_its_deliveries(
) {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&["--min-body-rate", "0"]);
    let _a = Listen::start(Some(&relay.url), &target.url("/a"), "attacked-a", &[]);
    let b = Listen::start(Some(&relay.url), &target.url("/b"), "other-b", &[]);

    let authority = relay.authority().to_string();
    let (feeds, pending, port) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .expect("connect");
        let port = tcp.local_addr().expect("local address").port();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let mut feeds = Vec::new();
        let mut pending = Vec::new();
        for _ in 0..32 {
            let (tx, rx) = mpsc::channel(1);
            tx.send(Bytes::from_static(b"{")).await.expect("first byte");
            let request = http::Request::post(format!("http://{authority}/t/attacked-a/hook"))
                .header("content-length", DECLARED.to_string())
                .body(Fed(rx))
                .expect("request");
            let mut sender = sender.clone();
            sender.ready().await.expect("stream slot");
            pending.push(tokio::spawn(async move {
                sender.send_request(request).await.map(|r| r.status())
            }));
            feeds.push(tx);
        }
        // A stream's first byte is taken once its HEADERS are out: then room for a second.
        for tx in &feeds {
            let permit = tokio::time::timeout(DEADLINE, tx.reserve())
                .await
                .expect("every stream started")
                .expect("stream open");
            drop(permit);
        }
        (feeds, pending, port)
    });
    wait_until_relay_read_all(relay.authority(), &[port]);

    let statuses = deliver_all(&rt, &b.url);
    let answered = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(answered, DELIVERIES, "statuses to tunnel B: {statuses:?}");
    let reached = target
        .wait_for_requests(DELIVERIES)
        .iter()
        .filter(|r| r.path == "/b")
        .count();
    assert_eq!(reached, DELIVERIES, "deliveries the handler of B answered");
    let unanswered = pending.iter().filter(|p| !p.is_finished()).count();
    assert_eq!(unanswered, 32, "all 32 streams were still sending");
    drop(feeds);
}

#[test]
fn a_body_slower_than_min_body_rate_gets_408_and_a_close() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&["--min-body-rate", "1000", "--min-body-grace-ms", "500"]);
    let _listen = Listen::start(Some(&relay.url), &target.url("/slow"), "slow", &[]);

    let mut socket = StdTcpStream::connect(relay.authority()).expect("connect");
    socket
        .write_all(head("/t/slow/hook", 100_000).as_bytes())
        .expect("head");
    let started = Instant::now();
    let mut writer = socket.try_clone().expect("clone");
    // 10 bytes every 100 ms: 100 bytes a second, a tenth of the minimum.
    let trickle = std::thread::spawn(move || {
        for _ in 0..200 {
            if writer.write_all(&[b'x'; 10]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read to the close: EOF, or a reset once the relay stops reading.
    while let Ok(n) = socket.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        answer
            .contains("slower than this relay's minimum of 1000 bytes a second (--min-body-rate)"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    let _ = trickle.join();
    assert!(target.requests().is_empty(), "a slow body was forwarded");
}

#[test]
fn a_9_mib_body_written_whole_before_reading_reads_the_413_from_an_8_mib_relay() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&["--max-body", "8388608"]);
    let _listen = Listen::start(Some(&relay.url), &target.url("/big"), "big", &[]);

    for _ in 0..3 {
        let mut socket = StdTcpStream::connect(relay.authority()).expect("connect");
        let body = vec![b'x'; 9 * 1024 * 1024];
        socket
            .set_write_timeout(Some(DEADLINE))
            .expect("write timeout");
        socket
            .write_all(head("/t/big/hook", body.len()).as_bytes())
            .expect("head");
        socket
            .write_all(&body)
            .expect("the relay keeps reading the whole body");
        socket
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.ends_with(b"}") {
            match socket.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        assert!(
            answer.contains("larger than this relay's limit of 8388608 bytes"),
            "{answer}"
        );
    }
    assert!(target.requests().is_empty());
}

/// The relay's resident memory, from `/proc/PID/status`.
fn rss_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in status");
    kib * 1024
}

/// `ESTABLISHED` in `/proc/net/tcp`.
const ESTABLISHED: u8 = 0x01;

/// The state of the IPv4 TCP socket from local port `port` to remote port `peer` (either end
/// of a loopback connection), from `/proc/net/tcp`.
fn tcp_state(port: u16, peer: u16) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (local, remote) = (format!(":{port:04X}"), format!(":{peer:04X}"));
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let (from, to, state) = (fields.next()?, fields.next()?, fields.next()?);
        (from.ends_with(&local) && to.ends_with(&remote))
            .then(|| u8::from_str_radix(state, 16).ok())
            .flatten()
    })
}

/// A socket from 127.0.0.2 (the attacker's own address; tunnel B's sender is 127.0.0.1) with a
/// small receive window, so the kernel does not take the answers off the relay's hands.
fn attacker_socket() -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .bind("127.0.0.2:0".parse().expect("address"))
        .expect("bind 127.0.0.2");
    socket
}

/// Budget for the never-read test, and how far above it (plus the idle relay) memory may go:
/// a few answers being received or refused at once, and the pieces each connection buffers.
const NEVER_READ_BUDGET: usize = 24 * 1024 * 1024;
const NEVER_READ_MARGIN: usize = 48 * 1024 * 1024;
/// Each answer: over a connection's eighth of the budget, so at most three are held at once.
const ANSWER: usize = 4 * 1024 * 1024;

#[test]
fn answers_nobody_reads_stay_within_the_budget_and_are_dropped_after_the_write_timeout() {
    let rt = runtime();
    let target = Target::start(&rt, |req| {
        if req.path.starts_with("/big") {
            Reply::status(200).body(vec![b'a'; ANSWER])
        } else {
            Reply::ok()
        }
    });
    let budget = NEVER_READ_BUDGET.to_string();
    let relay = Relay::http(&["--max-inflight-bytes", &budget]);
    let _a = Listen::start(Some(&relay.url), &target.url("/big"), "big-answers", &[]);
    let b = Listen::start(Some(&relay.url), &target.url("/b"), "other-b", &[]);
    assert_eq!(Request::post(&b.url).body("{}").send(&rt).status, 200);
    let pid = relay.guard.pid();
    let idle = rss_bytes(pid);

    let authority = relay.authority().to_string();
    let started = Instant::now();
    // First an HTTP/2 sender that takes the answer's head and never reads its body: its
    // stream's flow-control window stops the relay, no write ever blocks.
    let h2_body = rt.block_on(async {
        let tcp = attacker_socket()
            .connect(authority.parse().expect("address"))
            .await
            .expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let request = http::Request::post(format!("http://{authority}/t/big-answers/h2"))
            .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
            .await
            .expect("an answer in time")
            .expect("an answer");
        assert_eq!(response.status(), 200);
        (sender, response.into_body())
    });
    let mut attackers = rt.block_on(async {
        let mut sockets = Vec::new();
        for _ in 0..30 {
            let mut stream = attacker_socket()
                .connect(authority.parse().expect("address"))
                .await
                .expect("connect");
            tokio::io::AsyncWriteExt::write_all(
                &mut stream,
                format!("{}{{}}", head("/t/big-answers/hook", 2)).as_bytes(),
            )
            .await
            .expect("request");
            sockets.push(stream);
        }
        sockets
    });
    // While the answers pile up, memory stays bounded and tunnel B is still answered.
    let mut peak = idle;
    let mut other = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        peak = peak.max(rss_bytes(pid));
        other.push(Request::post(&b.url).body("{}").send(&rt).status);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        peak <= idle + NEVER_READ_BUDGET + NEVER_READ_MARGIN,
        "relay RSS went from {} MiB to {} MiB with a {} MiB budget",
        idle >> 20,
        peak >> 20,
        NEVER_READ_BUDGET >> 20
    );
    assert!(other.iter().all(|s| *s == 200), "tunnel B got {other:?}");
    poll_until("all 31 requests at the handler", DEADLINE, || {
        let big = target
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/big"))
            .count();
        (big == 31).then_some(()).ok_or(format!("{big} of 31"))
    });
    eprintln!(
        "relay RSS: idle {} MiB, peak {} MiB under 30 unread 4 MiB answers, budget {} MiB",
        idle >> 20,
        peak >> 20,
        NEVER_READ_BUDGET >> 20
    );

    // Within the write timeout of stalling, every answer left unread is gone with its
    // connection (the relay's side of it is closed: its FIN waits behind the bytes the kernel
    // still holds for our zero window); the others got a complete 503 and stay open.
    let relay_port = authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("relay port");
    let ports: Vec<u16> = attackers
        .iter()
        .map(|s| s.local_addr().expect("local address").port())
        .collect();
    let (cut, busy) = poll_until("unread answers dropped", 2 * DEADLINE, || {
        let mut peek = vec![0u8; 4096];
        let (mut cut, mut busy) = (0, 0);
        for (stream, port) in attackers.iter().zip(&ports) {
            let n = rt.block_on(stream.peek(&mut peek)).unwrap_or(0);
            if peek[..n].starts_with(b"HTTP/1.1 503") && peek[..n].ends_with(b"}") {
                busy += 1;
            } else if tcp_state(relay_port, *port) != Some(ESTABLISHED) {
                cut += 1;
            }
        }
        if cut + busy == attackers.len() {
            Ok((cut, busy))
        } else {
            Err(format!(
                "{cut} dropped, {busy} answered 503 of {}",
                attackers.len()
            ))
        }
    });
    let after = started.elapsed();
    assert!(
        cut >= 1,
        "no answer was held ({busy} 503s): the test proves nothing"
    );
    // Dropped by the 10 s write timeout, not by the 60 s idle timeout.
    assert!(after < Duration::from_secs(40), "closed after {after:?}");
    // The HTTP/2 sender's connection went too: its body ends in an error, short.
    let (_h2_sender, h2_body) = h2_body;
    let h2_read = rt.block_on(async {
        tokio::time::timeout(DEADLINE, http_body_util::BodyExt::collect(h2_body)).await
    });
    assert!(
        matches!(h2_read, Ok(Err(_))),
        "the unread HTTP/2 answer was not dropped"
    );
    // What a dropped one had received is a 200 cut short.
    rt.block_on(async {
        for stream in &mut attackers {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match tokio::io::AsyncReadExt::read(stream, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                if got.starts_with(b"HTTP/1.1 503") && got.ends_with(b"}") {
                    break;
                }
            }
            if got.starts_with(b"HTTP/1.1 200") {
                assert!(got.len() < ANSWER, "an unread answer was kept whole");
            }
        }
    });
    poll_until("the budget given back", DEADLINE, || {
        let status = Request::post(&b.url).body("{}").send(&rt).status;
        (status == 200).then_some(()).ok_or(format!("{status}"))
    });
}

#[test]
fn an_idle_keep_alive_connection_closes_at_idle_timeout_not_at_10_s() {
    let relay = Relay::http(&["--idle-timeout", "12"]);
    let mut socket = StdTcpStream::connect(relay.authority()).expect("connect");
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        .expect("request");
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let mut answered = None;
    while let Ok(n) = socket.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        answered.get_or_insert_with(Instant::now);
    }
    let answered = answered.expect("an answer");
    assert!(answer.starts_with(b"HTTP/1.1 200 "));
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_secs(11) && idle < Duration::from_secs(15),
        "closed after {idle:?} idle"
    );
}
