//! End to end for tunnels without tokens: on a relay with `--allow-anonymous`, the first client
//! of a name keeps it by its claim key (0600 in its config dir), across its own restarts and
//! the relay's, while any other client is refused and sees nothing sent to the tunnel; the
//! embedded relay of `listen` lets in only its own process; random names are long, remembered
//! ones keep working.

mod support;

use std::path::Path;

use support::sender::Request;
use support::target::Target;
use support::{closed_port, command, runtime, temp_dir, ChildGuard, Relay, Stream};

const HOOK: &str = "/hooks";
/// What a sender puts in `Authorization`; no refused client may ever see it.
const SECRET: &str = "planted-secret-7c1e";

/// `illumitunnel listen --json` with its home (config dir, claim keys, store) in `home`.
fn listen(home: &Path, relay: Option<&str>, tunnel: Option<&str>, forward_to: &str) -> ChildGuard {
    let mut cmd = command("illumitunnel", home);
    cmd.arg("listen");
    match relay {
        Some(relay) => cmd.args(["--relay", relay]),
        // An ephemeral port: 8443 may be taken, and a taken port is an error.
        None => cmd.args(["--relay-port", &support::closed_port().to_string()]),
    };
    if let Some(tunnel) = tunnel {
        cmd.args(["--tunnel", tunnel]);
    }
    cmd.args(["--forward-to", forward_to, "--no-tui", "--json", "--store"])
        .arg(home.join("captures.db"));
    ChildGuard::spawn(cmd)
}

fn wait_connected(guard: &ChildGuard) -> String {
    let url = guard.wait_for_text(Stream::Stderr, "webhook URL");
    guard.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    support::after(&url, "webhook URL").to_string()
}

fn stop(mut guard: ChildGuard) {
    guard.signal("TERM");
    guard.wait_for_exit();
}

/// A client that must be refused: it exits 1 with one sentence saying to pick another name.
fn assert_refused_taken(mut guard: ChildGuard, tunnel: &str) -> String {
    assert_eq!(guard.wait_for_exit().code(), Some(1), "{}", guard.stderr());
    let stderr = guard.stderr();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("tunnel {tunnel} belongs to another client"))
            && errors[0].contains("pick another name with --tunnel NAME"),
        "{stderr}"
    );
    format!("{}{stderr}", guard.stdout())
}

/// Whether any file under `dir` contains `needle` (a bounded walk).
fn tree_contains(dir: &Path, needle: &[u8]) -> bool {
    let mut pending = vec![dir.to_path_buf()];
    let mut visited = 0;
    while let Some(path) = pending.pop() {
        visited += 1;
        assert!(visited < 10_000, "too many files under {}", dir.display());
        if path.is_dir() {
            let entries = std::fs::read_dir(&path).expect("read a test dir");
            pending.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
    }
    false
}

fn send_secret(rt: &tokio::runtime::Runtime, url: &str, n: u32) -> u16 {
    Request::post(url)
        .header("authorization", format!("Bearer {SECRET}"))
        .header("content-type", "application/json")
        .body(format!("{{\"n\":{n}}}"))
        .send(rt)
        .status
}

#[test]
fn two_anonymous_clients_never_share_a_tunnel() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let dir = temp_dir();
    let data = dir.path().join("relay-data");
    let addr = format!("127.0.0.1:{}", closed_port());
    let args = ["--http", "--allow-anonymous"];
    let mut relay = Relay::start_at(&data, &addr, &args);
    let forward = target.url(HOOK);
    let (owner_home, stranger_home) = (temp_dir(), temp_dir());
    let tunnel = "shared-anon";

    let owner = listen(owner_home.path(), Some(&relay.url), Some(tunnel), &forward);
    let url = wait_connected(&owner);
    assert_eq!(url, relay.tunnel_url(tunnel));
    let key_file = owner_home.path().join("config/claims").join(tunnel);
    let key = std::fs::read_to_string(&key_file).expect("the claim key is kept");
    assert_eq!(key.trim().len(), 64, "{key}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(send_secret(&rt, &url, 1), 200);

    // A stranger without a key, then with a wrong one, is refused while deliveries flow.
    let mut seen = assert_refused_taken(
        listen(
            stranger_home.path(),
            Some(&relay.url),
            Some(tunnel),
            &forward,
        ),
        tunnel,
    );
    assert_eq!(send_secret(&rt, &url, 2), 200);
    let claims = stranger_home.path().join("config/claims");
    std::fs::create_dir_all(&claims).unwrap();
    let wrong = key.trim().replace(|c: char| c != '0', "0");
    std::fs::write(claims.join(tunnel), format!("{wrong}\n")).unwrap();
    seen += &assert_refused_taken(
        listen(
            stranger_home.path(),
            Some(&relay.url),
            Some(tunnel),
            &forward,
        ),
        tunnel,
    );
    assert_eq!(send_secret(&rt, &url, 3), 200);

    // The owner restarts with its kept key and keeps its URL.
    stop(owner);
    let owner = listen(owner_home.path(), Some(&relay.url), Some(tunnel), &forward);
    assert_eq!(wait_connected(&owner), url);
    assert_eq!(send_secret(&rt, &url, 4), 200);
    stop(owner);

    // The relay restarts on the same data dir: the claim survives it.
    relay.guard.kill_now();
    relay = Relay::start_at(&data, &addr, &args);
    assert_eq!(send_secret(&rt, &url, 5), 202, "queued for the owner");
    std::fs::remove_file(claims.join(tunnel)).unwrap();
    seen += &assert_refused_taken(
        listen(
            stranger_home.path(),
            Some(&relay.url),
            Some(tunnel),
            &forward,
        ),
        tunnel,
    );
    let owner = listen(owner_home.path(), Some(&relay.url), Some(tunnel), &forward);
    assert_eq!(wait_connected(&owner), url);
    let requests = target.wait_for_requests(5);
    assert_eq!(requests.len(), 5);
    for request in &requests {
        assert_eq!(
            request.header("authorization").as_deref(),
            Some(format!("Bearer {SECRET}").as_str())
        );
    }
    stop(owner);

    assert!(!seen.contains(SECRET), "{seen}");
    assert!(
        !tree_contains(stranger_home.path(), SECRET.as_bytes()),
        "a refused client kept a delivery"
    );
    drop(relay);
}

#[test]
fn the_embedded_relay_lets_in_only_its_own_process_and_a_restart_keeps_the_name() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let forward = target.url(HOOK);
    let home = temp_dir();
    let own = listen(home.path(), None, None, &forward);
    let url = wait_connected(&own);
    let base = url.split("/t/").next().unwrap().to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{url}");
    assert_eq!(send_secret(&rt, &url, 1), 200);

    // Another local client, with no token or a guessed one, is refused whatever the name.
    let tunnel = url.rsplit('/').next().unwrap().to_string();
    for (name, token) in [(tunnel.as_str(), None), ("any-other-name", Some("guess"))] {
        let stranger = temp_dir();
        let mut cmd = command("illumitunnel", stranger.path());
        cmd.args(["listen", "--relay", &base, "--insecure", "--tunnel", name])
            .args(["--forward-to", &forward, "--no-tui", "--json", "--store"])
            .arg(stranger.path().join("captures.db"));
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        let mut guard = ChildGuard::spawn(cmd);
        assert_eq!(guard.wait_for_exit().code(), Some(1), "{}", guard.stderr());
        let stderr = guard.stderr();
        assert!(stderr.contains("relay refused the token"), "{stderr}");
        assert!(!format!("{}{stderr}", guard.stdout()).contains(SECRET));
        assert!(!tree_contains(stranger.path(), SECRET.as_bytes()));
    }
    assert_eq!(send_secret(&rt, &url, 2), 200);
    stop(own);

    // A new process has a new token, yet its remembered tunnel is still its own.
    let own = listen(home.path(), None, None, &forward);
    let again = wait_connected(&own);
    assert_eq!(again.rsplit('/').next(), Some(tunnel.as_str()));
    assert_eq!(send_secret(&rt, &again, 3), 200);
    assert_eq!(target.wait_for_requests(3).len(), 3);
    stop(own);
}

#[test]
fn new_random_names_are_long_and_a_remembered_short_one_keeps_working() {
    let rt = runtime();
    let target = Target::ok(&rt);
    let forward = target.url(HOOK);
    let relay = Relay::http(&[]);

    let fresh = temp_dir();
    let guard = listen(fresh.path(), Some(&relay.url), None, &forward);
    let url = wait_connected(&guard);
    let name = url.rsplit('/').next().unwrap().to_string();
    let parts: Vec<&str> = name.split('-').collect();
    assert_eq!(parts.len(), 3, "{name}");
    assert_eq!(parts[2].len(), 12, "{name}");
    let remembered = std::fs::read_to_string(fresh.path().join("config/tunnel")).unwrap();
    assert_eq!(remembered.trim(), name);
    stop(guard);

    let old = temp_dir();
    std::fs::create_dir_all(old.path().join("config")).unwrap();
    std::fs::write(old.path().join("config/tunnel"), "quiet-otter-4821\n").unwrap();
    let guard = listen(old.path(), Some(&relay.url), None, &forward);
    assert_eq!(wait_connected(&guard), relay.tunnel_url("quiet-otter-4821"));
    stop(guard);
}
