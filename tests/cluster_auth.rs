//! The relay cluster on a NATS server that asks for a login and speaks TLS: the shipped
//! `deploy/nats-server.conf` (certificates made here with rcgen, passwords in the environment,
//! one node logging in with an NKey instead), real relay nodes, clients and a local server.
//! Nodes with their logins form a working cluster without one permission refused; a connection
//! without a login is refused; users of the same server without the relays' permissions read
//! no delivery, add no token and forge no delivery; a node refuses a NATS off loopback without
//! a credential before connecting anywhere.

mod support;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;
use sha2::{Digest, Sha256};
use support::cluster::secure::{assert_clean, secret, SecureNats, KEEPALIVE_MS};
use support::cluster::Node;
use support::sender::Request;
use support::target::{Reply, Target};
use support::{command, poll_until, runtime, temp_dir, ChildGuard, Listen, Stream};

const HOOK: &str = "/webhooks/illumichat";
/// A sender's secret that a NATS stranger must never see.
const SECRET_AUTH: &str = "Bearer sender-secret-7f3a91c2";

/// A JSON body with a marker the test looks for.
fn body(marker: &str) -> Vec<u8> {
    format!(r#"{{"event":"ticket.created","data":{{"id":"{marker}"}}}}"#).into_bytes()
}

/// `illumitunnel-relay token ARGS --cluster URL --cluster-ca CA`, to completion.
fn token_command(secure: &SecureNats, url: &str, args: &[&str]) -> support::Finished {
    let home = temp_dir();
    let mut cmd = command("illumitunnel-relay", home.path());
    cmd.arg("token")
        .args(args)
        .args(["--cluster", url, "--cluster-ca", secure.ca()]);
    ChildGuard::run(cmd)
}

#[test]
fn nodes_with_nats_logins_over_tls_form_a_cluster_within_the_shipped_permissions() {
    let rt = runtime();
    let secure = SecureNats::start();
    let nodes = secure.two_nodes();
    let target = Target::start(&rt, |req| {
        Reply::status(201)
            .header("x-handler", "seen")
            .body(req.body.clone())
    });
    let token = [
        "--token",
        secure.token.as_str(),
        "--keepalive-ms",
        KEEPALIVE_MS,
    ];
    // The session is on relay-2 (NKey); the webhook enters relay-1 (password).
    let mut listen = Listen::start(Some(&nodes[1].url()), &target.url(HOOK), "crossing", &token);

    let response = Request::post(&nodes[0].tunnel_url("crossing"))
        .header("authorization", SECRET_AUTH)
        .body(body("small"))
        .send(&rt);
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.header("x-handler").as_deref(), Some("seen"));
    assert_eq!(response.body, body("small"));
    // Above NATS's payload limit: through the object store, both ways.
    let large: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let response = Request::post(&nodes[0].tunnel_url("crossing"))
        .body(large.clone())
        .send(&rt);
    assert_eq!(response.status, 201, "{}", response.text());
    assert!(
        response.body == large,
        "the 3 MiB answer came back different"
    );

    // Queued while the client is away (the stream, its deletes, the wake-up subject), then
    // drained when it is back.
    listen.guard.kill_now();
    let queued = Request::post(&nodes[0].tunnel_url("crossing"))
        .body(body("queued"))
        .send(&rt);
    assert_eq!(queued.status, 202, "{}", queued.text());
    listen.respawn(Some(&nodes[1].url()), &target.url(HOOK), "crossing", &token);
    let seen = target.wait_for_requests(3);
    assert_eq!(seen[0].body, body("small"));
    assert_eq!(
        seen[0].header("authorization").as_deref(),
        Some(SECRET_AUTH)
    );
    assert!(
        seen[1].body == large,
        "the 3 MiB body reached the handler different"
    );
    assert_eq!(seen[2].body, body("queued"));

    // Tokens for the whole cluster, added by the admin user (the only one that may).
    let admin = secure.url_as("illumitunnel-admin", "ILLUMITUNNEL_ADMIN_PASSWORD");
    let added = token_command(&secure, &admin, &["add", "laptop"]);
    assert_eq!(added.code(), 0, "{added:?}");
    let listed = token_command(&secure, &admin, &["list"]);
    assert!(listed.stdout.starts_with("laptop\t"), "{listed:?}");
    for node in &nodes {
        node.relay()
            .guard
            .wait_for_text(Stream::Stderr, "stored client tokens changed");
        let line = node
            .relay()
            .guard
            .wait_for_text(Stream::Stderr, "joined the relay cluster");
        assert!(line.contains("tls://127.0.0.1:"), "{line}");
    }
    assert_clean(&nodes, &secure);
    // A node's user may read the tokens bucket, never write it.
    let relay_1 = secure.url_as("relay-1", "RELAY_1_PASSWORD");
    let as_node = token_command(&secure, &relay_1, &["add", "sneaky"]);
    assert_ne!(as_node.code(), 0, "{as_node:?}");
    assert!(!token_command(&secure, &admin, &["list"])
        .stdout
        .contains("sneaky"));
}

#[test]
fn nats_refuses_a_connection_without_a_login_and_a_node_with_a_bad_one_exits_1() {
    let rt = runtime();
    let secure = SecureNats::start();
    let anonymous = rt.block_on(
        async_nats::ConnectOptions::new()
            .add_root_certificates(secure.pki.ca_pem.clone())
            .require_tls(true)
            .connect(secure.tls_url()),
    );
    let err = anonymous.expect_err("NATS let a connection without a login in");
    assert_eq!(
        err.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );

    let start = |url: &str, extra: &[&str]| {
        let dir = temp_dir();
        let mut cmd = command("illumitunnel-relay", dir.path());
        cmd.args([
            "--http",
            "--listen",
            "127.0.0.1:0",
            "--allow-anonymous",
            "--data-dir",
        ])
        .arg(dir.path().join("relay"))
        .args(["--cluster", url, "--node-id", "relay-1"])
        .args(extra);
        ChildGuard::run(cmd)
    };
    let ca = ["--cluster-ca", secure.ca()];
    let wrong = format!(
        "tls://relay-1:wrong-password-93c1@127.0.0.1:{}",
        secure.nats.port()
    );
    let cases: [(String, Vec<&str>, &str); 4] = [
        (
            secure.tls_url(),
            ca.to_vec(),
            "refused the credentials: authorization violation; check --cluster (NATS wants a login",
        ),
        (
            wrong.clone(),
            ca.to_vec(),
            "refused the credentials: authorization violation; check the user and password in --cluster",
        ),
        (
            secure.url_as("relay-1", "RELAY_1_PASSWORD"),
            Vec::new(),
            "could not set up TLS to NATS at tls://127.0.0.1:",
        ),
        // A user without the relays' permissions gets in, but JetStream is closed to it: the
        // set-up sentence ("could not set up JetStream …") names what NATS refused.
        (
            secure.url_as("stranger", "STRANGER_PASSWORD"),
            ca.to_vec(),
            "(nats: Permissions Violation for ",
        ),
    ];
    for (url, extra, expected) in cases {
        let finished = start(&url, &extra);
        assert_eq!(finished.code(), 1, "{url}: {finished:?}");
        let stderr = finished.stderr.trim();
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error: ")).count(),
            1,
            "{stderr}"
        );
        assert!(!stderr.contains("wrong-password-93c1"), "{stderr}");
        for (_, password) in &secure.passwords {
            assert!(!stderr.contains(password.as_str()), "{stderr}");
        }
    }
    let nkey = secure.nkey_file.to_str().expect("a UTF-8 path");
    let wrong_seed = temp_dir();
    let wrong_seed_file = wrong_seed.path().join("other.nk");
    let other = nkeys::KeyPair::new_user().seed().expect("a seed");
    std::fs::write(&wrong_seed_file, other).expect("write a seed");
    let finished = start(
        &secure.tls_url(),
        &[
            "--cluster-ca",
            secure.ca(),
            "--cluster-nkey",
            wrong_seed_file.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(finished.code(), 1, "{finished:?}");
    assert!(
        finished.stderr.contains("; check --cluster-nkey"),
        "{finished:?}"
    );
    // The right seed for relay-2 gets in.
    let right = Node::start_with(
        "relay-2",
        &secure.tls_url(),
        &[
            "--allow-anonymous",
            "--cluster-ca",
            secure.ca(),
            "--cluster-nkey",
            nkey,
        ],
    );
    assert!(right.relay.is_some());
}

#[test]
fn nats_users_without_the_relays_permissions_cannot_read_add_tokens_or_forge_deliveries() {
    let rt = runtime();
    let secure = SecureNats::start();
    let nodes = secure.two_nodes();
    let target = Target::start(&rt, |req| Reply::status(200).body(req.body.clone()));
    let token = [
        "--token",
        secure.token.as_str(),
        "--keepalive-ms",
        KEEPALIVE_MS,
    ];
    let _listen = Listen::start(Some(&nodes[1].url()), &target.url(HOOK), "victim", &token);

    let (stranger, outsider, auditor) = rt.block_on(async {
        (
            secure.client_as("stranger", "STRANGER_PASSWORD").await,
            secure.client_as("outsider", "OUTSIDER_PASSWORD").await,
            secure.client_as("auditor", "AUDITOR_PASSWORD").await,
        )
    });
    // Reading: the stranger and the outsider listen on everything they can ask for.
    let watched = ["illumitunnel.>", ">", "$KV.>", "$O.>", "_INBOX.>"];
    let mut taps = Vec::new();
    for client in [&stranger, &outsider] {
        for subject in watched {
            let sub = rt
                .block_on(client.subscribe(subject))
                .expect("a subscription");
            taps.push(sub);
        }
    }
    let mut audit = rt
        .block_on(auditor.subscribe("illumitunnel.node.relay-2.deliver.victim"))
        .expect("the auditor's subscription");
    rt.block_on(async {
        for client in [&stranger, &outsider, &auditor] {
            client.flush().await.expect("flush");
        }
    });

    let response = Request::post(&nodes[0].tunnel_url("victim"))
        .header("authorization", SECRET_AUTH)
        .body(body("forwarded"))
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.body, body("forwarded"));
    // The control: someone allowed to read sees the delivery, secret and all.
    let seen = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), audit.next()).await })
        .expect("the auditor saw the forwarded delivery")
        .expect("a message");
    let captured: Bytes = seen.payload.clone();
    let secret_b64 = base64::engine::general_purpose::STANDARD.encode(SECRET_AUTH);
    assert!(contains(&captured, b"forwarded") && contains(&captured, secret_b64.as_bytes()));
    // By now the server has routed that message; a flush brings anything routed to them.
    rt.block_on(async {
        stranger.flush().await.expect("flush");
        outsider.flush().await.expect("flush");
    });
    let mut heard = Vec::new();
    for tap in &mut taps {
        while let Ok(Some(message)) =
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(1), tap.next()).await })
        {
            heard.push(format!(
                "{} ({} bytes)",
                message.subject,
                message.payload.len()
            ));
        }
    }
    assert!(heard.is_empty(), "strangers heard {heard:?}");

    // Adding a token: a KV write into the relays' tokens bucket is refused or goes nowhere.
    let evil = secret("itr_");
    let hash: String = Sha256::digest(evil.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key: String = b"evil".iter().map(|b| format!("{b:02x}")).collect();
    let record = format!(r#"{{"name":"evil","hash":"{hash}","created_at_ms":1}}"#);
    let _in_runtime = rt.enter();
    for client in [&stranger, &outsider] {
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(client.clone());
        let put = rt.block_on(async {
            js.publish(
                format!("$KV.illumitunnel-tokens.{key}"),
                record.clone().into(),
            )
            .await?
            .await
            .map(drop)
            .map_err(async_nats::Error::from)
        });
        assert!(put.is_err(), "a stranger wrote the tokens bucket");
        assert!(rt
            .block_on(js.get_key_value("illumitunnel-tokens"))
            .is_err());
    }
    let admin = secure.url_as("illumitunnel-admin", "ILLUMITUNNEL_ADMIN_PASSWORD");
    let listed = token_command(&secure, &admin, &["list"]);
    assert_eq!(listed.code(), 0, "{listed:?}");
    assert!(!listed.stdout.contains("evil"), "{listed:?}");
    // And the relay refuses that token (401 on the websocket upgrade).
    let home = temp_dir();
    let mut cmd = command("illumitunnel", home.path());
    cmd.args(["listen", "--relay", &nodes[0].url(), "--tunnel", "intruder"])
        .args([
            "--token",
            &evil,
            "--forward-to",
            &target.url(HOOK),
            "--no-tui",
            "--store",
        ])
        .arg(home.path().join("captures.db"));
    let refused = ChildGuard::run(cmd);
    assert_ne!(refused.code(), 0, "{refused:?}");
    assert!(
        refused.stderr.contains("relay refused the token"),
        "{refused:?}"
    );

    // Forging: a delivery with a fresh id on relay-2's deliver subject, from the stranger and
    // then, as the control, from the auditor, who may. The forged bodies have the captured
    // one's length, so its Content-Length header still holds.
    let forge = |marker: &str| forged(&captured, marker);
    let subject = "illumitunnel.node.relay-2.deliver.victim";
    rt.block_on(async {
        for client in [&stranger, &outsider] {
            let _ = client
                .publish_with_reply(subject, "app.reply", forge("forged-st"))
                .await;
            client.flush().await.expect("flush");
        }
    });
    let answer = rt
        .block_on(async {
            let request = auditor.request(subject, forge("forged-au"));
            tokio::time::timeout(Duration::from_secs(10), request).await
        })
        .expect("relay-2 answered the auditor's forged delivery")
        .expect("an answer");
    assert!(!answer.payload.is_empty());
    // One more real delivery behind them, so anything the stranger got through is in by now.
    let last = Request::post(&nodes[0].tunnel_url("victim"))
        .body(body("last"))
        .send(&rt);
    assert_eq!(last.status, 200, "{}", last.text());
    let bodies: Vec<Vec<u8>> = poll_until("the last delivery", Duration::from_secs(10), || {
        let bodies: Vec<Vec<u8>> = target.requests().into_iter().map(|r| r.body).collect();
        match bodies.iter().any(|b| *b == body("last")) {
            true => Ok(bodies),
            false => Err(format!("{} requests", bodies.len())),
        }
    });
    let count = |marker: &str| bodies.iter().filter(|b| **b == body(marker)).count();
    assert_eq!(count("forwarded"), 1);
    assert_eq!(count("forged-au"), 1, "the control forgery did not arrive");
    assert_eq!(
        count("forged-st"),
        0,
        "a stranger's forged delivery reached the handler"
    );
    assert_eq!(bodies.len(), 3, "{} requests", bodies.len());
}

#[test]
fn a_node_refuses_a_nats_off_loopback_without_credentials_before_connecting() {
    // A name under .invalid (RFC 6761) never resolves, so even a relay that failed to refuse
    // would reach no host: the refusal must come first, and it names the URL.
    let dir = temp_dir();
    let mut cmd = command("illumitunnel-relay", dir.path());
    cmd.args([
        "--http",
        "--listen",
        "127.0.0.1:0",
        "--allow-anonymous",
        "--data-dir",
    ])
    .arg(dir.path().join("relay"))
    .args(["--cluster", "nats://nats.invalid:4222", "--node-id", "a"]);
    let finished = ChildGuard::run(cmd);
    assert_eq!(finished.code(), 2, "{finished:?}");
    assert_eq!(
        finished.stderr.trim(),
        "error: refusing to join NATS at nats://nats.invalid:4222 without credentials: anyone who \
         reaches it could read deliveries, add client tokens and forge deliveries; log in with \
         nats://user:pass@host, --cluster-creds FILE, --cluster-nkey FILE or \
         --cluster-cert/--cluster-key (docs/cluster.md), or pass --cluster-insecure on a test network"
    );
    // The token command takes the same flags and the same rule.
    let mut cmd = command("illumitunnel-relay", dir.path());
    cmd.args(["token", "list", "--cluster", "nats://nats.invalid:4222"]);
    let finished = ChildGuard::run(cmd);
    assert_eq!(finished.code(), 2, "{finished:?}");
    assert!(
        finished
            .stderr
            .contains("refusing to join NATS at nats://nats.invalid:4222"),
        "{finished:?}"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A delivery message like `captured` (`u32 head length | JSON head | body`) with a fresh id
/// and `marker`'s body.
fn forged(captured: &[u8], marker: &str) -> Bytes {
    let len = u32::from_be_bytes(captured[..4].try_into().expect("a length")) as usize;
    let mut head: serde_json::Value =
        serde_json::from_slice(&captured[4..4 + len]).expect("a JSON head");
    let id: String = {
        let mut rng = rand::thread_rng();
        (0..24)
            .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
            .collect()
    };
    head["id"] = serde_json::Value::String(id);
    let head = serde_json::to_vec(&head).expect("JSON");
    let mut out = Vec::new();
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&body(marker));
    Bytes::from(out)
}

#[test]
fn mutual_tls_admits_a_node_with_a_client_certificate_and_refuses_one_without() {
    let rt = runtime();
    let secure = SecureNats::start_with(true);
    let pem = |p: &std::path::Path| p.to_str().expect("a UTF-8 path").to_owned();
    let (cert, key) = (
        pem(&secure.pki.client_cert_pem),
        pem(&secure.pki.client_key_pem),
    );
    let tokens = pem(&secure.tokens_file);
    let url = secure.url_as("relay-1", "RELAY_1_PASSWORD");
    let with_cert = [
        "--cluster-ca",
        secure.ca(),
        "--cluster-cert",
        &cert,
        "--cluster-key",
        &key,
        "--tokens-file",
        &tokens,
    ];
    let node = Node::start_with("relay-1", &url, &with_cert);
    let target = Target::start(&rt, |req| Reply::status(200).body(req.body.clone()));
    let token = [
        "--token",
        secure.token.as_str(),
        "--keepalive-ms",
        KEEPALIVE_MS,
    ];
    let _listen = Listen::start(Some(&node.url()), &target.url(HOOK), "mtls", &token);
    let response = Request::post(&node.tunnel_url("mtls"))
        .body(body("mtls"))
        .send(&rt);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.body, body("mtls"));
    assert_clean(std::slice::from_ref(&node), &secure);

    // The same login without the client certificate: the server ends the handshake.
    let dir = temp_dir();
    let mut cmd = command("illumitunnel-relay", dir.path());
    cmd.args([
        "--http",
        "--listen",
        "127.0.0.1:0",
        "--allow-anonymous",
        "--data-dir",
    ])
    .arg(dir.path().join("relay"))
    .args([
        "--cluster",
        &url,
        "--node-id",
        "relay-1",
        "--cluster-ca",
        secure.ca(),
    ]);
    let finished = ChildGuard::run(cmd);
    assert_eq!(finished.code(), 1, "{finished:?}");
    assert!(
        finished
            .stderr
            .contains("could not set up TLS to NATS at tls://127.0.0.1:")
            && finished.stderr.contains("CertificateRequired")
            && finished.stderr.contains("--cluster-cert/--cluster-key"),
        "{finished:?}"
    );
}
