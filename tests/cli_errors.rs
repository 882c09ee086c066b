//! Every mistake a user can make on the command line: usage errors exit 2, runtime failures
//! exit 1, and both say one `error:` sentence on stderr, never a panic or a debug dump.

mod support;

use std::path::Path;

use support::{closed_port, command, temp_dir, ChildGuard, Finished};

/// Runs `name ARGS` with an isolated home.
fn run(name: &str, home: &Path, args: &[&str]) -> Finished {
    let mut cmd = command(name, home);
    cmd.args(args);
    ChildGuard::run(cmd)
}

/// One `error:` sentence first on stderr (clap's usage hint may follow), nothing on stdout.
fn assert_one_sentence(what: &str, out: &Finished) {
    let described = format!(
        "{what}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "panic: {described}");
    assert!(!out.stderr.contains("RUST_BACKTRACE"), "panic: {described}");
    assert!(
        out.stdout.trim().is_empty(),
        "error printed on stdout: {described}"
    );
    let first = out.stderr.lines().find(|l| !l.trim().is_empty());
    assert!(
        first.is_some_and(|l| l.starts_with("error: ") && l.len() > "error: ".len()),
        "stderr does not start with one `error:` sentence: {described}"
    );
    let errors = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .count();
    assert_eq!(errors, 1, "more than one error line: {described}");
    // clap's hint may take up to 7 lines: usage, help pointer, and for a command with a
    // positional argument (listen TARGET) a tip on passing a value that starts with `-`.
    assert!(
        out.stderr.lines().count() <= 8,
        "stderr is longer than a sentence and a usage hint: {described}"
    );
}

#[test]
fn client_usage_errors_exit_2_with_one_sentence() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    let store = store.to_str().expect("UTF-8 path");
    let relay = format!("http://127.0.0.1:{}", closed_port());
    let target = "http://127.0.0.1:9/webhooks/illumichat";
    let cases: Vec<Vec<&str>> = vec![
        vec!["frobnicate"],
        vec!["listen", "--relay", &relay, "--store", store],
        vec![
            "listen",
            "--relay",
            &relay,
            "--store",
            store,
            "--forward-to",
            "not a url",
        ],
        vec![
            "listen",
            "--relay",
            &relay,
            "--store",
            store,
            "--forward-to",
            "ftp://127.0.0.1/x",
        ],
        vec![
            "listen",
            "--relay",
            &relay,
            "--store",
            store,
            "--forward-to",
            target,
            "--tunnel",
            "Bad_Name!",
        ],
        vec![
            "listen",
            "--relay",
            &relay,
            "--store",
            store,
            "--forward-to",
            target,
            "--tunnel",
            "ab",
        ],
        vec![
            "listen",
            "--relay",
            &relay,
            "--store",
            store,
            "--forward-to",
            target,
            "--ca",
            "ca.pem",
            "--insecure",
        ],
        vec![
            "listen",
            "--relay",
            "not a url",
            "--store",
            store,
            "--forward-to",
            target,
        ],
        vec![
            "listen",
            "--relay",
            &relay,
            "--store",
            store,
            "--forward-to",
            target,
            "--no-such-flag",
        ],
        vec!["listen", "3000", "--forward-to", target, "--store", store],
        vec!["listen", "99999", "--store", store],
        vec!["listen", "3000", "--forward-insecure", "--store", store],
        vec![
            "listen",
            "3000",
            "--register",
            "--api-token",
            "t",
            "--store",
            store,
        ],
        vec![
            "webhooks",
            "register",
            "--url",
            "https://127.0.0.1:8443/t/my-app",
            "--events",
            "ticket.created",
            "--api-token",
            "t",
        ],
        vec![
            "webhooks",
            "register",
            "--url",
            "https://[fd00::1]/t/my-app",
            "--events",
            "ticket.created",
        ],
        vec![
            "webhooks",
            "register",
            "--url",
            "http://relay.example.com/t/my-app",
            "--events",
            "ticket.created",
        ],
        vec!["login"],
        vec!["login", "--relay", "relay.example.com", "--token", "t"],
        vec!["completions", "tcsh"],
        vec!["events", "--store", store, "--limit", "many"],
        vec!["events", "--store", store, "--event", "ticket.deleted"],
        vec!["show", "--store", store],
    ];
    for args in cases {
        let out = run("illumitunnel", home.path(), &args);
        let what = format!("illumitunnel {}", args.join(" "));
        assert_eq!(out.code(), 2, "{what}: {out:?}");
        assert_one_sentence(&what, &out);
    }
}

#[test]
fn relay_usage_errors_exit_2_with_one_sentence() {
    let home = temp_dir();
    let data = home.path().join("relay");
    let data = data.to_str().expect("UTF-8 path");
    let loopback = ["--listen", "127.0.0.1:0", "--data-dir", data];
    let cases: Vec<Vec<&str>> = vec![
        vec!["--tls-cert", "cert.pem", "--allow-anonymous"],
        vec!["--http", "--self-signed", "--allow-anonymous"],
        vec!["--http", "--max-body", "lots", "--allow-anonymous"],
        vec!["--http", "--response-timeout", "soon", "--allow-anonymous"],
        vec!["--http", "--offline", "maybe", "--allow-anonymous"],
        vec!["--http", "--no-such-flag"],
    ];
    for extra in cases {
        let args: Vec<&str> = loopback.iter().chain(&extra).copied().collect();
        let out = run("illumitunnel-relay", home.path(), &args);
        let what = format!("illumitunnel-relay {}", args.join(" "));
        assert_eq!(out.code(), 2, "{what}: {out:?}");
        assert_one_sentence(&what, &out);
    }
    let bad_listen = [
        "--listen",
        "not-an-address",
        "--http",
        "--allow-anonymous",
        "--data-dir",
        data,
    ];
    let out = run("illumitunnel-relay", home.path(), &bad_listen);
    assert_eq!(out.code(), 2, "{out:?}");
    assert_one_sentence("--listen not-an-address", &out);
}

#[test]
fn relay_on_a_public_address_without_tokens_refuses_to_start() {
    let home = temp_dir();
    let data = home.path().join("relay");
    let args = [
        "--listen",
        "0.0.0.0:0",
        "--http",
        "--data-dir",
        data.to_str().expect("UTF-8 path"),
    ];
    let out = run("illumitunnel-relay", home.path(), &args);
    assert_eq!(out.code(), 2, "{out:?}");
    assert_one_sentence("public address, no tokens", &out);
}

#[test]
fn relay_on_a_port_in_use_exits_1() {
    let home = temp_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = taken.local_addr().expect("local addr").to_string();
    let data = home.path().join("relay");
    let args = [
        "--listen",
        &addr,
        "--http",
        "--allow-anonymous",
        "--data-dir",
        data.to_str().expect("UTF-8 path"),
    ];
    let out = run("illumitunnel-relay", home.path(), &args);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_one_sentence("port in use", &out);
    assert!(
        out.stderr.contains(&addr),
        "the error does not name {addr}: {}",
        out.stderr
    );
}

#[test]
fn a_store_that_cannot_be_written_exits_1() {
    let home = temp_dir();
    // A path under a regular file cannot be created, even by root.
    let blocker = home.path().join("not-a-dir");
    std::fs::write(&blocker, b"").expect("create a file");
    let store = blocker.join("captures.db");
    let store = store.to_str().expect("UTF-8 path");

    let out = run("illumitunnel", home.path(), &["events", "--store", store]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_one_sentence("events with an unwritable store", &out);
    assert!(
        out.stderr.contains(store),
        "the error does not name the store: {}",
        out.stderr
    );

    let relay = format!("http://127.0.0.1:{}", closed_port());
    let listen = [
        "listen",
        "--relay",
        &relay,
        "--tunnel",
        "no-store",
        "--forward-to",
        "http://127.0.0.1:9/webhooks/illumichat",
        "--no-tui",
        "--store",
        store,
    ];
    let out = run("illumitunnel", home.path(), &listen);
    assert_eq!(out.code(), 1, "{out:?}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(
        errors[0].contains(store),
        "the error does not name the store: {}",
        errors[0]
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn showing_an_unknown_delivery_exits_2() {
    let home = temp_dir();
    let store = home.path().join("captures.db");
    let store = store.to_str().expect("UTF-8 path");
    let empty = run(
        "illumitunnel",
        home.path(),
        &["events", "--json", "--store", store],
    );
    assert_eq!(empty.code(), 0, "{empty:?}");
    assert!(empty.stdout.trim().is_empty(), "{empty:?}");

    let id = illumitunnel::DeliveryId::generate();
    let out = run(
        "illumitunnel",
        home.path(),
        &["show", id.as_str(), "--store", store],
    );
    assert_eq!(out.code(), 2, "an unknown id is bad usage: {out:?}");
    assert_one_sentence("show an unknown id", &out);
}

#[test]
fn register_refuses_urls_illumichat_cannot_reach_with_a_reason() {
    let home = temp_dir();
    let out = run(
        "illumitunnel",
        home.path(),
        &[
            "webhooks",
            "register",
            "--url",
            "https://192.168.1.20/t/my-app",
            "--events",
            "ticket.created",
            "--api-token",
            "t",
        ],
    );
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(out.stderr.contains("--allow-private-url"), "{out:?}");
    // Allowed: the URL passes and the call itself fails (nothing listens at the API base).
    let api = format!("http://127.0.0.1:{}", closed_port());
    let out = run(
        "illumitunnel",
        home.path(),
        &[
            "webhooks",
            "register",
            "--url",
            "https://192.168.1.20/t/my-app",
            "--events",
            "ticket.created",
            "--api-token",
            "t",
            "--api-base",
            &api,
            "--allow-private-url",
        ],
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("could not reach IllumiChat"), "{out:?}");
}

#[test]
fn completions_and_the_man_page_print_on_stdout() {
    let home = temp_dir();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = run("illumitunnel", home.path(), &["completions", shell]);
        assert_eq!(out.code(), 0, "{shell}: {out:?}");
        assert!(out.stdout.contains("listen"), "{shell}: {}", out.stdout);
        assert!(out.stdout.contains("--forward-to"), "{shell}");
        assert!(out.stderr.is_empty(), "{shell}: {}", out.stderr);
    }
    let out = run("illumitunnel", home.path(), &["man"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout.starts_with(".ie") || out.stdout.contains(".TH"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("listen"), "{}", out.stdout);
}
