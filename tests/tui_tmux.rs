//! The terminal inspector in a real terminal: `illumitunnel listen` runs inside a detached tmux
//! session on a private tmux server, keys go in with `send-keys`, and the screen comes back with
//! `capture-pane`. Covers a hostile payload drawn escaped, details, replay, filter, help, quitting
//! with `q` and with SIGTERM (the terminal restored both times), and a terminal that starts too
//! small and is then resized; the header at 80×24 (ellipses, the local-only warning, counters for
//! this run and the store), the filter like less and fzf, `i` in a test diff, the inspector opening
//! while the relay is unreachable, and Ctrl-C twice during a slow delivery.
//!
//! Without tmux the tests say so and pass, except in CI (`CI` set), where `.ci/run` installs it
//! and a missing tmux is a failure.
#![cfg(unix)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::secrets;
use support::sender::Request;
use support::store::fill_store;
use support::target::{Reply, Target};
use support::{bin, illumichat_samples, runtime, temp_dir, Relay};
use tempfile::TempDir;

const FORWARD_PATH: &str = "/webhooks/illumichat";
/// Step between two looks at the screen.
const POLL: Duration = Duration::from_millis(100);
/// How long the screen may take to show what a test waits for.
const SCREEN_DEADLINE: Duration = Duration::from_secs(10);
/// What the shell around `listen` prints when it ends.
const EXITED: &str = "EXITED ";

/// Whether tmux can be run; without it the test is skipped, except in CI.
fn tmux_available(test: &str) -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
    assert!(
        !in_ci,
        "tmux is not installed but CI is set; .ci/run installs it"
    );
    eprintln!(
        "skipping {test}: tmux is not installed (install tmux to run the terminal inspector tests)"
    );
    false
}

/// Quotes `text` for `sh`.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A private tmux server (its own socket file) with one detached session running `listen` inside a
/// shell that prints `EXITED <code>` when `listen` ends. Dropping it kills that server, which
/// hangs up on everything in its pane.
struct Inspector {
    socket: PathBuf,
    session: String,
    home: TempDir,
    /// The `listen` process inside the pane, once found.
    pid: Option<u32>,
    last_screen: String,
}

impl Inspector {
    /// Starts `listen --relay RELAY --forward-to FORWARD_TO --tunnel TUNNEL` in a `width`×`height`
    /// terminal, with a fresh home and capture store.
    fn start(relay: &str, forward_to: &str, tunnel: &str, size: (u16, u16)) -> Inspector {
        Inspector::start_with_home(temp_dir(), relay, forward_to, tunnel, size)
    }

    /// Like [`Inspector::start`], with `home` (which may hold a filled `captures.db` already).
    fn start_with_home(
        home: TempDir,
        relay: &str,
        forward_to: &str,
        tunnel: &str,
        size: (u16, u16),
    ) -> Inspector {
        Inspector::start_with(home, &[relay, forward_to, tunnel], size, &[], &[])
    }

    /// Like [`Inspector::start_with_home`] for `[relay, forward_to, tunnel]`, plus `extra`
    /// arguments and `env` variables for `listen`.
    fn start_with(
        home: TempDir,
        &[relay, forward_to, tunnel]: &[&str; 3],
        size: (u16, u16),
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Inspector {
        // A socket of its own in the test's directory: never the user's tmux server, and gone
        // with the directory.
        let socket = home.path().join("tmux.sock");
        let store = home.path().join("captures.db");
        let listen = [
            bin("illumitunnel").display().to_string(),
            "listen".into(),
            "--relay".into(),
            relay.into(),
            "--forward-to".into(),
            forward_to.into(),
            "--tunnel".into(),
            tunnel.into(),
            "--store".into(),
            store.display().to_string(),
        ]
        .into_iter()
        .chain(extra.iter().map(|arg| arg.to_string()))
        .collect::<Vec<_>>()
        .iter()
        .map(|arg| sh_quote(arg))
        .collect::<Vec<_>>()
        .join(" ");
        // The same isolation as `support::command`; the sleep keeps the pane (and the shell's
        // last lines) on screen until the test has looked.
        let script = format!(
            "unset ILLUMITUNNEL_RELAY ILLUMITUNNEL_TOKEN ILLUMITUNNEL_RELAY_TOKENS RUST_BACKTRACE RUST_LOG\n\
             export ILLUMITUNNEL_HOME={home} NO_COLOR=1{exports}\n\
             {listen}\n\
             echo \"{EXITED}$?\"\n\
             exec sleep 60\n",
            home = sh_quote(&home.path().display().to_string()),
            exports = env
                .iter()
                .map(|(k, v)| format!(" {k}={}", sh_quote(v)))
                .collect::<String>(),
        );
        let script_path = home.path().join("run.sh");
        std::fs::write(&script_path, script).expect("write the pane's script");
        let mut inspector = Inspector {
            socket,
            session: "inspector".into(),
            home,
            pid: None,
            last_screen: String::new(),
        };
        let (width, height) = (size.0.to_string(), size.1.to_string());
        let command = format!("sh {}", sh_quote(&script_path.display().to_string()));
        inspector.tmux_ok(&[
            "new-session",
            "-d",
            "-s",
            &inspector.session.clone(),
            "-x",
            &width,
            "-y",
            &height,
            &command,
        ]);
        inspector
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux")
    }

    fn tmux_ok(&mut self, args: &[&str]) -> String {
        let out = self.tmux(args);
        if !out.status.success() {
            self.fail(&format!(
                "tmux {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's visible text, one line a row.
    fn capture(&mut self) -> String {
        let target = self.session.clone();
        let screen = self.tmux_ok(&["capture-pane", "-p", "-t", &target]);
        self.last_screen = screen.clone();
        screen
    }

    /// `tmux display -p FORMAT` for the pane.
    fn display(&mut self, format: &str) -> String {
        let target = self.session.clone();
        self.tmux_ok(&["display", "-p", "-t", &target, format])
            .trim()
            .to_string()
    }

    /// Sends tmux key names (`Enter`, `Escape`, `q`).
    fn keys(&mut self, keys: &[&str]) {
        let target = self.session.clone();
        let mut args = vec!["send-keys", "-t", &target];
        args.extend_from_slice(keys);
        self.tmux_ok(&args);
    }

    /// Types `text` literally.
    fn type_text(&mut self, text: &str) {
        let target = self.session.clone();
        self.tmux_ok(&["send-keys", "-t", &target, "-l", text]);
    }

    /// Polls the screen every [`POLL`] until `ready` holds, up to [`SCREEN_DEADLINE`].
    fn wait_for(&mut self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if ready(&screen) {
                return screen;
            }
            if start.elapsed() > SCREEN_DEADLINE {
                self.fail(&format!(
                    "timed out after {SCREEN_DEADLINE:?} waiting for {what}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the screen shows `needle`.
    fn wait_for_text(&mut self, needle: &str) -> String {
        self.wait_for(&format!("{needle:?} on screen"), |s| s.contains(needle))
    }

    /// Waits for the inspector's first frame: connected, with the tunnel URL in the header.
    fn wait_connected(&mut self, url: &str) -> String {
        self.wait_for("the inspector, connected", |s| {
            s.contains("● connected") && s.contains(url)
        })
    }

    /// The `illumitunnel` process running in the pane (found once, by parent PID).
    fn listen_pid(&mut self) -> u32 {
        if let Some(pid) = self.pid {
            return pid;
        }
        let pane: u32 = self
            .display("#{pane_pid}")
            .parse()
            .unwrap_or_else(|e| panic!("pane pid: {e}"));
        let start = Instant::now();
        loop {
            if let Some(pid) = child_named(pane, "illumitunnel") {
                self.pid = Some(pid);
                return pid;
            }
            if start.elapsed() > SCREEN_DEADLINE {
                self.fail(&format!("no illumitunnel process under pane pid {pane}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the shell's `EXITED <code>` line and returns the code.
    fn wait_exit_code(&mut self) -> i32 {
        let screen = self.wait_for("listen to exit", |s| s.contains(EXITED));
        let line = screen
            .lines()
            .find(|l| l.contains(EXITED))
            .unwrap_or_default();
        line.trim()
            .trim_start_matches(EXITED)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("exit code in {line:?}: {e}"))
    }

    /// After `listen` ended: exit 0, the normal screen back, nothing of the inspector left on it.
    fn assert_restored(&mut self) {
        let code = self.wait_exit_code();
        if code != 0 {
            self.fail(&format!("listen exited {code}"));
        }
        let alternate = self.display("#{alternate_on}");
        if alternate != "0" {
            self.fail(&format!("the alternate screen is still on ({alternate})"));
        }
        let screen = self.capture();
        if screen.contains("⏎ details") || screen.contains("● connected") {
            self.fail("the inspector is still drawn on the normal screen");
        }
        if let Some(pid) = self.pid {
            if Path::new(&format!("/proc/{pid}")).exists() && child_named_is(pid, "illumitunnel") {
                self.fail(&format!("listen (pid {pid}) is still running"));
            }
        }
    }

    /// Where `listen` logs while the inspector is up.
    fn log_path(&self) -> PathBuf {
        self.home.path().join("data").join("listen.log")
    }

    /// Fails the test with `message`, the last screen and the end of `listen.log`.
    fn fail(&self, message: &str) -> ! {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{message}\n--- last screen:\n{}\n--- end of listen.log:\n{}\n---",
            self.last_screen,
            tail.join("\n")
        );
    }
}

impl Drop for Inspector {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.last_screen.is_empty() {
            eprintln!("--- last screen:\n{}\n---", self.last_screen);
        }
        // Hangs up on the pane: listen quits on SIGHUP; the sleep ends too.
        let _ = self.tmux(&["kill-server"]);
        if let Some(pid) = self.pid {
            let start = Instant::now();
            while child_named_is(pid, "illumitunnel") && start.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if child_named_is(pid, "illumitunnel") {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// `/proc/PID/stat`: (command name, parent PID).
fn proc_stat(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_string();
    let ppid = stat[close + 1..].split_whitespace().nth(1)?.parse().ok()?;
    Some((name, ppid))
}

/// Whether `pid` is a live (not zombie) process named `name`.
fn child_named_is(pid: u32, name: &str) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat[stat.rfind(')')? + 1..].trim_start().starts_with('Z')))
        .unwrap_or(true);
    !zombie && proc_stat(pid).is_some_and(|(n, _)| n == name)
}

/// A child of `parent` whose command name is `name`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| proc_stat(*pid).is_some_and(|(n, ppid)| n == name && ppid == parent))
}

/// Rows of the delivery list: lines showing the forwarded request.
fn rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| l.contains(&format!("POST {FORWARD_PATH}")))
        .collect()
}

/// A JSON body whose string value holds a raw ESC `[2J` (clear the screen) and a raw SOH.
fn hostile_body() -> Vec<u8> {
    br#"{"event":"ticket.created","data":{"id":"tkt_hostile","note":"wipe "#
        .iter()
        .copied()
        .chain(*b"\x1b[2J now \x01 end\"}}")
        .collect()
}

#[test]
fn inspector_shows_replays_filters_and_quits_leaving_the_terminal_restored() {
    if !tmux_available("inspector_shows_replays_filters_and_quits_leaving_the_terminal_restored") {
        return;
    }
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let url = relay.tunnel_url("tmux-inspector");
    let mut ui = Inspector::start(
        &relay.url,
        &target.url(FORWARD_PATH),
        "tmux-inspector",
        (100, 30),
    );
    ui.wait_for("the inspector, connected and empty", |s| {
        s.contains("● connected") && s.contains(&url) && s.contains("no deliveries yet")
    });
    ui.listen_pid();

    // A hostile payload: the row appears and the screen is never cleared by it.
    let hostile = hostile_body();
    let response = Request::post(&url)
        .header("content-type", "application/json")
        .body(hostile.clone())
        .send(&rt);
    assert_eq!(response.status, 200);
    ui.wait_for("the first row", |s| rows(s).len() == 1);

    // Enter opens the Payload tab; control characters are drawn escaped (`^[`, `^A`).
    ui.keys(&["Enter"]);
    let screen = ui.wait_for_text("1 Payload");
    for needle in [
        r#""id":"tkt_hostile""#,
        "wipe ^[[2J now ^A end",
        "illumitunnel ",
        &url,
        "⏎ details",
    ] {
        if !screen.contains(needle) {
            ui.fail(&format!("{needle:?} is not on screen"));
        }
    }
    if rows(&screen).len() != 1 {
        ui.fail("the list row is gone: the screen was cleared");
    }
    ui.keys(&["Escape"]);
    ui.wait_for("the details to close", |s| !s.contains("1 Payload"));

    // `r` replays the selected delivery: the local server gets the same body again.
    ui.keys(&["r"]);
    let received = target.wait_for_requests(2);
    assert_eq!(received[1].body, hostile, "the replay's body");
    assert_eq!(received[1].path, FORWARD_PATH);
    let screen = ui.wait_for("a replay row", |s| rows(s).len() == 2);
    if !rows(&screen)[1].contains("replay") {
        ui.fail("the second row is not marked replay");
    }

    // `/` filters: only matching rows remain.
    let (_, _, lead) = illumichat_samples()
        .into_iter()
        .find(|(event, _, _)| *event == "lead.captured")
        .expect("lead sample");
    let response = Request::post(&url)
        .header("content-type", "application/json")
        .body(lead)
        .send(&rt);
    assert_eq!(response.status, 200);
    ui.wait_for("three rows", |s| rows(s).len() == 3);
    ui.keys(&["/"]);
    ui.type_text("lead");
    ui.keys(&["Enter"]);
    let screen = ui.wait_for("the filtered list", |s| {
        s.contains("filter: lead") && rows(s).len() == 1
    });
    if !rows(&screen)[0].contains("lead.captured") {
        ui.fail("the remaining row is not the lead");
    }
    ui.keys(&["Escape"]);
    ui.wait_for("the filter to clear", |s| {
        !s.contains("filter: lead") && rows(s).len() == 3
    });

    // `?` opens the help; any key closes it.
    ui.keys(&["?"]);
    ui.wait_for_text("any key closes this help");
    ui.keys(&["Escape"]);
    ui.wait_for("the help to close", |s| {
        !s.contains("any key closes this help") && rows(s).len() == 3
    });

    ui.keys(&["q"]);
    ui.assert_restored();
    assert_eq!(target.requests().len(), 3, "nothing sent after quitting");
    assert!(
        ui.log_path().is_file(),
        "listen logs to {} while the inspector is up",
        ui.log_path().display()
    );
}

#[test]
fn sigterm_while_the_inspector_is_up_exits_0_and_restores_the_terminal() {
    if !tmux_available("sigterm_while_the_inspector_is_up_exits_0_and_restores_the_terminal") {
        return;
    }
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let url = relay.tunnel_url("tmux-sigterm");
    let mut ui = Inspector::start(
        &relay.url,
        &target.url(FORWARD_PATH),
        "tmux-sigterm",
        (100, 30),
    );
    ui.wait_connected(&url);
    assert_eq!(ui.display("#{alternate_on}"), "1", "the inspector is up");
    let pid = ui.listen_pid();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    ui.assert_restored();
}

#[test]
fn the_inspector_log_is_private_and_holds_no_secret_at_trace() {
    if !tmux_available("the_inspector_log_is_private_and_holds_no_secret_at_trace") {
        return;
    }
    let rt = runtime();
    let target = Target::start(&rt, |_| {
        Reply::ok().header(secrets::RESPONSE_HEADER.0, secrets::RESPONSE_HEADER.1)
    });
    let dir = temp_dir();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{}\n", secrets::TOKEN)).expect("write the tokens file");
    let relay = Relay::start(&["--http", "--tokens-file", &tokens.display().to_string()]);
    let url = relay.tunnel_url("tmux-private-log");
    let mut ui = Inspector::start_with(
        temp_dir(),
        &[&relay.url, &target.url(FORWARD_PATH), "tmux-private-log"],
        (100, 30),
        &["--token", secrets::TOKEN],
        &[("ILLUMITUNNEL_LOG", "trace")],
    );
    ui.wait_connected(&url);
    let response = secrets::planted(Request::post(&url).body("{}")).send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    ui.wait_for("the first row", |s| rows(s).len() == 1);
    ui.keys(&["q"]);
    ui.assert_restored();

    let log = std::fs::read_to_string(ui.log_path()).expect("listen.log exists");
    // At trace for real, dependencies' `log` records included, so the test can fail.
    assert!(log.contains("TRACE"), "{log}");
    assert!(log.contains("Client handshake done"), "{log}");
    secrets::assert_none_in("listen.log", &log);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ui.log_path())
        .expect("listen.log metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "listen.log is readable by others");
}

#[test]
fn closing_the_terminal_stops_listen() {
    if !tmux_available("closing_the_terminal_stops_listen") {
        return;
    }
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let url = relay.tunnel_url("tmux-hangup");
    let mut ui = Inspector::start(
        &relay.url,
        &target.url(FORWARD_PATH),
        "tmux-hangup",
        (100, 30),
    );
    ui.wait_connected(&url);
    let pid = ui.listen_pid();
    // The window goes away: the terminal hangs up on everything in it.
    ui.tmux_ok(&["kill-server"]);
    let start = Instant::now();
    while child_named_is(pid, "illumitunnel") {
        if start.elapsed() > SCREEN_DEADLINE {
            ui.fail(&format!(
                "listen (pid {pid}) still runs {SCREEN_DEADLINE:?} after its terminal closed"
            ));
        }
        std::thread::sleep(POLL);
    }
}

#[test]
fn too_small_says_so_and_resizing_redraws_the_inspector() {
    if !tmux_available("too_small_says_so_and_resizing_redraws_the_inspector") {
        return;
    }
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let url = relay.tunnel_url("tmux-resize");
    let mut ui = Inspector::start(
        &relay.url,
        &target.url(FORWARD_PATH),
        "tmux-resize",
        (70, 20),
    );
    let screen = ui.wait_for_text("too small");
    assert!(!screen.contains("● connected"), "{screen}");
    ui.tmux_ok(&["resize-window", "-t", "inspector", "-x", "100", "-y", "30"]);
    // One predicate for the whole screen: a capture can land between the lines of one frame.
    ui.wait_for("the inspector redrawn whole at 100x30", |s| {
        s.contains("● connected")
            && s.contains(&url)
            && !s.contains("too small")
            && s.contains("no deliveries yet")
            && s.contains("q quit")
    });
    ui.keys(&["q"]);
    ui.assert_restored();
}

/// `VmRSS` and `VmHWM` of `pid` in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = &stat[stat.rfind(')').expect("stat has a name") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based, as in proc(5)).
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn ticks_per_second() -> f64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// The list title's `deliveries SELECTED/TOTAL`.
fn position(screen: &str) -> Option<(u64, u64)> {
    let rest = screen.split(" deliveries ").nth(1)?;
    let (selected, rest) = rest.split_once('/')?;
    let total: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((selected.trim().parse().ok()?, total.parse().ok()?))
}

/// Time from sending `key` until the selected position differs from `before`, looking at the
/// screen as fast as tmux answers. Sent at a spread of moments within the ~33 ms frame.
fn key_latency(ui: &mut Inspector, key: &str, before: u64) -> (Duration, u64) {
    // Keys sent right after a frame would all wait a whole frame for the next one; a person's
    // keys land anywhere in it.
    static PHASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let phase = PHASE.fetch_add(7, std::sync::atomic::Ordering::Relaxed) % 34;
    std::thread::sleep(Duration::from_millis(phase));
    let start = Instant::now();
    ui.keys(&[key]);
    loop {
        let screen = ui.capture();
        if let Some((selected, _)) = position(&screen) {
            if selected != before {
                return (start.elapsed(), selected);
            }
        }
        if start.elapsed() > SCREEN_DEADLINE {
            ui.fail(&format!("{key} did not move the selection from {before}"));
        }
    }
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    if times.is_empty() {
        return "no samples".into();
    }
    let at = |q: usize| times[(times.len() * q / 100).min(times.len() - 1)];
    format!(
        "n={} median {:.1?} p90 {:.1?} p99 {:.1?} max {:.1?}",
        times.len(),
        at(50),
        at(90),
        at(99),
        times[times.len() - 1]
    )
}

/// Figures for the benchmark notes, printed and never asserted: the real client's memory with
/// 100,000 stored deliveries while the inspector is up, keypress-to-screen latency through tmux
/// idle and during a burst of 1,000 deliveries in one second, and the client's CPU and memory for
/// that burst. Run with release binaries:
/// `cargo build --release -p illumitunnel-relay -p illumitunnel-client && cargo test --release
/// -p illumitunnel --test tui_tmux figures -- --ignored --nocapture`.
#[test]
#[ignore = "prints figures; run by hand with release binaries"]
fn figures_with_100000_stored_and_a_burst_of_1000_in_a_second() {
    if !tmux_available("figures_with_100000_stored_and_a_burst_of_1000_in_a_second") {
        return;
    }
    const STORED: u64 = 100_000;
    const BURST: usize = 1_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let url = relay.tunnel_url("tmux-figures");
    let home = temp_dir();
    let filling = Instant::now();
    fill_store(
        &home.path().join("captures.db"),
        STORED as usize,
        FORWARD_PATH,
        0,
    );
    eprintln!(
        "filled the store with {STORED} deliveries in {:.1?}",
        filling.elapsed()
    );

    let started = Instant::now();
    let mut ui = Inspector::start_with_home(
        home,
        &relay.url,
        &target.url(FORWARD_PATH),
        "tmux-figures",
        (160, 40),
    );
    ui.wait_connected(&url);
    ui.wait_for("all stored deliveries counted", |s| {
        position(s).is_some_and(|(_, total)| total == STORED)
    });
    eprintln!(
        "inspector up with {STORED} deliveries after {:.1?}",
        started.elapsed()
    );
    let pid = ui.listen_pid();
    let tick = ticks_per_second();

    let mut captures = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        ui.capture();
        captures.push(start.elapsed());
    }
    eprintln!(
        "capture-pane alone (the resolution below): {}",
        summary(captures)
    );

    let idle_ticks = cpu_ticks(pid);
    let idle_start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let idle_cpu = (cpu_ticks(pid) - idle_ticks) as f64 / tick / idle_start.elapsed().as_secs_f64();
    let (rss, hwm) = memory_kib(pid);
    eprintln!(
        "idle with {STORED} stored, inspector up (160x40): VmRSS {:.1} MiB, VmHWM {:.1} MiB, CPU {:.1}%",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        idle_cpu * 100.0
    );

    // Jumps across the whole store, then single steps, with nothing arriving.
    let (g, selected) = key_latency(&mut ui, "g", STORED);
    let (big_g, _) = key_latency(&mut ui, "G", selected);
    let (g_again, mut selected) = key_latency(&mut ui, "g", STORED);
    eprintln!("idle: g (oldest) {g:.1?}, G (newest) {big_g:.1?}, g again {g_again:.1?}");
    let mut idle = Vec::new();
    for i in 0..100 {
        let key = if i % 2 == 0 { "j" } else { "k" };
        let (took, now) = key_latency(&mut ui, key, selected);
        selected = now;
        idle.push(took);
    }
    eprintln!("idle j/k key to screen: {}", summary(idle));

    // The burst: one request a millisecond for a second, each on its own connection, while j/k
    // keys go in as fast as the screen answers them.
    let burst_ticks = cpu_ticks(pid);
    let burst_start = Instant::now();
    let sender = {
        let url = url.clone();
        rt.spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            let mut sends = Vec::with_capacity(BURST);
            for i in 0..BURST {
                interval.tick().await;
                let body = format!(
                    r#"{{"event":"ticket.updated","timestamp":"2025-06-15T14:30:00Z","workspaceId":"ws_bench","data":{{"id":"tkt_burst_{i}","status":"pending"}}}}"#
                );
                let request = Request::post(&url)
                    .header("content-type", "application/json")
                    .body(body);
                sends.push(tokio::spawn(request.send_async()));
            }
            let sent = Instant::now();
            let mut ok = 0;
            for send in sends {
                if send.await.is_ok_and(|r| r.status == 200) {
                    ok += 1;
                }
            }
            (sent, Instant::now(), ok)
        })
    };
    let mut during = Vec::new();
    let mut peak_rss = 0;
    while !sender.is_finished() {
        let key = if during.len() % 2 == 0 { "j" } else { "k" };
        let (took, now) = key_latency(&mut ui, key, selected);
        selected = now;
        during.push(took);
        peak_rss = peak_rss.max(memory_kib(pid).0);
    }
    let (sent, answered, ok) = rt.block_on(sender).expect("sender");
    target.wait_for_requests(BURST);
    let forwarded = burst_start.elapsed();
    ui.wait_for("the burst counted on screen", |s| {
        position(s).is_some_and(|(_, total)| total == STORED + BURST as u64)
    });
    let on_screen = burst_start.elapsed();
    let burst_cpu = (cpu_ticks(pid) - burst_ticks) as f64 / tick;
    let (rss, hwm) = memory_kib(pid);
    eprintln!(
        "burst: {BURST} sent in {:.1?}, {ok} answered 200 within {:.1?}, all forwarded after {:.1?}, all counted on screen after {:.1?}",
        sent - burst_start,
        answered - burst_start,
        forwarded,
        on_screen
    );
    eprintln!("j/k key to screen during the burst: {}", summary(during));
    eprintln!(
        "client during the burst: {burst_cpu:.2} s CPU over {:.1?} ({:.0}% of one core); VmRSS peak sampled {:.1} MiB, after {:.1} MiB, VmHWM {:.1} MiB",
        on_screen,
        burst_cpu / on_screen.as_secs_f64() * 100.0,
        peak_rss as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    ui.keys(&["q"]);
    ui.assert_restored();
}

#[test]
fn listen_exits_1_with_a_sentence_when_the_inspector_fails() {
    if !tmux_available("listen_exits_1_with_a_sentence_when_the_inspector_fails") {
        return;
    }
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let home = temp_dir();
    let socket = home.path().join("tmux.sock");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux")
    };
    let listen = [
        bin("illumitunnel").display().to_string(),
        "listen".into(),
        "--relay".into(),
        relay.url.clone(),
        "--forward-to".into(),
        target.url(FORWARD_PATH),
        "--tunnel".into(),
        "tmux-broken".into(),
        "--store".into(),
        home.path().join("captures.db").display().to_string(),
    ]
    .iter()
    .map(|arg| sh_quote(arg))
    .collect::<Vec<_>>()
    .join(" ");
    let err = home.path().join("stderr.txt");
    let code = home.path().join("code.txt");
    // In a session of its own, listen keeps the pane as its terminal but gets no hangup signal
    // when the pane goes: the inspector then fails on the dead terminal, as it would when a
    // terminal breaks under it, and listen must say so and exit 1.
    let inner = format!(
        "{listen} 2>{err}; echo $? >{code}",
        err = sh_quote(&err.display().to_string()),
        code = sh_quote(&code.display().to_string()),
    );
    let script = format!(
        "unset ILLUMITUNNEL_RELAY ILLUMITUNNEL_TOKEN ILLUMITUNNEL_RELAY_TOKENS RUST_BACKTRACE RUST_LOG\n\
         export ILLUMITUNNEL_HOME={home} NO_COLOR=1\n\
         setsid -w sh -c {inner}\n\
         exec sleep 60\n",
        home = sh_quote(&home.path().display().to_string()),
        inner = sh_quote(&inner),
    );
    let script_path = home.path().join("run.sh");
    std::fs::write(&script_path, script).expect("write the pane's script");
    let command = format!("sh {}", sh_quote(&script_path.display().to_string()));
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "broken",
        "-x",
        "100",
        "-y",
        "30",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let url = relay.tunnel_url("tmux-broken");
    let start = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", "broken"]);
        let screen = String::from_utf8_lossy(&screen.stdout).into_owned();
        if screen.contains(&url) && screen.contains("connected") {
            break;
        }
        assert!(
            start.elapsed() < SCREEN_DEADLINE,
            "the inspector did not come up:\n{screen}"
        );
        std::thread::sleep(POLL);
    }
    let _ = tmux(&["kill-server"]);
    let start = Instant::now();
    let exit = loop {
        if let Ok(text) = std::fs::read_to_string(&code) {
            if text.ends_with('\n') {
                break text.trim().to_string();
            }
        }
        assert!(
            start.elapsed() < SCREEN_DEADLINE,
            "listen still runs {SCREEN_DEADLINE:?} after its terminal broke; stderr: {:?}",
            std::fs::read_to_string(&err)
        );
        std::thread::sleep(POLL);
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert_eq!(exit, "1", "stderr: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the inspector stopped: ") && last.contains("; pass --no-tui"),
        "{stderr}"
    );
}

/// A port on 127.0.0.1 nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("address").port()
}

#[test]
fn the_inspector_opens_at_once_while_the_relay_is_unreachable_and_echoes_no_key() {
    if !tmux_available("the_inspector_opens_at_once_while_the_relay_is_unreachable") {
        return;
    }
    let relay = format!("http://127.0.0.1:{}", closed_port());
    let mut ui = Inspector::start(
        &relay,
        "http://127.0.0.1:9/hooks",
        "tmux-unreachable",
        (80, 24),
    );
    let screen = ui.wait_for("the inspector, reconnecting", |s| {
        s.contains("illumitunnel ") && s.contains("○ reconnecting in")
    });
    if !screen.contains("waiting for the relay…") {
        ui.fail("the header does not say the tunnel URL is still to come");
    }
    assert_eq!(ui.display("#{alternate_on}"), "1", "the inspector is up");
    ui.type_text("xyz");
    // Keys go to the inspector, never echoed onto the screen, while reconnects repeat.
    let screen = ui.wait_for("a second reconnect", |s| s.contains("○ reconnecting in"));
    if screen.contains("xyz") || screen.contains("reconnecting in 5.0 s") {
        ui.fail("keys or state lines were printed over the inspector");
    }
    ui.listen_pid();
    ui.keys(&["q"]);
    ui.assert_restored();
}

#[test]
fn ctrl_c_during_a_slow_delivery_waits_visibly_and_twice_quits_now_leaving_it_to_the_relay() {
    if !tmux_available("ctrl_c_during_a_slow_delivery_waits_visibly") {
        return;
    }
    let rt = runtime();
    let target = Target::start(&rt, |_| Reply::ok().delay(Duration::from_secs(15)));
    let relay = Relay::http(&[]);
    let url = relay.tunnel_url("tmux-slow");
    let mut ui = Inspector::start(&relay.url, &target.url(FORWARD_PATH), "tmux-slow", (80, 24));
    ui.wait_connected(&url);
    ui.listen_pid();
    let sent = rt.spawn(
        Request::post(&url)
            .header("content-type", "application/json")
            .body(&b"{\"event\":\"ticket.created\",\"data\":{\"id\":\"tkt_slow\"}}"[..])
            .send_async(),
    );
    target.wait_for_requests(1);
    ui.keys(&["C-c"]);
    ui.wait_for_text("waiting for 1 delivery (up to ");
    if !ui.capture().contains("Ctrl-C again quits now") {
        ui.fail("the wait does not say how to quit now");
    }
    let asked = Instant::now();
    ui.keys(&["C-c"]);
    let code = ui.wait_exit_code();
    let took = asked.elapsed();
    assert_eq!(code, 0, "the second Ctrl-C quits with 0");
    assert!(
        took < Duration::from_secs(3),
        "the second Ctrl-C took {took:?}"
    );
    assert_eq!(
        ui.display("#{alternate_on}"),
        "0",
        "the terminal is restored"
    );
    let home = std::mem::replace(&mut ui.home, temp_dir());
    drop(ui);
    // The next tmux server takes the same socket: wait until the last one has let it go.
    let socket = home.path().join("tmux.sock");
    let start = Instant::now();
    while Command::new("tmux")
        .arg("-S")
        .arg(&socket)
        .arg("list-sessions")
        .env_remove("TMUX")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            start.elapsed() < SCREEN_DEADLINE,
            "the first tmux server lingers"
        );
        std::thread::sleep(POLL);
    }
    let _ = std::fs::remove_file(&socket);
    // Not recorded, so the relay sends it again to the next `listen`: nothing is lost.
    let mut again = Inspector::start_with_home(
        home,
        &relay.url,
        &target.url(FORWARD_PATH),
        "tmux-slow",
        (80, 24),
    );
    again.wait_connected(&url);
    let requests = target.wait_for_requests(2);
    assert_eq!(
        requests[1].body, requests[0].body,
        "the same delivery, again"
    );
    drop(again);
    sent.abort();
}

#[test]
fn at_80x24_cut_texts_end_in_an_ellipsis_counters_say_what_they_count_and_esc_clears_the_filter() {
    if !tmux_available("at_80x24_cut_texts_end_in_an_ellipsis") {
        return;
    }
    let rt = runtime();
    let target = Target::ok(&rt);
    let relay = Relay::http(&[]);
    let tunnel = "tmux-narrow-terminal-with-a-long-name";
    let url = relay.tunnel_url(tunnel);
    let forward = target.url("/webhooks/illumichat/with/a/rather/long/path");
    let mut ui = Inspector::start(&relay.url, &forward, tunnel, (80, 24));
    ui.wait_for("the inspector, connected", |s| s.contains("● connected"));
    ui.listen_pid();
    for id in ["tkt_one", "lead_two"] {
        let body = format!(r#"{{"event":"ticket.created","data":{{"id":"{id}"}}}}"#);
        let response = Request::post(&url)
            .header("content-type", "application/json")
            .body(body.into_bytes())
            .send(&rt);
        assert_eq!(response.status, 200);
    }
    let screen = ui.wait_for("both rows", |s| events(s) == 2);
    let lines: Vec<&str> = screen.lines().collect();
    // The URL and target are cut with `…`; the warning stays.
    if !(lines[0].contains('…') && lines[0].trim_end().ends_with("(local only)")) {
        ui.fail("the header is cut without an ellipsis or lost the local-only warning");
    }
    if !lines[1].contains("this run: 2 ok · stored: 2") {
        ui.fail("the counters do not say this run and stored");
    }
    // The request column is cut with `…` too.
    if !screen
        .lines()
        .filter(|l| l.contains("ticket.created"))
        .all(|r| r.contains("POST /webhooks…"))
    {
        ui.fail("a cut path has no ellipsis");
    }
    // `/` starts a fresh text; esc while typing clears it, with the details open.
    ui.type_text("/");
    ui.type_text("lead_");
    ui.keys(&["Enter"]);
    ui.wait_for("the filter applied", |s| events(s) == 1);
    ui.keys(&["Enter"]);
    ui.wait_for_text("1 Payload");
    ui.type_text("/");
    let screen = ui.wait_for_text("event type or text");
    let prompt = screen.lines().last().unwrap_or_default().to_string();
    if prompt.contains("lead_") {
        ui.fail("/ re-opened the old filter text");
    }
    ui.type_text("zz");
    ui.keys(&["Escape"]);
    let screen = ui.wait_for("the filter cleared", |s| events(s) == 2);
    if !screen.contains("1 Payload") {
        ui.fail("esc in the prompt closed the details");
    }
    ui.keys(&["q"]);
    ui.assert_restored();
}

/// Rows of `ticket.created` deliveries on screen.
fn events(screen: &str) -> usize {
    screen
        .lines()
        .filter(|l| l.contains("ticket.created "))
        .count()
}

#[test]
fn i_in_a_test_diff_ignores_the_changed_field_and_prints_the_ignore_flags() {
    if !tmux_available("i_in_a_test_diff_ignores_the_changed_field") {
        return;
    }
    let rt = runtime();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&answered);
    let target = Target::start(&rt, move |_| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Reply::ok()
            .header("content-type", "application/json")
            .body(format!(r#"{{"ok":true,"at":{n}}}"#))
    });
    let relay = Relay::http(&[]);
    let url = relay.tunnel_url("tmux-ignore");
    let mut ui = Inspector::start(
        &relay.url,
        &target.url(FORWARD_PATH),
        "tmux-ignore",
        (120, 40),
    );
    ui.wait_connected(&url);
    ui.listen_pid();
    let response = Request::post(&url)
        .header("content-type", "application/json")
        .body(&br#"{"event":"ticket.created","data":{"id":"tkt_i"}}"#[..])
        .send(&rt);
    assert_eq!(response.status, 200);
    ui.wait_for("the row", |s| rows(s).len() == 1);
    ui.type_text("t");
    ui.wait_for_text("i ignores /at for this session");
    ui.type_text("i");
    let screen = ui.wait_for_text("test: the answer matches");
    if !screen.contains("reuse with illumitunnel test --ignore /at") {
        ui.fail("the --ignore flags to reuse are not shown");
    }
    ui.keys(&["q"]);
    ui.assert_restored();
}
