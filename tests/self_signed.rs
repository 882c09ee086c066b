//! A self-signed relay keeps its certificate: the same fingerprint across restarts, written as
//! `{data-dir}/relay-ca.pem` for clients' `--ca`, a new one only when the names change; and its
//! public URL is the `--hostname` it was made for.

mod support;

use std::path::Path;

use support::{after, command, temp_dir, ChildGuard, Stream};

/// What a self-signed relay printed when it started.
struct Started {
    guard: ChildGuard,
    fingerprint: String,
    ca_line: String,
}

fn start(data_dir: &Path, home: &Path, hostnames: &[&str]) -> Started {
    let mut cmd = command("illumitunnel-relay", home);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--self-signed",
        "--allow-anonymous",
    ])
    .arg("--data-dir")
    .arg(data_dir);
    for name in hostnames {
        cmd.args(["--hostname", name]);
    }
    let guard = ChildGuard::spawn(cmd);
    let line = guard.wait_for_text(Stream::Stdout, "certificate sha256 fingerprint ");
    let fingerprint = after(&line, "fingerprint ").to_string();
    let ca_line = guard.wait_for_text(Stream::Stdout, "relay-ca.pem");
    Started {
        guard,
        fingerprint,
        ca_line,
    }
}

fn stop(mut started: Started) {
    started.guard.signal("TERM");
    assert!(started.guard.wait_for_exit().success());
}

/// SHA-256 of the first certificate in a PEM file, as the relay prints it.
fn pem_fingerprint(path: &Path) -> String {
    use base64::Engine;
    use sha2::Digest;
    let pem = std::fs::read_to_string(path).expect("relay-ca.pem");
    let b64: String = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END CERTIFICATE-----").next())
        .expect("a certificate")
        .split_whitespace()
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let digest = sha2::Sha256::digest(der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

#[test]
fn the_certificate_survives_a_restart_and_changes_only_with_its_names() {
    let (home, data) = (temp_dir(), temp_dir());
    let ca = data.path().join("relay-ca.pem");

    let first = start(data.path(), home.path(), &["relay.test"]);
    assert!(first.ca_line.contains("(made now)"), "{}", first.ca_line);
    assert!(
        first.ca_line.contains(&format!("--ca {}", ca.display())),
        "{}",
        first.ca_line
    );
    assert_eq!(pem_fingerprint(&ca), first.fingerprint);
    let key = data.path().join("relay-key.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the private key is private");
    let fingerprint = first.fingerprint.clone();
    stop(first);

    let again = start(data.path(), home.path(), &["relay.test"]);
    assert_eq!(
        again.fingerprint, fingerprint,
        "a restart keeps the certificate"
    );
    assert!(again.ca_line.contains("(kept)"), "{}", again.ca_line);
    stop(again);

    let renamed = start(data.path(), home.path(), &["other.test"]);
    assert_ne!(
        renamed.fingerprint, fingerprint,
        "new names, new certificate"
    );
    assert!(
        renamed.ca_line.contains("(made now)"),
        "{}",
        renamed.ca_line
    );
    assert_eq!(pem_fingerprint(&ca), renamed.fingerprint);
    stop(renamed);
}

#[test]
fn the_public_url_is_the_hostname_the_certificate_was_made_for() {
    let (home, data) = (temp_dir(), temp_dir());
    let started = start(data.path(), home.path(), &["relay.test"]);
    let line = started.guard.wait_for_text(Stream::Stderr, "relay serving");
    let port = after(&line, "local=127.0.0.1:")
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains(&format!("public_url=https://relay.test:{port}")),
        "{line}"
    );
    stop(started);
}

#[test]
fn a_data_dir_that_cannot_hold_the_certificate_is_one_sentence_and_exit_1() {
    let (home, dir) = (temp_dir(), temp_dir());
    // A file where the data dir should be: nothing can be written under it.
    let data = dir.path().join("not-a-dir");
    std::fs::write(&data, b"x").unwrap();
    let mut cmd = command("illumitunnel-relay", home.path());
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--self-signed",
        "--allow-anonymous",
    ])
    .arg("--data-dir")
    .arg(&data);
    let out = ChildGuard::run(cmd);
    assert_eq!(out.code(), 1, "{out:?}");
    let line = out.stderr.trim();
    assert!(
        line.starts_with("error: could not keep the self-signed certificate in ")
            && line.contains("check --data-dir and its permissions")
            && line.lines().count() == 1,
        "{line}"
    );
}
