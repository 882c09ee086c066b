//! `illumitunnel status` and `login --json`: what is set up on this machine (relay, which token
//! by its first characters and length, tunnel, CA, target, a running `listen`), never the
//! token itself; and how to start when nothing is.

mod support;

use std::path::Path;

use serde_json::Value;
use support::target::Target;
use support::{command, runtime, temp_dir, ChildGuard, Finished, Relay, Stream};

const TOKEN: &str = "status-token-8f2c1a-6d4e0b9c";

fn status(home: &Path, args: &[&str]) -> Finished {
    let mut cmd = command("illumitunnel", home);
    cmd.arg("status").args(args);
    ChildGuard::run(cmd)
}

fn json(out: &Finished) -> Value {
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// `illumitunnel login ARGS` with the token piped in.
fn login(home: &Path, args: &[&str]) -> Finished {
    let mut cmd = command("illumitunnel", home);
    cmd.arg("login").args(args);
    support::run_with_stdin(cmd, format!("{TOKEN}\n").as_bytes())
}

#[test]
fn with_nothing_set_up_status_says_how_to_start_and_exits_0() {
    let home = temp_dir();
    let out = status(home.path(), &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("nothing set up yet"), "{out:?}");
    assert!(
        out.stdout.contains("illumitunnel login --relay URL"),
        "{out:?}"
    );
    assert!(out.stdout.contains("not running"), "{out:?}");
    let out = status(home.path(), &["--json"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let v = json(&out);
    assert_eq!(v["configured"], false, "{v}");
    assert_eq!(v["relay"], Value::Null, "{v}");
    assert_eq!(v["listen"], Value::Null, "{v}");
    // Reading the status creates nothing.
    assert!(!home.path().join("config").join("tunnel").exists());
    assert!(!home.path().join("config").join("config.toml").exists());
}

#[test]
fn login_json_and_status_show_what_is_saved_and_the_running_listen_never_the_token() {
    let rt = runtime();
    let handler = Target::ok(&rt);
    let dir = temp_dir();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).expect("tokens file");
    let relay = Relay::start(&["--http", "--tokens-file", tokens.to_str().expect("UTF-8")]);
    let home = temp_dir();

    let out = login(home.path(), &["--relay", &relay.url, "--json"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        !out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN),
        "{out:?}"
    );
    let saved = json(&out);
    assert_eq!(saved["relay"], relay.url.as_str(), "{saved}");
    assert_eq!(saved["token_prefix"], &TOKEN[..6], "{saved}");
    assert_eq!(saved["token_length"], TOKEN.len(), "{saved}");
    assert_eq!(saved["ca"], Value::Null, "{saved}");
    let tunnel = saved["tunnel"].as_str().expect("tunnel").to_string();
    assert!(
        saved["public_url"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/t/{tunnel}"))),
        "{saved}"
    );

    let before = status(home.path(), &["--json"]);
    assert_eq!(before.code(), 0, "{before:?}");
    let v = json(&before);
    assert_eq!(v["configured"], true, "{v}");
    assert_eq!(v["relay"], relay.url.as_str(), "{v}");
    assert_eq!(v["tunnel"], tunnel.as_str(), "{v}");
    assert_eq!(v["listen"], Value::Null, "{v}");

    let target = handler.url("/hooks");
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["listen", &target, "--no-tui", "--json"]);
    let listen = ChildGuard::spawn(cmd);
    listen.wait_for_line(Stream::Stderr, |l| l.trim_start().starts_with("connected"));

    let out = status(home.path(), &["--json"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(!out.stdout.contains(TOKEN), "{out:?}");
    let v = json(&out);
    assert_eq!(v["token_prefix"], &TOKEN[..6], "{v}");
    assert_eq!(v["token_length"], TOKEN.len(), "{v}");
    assert_eq!(v["tunnel"], tunnel.as_str(), "{v}");
    assert_eq!(v["listen"]["pid"], listen.pid(), "{v}");
    assert_eq!(v["listen"]["target"], target.as_str(), "{v}");
    assert_eq!(
        v["listen"]["public_url"],
        format!("{}/t/{tunnel}", relay.url).as_str(),
        "{v}"
    );

    let out = status(home.path(), &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(!out.stdout.contains(TOKEN), "{out:?}");
    for want in [
        format!("relay      {}", relay.url),
        format!("token      {}… ({} characters)", &TOKEN[..6], TOKEN.len()),
        format!("tunnel     {tunnel}"),
        "ca         system trust store".to_string(),
        format!("target     {target}"),
        format!(
            "listen     running, PID {}, forwarding to {target}",
            listen.pid()
        ),
    ] {
        assert!(out.stdout.contains(&want), "{want:?} not in {out:?}");
    }
}
