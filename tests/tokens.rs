//! A relay a team can share, against real relay processes: failed token checks are limited
//! per address (429 with `Retry-After`, one WARN a minute) while other addresses connect;
//! tokens shorter than 128 bits stop the relay at start; on SIGHUP the tokens file is the truth
//! (empty: no file tokens; missing or weak: the last good set and an ERROR); a name outlives
//! `--tunnel-ttl` as its owner's until `tunnel release`; a cluster shares the total queue cap
//! fairly.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Instant;

use illumitunnel::protocol::CONNECT_PATH;
use support::target::Target;
use support::{command, runtime, temp_dir, ChildGuard, Relay, Stream, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A right token: 32 characters.
const TOKEN: &str = "itr_k3v9x2m4p7qa8wz5n1b6c0d2e4f6";
/// The second loopback address, a different sender as far as the relay can tell.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const FIRST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The limit the relay documents: failed checks a second, and the burst before it applies.
const RATE: f64 = 10.0;
const BURST: f64 = 20.0;
/// Text of the relay's WARN about an address over the limit.
const LIMIT_WARN: &str = "failed client token checks a second from this address";

/// How a websocket upgrade was answered.
#[derive(Debug)]
struct Upgrade {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

/// Sends one websocket upgrade with `token` to `relay` from the loopback address `from`.
async fn upgrade(relay: SocketAddr, from: IpAddr, token: &str) -> Upgrade {
    upgrade_via(relay, from, token, "").await
}

/// [`upgrade`] with extra header lines (`forwarded` ends in `\r\n`), as a proxy would send them.
async fn upgrade_via(relay: SocketAddr, from: IpAddr, token: &str, forwarded: &str) -> Upgrade {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind a loopback source address");
    let exchange = async {
        let mut stream = socket.connect(relay).await.expect("connect to the relay");
        let request = format!(
            "GET {CONNECT_PATH} HTTP/1.1\r\nHost: {relay}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Authorization: Bearer {token}\r\n{forwarded}\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the relay closed without an answer: {raw:?}");
            raw.extend_from_slice(&buf[..n]);
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(|v| v.trim().to_string())
        };
        let status = head[9..12].parse().expect("a status code");
        let length: usize = header("content-length").map_or(0, |v| v.parse().expect("length"));
        while raw.len() < head_end + length {
            let n = stream.read(&mut buf).await.expect("read the body");
            assert!(n > 0, "body cut short");
            raw.extend_from_slice(&buf[..n]);
        }
        Upgrade {
            status,
            retry_after: header("retry-after").map(|v| v.parse().expect("Retry-After seconds")),
            body: String::from_utf8_lossy(&raw[head_end..head_end + length]).into_owned(),
        }
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("an answer to the upgrade in time")
}

fn write_tokens(path: &Path, lines: &[&str]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("write the tokens file");
}

/// A relay with `--tokens-file` holding [`TOKEN`]; returns it, the file and the ingress address.
fn relay_with_token_file() -> (Relay, tempfile::TempDir, std::path::PathBuf, SocketAddr) {
    let dir = temp_dir();
    let file = dir.path().join("tokens");
    write_tokens(&file, &["# the team's tokens", TOKEN]);
    let relay = Relay::start(&["--http", "--tokens-file", file.to_str().expect("UTF-8")]);
    let addr = relay.authority().parse().expect("a socket address");
    // SIGHUP is reloaded from here on.
    relay.guard.wait_for_text(Stream::Stderr, "relay serving");
    (relay, dir, file, addr)
}

#[test]
fn a_thousand_wrong_tokens_from_one_address_end_in_429s_while_another_address_connects() {
    let rt = runtime();
    let (relay, _dir, _file, addr) = relay_with_token_file();
    let (unauthorized, limited, elapsed) = rt.block_on(async {
        let start = Instant::now();
        let (mut unauthorized, mut limited) = (0u32, 0u32);
        for i in 0..1000 {
            let guess = format!("itr_wrong-guess-{i:06}-0123456789");
            let answer = upgrade(addr, FIRST, &guess).await;
            match answer.status {
                401 => unauthorized += 1,
                429 => {
                    limited += 1;
                    assert!(
                        answer.retry_after.is_some_and(|s| (1..=2).contains(&s)),
                        "{answer:?}"
                    );
                    assert!(
                        answer.body.contains(
                            "too many failed client token checks from this address; wait"
                        ),
                        "{answer:?}"
                    );
                }
                _ => panic!("unexpected answer {answer:?}"),
            }
        }
        (unauthorized, limited, start.elapsed().as_secs_f64())
    });
    eprintln!("{unauthorized} answered 401 and {limited} 429 in {elapsed:.2} s");
    assert_eq!(unauthorized + limited, 1000);
    let allowed = BURST + RATE * elapsed;
    assert!(
        f64::from(unauthorized) <= allowed.floor() + 1.0,
        "{unauthorized} answered 401 in {elapsed:.2} s; at most {allowed:.0} may be"
    );
    assert!(
        limited >= 1000 - (allowed.ceil() as u32 + 1),
        "{limited} 429s"
    );

    // Another address's right token still connects while 127.0.0.1 is limited.
    let other = rt.block_on(upgrade(addr, OTHER, TOKEN));
    assert_eq!(other.status, 101, "{other:?}");

    // One WARN for the address, however many 429s it got in the minute.
    let line = relay.guard.wait_for_text(Stream::Stderr, LIMIT_WARN);
    assert!(
        line.contains("WARN") && line.contains("127.0.0.1"),
        "{line}"
    );
    let stderr = relay.guard.stderr();
    let warns = stderr.lines().filter(|l| l.contains(LIMIT_WARN)).count();
    assert_eq!(warns, 1, "{stderr}");
    assert!(
        !stderr.contains("wrong-guess"),
        "a guessed token was logged"
    );
}

#[test]
fn behind_a_trusted_proxy_failed_checks_count_against_the_real_sender_not_the_proxy() {
    let rt = runtime();
    let dir = temp_dir();
    let file = dir.path().join("tokens");
    write_tokens(&file, &[TOKEN]);
    let relay = Relay::start(&[
        "--http",
        "--trusted-proxy",
        "127.0.0.1/32",
        "--tokens-file",
        file.to_str().expect("UTF-8"),
    ]);
    let addr: SocketAddr = relay.authority().parse().expect("a socket address");
    // Every connection comes from the proxy's address; only X-Forwarded-For tells senders apart.
    let guesser = "x-forwarded-for: 198.51.100.7\r\n";
    let colleague = "x-forwarded-for: 203.0.113.9\r\n";
    let limited = rt.block_on(async {
        let mut limited = 0;
        for i in 0..100 {
            let guess = format!("itr_wrong-guess-{i:06}-0123456789");
            if upgrade_via(addr, FIRST, &guess, guesser).await.status == 429 {
                limited += 1;
            }
        }
        limited
    });
    assert!(limited >= 50, "only {limited} of 100 guesses got 429");
    let colleague = rt.block_on(upgrade_via(addr, FIRST, TOKEN, colleague));
    assert_eq!(colleague.status, 101, "{colleague:?}");
    let line = relay.guard.wait_for_text(Stream::Stderr, LIMIT_WARN);
    assert!(line.contains("198.51.100.7"), "{line}");
}

#[test]
fn a_token_shorter_than_128_bits_stops_the_relay_with_exit_2_naming_the_line() {
    let dir = temp_dir();
    let file = dir.path().join("tokens");
    write_tokens(&file, &[TOKEN, "q7z"]);
    let mut cmd = command("illumitunnel-relay", dir.path());
    cmd.args(["--listen", "127.0.0.1:0", "--http", "--data-dir"])
        .arg(dir.path().join("relay"))
        .arg("--tokens-file")
        .arg(&file);
    let finished = ChildGuard::run(cmd);
    assert_eq!(finished.code(), 2, "{finished:?}");
    assert_eq!(
        finished.stderr.trim(),
        format!(
            "error: tokens file {} line 2 holds a token shorter than 22 characters (128 bits); replace it with a long random one, e.g. from `illumitunnel-relay token add NAME` or `openssl rand -hex 16`",
            file.display()
        )
    );
    assert!(finished.stdout.is_empty(), "{finished:?}");

    // The same rule for tokens from the environment.
    let mut cmd = command("illumitunnel-relay", dir.path());
    cmd.args(["--listen", "127.0.0.1:0", "--http", "--data-dir"])
        .arg(dir.path().join("relay"))
        .env("ILLUMITUNNEL_RELAY_TOKENS", format!("{TOKEN},q7z"));
    let finished = ChildGuard::run(cmd);
    assert_eq!(finished.code(), 2, "{finished:?}");
    assert!(
        finished.stderr.starts_with(
            "error: ILLUMITUNNEL_RELAY_TOKENS entry 2 is a token shorter than 22 characters"
        ),
        "{finished:?}"
    );
    assert!(!finished.stderr.contains("q7z"), "{finished:?}");
}

#[test]
fn sighup_with_an_emptied_tokens_file_refuses_the_old_token_and_closes_its_session() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let (relay, dir, file, addr) = relay_with_token_file();
    let home = temp_dir();
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["listen", "--relay", &relay.url, "--tunnel", "emptied"])
        .args(["--token", TOKEN, "--forward-to", &target.url("/hook")])
        .args(["--no-tui", "--json", "--store"])
        .arg(dir.path().join("captures.db"));
    let mut client = ChildGuard::spawn(cmd);
    client.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));

    write_tokens(&file, &["# nobody for now"]);
    relay.guard.signal("HUP");
    relay.guard.wait_for_text(Stream::Stderr, "tokens reloaded");
    relay
        .guard
        .wait_for_text(Stream::Stderr, "client token revoked; closing its session");
    let answer = rt.block_on(upgrade(addr, FIRST, TOKEN));
    assert_eq!(answer.status, 401, "{answer:?}");
    // The client hears it on its next connect and stops with a sentence about its token.
    let status = client.wait_for_exit();
    assert!(!status.success(), "{}", client.stderr());
    assert!(
        client.stderr().to_lowercase().contains("token"),
        "{}",
        client.stderr()
    );
}

#[test]
fn sighup_with_a_deleted_or_weak_tokens_file_keeps_the_last_good_tokens_and_logs_an_error() {
    let rt = runtime();
    let (relay, _dir, file, addr) = relay_with_token_file();
    std::fs::remove_file(&file).expect("delete the tokens file");
    relay.guard.signal("HUP");
    let line = relay
        .guard
        .wait_for_text(Stream::Stderr, "could not read the tokens file");
    assert!(
        line.contains("ERROR") && line.contains("kept the last good tokens"),
        "{line}"
    );
    let answer = rt.block_on(upgrade(addr, FIRST, TOKEN));
    assert_eq!(answer.status, 101, "{answer:?}");

    // A short token in the new file: the whole file is refused, naming the line only.
    write_tokens(&file, &["itr_a-new-token-0123456789abcdef", "weak7"]);
    relay.guard.signal("HUP");
    let line = relay
        .guard
        .wait_for_text(Stream::Stderr, "holds a token shorter than 22 characters");
    assert!(line.contains("ERROR") && line.contains("line 2"), "{line}");
    assert_eq!(rt.block_on(upgrade(addr, FIRST, TOKEN)).status, 101);
    assert_eq!(
        rt.block_on(upgrade(addr, FIRST, "itr_a-new-token-0123456789abcdef"))
            .status,
        401
    );
    assert!(
        !relay.guard.stderr().contains("weak7"),
        "the token was logged"
    );
}

/// A second right token.
const OTHER_TOKEN: &str = "itr_p0q9r8s7t6u5v4w3x2y1z0a9b8c7";

/// `illumitunnel listen` with `token` on `tunnel`, forwarding to `target`, its home in `home`.
fn listen(relay: &Relay, tunnel: &str, token: &str, target: &str, home: &Path) -> ChildGuard {
    let mut cmd = command("illumitunnel", home);
    cmd.args(["listen", "--relay", &relay.url, "--tunnel", tunnel])
        .args(["--token", token, "--forward-to", target])
        .args(["--no-tui", "--json", "--store"])
        .arg(home.join("captures.db"));
    ChildGuard::spawn(cmd)
}

fn wait_connected(client: &ChildGuard) {
    client.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
}

/// Waits for a refused client to exit and returns its stderr.
fn refused(mut client: ChildGuard) -> String {
    let status = client.wait_for_exit();
    assert!(!status.success(), "{}", client.stderr());
    client.stderr()
}

/// Posts to `tunnel` until the relay answers `status` (within `within`).
fn wait_for_status(
    rt: &tokio::runtime::Runtime,
    relay: &Relay,
    tunnel: &str,
    status: u16,
    within: std::time::Duration,
) {
    support::poll_until(&format!("{status} from {tunnel}"), within, || {
        let answer = support::sender::Request::post(&relay.tunnel_url(tunnel))
            .body("{}")
            .send(rt);
        if answer.status == status {
            Ok(())
        } else {
            Err(format!("{} {}", answer.status, answer.text()))
        }
    });
}

#[test]
fn after_the_tunnel_ttl_only_the_owner_takes_the_name_back_until_the_operator_releases_it() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let dir = temp_dir();
    let file = dir.path().join("tokens");
    write_tokens(&file, &[TOKEN, OTHER_TOKEN]);
    let data_dir = dir.path().join("relay");
    let relay = Relay::start_at(
        &data_dir,
        "127.0.0.1:0",
        &[
            "--http",
            "--tunnel-ttl",
            "2s",
            "--tokens-file",
            file.to_str().expect("UTF-8"),
        ],
    );
    let hook = target.url("/hook");
    let (home_a, home_b) = (temp_dir(), temp_dir());
    let mut owner = listen(&relay, "team-app", TOKEN, &hook, home_a.path());
    wait_connected(&owner);
    owner.kill_now();
    wait_for_status(&rt, &relay, "team-app", 202, DEADLINE);
    // Unused for the TTL: senders get 404, nothing is queued any more.
    wait_for_status(&rt, &relay, "team-app", 404, DEADLINE);

    // A stranger is refused the name; its owner takes it back.
    let stranger = listen(&relay, "team-app", OTHER_TOKEN, &hook, home_b.path());
    let stderr = refused(stranger);
    assert!(stderr.contains("team-app"), "{stderr}");
    let mut owner = listen(&relay, "team-app", TOKEN, &hook, home_a.path());
    wait_connected(&owner);
    owner.kill_now();
    wait_for_status(&rt, &relay, "team-app", 202, DEADLINE);

    // The operator releases it while the relay runs: applied within 5 s, the stranger claims.
    let release = |name: &str| {
        let home = temp_dir();
        let mut cmd = command("illumitunnel-relay", home.path());
        cmd.args(["tunnel", "release", name, "--data-dir"])
            .arg(&data_dir);
        ChildGuard::run(cmd)
    };
    let started = Instant::now();
    let done = release("team-app");
    assert_eq!(done.code(), 0, "{done:?}");
    assert_eq!(done.stdout.lines().count(), 1, "{done:?}");
    assert!(
        done.stdout
            .starts_with("tunnel team-app released (1 queued deliveries dropped)"),
        "{done:?}"
    );
    wait_for_status(
        &rt,
        &relay,
        "team-app",
        404,
        std::time::Duration::from_secs(5),
    );
    assert!(started.elapsed() <= std::time::Duration::from_secs(5));
    let new_owner = listen(&relay, "team-app", OTHER_TOKEN, &hook, home_b.path());
    wait_connected(&new_owner);

    // Unknown and invalid names are usage errors, with a sentence.
    let unknown = release("no-such-app");
    assert_eq!(unknown.code(), 2, "{unknown:?}");
    assert_eq!(
        unknown.stderr.trim(),
        format!(
            "error: no tunnel named no-such-app in {}; check the name and --data-dir",
            data_dir.display()
        )
    );
    let invalid = release("No_Such");
    assert_eq!(invalid.code(), 2, "{invalid:?}");
    assert!(
        invalid.stderr.starts_with("error: invalid tunnel name"),
        "{invalid:?}"
    );
}

#[test]
fn on_a_cluster_tunnel_release_frees_a_name_for_another_token() {
    use support::cluster::{Nats, Node};
    let rt = runtime();
    let target = Target::ok(&rt);
    let nats = Nats::start();
    let dir = temp_dir();
    let file = dir.path().join("tokens");
    write_tokens(&file, &[TOKEN, OTHER_TOKEN]);
    let node = Node::start_with(
        "alpha",
        &nats.url,
        &["--tokens-file", file.to_str().expect("UTF-8")],
    );
    let relay = node.relay();
    let hook = target.url("/hook");
    let (home_a, home_b) = (temp_dir(), temp_dir());
    let mut owner = listen(relay, "shared-app", TOKEN, &hook, home_a.path());
    wait_connected(&owner);
    owner.kill_now();
    wait_for_status(&rt, relay, "shared-app", 202, DEADLINE);
    let stderr = refused(listen(
        relay,
        "shared-app",
        OTHER_TOKEN,
        &hook,
        home_b.path(),
    ));
    assert!(stderr.contains("shared-app"), "{stderr}");

    let release = |name: &str| {
        let home = temp_dir();
        let mut cmd = command("illumitunnel-relay", home.path());
        cmd.args(["tunnel", "release", name, "--cluster", &nats.url]);
        ChildGuard::run(cmd)
    };
    let done = release("shared-app");
    assert_eq!(done.code(), 0, "{done:?}");
    assert!(
        done.stdout
            .starts_with("tunnel shared-app released (1 queued deliveries dropped)"),
        "{done:?}"
    );
    let new_owner = listen(relay, "shared-app", OTHER_TOKEN, &hook, home_b.path());
    wait_connected(&new_owner);
    let unknown = release("no-such-app");
    assert_eq!(unknown.code(), 2, "{unknown:?}");
    assert!(
        unknown
            .stderr
            .starts_with("error: no tunnel named no-such-app in the cluster at"),
        "{unknown:?}"
    );
}

#[test]
fn on_a_cluster_a_tunnel_under_its_fair_share_still_queues_at_the_total_cap() {
    use support::cluster::{Nats, Node};
    let rt = runtime();
    let target = Target::ok(&rt);
    let nats = Nats::start();
    let dir = temp_dir();
    let file = dir.path().join("tokens");
    write_tokens(&file, &[TOKEN]);
    let file = file.to_str().expect("UTF-8");
    let node = Node::start_with(
        "alpha",
        &nats.url,
        &["--tokens-file", file, "--queue-max-total-bytes", "20000"],
    );
    let relay = node.relay();
    let home = temp_dir();
    for name in ["hog", "small"] {
        let mut client = listen(relay, name, TOKEN, &target.url("/hook"), home.path());
        wait_connected(&client);
        client.kill_now();
        wait_for_status(&rt, relay, name, 202, DEADLINE);
    }
    let post = |name: &str, size: usize| {
        support::sender::Request::post(&relay.tunnel_url(name))
            .body(vec![b'x'; size])
            .send(&rt)
    };
    let mut hogged = 0;
    loop {
        let answer = post("hog", 2_000);
        if answer.status == 503 {
            assert!(
                answer.text().contains("--queue-max-total-bytes"),
                "{}",
                answer.text()
            );
            break;
        }
        assert_eq!(answer.status, 202, "{}", answer.text());
        hogged += 1;
        assert!(hogged < 20, "the cap never applied");
    }
    for _ in 0..3 {
        let answer = post("small", 2_000);
        assert_eq!(answer.status, 202, "under its share: {}", answer.text());
    }
    assert_eq!(post("hog", 100).status, 503, "over its share");
}
