//! Harness for the end-to-end tests: finds the built binaries, runs them as real processes
//! with their output drained into buffers, waits for the lines they print (never for a fixed
//! time), and prints everything a failed test's processes said. `target` is the local server
//! deliveries are forwarded to; `sender` plays IllumiChat.
//!
//! Every test file includes this module but uses a different part of it.
#![allow(dead_code)]

pub mod cluster;
pub mod connect_proxy;
pub mod proxy;
pub mod secrets;
pub mod sender;
pub mod sink;
pub mod store;
pub mod target;
pub mod webdriver;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long any one wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Path of a binary built by `cargo test --workspace`, next to the test executable's `deps/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is not built; run `cargo test --workspace`",
        path.display()
    );
    path
}

/// A command for one of the project's binaries, isolated from the user's home and environment.
pub fn command(name: &str, home: &Path) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.env("ILLUMITUNNEL_HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("ILLUMITUNNEL_RELAY")
        .env_remove("ILLUMITUNNEL_TOKEN")
        .env_remove("ILLUMITUNNEL_RELAY_TOKENS")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        // Many `listen`s run at once: each serves its web inspector on a port of its own rather
        // than racing for 4040-4049 (tests/web_api.rs covers the default).
        .env("ILLUMITUNNEL_INSPECT", "127.0.0.1:0");
    // To read a failing test's processes at another log level: ILLUMITUNNEL_TEST_LOG=debug.
    if let Ok(filter) = std::env::var("ILLUMITUNNEL_TEST_LOG") {
        cmd.env("RUST_LOG", filter);
    }
    // Tests talk to 127.0.0.1 directly; a proxy from the caller's shell must not step in.
    for proxy in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"] {
        cmd.env_remove(proxy).env_remove(proxy.to_lowercase());
    }
    cmd
}

/// A fresh temporary directory.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("illumitunnel-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Which output stream of a child to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

#[derive(Default)]
struct Captured {
    stdout: String,
    stderr: String,
    stdout_closed: bool,
    stderr_closed: bool,
}

impl Captured {
    fn text(&self, stream: Stream) -> &str {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    fn closed(&self, stream: Stream) -> bool {
        match stream {
            Stream::Stdout => self.stdout_closed,
            Stream::Stderr => self.stderr_closed,
        }
    }

    /// Complete lines only: a line still being written is not matched yet.
    fn lines(&self, stream: Stream) -> Vec<String> {
        let text = self.text(stream);
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None if self.closed(stream) => text,
            None => "",
        };
        complete.lines().map(str::to_string).collect()
    }
}

#[derive(Default)]
struct Output {
    captured: Mutex<Captured>,
    changed: Condvar,
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A reader thread that panicked holds nothing worth protecting.
        self.captured.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running child process: output drained by two threads, killed by PID when dropped, and
/// everything it printed shown when the test fails.
pub struct ChildGuard {
    command: String,
    child: Child,
    output: Arc<Output>,
    status: Option<ExitStatus>,
}

/// What a finished child printed.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

/// Runs `cmd` with `input` on its stdin and waits (up to [`DEADLINE`], then kills it) for it to
/// exit; stdout and stderr are read as it runs, so a full pipe cannot stall it.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Finished {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits before reading all of it is the command's answer, not an error.
        let _ = stdin.write_all(input);
    }
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(POLL);
    };
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

impl Finished {
    /// The exit code, or -1 when killed by a signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

impl ChildGuard {
    /// Spawns `cmd` with piped stdout and stderr and no stdin.
    pub fn spawn(mut cmd: Command) -> ChildGuard {
        let command = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {command}: {e}"));
        let output = Arc::new(Output::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        drain(stdout, Arc::clone(&output), Stream::Stdout);
        drain(stderr, Arc::clone(&output), Stream::Stderr);
        ChildGuard {
            command,
            child,
            output,
            status: None,
        }
    }

    /// Runs `cmd` to completion (bounded by [`DEADLINE`]).
    pub fn run(cmd: Command) -> Finished {
        let mut guard = ChildGuard::spawn(cmd);
        let status = guard.wait_for_exit();
        Finished {
            status,
            stdout: guard.stdout(),
            stderr: guard.stderr(),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.output.lock().stdout.clone()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.output.lock().stderr.clone()
    }

    /// The first complete line on `stream` that satisfies `matches`, waiting up to [`DEADLINE`].
    pub fn wait_for_line(&self, stream: Stream, matches: impl Fn(&str) -> bool) -> String {
        self.wait_for_lines(stream, 1, matches).remove(0)
    }

    /// The first line on `stream` containing `needle`.
    pub fn wait_for_text(&self, stream: Stream, needle: &str) -> String {
        self.wait_for_line(stream, |line| line.contains(needle))
    }

    /// The first `count` complete lines on `stream` that satisfy `matches`.
    pub fn wait_for_lines(
        &self,
        stream: Stream,
        count: usize,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let start = Instant::now();
        let mut captured = self.output.lock();
        loop {
            let found: Vec<String> = captured
                .lines(stream)
                .into_iter()
                .filter(|l| matches(l))
                .take(count)
                .collect();
            if found.len() == count {
                return found;
            }
            if captured.closed(stream) {
                panic!(
                    "{stream:?} of {} closed after {} of {count} expected lines",
                    self.command,
                    found.len()
                );
            }
            let left = DEADLINE.saturating_sub(start.elapsed());
            if left.is_zero() {
                panic!(
                    "timed out after {DEADLINE:?} with {} of {count} expected lines on {stream:?} of {}",
                    found.len(),
                    self.command
                );
            }
            captured = self
                .output
                .changed
                .wait_timeout(captured, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits up to [`DEADLINE`] for the child to exit.
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let start = Instant::now();
        // Both pipes close when the process exits; wait on that, then reap.
        {
            let mut captured = self.output.lock();
            while !(captured.stdout_closed && captured.stderr_closed) {
                let left = DEADLINE.saturating_sub(start.elapsed());
                assert!(
                    !left.is_zero(),
                    "{} did not exit within {DEADLINE:?}",
                    self.command
                );
                captured = self
                    .output
                    .changed
                    .wait_timeout(captured, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        for _ in 0..4_000 {
            if let Some(status) = self.child.try_wait().expect("query child status") {
                self.status = Some(status);
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{} closed its output but did not exit within {DEADLINE:?}",
                self.command
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{} did not exit", self.command);
    }

    /// Sends signal `name` (`STOP`, `CONT`, `TERM`, `KILL`) to this child's PID only.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// SIGKILLs the child (by PID) and reaps it.
    pub fn kill_now(&mut self) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("reap a killed child");
        self.status = Some(status);
        status
    }

    /// The exit status if the child has already exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("query child status");
        }
        self.status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        if std::thread::panicking() {
            let captured = self.output.lock();
            eprintln!(
                "--- command: {}\n--- status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}\n---",
                self.command, self.status, captured.stdout, captured.stderr
            );
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static, output: Arc<Output>, stream: Stream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut pending = Vec::new();
        loop {
            let n = pipe.read(&mut buf).unwrap_or(0);
            let mut captured = output.lock();
            if n == 0 {
                let tail = String::from_utf8_lossy(&pending).into_owned();
                match stream {
                    Stream::Stdout => {
                        captured.stdout.push_str(&tail);
                        captured.stdout_closed = true;
                    }
                    Stream::Stderr => {
                        captured.stderr.push_str(&tail);
                        captured.stderr_closed = true;
                    }
                }
                output.changed.notify_all();
                return;
            }
            // Only whole lines are decoded, so a UTF-8 character split across reads survives.
            pending.extend_from_slice(&buf[..n]);
            if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                match stream {
                    Stream::Stdout => captured.stdout.push_str(&text),
                    Stream::Stderr => captured.stderr.push_str(&text),
                }
                output.changed.notify_all();
            }
        }
    });
}

/// A running `illumitunnel-relay` on `127.0.0.1:0`.
pub struct Relay {
    /// Base URL it printed, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// SHA-256 fingerprint it printed with `--self-signed`.
    pub fingerprint: Option<String>,
    /// The process.
    pub guard: ChildGuard,
    _dir: TempDir,
}

impl Relay {
    /// Plain HTTP, anonymous clients, plus `extra` flags.
    pub fn http(extra: &[&str]) -> Relay {
        let mut args = vec!["--http", "--allow-anonymous"];
        args.extend_from_slice(extra);
        Relay::start(&args)
    }

    /// `--listen 127.0.0.1:0 --data-dir DIR` plus `args`; waits for the listening line.
    pub fn start(args: &[&str]) -> Relay {
        let dir = temp_dir();
        let mut cmd = command("illumitunnel-relay", dir.path());
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("relay"))
            .args(args);
        let guard = ChildGuard::spawn(cmd);
        let line = guard.wait_for_text(Stream::Stdout, "illumitunnel-relay listening on ");
        let url = after(&line, "listening on ").to_string();
        let fingerprint = args.contains(&"--self-signed").then(|| {
            let line = guard.wait_for_text(Stream::Stdout, "certificate sha256 fingerprint ");
            after(&line, "fingerprint ").to_string()
        });
        Relay {
            url,
            fingerprint,
            guard,
            _dir: dir,
        }
    }

    /// A relay on `listen` (e.g. a fixed loopback port, to restart on it) keeping its queue in
    /// `data_dir`, which outlives it; plus `args`.
    pub fn start_at(data_dir: &Path, listen: &str, args: &[&str]) -> Relay {
        let dir = temp_dir();
        let mut cmd = command("illumitunnel-relay", dir.path());
        cmd.args(["--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(args);
        let guard = ChildGuard::spawn(cmd);
        let line = guard.wait_for_text(Stream::Stdout, "illumitunnel-relay listening on ");
        let url = after(&line, "listening on ").to_string();
        Relay {
            url,
            fingerprint: None,
            guard,
            _dir: dir,
        }
    }

    /// The `host:port` the relay listens on.
    pub fn authority(&self) -> &str {
        self.url.split("://").nth(1).unwrap_or(&self.url)
    }

    /// The public URL of `tunnel`.
    pub fn tunnel_url(&self, tunnel: &str) -> String {
        format!("{}/t/{tunnel}", self.url)
    }
}

/// The text after `marker` in `line`, trimmed.
pub fn after<'a>(line: &'a str, marker: &str) -> &'a str {
    line.split_once(marker)
        .map(|(_, rest)| rest.trim())
        .unwrap_or_else(|| panic!("{marker:?} not in {line:?}"))
}

/// A running `illumitunnel listen --no-tui` with its own home and capture store.
pub struct Listen {
    /// The webhook URL it printed.
    pub url: String,
    /// Its capture store.
    pub store: PathBuf,
    /// The process.
    pub guard: ChildGuard,
    home: TempDir,
}

impl Listen {
    /// Starts `listen --json` against `relay` (or the embedded relay when `None`) and waits
    /// for `connected`.
    pub fn start(relay: Option<&str>, forward_to: &str, tunnel: &str, extra: &[&str]) -> Listen {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let listen = Listen::spawn(relay, forward_to, tunnel, &args);
        listen.wait_connected();
        listen
    }

    /// Waits for the `connected` line on stderr.
    pub fn wait_connected(&self) {
        self.guard
            .wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
    }

    /// Starts `listen --no-tui` with `extra` flags and waits only for its webhook URL line.
    pub fn spawn(relay: Option<&str>, forward_to: &str, tunnel: &str, extra: &[&str]) -> Listen {
        let home = temp_dir();
        let store = home.path().join("captures.db");
        let mut cmd = command("illumitunnel", home.path());
        cmd.arg("listen");
        if let Some(relay) = relay {
            cmd.args(["--relay", relay]);
        }
        cmd.args(["--forward-to", forward_to, "--tunnel", tunnel])
            .args(["--no-tui", "--store"])
            .arg(&store)
            .args(extra);
        let guard = ChildGuard::spawn(cmd);
        let line = guard.wait_for_text(Stream::Stderr, "webhook URL");
        let url = after(&line, "webhook URL").to_string();
        Listen {
            url,
            store,
            guard,
            home,
        }
    }

    /// SIGKILLs this listener and starts another with the same home and capture store (what a
    /// crash and a restart by hand look like); waits for its webhook URL line only.
    pub fn respawn(&mut self, relay: Option<&str>, forward_to: &str, tunnel: &str, extra: &[&str]) {
        self.guard.kill_now();
        let mut cmd = command("illumitunnel", self.home.path());
        cmd.arg("listen");
        if let Some(relay) = relay {
            cmd.args(["--relay", relay]);
        }
        cmd.args(["--forward-to", forward_to, "--tunnel", tunnel])
            .args(["--no-tui", "--store"])
            .arg(&self.store)
            .args(extra);
        self.guard = ChildGuard::spawn(cmd);
        let line = self.guard.wait_for_text(Stream::Stderr, "webhook URL");
        self.url = after(&line, "webhook URL").to_string();
    }

    /// This listener's `ILLUMITUNNEL_HOME`.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Starts a second `listen --json` as on a second machine: its own home holding a copy of
    /// this listener's config dir (so its claim key) and its own capture store.
    pub fn sibling(
        &self,
        relay: &str,
        forward_to: &str,
        tunnel: &str,
        extra: &[&str],
    ) -> ChildGuard {
        // One `listen` per tunnel per machine: a second machine has its own data dir.
        let other = self.home.path().join("second-machine");
        copy_dir(&self.home.path().join("config"), &other.join("config"));
        let mut cmd = command("illumitunnel", &other);
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
        .arg(self.home.path().join("sibling.db"))
        .args(extra);
        let guard = ChildGuard::spawn(cmd);
        guard.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));
        guard
    }

    /// The first `count` deliveries printed as JSON lines on stdout.
    pub fn deliveries(&self, count: usize) -> Vec<Value> {
        self.guard
            .wait_for_lines(Stream::Stdout, count, |l| l.starts_with('{'))
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// Runs `illumitunnel ARGS --store STORE` with this listener's home, to completion.
    pub fn client(&self, args: &[&str]) -> Finished {
        let mut cmd = command("illumitunnel", self.home.path());
        cmd.args(args).arg("--store").arg(&self.store);
        ChildGuard::run(cmd)
    }
}

/// Copies the files of `from` (and its subfolders) into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name()))
                .unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A tokio runtime for a test's target server and senders.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The six IllumiChat event types with a sample delivery body each, written the way a sender
/// might (indentation, escapes, non-ASCII) so a re-encoded body would not compare equal.
pub fn illumichat_samples() -> Vec<(&'static str, &'static str, String)> {
    let ts = "2025-06-15T14:30:00Z";
    let samples = [
        (
            "chat.message.created",
            "msg_a1b2c3",
            r#""sessionId": "ses_q1w2e3", "role": "visitor", "content": "Bonjour \u00e9t\u00e9 — caf\u00e9? \"quoted\" \/slash""#,
        ),
        (
            "chat.session.created",
            "ses_q1w2e3",
            r#""visitorId": "vis_77", "channel": "widget", "page": "https://example.com/pricing?plan=pro""#,
        ),
        (
            "ticket.created",
            "tkt_xyz789",
            r#""subject": "Cannot reset my password", "status": "open", "priority": "medium", "createdAt": "2025-06-15T14:30:00Z""#,
        ),
        (
            "ticket.updated",
            "tkt_xyz789",
            r#""status": "pending", "assigneeId": "usr_42", "changes": {"status": ["open", "pending"]}"#,
        ),
        (
            "lead.captured",
            "lead_9f8e7d",
            r#""email": "ana@example.com", "name": "Ana Müller", "source": "widget""#,
        ),
        (
            "contact.created",
            "con_5t6y7u",
            r#""email": "li@example.com", "phone": "+1 555 0100", "tags": []"#,
        ),
    ];
    samples
        .into_iter()
        .map(|(event, id, fields)| {
            let body = format!(
                "{{\n  \"event\": \"{event}\",\n  \"timestamp\": \"{ts}\",\n  \"workspaceId\": \"ws_abc123\",\n  \"data\": {{\"id\": \"{id}\", {fields}}}\n}}\n"
            );
            (event, id, body)
        })
        .collect()
}

/// PEM files for a relay certificate signed by a test CA.
pub struct TestCa {
    /// The CA certificate, for the client's `--ca`.
    pub ca_pem: PathBuf,
    /// The relay's certificate (leaf), for `--tls-cert`.
    pub cert_pem: PathBuf,
    /// The relay's private key, for `--tls-key`.
    pub key_pem: PathBuf,
    /// The CA certificate in DER, for senders that trust it.
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
}

/// Generates a CA and a leaf for `127.0.0.1` and `localhost`, written as PEM files in `dir`.
pub fn test_ca(dir: &Path) -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "illumitunnel test CA");
    let ca = ca_params.self_signed(&ca_key).expect("self-sign the CA");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("sign the leaf");
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    TestCa {
        ca_pem: write("ca.pem", ca.pem()),
        cert_pem: write("relay-cert.pem", leaf.pem()),
        key_pem: write("relay-key.pem", leaf_key.serialize_pem()),
        ca_der: ca.der().clone(),
    }
}

/// Pause between two looks at a condition that no line or channel announces.
pub const POLL: Duration = Duration::from_millis(20);

/// Calls `probe` every [`POLL`] until it returns `Ok`, for at most `within`; on time-out fails
/// naming `what` and showing the last thing `probe` saw.
pub fn poll_until<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(found) => return found,
            Err(last) if start.elapsed() >= within => {
                panic!("timed out after {within:?} waiting for {what}; last seen:\n{last}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Polls the relay's `GET /metrics` (under [`DEADLINE`]) until it contains `needle`; returns
/// the text that did.
pub fn wait_for_metric(rt: &tokio::runtime::Runtime, relay: &Relay, needle: &str) -> String {
    let url = format!("{}/metrics", relay.url);
    poll_until(&format!("{needle:?} in {url}"), DEADLINE, || {
        let text = sender::Request::new("GET", &url).send(rt).text();
        if text.contains(needle) {
            Ok(text)
        } else {
            Err(text)
        }
    })
}
