//! The test handler as the end-to-end tests use it: it starts, says where, and answers. This
//! test also makes `cargo test --workspace` build its binary for `tests/regression.rs`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The handler process, killed by its PID when the test ends, passed or failed.
struct Handler(Child);

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn answers_an_envelope_and_logs_the_request() {
    let mut child = Handler(
        Command::new(env!("CARGO_BIN_EXE_illumitunnel-test-handler"))
            .args(["--variant", "2"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("listening on http://")
        .unwrap()
        .to_string();
    let body = r#"{"event":"ticket.updated","data":{"id":"tkt_1"}}"#;
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /hook HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let logged = lines.next().unwrap().unwrap();
    drop(child);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""status":"queued""#), "{answer}");
    assert!(
        logged.contains(r#""n":1,"method":"POST","path":"/hook""#),
        "{logged}"
    );
}
