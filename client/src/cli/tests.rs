//! The clap definition: conflicts, requirements and defaults, without running a command.

use super::*;
use clap::CommandFactory;

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn ca_and_insecure_conflict() {
    let err = Cli::try_parse_from([
        "illumitunnel",
        "listen",
        "--forward-to",
        "http://localhost:3000",
        "--ca",
        "x.pem",
        "--insecure",
    ])
    .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn replay_needs_a_selection_and_since_needs_event() {
    let parse = |args: &[&str]| {
        let mut argv = vec!["illumitunnel", "replay"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|_| ()).map_err(|e| e.kind())
    };
    assert!(parse(&[]).is_err());
    assert!(parse(&["abc", "--last"]).is_err());
    assert!(parse(&["--since", "15m"]).is_err());
    assert!(parse(&["--event", "ticket.created", "--since", "15m"]).is_ok());
    assert!(parse(&["abc", "def", "--edit"]).is_ok());
}

#[test]
fn listen_events_split_on_commas_and_routes_repeat() {
    let cli = Cli::try_parse_from([
        "illumitunnel",
        "listen",
        "--events",
        "ticket.created,lead.captured",
        "--route",
        "lead.captured=/crm",
        "--route",
        "ticket.created=/t",
    ])
    .unwrap();
    let Command::Listen(args) = cli.command else {
        panic!("not listen")
    };
    assert_eq!(args.events.unwrap(), ["ticket.created", "lead.captured"]);
    assert_eq!(args.route.len(), 2);
}

#[test]
fn listen_takes_a_target_and_forward_trust_flags() {
    let cli = Cli::try_parse_from(["illumitunnel", "listen", "3000", "--forward-ca", "root.pem"])
        .unwrap();
    let Command::Listen(args) = cli.command else {
        panic!("not listen")
    };
    assert_eq!(args.target.as_deref(), Some("3000"));
    assert_eq!(
        args.forward_trust.forward_ca,
        Some(PathBuf::from("root.pem"))
    );
    let err = Cli::try_parse_from([
        "illumitunnel",
        "listen",
        "3000",
        "--forward-ca",
        "x.pem",
        "--forward-insecure",
    ])
    .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn allow_private_url_follows_webhooks_register() {
    let cli = Cli::try_parse_from([
        "illumitunnel",
        "webhooks",
        "register",
        "--url",
        "https://127.0.0.1/t/x",
        "--events",
        "ticket.created",
        "--allow-private-url",
    ])
    .unwrap();
    let Command::Webhooks(args) = cli.command else {
        panic!("not webhooks")
    };
    assert!(args.api.allow_private_url);
}

#[test]
fn test_and_suite_save_take_one_selection() {
    let parse = |args: &[&str]| {
        let mut argv = vec!["illumitunnel"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|_| ()).map_err(|e| e.kind())
    };
    assert!(parse(&["test"]).is_err());
    assert!(parse(&["test", "abc", "--suite", "s.jsonl"]).is_err());
    assert!(parse(&["test", "--event", "lead.captured", "--suite", "s"]).is_err());
    assert!(parse(&["test", "--since", "1h", "--suite", "s"]).is_err());
    assert!(parse(&["test", "abc", "--since", "1h"]).is_err());
    assert!(parse(&["test", "--suite", "s", "--ignore", "/a", "--ignore", "/b"]).is_ok());
    assert!(parse(&["suite", "save", "s.jsonl"]).is_err());
    assert!(parse(&["suite", "save", "s.jsonl", "--last", "0"]).is_err());
    assert!(parse(&["suite", "save", "s.jsonl", "a", "--last", "2"]).is_err());
    assert!(parse(&["suite", "save", "s.jsonl", "--last", "2"]).is_ok());
    assert!(parse(&["trigger", "ticket.created", "--speed", "600"]).is_err());
    assert!(parse(&[
        "trigger",
        "ticket.created",
        "--retries",
        "illumichat",
        "--speed",
        "600"
    ])
    .is_ok());
    assert!(parse(&["trigger", "ticket.created", "--retries", "stripe"]).is_err());
}

#[test]
fn store_is_global() {
    let cli = Cli::try_parse_from(["illumitunnel", "events", "--store", "/tmp/x.db"]).unwrap();
    assert_eq!(cli.store, Some(PathBuf::from("/tmp/x.db")));
    assert!(matches!(
        cli.command,
        Command::Events(EventsArgs { limit: 50, .. })
    ));
}
