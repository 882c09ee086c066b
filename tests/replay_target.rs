//! Replays and tests follow `listen`: after `listen` restarts on another port, `replay ID` and
//! `test ID` send to where it forwards now (and say so), `--to-recorded` to where the delivery
//! went when it was recorded.

mod support;

use support::sender::Request;
use support::target::Target;
use support::{runtime, Listen, Relay};

#[test]
fn replay_and_test_send_to_the_current_listen_target_unless_to_recorded() {
    let rt = runtime();
    let (first, second) = (Target::ok(&rt), Target::ok(&rt));
    let relay = Relay::http(&[]);
    let tunnel = "moving-target";
    let mut listen = Listen::start(Some(&relay.url), &first.url("/hooks"), tunnel, &[]);
    let response = Request::post(&listen.url).body("{\"n\":1}").send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = listen.deliveries(1).remove(0);
    let id = recorded["id"].as_str().expect("delivery id").to_string();
    assert_eq!(first.wait_for_requests(1).len(), 1);

    // Restarted on another port, as a developer does.
    listen.respawn(Some(&relay.url), &second.url("/hooks"), tunnel, &["--json"]);
    listen.wait_connected();

    let replayed = listen.client(&["replay", &id, "--json"]);
    assert_eq!(replayed.code(), 0, "{replayed:?}");
    let got = second.wait_for_requests(1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/hooks");
    assert_eq!(got[0].body, b"{\"n\":1}");
    assert_eq!(first.requests().len(), 1, "the old target got nothing more");
    let line: serde_json::Value = serde_json::from_str(replayed.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {replayed:?}"));
    assert!(
        line["target"]
            .as_str()
            .is_some_and(|t| t.starts_with(&second.url(""))),
        "{line}"
    );
    assert!(
        replayed.stderr.contains(&format!(
            "to {}, the current target of listen PID {}",
            second.url("/"),
            listen.guard.pid()
        )) && replayed.stderr.contains("--to-recorded"),
        "{replayed:?}"
    );

    let tested = listen.client(&["test", &id]);
    assert_eq!(tested.code(), 0, "{tested:?}");
    assert_eq!(second.wait_for_requests(2).len(), 2);
    assert_eq!(first.requests().len(), 1);

    let recorded_one = listen.client(&["replay", &id, "--to-recorded", "--json"]);
    assert_eq!(recorded_one.code(), 0, "{recorded_one:?}");
    assert_eq!(first.wait_for_requests(2).len(), 2);
    assert_eq!(second.requests().len(), 2);
    assert!(
        !recorded_one.stderr.contains("current target"),
        "{recorded_one:?}"
    );

    let tested = listen.client(&["test", &id, "--to-recorded"]);
    assert_eq!(tested.code(), 0, "{tested:?}");
    assert_eq!(first.wait_for_requests(3).len(), 3);
    assert_eq!(second.requests().len(), 2);
}
