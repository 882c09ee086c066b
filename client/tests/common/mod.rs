//! The scripted relay the client's tests talk to: a websocket server on 127.0.0.1:0 speaking the
//! wire protocol as each test dictates (welcomes, refusals, hostile messages), and a running
//! `illumitunnel listen` whose output lines arrive on channels. Each test file uses a part.
#![allow(dead_code, clippy::unwrap_used, clippy::result_large_err)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use illumitunnel::protocol::{ClientMessage, RelayMessage, PROTOCOL_VERSION};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Longest any single wait in these tests may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn command(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_illumitunnel"));
    cmd.env("ILLUMITUNNEL_HOME", home)
        .env_remove("ILLUMITUNNEL_RELAY")
        .env_remove("ILLUMITUNNEL_TOKEN")
        .env_remove("ILLUMITUNNEL_LOG")
        .env_remove("RUST_BACKTRACE");
    cmd
}

/// A running `listen` whose output lines arrive on channels; killed on drop.
pub struct Listening {
    /// The process.
    pub child: Child,
    /// Its stdout, a line at a time.
    pub stdout: std_mpsc::Receiver<String>,
    /// Its stderr, a line at a time.
    pub stderr: std_mpsc::Receiver<String>,
    /// Stderr lines read so far.
    pub seen_stderr: Vec<String>,
    /// Its ILLUMITUNNEL_HOME.
    pub home: tempfile::TempDir,
}

impl Listening {
    pub fn spawn(relay: &str, forward_to: &str, extra: &[&str]) -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut child = command(home.path())
            .args(["listen", "--relay", relay, "--forward-to", forward_to])
            .args(["--tunnel", "my-app", "--no-tui"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn listen");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Listening {
            child,
            stdout,
            stderr,
            seen_stderr: Vec::new(),
            home,
        }
    }

    pub fn stderr_line(&mut self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen_stderr.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no such stderr line; saw {:#?}", self.seen_stderr),
            }
        }
    }

    pub fn stdout_line(&mut self) -> String {
        self.stdout
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no stdout line; stderr so far {:#?}", self.seen_stderr))
    }

    pub fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("listen did not exit; stderr {:#?}", self.seen_stderr);
    }

    pub fn terminate(&mut self) -> i32 {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait()
    }

    /// Every stderr line, once the process has exited and its pipe is drained.
    pub fn all_stderr(&mut self) -> Vec<String> {
        let mut all = std::mem::take(&mut self.seen_stderr);
        while let Ok(line) = self.stderr.recv_timeout(DEADLINE) {
            all.push(line);
        }
        all
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn lines(pipe: impl std::io::Read + Send + 'static) -> std_mpsc::Receiver<String> {
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub type RelaySide = WebSocketStream<TcpStream>;

/// Accepts one client and checks its hello; returns the socket, its Authorization header and
/// the path it connected to.
pub async fn accept_client(listener: &TcpListener) -> (RelaySide, Option<String>, String) {
    let (stream, _) = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .expect("client connects in time")
        .unwrap();
    let mut auth = None;
    let mut path = String::new();
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, |req: &http::Request<()>, resp| {
        auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        path = req.uri().path().to_string();
        Ok(resp)
    })
    .await
    .unwrap();
    match next_client_message(&mut ws).await {
        ClientMessage::Hello {
            version, tunnel, ..
        } => {
            assert_eq!(version, PROTOCOL_VERSION);
            assert_eq!(tunnel, "my-app");
        }
        other => panic!("first message {other:?}"),
    }
    (ws, auth, path)
}

pub async fn next_client_message(ws: &mut RelaySide) -> ClientMessage {
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("client message in time")
            .expect("socket open")
            .expect("readable");
        if let Message::Binary(buf) = msg {
            return ClientMessage::decode(&buf).unwrap();
        }
    }
}

pub async fn send(ws: &mut RelaySide, msg: RelayMessage) {
    ws.send(Message::Binary(msg.encode())).await.unwrap();
}

pub fn welcome() -> RelayMessage {
    RelayMessage::Welcome {
        tunnel: "my-app".into(),
        public_url: "https://relay.test/t/my-app".into(),
        queued: 2,
        expired: 0,
        dead_letters: 0,
        claim_key: String::new(),
    }
}
