//! The exit-code rule, for every command that sends or reads deliveries: `0` everything asked
//! for succeeded; `1` something sent failed (a non-2xx answer, a connection error) or a
//! comparison differed; `2` bad usage, an unknown or ambiguous id, a missing file. One table of
//! rows run against the real client binary and local targets, each checking the code and the
//! one `error:` sentence on stderr.

mod support;

use std::path::Path;

use serde_json::Value;
use support::target::{Reply, Target};
use support::{closed_port, command, runtime, temp_dir, ChildGuard, Finished};

/// Runs `illumitunnel ARGS --store STORE` with an isolated home.
fn client(home: &Path, store: &str, args: &[&str]) -> Finished {
    let mut cmd = command("illumitunnel", home);
    cmd.args(args).args(["--store", store]);
    ChildGuard::run(cmd)
}

/// The ids `trigger --json` printed.
fn ids(out: &Finished) -> Vec<String> {
    out.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

/// One row: what is run, the code, and the text the `error:` sentence must hold (none: no
/// `error:` line at all).
struct Row<'a> {
    what: &'a str,
    args: Vec<String>,
    code: i32,
    sentence: Option<&'a str>,
}

/// What is wrong with the row's outcome, if anything.
fn check(home: &Path, store: &str, row: &Row<'_>) -> Option<String> {
    let args: Vec<&str> = row.args.iter().map(String::as_str).collect();
    let out = client(home, store, &args);
    let described = format!(
        "{}: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        row.what, row.args, out.stdout, out.stderr
    );
    if out.code() != row.code {
        return Some(format!(
            "exit code {} not {}: {described}",
            out.code(),
            row.code
        ));
    }
    if out.stderr.contains("panicked") {
        return Some(format!("panic: {described}"));
    }
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    match row.sentence {
        None if errors.is_empty() => None,
        None => Some(format!("unexpected error: {described}")),
        Some(_) if errors.len() != 1 => Some(format!("not one error sentence: {described}")),
        Some(text) if !errors[0].contains(text) => {
            Some(format!("sentence lacks {text:?}: {described}"))
        }
        Some(_) if !errors[0].contains("; ") => Some(format!("no remedy: {described}")),
        Some(_) => None,
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[test]
fn every_command_exits_by_the_rule() {
    let rt = runtime();
    let ok = Target::ok(&rt);
    let failing = Target::start(&rt, |_| Reply::status(502));
    let home = temp_dir();
    let store_path = home.path().join("captures.db");
    let store = store_path.to_str().expect("UTF-8 path");
    let ok_url = ok.url("/webhooks");
    let failing_url = failing.url("/webhooks");
    let closed = format!("http://127.0.0.1:{}/webhooks", closed_port());
    let missing = home.path().join("missing.json");
    let missing = missing.to_str().expect("UTF-8 path");
    let suite = home.path().join("suite.jsonl");
    let suite = suite.to_str().expect("UTF-8 path");

    // Deliveries to work on: two the handler answered 200, two it answered 502.
    let good = client(
        home.path(),
        store,
        &[
            "trigger",
            "ticket.created",
            "--forward-to",
            &ok_url,
            "--count",
            "2",
            "--json",
        ],
    );
    assert_eq!(good.code(), 0, "{good:?}");
    let good = ids(&good);
    assert_eq!(good.len(), 2, "{good:?}");
    let bad = client(
        home.path(),
        store,
        &[
            "trigger",
            "ticket.created",
            "--forward-to",
            &failing_url,
            "--count",
            "2",
            "--json",
        ],
    );
    // Its exit code and sentence are a row below.
    let bad = ids(&bad);
    assert_eq!(bad.len(), 2, "both 502 deliveries are printed and recorded");
    let unknown = illumitunnel::DeliveryId::generate().to_string();

    let rows = vec![
        Row {
            what: "trigger answered 200",
            args: strings(&["trigger", "ticket.created", "--forward-to", &ok_url]),
            code: 0,
            sentence: None,
        },
        Row {
            what: "trigger answered 502",
            args: strings(&["trigger", "ticket.created", "--forward-to", &failing_url]),
            code: 1,
            sentence: Some("1 of 1 ticket.created deliveries got no 2xx answer"),
        },
        Row {
            what: "trigger to a closed port",
            args: strings(&["trigger", "ticket.created", "--forward-to", &closed]),
            code: 1,
            sentence: Some("could not deliver the ticket.created sample"),
        },
        Row {
            what: "trigger --file missing",
            args: strings(&[
                "trigger",
                "ticket.created",
                "--forward-to",
                &ok_url,
                "--file",
                missing,
            ]),
            code: 2,
            sentence: Some("could not read --file"),
        },
        Row {
            what: "replay of deliveries answered 200",
            args: strings(&["replay", &good[0], &good[1]]),
            code: 0,
            sentence: None,
        },
        Row {
            what: "replay of deliveries answered 502",
            args: strings(&["replay", &good[0], &bad[0], &bad[1]]),
            code: 1,
            sentence: Some("2 of 3 replays got no 2xx answer"),
        },
        Row {
            what: "replay to a closed port",
            args: strings(&["replay", &good[0], "--forward-to", &closed]),
            code: 1,
            sentence: Some("1 of 1 replays got no 2xx answer"),
        },
        Row {
            what: "replay of an unknown id",
            args: strings(&["replay", &unknown]),
            code: 2,
            sentence: Some("no delivery with id"),
        },
        Row {
            what: "show of a known id",
            args: strings(&["show", &good[0]]),
            code: 0,
            sentence: None,
        },
        Row {
            what: "show of an unknown id",
            args: strings(&["show", &unknown]),
            code: 2,
            sentence: Some("no delivery with id"),
        },
        Row {
            what: "test of an unknown id",
            args: strings(&["test", &unknown, "--forward-to", &ok_url]),
            code: 2,
            sentence: Some("no delivery with id"),
        },
        Row {
            what: "suite save of an unknown id",
            args: strings(&["suite", "save", suite, &unknown]),
            code: 2,
            sentence: Some("no delivery with id"),
        },
        Row {
            what: "test --suite of a missing file",
            args: strings(&["test", "--suite", missing, "--forward-to", &ok_url]),
            code: 2,
            sentence: Some("could not read suite"),
        },
        Row {
            what: "events",
            args: strings(&["events"]),
            code: 0,
            sentence: None,
        },
    ];
    let wrong: Vec<String> = rows
        .iter()
        .filter_map(|row| check(home.path(), store, row))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} rows wrong:\n{}",
        wrong.len(),
        wrong.join("\n\n")
    );
    // Every replay was sent, the failing ones too: 2 + 3 to the targets, none to the closed one.
    let replays = client(home.path(), store, &["events", "--json"]);
    let sources: Vec<Value> = replays
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["source"] == "replay")
        .collect();
    assert_eq!(sources.len(), 6, "{}", replays.stdout);
}

#[test]
fn help_and_man_carry_the_exit_code_table() {
    let home = temp_dir();
    for args in [&["--help"][..], &["man"][..]] {
        let mut cmd = command("illumitunnel", home.path());
        cmd.args(args);
        let out = ChildGuard::run(cmd);
        assert_eq!(out.code(), 0, "{args:?}: {out:?}");
        // The man page escapes `-` as `\-`.
        let text = out.stdout.replace("\\-", "-");
        assert!(
            text.contains("Exit codes (every command):"),
            "{args:?}: {text}"
        );
        for code in [
            "0  everything asked for succeeded",
            "1  something sent failed or differed",
            "2  bad usage: an unknown flag or value, an unknown or ambiguous delivery id",
        ] {
            assert!(text.contains(code), "{args:?} lacks {code:?}: {text}");
        }
    }
}
