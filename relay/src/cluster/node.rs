//! A node's connection to the cluster: the NATS client, the buckets and streams it uses (set
//! up on first start), the picture of presence, readiness, and the large bodies it stored. It
//! is the NATS adapter's side of [`Placement`]; the queue, presence and hand-over modules add
//! their parts of `impl Cluster`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, kv, object_store, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::connect::{self, ClusterError, CONNECT_TIMEOUT};
use super::view::{View, NODE_KEY_AGE};
use super::*;
use crate::config::ClusterConfig;
use crate::placement::{Authority, Health, Placement};
use crate::queue::QueueLimits;

/// A node's connection to the cluster and the buckets and streams it uses.
pub struct Cluster {
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) node: String,
    pub(crate) owners: kv::Store,
    pub(crate) nodes: kv::Store,
    pub(crate) presence: kv::Store,
    pub(crate) attempts: kv::Store,
    pub(crate) tokens: kv::Store,
    pub(crate) queue: stream::Stream,
    pub(crate) dead: stream::Stream,
    pub(super) bodies: object_store::ObjectStore,
    /// The stream under `bodies`, for its size and to purge a deleted body's last trace.
    pub(super) bodies_stream: stream::Stream,
    pub(super) view: Arc<View>,
    pub(super) readiness: ready::Readiness,
    pub(super) max_payload: usize,
    /// The tunnels whose presence this node has published.
    pub(super) published: tokio::sync::watch::Sender<std::collections::HashSet<String>>,
    /// Queue sequence → object name, for heads whose body was stored aside.
    pub(super) stored_bodies: std::sync::Mutex<std::collections::HashMap<u64, String>>,
    /// Queue sequences with a failed attempt on record (an entry in the attempts bucket).
    pub(super) attempted: std::sync::Mutex<std::collections::HashSet<u64>>,
}

impl Cluster {
    /// Connects to NATS (waiting up to [`CONNECT_TIMEOUT`]) and creates the buckets and
    /// streams that do not exist yet; those that do keep an operator's changes (replicas).
    pub async fn connect(
        config: &ClusterConfig,
        limits: QueueLimits,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let (client, refusal) = connect::connect(
            &config.nats,
            format!("illumitunnel-relay {}", config.node_id),
            Some(inbox_prefix(&config.node_id)),
        )
        .await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(JETSTREAM_TIMEOUT)
            .build(client.clone());
        // A NATS cluster that has just started elects its JetStream leader first.
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let state = loop {
            match Shared::set_up(&js, limits, config.replicas).await {
                Ok(state) => break state,
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    return Err(match (err, refusal.get()) {
                        (ClusterError::Setup { what, cause }, Some(refused)) => {
                            ClusterError::Setup {
                                what,
                                cause: format!("{cause} ({refused})"),
                            }
                        }
                        (err, _) => err,
                    })
                }
                Err(err) => {
                    tracing::debug!(%err, "JetStream not ready; trying again");
                    tokio::time::sleep(SETUP_RETRY).await;
                }
            }
        };
        let Shared {
            owners,
            nodes,
            presence,
            attempts,
            tokens,
            queue,
            dead,
            bodies,
            bodies_stream,
        } = state;
        let max_payload = client.server_info().max_payload;
        Ok(Arc::new(Cluster {
            client,
            js,
            view: Arc::new(View::new(config.node_id.clone())),
            node: config.node_id.clone(),
            owners,
            nodes,
            presence,
            attempts,
            tokens,
            queue,
            dead,
            bodies,
            bodies_stream,
            readiness: Default::default(),
            max_payload,
            stored_bodies: Default::default(),
            attempted: Default::default(),
            published: tokio::sync::watch::Sender::new(Default::default()),
        }))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Which node holds which tunnel's sessions, as this node last heard.
    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Waits (up to `within`) until this node's presence for `tunnel` is in NATS, so the
    /// other nodes route its deliveries here from the client's first moment.
    pub async fn announced(&self, tunnel: &str, within: Duration) {
        let mut published = self.published.subscribe();
        let _ = tokio::time::timeout(within, published.wait_for(|p| p.contains(tunnel))).await;
    }

    /// Reads `tunnel`'s holders from NATS itself (the view may lag by a watch delivery) and
    /// returns its authority. For deliveries about to be queued: one more read there is
    /// cheap next to the queue write.
    pub async fn authority_now(&self, tunnel: &str) -> Option<String> {
        let filter = format!("{}{tunnel}.*", self.presence.prefix);
        if let Ok(mut subjects) = self.presence.stream.info_with_subjects(filter).await {
            while let Some(Ok((subject, _))) = subjects.next().await {
                let Some(key) = subject.strip_prefix(&self.presence.prefix) else {
                    continue;
                };
                let Some(node) = key.rsplit('.').next() else {
                    continue;
                };
                if let Ok(entry) = self.presence.get(key).await {
                    let since = entry
                        .as_deref()
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse().ok());
                    self.view.set_held(tunnel, node, since);
                }
            }
        }
        self.view.authority(tunnel)
    }

    pub(crate) fn set_published(&self, published: std::collections::HashSet<String>) {
        self.published.send_replace(published);
    }

    /// What this node has read of the cluster; it answers only once [`is_ready`](Self::is_ready).
    pub fn readiness(&self) -> &ready::Readiness {
        &self.readiness
    }

    /// Whether this node has read owners, presence and heartbeats, and so may answer
    /// deliveries and client upgrades (before that: 503 with `Retry-After`).
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// Whether NATS is reachable right now.
    pub fn is_reachable(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Whether a message of `len` bytes fits NATS's payload limit with room to spare.
    pub fn fits(&self, len: usize) -> bool {
        len + PAYLOAD_SLACK <= self.max_payload
    }

    /// Stores a body too large for a message under `name`.
    pub async fn put_body(&self, name: &str, body: &[u8]) -> Result<(), String> {
        let mut reader = body;
        self.bodies
            .put(name, &mut reader)
            .await
            .map(|_| ())
            .map_err(|e| format!("could not store a large body in NATS: {e}"))
    }

    /// Reads a body stored by [`put_body`](Self::put_body).
    pub async fn get_body(&self, name: &str) -> Result<Bytes, String> {
        let mut object = self
            .bodies
            .get(name)
            .await
            .map_err(|e| format!("could not read a large body from NATS: {e}"))?;
        let mut body = Vec::new();
        object
            .read_to_end(&mut body)
            .await
            .map_err(|e| format!("could not read a large body from NATS: {e}"))?;
        Ok(Bytes::from(body))
    }

    pub(super) fn stored_bodies(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, String>> {
        // Inserts and removes only.
        self.stored_bodies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deletes a stored body, and the "deleted" record the object store leaves in its place;
    /// a failure only leaves it to the bucket's age limit.
    pub async fn drop_body(&self, name: &str) {
        drop_stored(&self.bodies, &self.bodies_stream, name).await;
    }

    /// A guard that deletes the stored body `name` when dropped, whichever way the holder
    /// gives up on it (an answer, an error, a timeout, a cancelled request).
    pub(crate) fn body_guard(&self, name: String) -> StoredBody {
        StoredBody {
            store: self.bodies.clone(),
            stream: self.bodies_stream.clone(),
            name,
        }
    }

    /// Deletes the stored body `name` after `grace` (sooner, after a second, once `shutdown`):
    /// for an answer body whose reader may have given up, so nobody is left to delete it.
    pub(crate) fn drop_body_later(
        &self,
        name: String,
        grace: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let (store, stream) = (self.bodies.clone(), self.bodies_stream.clone());
        tokio::spawn(async move {
            // Both cancel-safe: a token wait and a sleep.
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = shutdown.cancelled() => tokio::time::sleep(Duration::from_secs(1)).await,
            }
            drop_stored(&store, &stream, &name).await;
        });
    }

    /// Bytes the large-body object store holds now.
    pub(crate) async fn stored_bytes(&self) -> Result<u64, async_nats::Error> {
        Ok(self.bodies_stream.get_info().await?.state.bytes)
    }

    /// Notes that the queued delivery at `seq` has a failed attempt on record.
    pub(crate) fn note_attempted(&self, seq: u64) {
        self.attempted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(seq);
    }

    /// Whether the delivery at `seq` had a failed attempt on record (forgetting it).
    pub(crate) fn take_attempted(&self, seq: u64) -> bool {
        self.attempted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&seq)
    }
}

/// A stored body deleted when this is dropped; see [`Cluster::body_guard`].
pub(crate) struct StoredBody {
    store: object_store::ObjectStore,
    stream: stream::Stream,
    name: String,
}

impl Drop for StoredBody {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, stream) = (self.store.clone(), self.stream.clone());
        let name = std::mem::take(&mut self.name);
        runtime.spawn(async move { drop_stored(&store, &stream, &name).await });
    }
}

/// Deletes `name` from the object store, then purges the metadata record the delete leaves
/// (a "deleted" marker kept until the bucket's age limit otherwise).
async fn drop_stored(store: &object_store::ObjectStore, stream: &stream::Stream, name: &str) {
    if let Err(err) = store.delete(name).await {
        tracing::debug!(%err, name, "could not delete a stored body; it expires with the bucket's age limit");
        return;
    }
    let meta = format!("$O.{BODIES_BUCKET}.M.{}", object_meta_token(name));
    if let Err(err) = stream.purge().filter(&meta).await {
        tracing::debug!(%err, name, "could not purge a deleted body's record; it expires with the bucket's age limit");
    }
}

/// The subject token the object store names an object's metadata by (URL-safe base64).
fn object_meta_token(name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE.encode(name)
}

#[async_trait::async_trait]
impl Placement for Cluster {
    fn node(&self) -> Option<&str> {
        Some(&self.node)
    }

    fn authority(&self, tunnel: &str) -> Authority {
        self.place(self.view.authority(tunnel))
    }

    async fn authority_now(&self, tunnel: &str) -> Authority {
        let authority = Cluster::authority_now(self, tunnel).await;
        self.place(authority)
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.view.changes()
    }

    async fn announced(&self, tunnel: &str, within: Duration) {
        Cluster::announced(self, tunnel, within).await
    }

    fn health(&self) -> Health {
        if !self.is_ready() {
            Health::Starting
        } else if self.is_reachable() {
            Health::Ready
        } else {
            Health::Unreachable
        }
    }
}

impl Cluster {
    fn place(&self, authority: Option<String>) -> Authority {
        match authority {
            None => Authority::Nobody,
            Some(node) if node == self.node => Authority::Here,
            Some(node) => Authority::Elsewhere(node),
        }
    }
}

/// The buckets and streams a node uses.
struct Shared {
    owners: kv::Store,
    nodes: kv::Store,
    presence: kv::Store,
    attempts: kv::Store,
    tokens: kv::Store,
    queue: stream::Stream,
    dead: stream::Stream,
    bodies: object_store::ObjectStore,
    bodies_stream: stream::Stream,
}

impl Shared {
    /// Opens the buckets and streams, creating those that do not exist with `replicas`.
    async fn set_up(
        js: &jetstream::Context,
        limits: QueueLimits,
        replicas: usize,
    ) -> Result<Shared, ClusterError> {
        let bucket = |bucket: &str, max_age: Duration| kv::Config {
            bucket: bucket.to_owned(),
            history: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let queue = stream::Config {
            name: QUEUE_STREAM.into(),
            subjects: vec![format!("{}.>", QUEUE_SUBJECT)],
            max_messages_per_subject: i64::try_from(limits.max_count).unwrap_or(i64::MAX),
            // Tunnels under their fair share may queue past --queue-max-total-bytes (see
            // `queue::over_fair_share`); twice it is the ceiling.
            max_bytes: i64::try_from(limits.max_total_bytes.saturating_mul(2)).unwrap_or(i64::MAX),
            max_age: limits.max_age,
            discard: stream::DiscardPolicy::New,
            discard_new_per_subject: true,
            duplicate_window: dedupe_window(limits.max_age),
            storage: stream::StorageType::File,
            allow_direct: true,
            num_replicas: replicas,
            ..Default::default()
        };
        let dead = stream::Config {
            name: DEAD_STREAM.into(),
            subjects: vec![format!("{}.>", DEAD_SUBJECT)],
            max_bytes: i64::try_from(limits.max_total_bytes).unwrap_or(i64::MAX),
            max_age: DEAD_LETTER_AGE,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let bodies = object_store::Config {
            bucket: BODIES_BUCKET.into(),
            max_age: limits.max_age,
            // Queued bodies count in --queue-max-total-bytes; bodies between nodes pass through.
            max_bytes: i64::try_from(limits.max_total_bytes.saturating_mul(2)).unwrap_or(i64::MAX),
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let bodies = match js.get_object_store(BODIES_BUCKET).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(bodies)
                .await
                .map_err(|e| setup("object store", e))?,
        };
        let bodies_stream = js
            .get_stream(format!("OBJ_{BODIES_BUCKET}"))
            .await
            .map_err(|e| setup("object store", e))?;
        Ok(Shared {
            owners: key_value(js, bucket(OWNERS_BUCKET, Duration::ZERO)).await?,
            nodes: key_value(js, bucket(NODES_BUCKET, NODE_KEY_AGE)).await?,
            presence: key_value(js, bucket(PRESENCE_BUCKET, Duration::ZERO)).await?,
            attempts: key_value(js, bucket(ATTEMPTS_BUCKET, limits.max_age)).await?,
            tokens: key_value(js, bucket(TOKENS_BUCKET, Duration::ZERO)).await?,
            queue: js
                .get_or_create_stream(queue)
                .await
                .map_err(|e| setup("stream", e))?,
            dead: js
                .get_or_create_stream(dead)
                .await
                .map_err(|e| setup("stream", e))?,
            bodies,
            bodies_stream,
        })
    }
}

async fn key_value(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(&config.bucket).await {
        return Ok(store);
    }
    js.create_key_value(config)
        .await
        .map_err(|e| setup("KV bucket", e))
}

fn setup(what: &'static str, cause: impl std::fmt::Display) -> ClusterError {
    ClusterError::Setup {
        what,
        cause: cause.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_bodys_record_is_found_under_the_object_stores_own_name() {
        // async-nats names an object's metadata subject by URL-safe base64 of its name.
        assert_eq!(object_meta_token("queued-a-b"), "cXVldWVkLWEtYg==");
        assert_eq!(object_meta_token("answer-1a?"), "YW5zd2VyLTFhPw==");
    }
}
