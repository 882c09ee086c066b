//! Client tokens of a cluster, in the KV bucket `illumitunnel-tokens`: `token add|list|revoke
//! --cluster …` writes there and every node reads it every
//! [`POLL_EVERY`](crate::access::POLL_EVERY), as a single relay reads `relay.db`. Keys are the
//! token names in hex (a name may hold characters a key may not); values hold the name, the
//! token's SHA-256 and when it was added.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::connect::ClusterError;
use super::TOKENS_BUCKET;
use crate::access::StoredTokens;
use crate::config::NatsLink;
use crate::tokens::{StoredToken, TokenAdmin, TokenError};

/// Longest `token …` waits for NATS.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
struct Record {
    name: String,
    hash: String,
    created_at_ms: i64,
}

fn unreachable(cause: impl std::fmt::Display) -> TokenError {
    TokenError::Cluster(cause.to_string())
}

fn key(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Connects to NATS through `link` for a one-off command (`tunnel release`), as the admin user
/// of docs/cluster.md does for `token …`.
pub async fn connect(link: &NatsLink) -> Result<jetstream::Context, String> {
    let name = "illumitunnel-relay tunnel".to_owned();
    let (client, _) = tokio::time::timeout(
        TIMEOUT,
        super::connect::connect(link, name, Some(ADMIN_INBOX.into())),
    )
    .await
    .map_err(|_| "no answer".to_string())?
    .map_err(|err| err.to_string())?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(super::JETSTREAM_TIMEOUT)
        .build(client))
}

/// Replies to `token …` arrive on `_INBOX.ADMIN.…`: node ids are lowercase, so no node reads them.
pub const ADMIN_INBOX: &str = "_INBOX.ADMIN";

/// Connects to NATS through `link` and opens (creating when needed) the tokens bucket, all
/// within [`TIMEOUT`]; a refusal by NATS (a permission this user lacks) is named.
pub async fn open(link: &NatsLink) -> Result<kv::Store, TokenError> {
    let name = "illumitunnel-relay token".to_owned();
    let (client, refusal) = tokio::time::timeout(
        TIMEOUT,
        super::connect::connect(link, name, Some(ADMIN_INBOX.into())),
    )
    .await
    .map_err(|_| unreachable("no answer"))?
    .map_err(|err| match err {
        ClusterError::Unreachable { servers, cause } => unreachable(format!("{servers}: {cause}")),
        refused => TokenError::Nats(refused.to_string()),
    })?;
    let js = jetstream::ContextBuilder::new()
        .timeout(super::JETSTREAM_TIMEOUT)
        .build(client);
    let bucket = async {
        if let Ok(store) = js.get_key_value(TOKENS_BUCKET).await {
            return Ok(store);
        }
        js.create_key_value(kv::Config {
            bucket: TOKENS_BUCKET.into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())
    };
    let opened = tokio::time::timeout(TIMEOUT, bucket)
        .await
        .unwrap_or_else(|_| Err("no answer".into()));
    opened.map_err(|cause| match refusal.get() {
        Some(refused) => unreachable(format!("{cause} ({refused}; the NATS user needs the permissions of the admin user in docs/cluster.md)")),
        None => unreachable(cause),
    })
}

/// Stores `hash` under `name`; a name in use is refused.
pub async fn add(store: &kv::Store, name: &str, hash: &str, now_ms: i64) -> Result<(), TokenError> {
    let record = Record {
        name: name.to_owned(),
        hash: hash.to_owned(),
        created_at_ms: now_ms,
    };
    let value = serde_json::to_vec(&record).map_err(unreachable)?;
    match store.create(key(name), value.into()).await {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
            Err(TokenError::Exists(name.to_owned()))
        }
        Err(err) => Err(unreachable(err)),
    }
}

/// Every stored token's name, oldest first.
pub async fn list(store: &kv::Store) -> Result<Vec<StoredToken>, TokenError> {
    let mut tokens: Vec<StoredToken> = records(store)
        .await
        .map_err(unreachable)?
        .into_iter()
        .map(|r| StoredToken {
            name: r.name,
            created_at_ms: r.created_at_ms,
        })
        .collect();
    tokens.sort_by(|a, b| (a.created_at_ms, &a.name).cmp(&(b.created_at_ms, &b.name)));
    Ok(tokens)
}

/// Deletes the token named `name`.
pub async fn revoke(store: &kv::Store, name: &str) -> Result<(), TokenError> {
    match store.get(key(name)).await.map_err(unreachable)? {
        Some(_) => store.delete(key(name)).await.map_err(unreachable),
        None => Err(TokenError::Unknown(name.to_owned())),
    }
}

/// Every stored token's SHA-256, for the running nodes.
pub async fn load_hashes(store: &kv::Store) -> Result<Vec<[u8; 32]>, String> {
    let records = records(store).await?;
    Ok(records
        .iter()
        .filter_map(|r| crate::tokens::parse_hex(&r.hash))
        .collect())
}

async fn records(store: &kv::Store) -> Result<Vec<Record>, String> {
    let mut keys = store.keys().await.map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    // Bounded by the bucket's size; a key read fails the whole listing.
    while let Some(key) = keys.next().await {
        names.push(key.map_err(|e| e.to_string())?);
    }
    let mut records = Vec::with_capacity(names.len());
    for key in names {
        if let Some(value) = store.get(&key).await.map_err(|e| e.to_string())? {
            if let Ok(record) = serde_json::from_slice::<Record>(&value) {
                records.push(record);
            }
        }
    }
    Ok(records)
}

/// The cluster's tokens bucket, as `token … --cluster` manages it and as nodes read it.
pub struct NatsTokens(pub kv::Store);

/// The command that adds a token to the cluster.
const ADD_COMMAND: &str = "illumitunnel-relay token add NAME --cluster nats://…";

#[async_trait::async_trait(?Send)]
impl TokenAdmin for NatsTokens {
    async fn add(&self, name: &str, hash: &str, now_ms: i64) -> Result<(), TokenError> {
        add(&self.0, name, hash, now_ms).await
    }

    async fn list(&self) -> Result<Vec<StoredToken>, TokenError> {
        list(&self.0).await
    }

    async fn revoke(&self, name: &str) -> Result<(), TokenError> {
        revoke(&self.0, name).await
    }

    fn add_command(&self) -> &'static str {
        ADD_COMMAND
    }
}

#[async_trait::async_trait]
impl StoredTokens for NatsTokens {
    async fn hashes(&self) -> Result<Option<Vec<[u8; 32]>>, String> {
        load_hashes(&self.0).await.map(Some)
    }

    fn add_command(&self) -> &'static str {
        ADD_COMMAND
    }
}
