//! Client tokens stored in `{data_dir}/relay.db` by `illumitunnel-relay token add`: only each
//! token's SHA-256 is kept, under a name to list and revoke it by. A running relay reads the
//! table every [`POLL_EVERY`](crate::access::POLL_EVERY), so changes apply without a restart.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rand::RngCore;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::config::TokenCommand;
use crate::metrics::Metrics;
use crate::queue::store::DB_FILE;
use crate::queue::{QueueLimits, QueueStore};

/// Random bytes in a new token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Prefix that makes a relay token recognisable in a config file or a leak scanner.
const TOKEN_PREFIX: &str = "itr_";
/// Longest token name.
const MAX_NAME: usize = 64;

/// A `token` command failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The name has characters a shell or a listing would mangle.
    #[error("invalid token name {0:?}: use 1 to 64 letters, digits, '.', '_' or '-', e.g. laptop")]
    Name(String),
    /// `add` with a name in use.
    #[error("a token named {0} already exists; revoke it first or pick another name")]
    Exists(String),
    /// `revoke` with an unknown name.
    #[error("no token named {0}; `illumitunnel-relay token list` shows the names")]
    Unknown(String),
    /// The cluster's tokens bucket could not be reached.
    #[error("could not reach the cluster's tokens in NATS: {0}; check --cluster and that nats-server runs with JetStream (-js)")]
    Cluster(String),
    /// NATS refused the login or TLS.
    #[error("{0}")]
    Nats(String),
    /// The database could not be opened or written.
    #[error(
        "could not use the relay database in {dir}: {cause}; check --data-dir and its permissions"
    )]
    Storage {
        /// The data dir.
        dir: String,
        /// What failed.
        cause: String,
    },
}

impl TokenError {
    /// Whether the command line was at fault (exit 2) rather than the machine (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            TokenError::Name(_) | TokenError::Exists(_) | TokenError::Unknown(_)
        )
    }
}

/// One stored token, as `token list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// Its name.
    pub name: String,
    /// When it was added, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// The stored tokens of one data dir.
pub struct TokenStore {
    conn: Connection,
    dir: String,
}

impl TokenStore {
    /// Opens (creating and migrating when needed) `{dir}/relay.db`.
    pub fn open(dir: &Path) -> Result<Self, TokenError> {
        let storage = |cause: String| TokenError::Storage {
            dir: dir.display().to_string(),
            cause,
        };
        // The queue store creates the file privately and applies every migration.
        let gauges = Metrics::new().queue.clone();
        drop(
            QueueStore::open(dir, QueueLimits::default(), gauges)
                .map_err(|e| storage(e.to_string()))?,
        );
        let conn = Connection::open(dir.join(DB_FILE)).map_err(|e| storage(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| storage(e.to_string()))?;
        Ok(TokenStore {
            conn,
            dir: dir.display().to_string(),
        })
    }

    fn storage(&self, err: rusqlite::Error) -> TokenError {
        TokenError::Storage {
            dir: self.dir.clone(),
            cause: err.to_string(),
        }
    }

    /// Stores `hash` under `name`; a name in use is refused.
    fn insert(&self, name: &str, hash: &str, now_ms: i64) -> Result<(), TokenError> {
        let added = self
            .conn
            .execute(
                "INSERT INTO tokens (name, hash, created_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO NOTHING",
                params![name, hash, now_ms],
            )
            .map_err(|e| self.storage(e))?;
        if added == 0 {
            return Err(TokenError::Exists(name.to_string()));
        }
        Ok(())
    }

    /// Every stored token's name, oldest first.
    pub fn list(&self) -> Result<Vec<StoredToken>, TokenError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, created_at_ms FROM tokens ORDER BY created_at_ms, name")
            .map_err(|e| self.storage(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredToken {
                    name: r.get(0)?,
                    created_at_ms: r.get(1)?,
                })
            })
            .map_err(|e| self.storage(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.storage(e))
    }

    /// Deletes the token named `name`.
    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        let deleted = self
            .conn
            .execute("DELETE FROM tokens WHERE name = ?1", params![name])
            .map_err(|e| self.storage(e))?;
        if deleted == 0 {
            return Err(TokenError::Unknown(name.to_string()));
        }
        Ok(())
    }
}

/// Where `token …` keeps tokens: a data dir's `relay.db` ([`TokenStore`]) or a cluster's NATS.
// Run by the one-off `token` command on its own thread: no `Send` needed.
#[async_trait::async_trait(?Send)]
pub trait TokenAdmin {
    /// Stores `hash` (hex SHA-256 of a new token) under `name`; a name in use is refused.
    async fn add(&self, name: &str, hash: &str, now_ms: i64) -> Result<(), TokenError>;
    /// Every stored token's name, oldest first.
    async fn list(&self) -> Result<Vec<StoredToken>, TokenError>;
    /// Deletes the token named `name`.
    async fn revoke(&self, name: &str) -> Result<(), TokenError>;
    /// The command that adds a token here, for the sentence when there is none.
    fn add_command(&self) -> &'static str;
}

#[async_trait::async_trait(?Send)]
impl TokenAdmin for TokenStore {
    async fn add(&self, name: &str, hash: &str, now_ms: i64) -> Result<(), TokenError> {
        self.insert(name, hash, now_ms)
    }

    async fn list(&self) -> Result<Vec<StoredToken>, TokenError> {
        TokenStore::list(self)
    }

    async fn revoke(&self, name: &str) -> Result<(), TokenError> {
        TokenStore::revoke(self, name)
    }

    fn add_command(&self) -> &'static str {
        "illumitunnel-relay token add NAME"
    }
}

/// Runs `illumitunnel-relay token …` on `target`: results on `out`, explanations on `note`.
pub async fn run(
    command: &TokenCommand,
    backend: &dyn TokenAdmin,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> Result<(), TokenError> {
    match command {
        TokenCommand::Add { name } => add(backend, name).await.map(|token| {
            let _ = writeln!(out, "{token}");
            let _ = writeln!(
                note,
                "token {name} added and shown only this once; on the client paste it into `illumitunnel login --relay https://RELAY`, or pipe it: `illumitunnel login --relay https://RELAY < token-file`"
            );
        }),
        TokenCommand::List { json: true } => backend.list().await.map(|tokens| {
            let listed: Vec<_> = tokens
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name,
                        "created_at_ms": t.created_at_ms,
                        "created_at": format_ms(t.created_at_ms),
                    })
                })
                .collect();
            let _ = writeln!(out, "{}", serde_json::Value::Array(listed));
        }),
        TokenCommand::List { json: false } => backend.list().await.map(|tokens| {
            if tokens.is_empty() {
                let add = backend.add_command();
                let _ = writeln!(note, "no stored tokens; add one with `{add}`");
            }
            for token in tokens {
                let _ = writeln!(out, "{}\tadded {}", token.name, format_ms(token.created_at_ms));
            }
        }),
        TokenCommand::Revoke { name } => backend.revoke(name).await.map(|()| {
            let _ = writeln!(
                note,
                "token {name} revoked; a running relay refuses it and closes its sessions within 5 s"
            );
        }),
    }
}

/// Creates a token named `name` and returns it; only its hash is stored.
async fn add(backend: &dyn TokenAdmin, name: &str) -> Result<String, TokenError> {
    check_name(name)?;
    let token = new_token();
    backend.add(name, &hex(&hash(&token)), now_ms()).await?;
    Ok(token)
}

/// A fresh token: `itr_` and 256 random bits in hex.
fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2026-12-01 14:35 UTC`.
fn format_ms(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Every stored token's SHA-256, for the running relay; a missing table or file reads as none.
pub fn load_hashes(conn: &Connection) -> rusqlite::Result<Vec<[u8; 32]>> {
    let exists: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'tokens'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached("SELECT hash FROM tokens ORDER BY hash")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut hashes = Vec::new();
    for row in rows {
        if let Some(hash) = parse_hex(&row?) {
            hashes.push(hash);
        }
    }
    Ok(hashes)
}

/// Opens `{dir}/relay.db` read-write without creating it; `None` when it does not exist yet.
pub fn open_existing(dir: &Path) -> Option<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(dir.join(DB_FILE), flags).ok()?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
    Some(conn)
}

/// How many tokens `{dir}/relay.db` holds (0 when there is no database yet).
pub fn stored_count(dir: &Path) -> usize {
    open_existing(dir)
        .and_then(|conn| load_hashes(&conn).ok())
        .map_or(0, |hashes| hashes.len())
}

/// When `token` runs as root on a service's data dir, hands the database files it may have
/// created to the directory's owner, so the relay (e.g. systemd's dynamic user) can open them.
pub fn match_owner(dir: &Path) {
    let Ok(owner) = std::fs::metadata(dir) else {
        return;
    };
    for name in [
        DB_FILE.to_string(),
        format!("{DB_FILE}-wal"),
        format!("{DB_FILE}-shm"),
    ] {
        let path = dir.join(name);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.uid() != owner.uid() || meta.gid() != owner.gid() {
                let _ = std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()));
            }
        }
    }
}

fn check_name(name: &str) -> Result<(), TokenError> {
    let valid = (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(TokenError::Name(name.to_string()))
    }
}

/// SHA-256 of a token as the relay compares it (the same hash keys tunnel ownership).
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn add_list_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        let token = add(&store, "laptop").await.unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
        let other = add(&store, "ci-runner_2").await.unwrap();
        assert_ne!(token, other);
        assert!(matches!(
            add(&store, "laptop").await,
            Err(TokenError::Exists(_))
        ));
        let mut names: Vec<_> = TokenStore::list(&store)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        names.sort();
        assert_eq!(names, ["ci-runner_2", "laptop"]);

        // Only hashes are on disk, and the relay reads exactly those.
        let conn = open_existing(dir.path()).unwrap();
        let mut hashes = load_hashes(&conn).unwrap();
        hashes.sort();
        let mut want = vec![hash(&token), hash(&other)];
        want.sort();
        assert_eq!(hashes, want);
        let raw = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        assert!(!raw.windows(token.len()).any(|w| w == token.as_bytes()));

        TokenStore::revoke(&store, "laptop").unwrap();
        assert!(matches!(
            TokenStore::revoke(&store, "laptop"),
            Err(TokenError::Unknown(_))
        ));
        assert_eq!(load_hashes(&conn).unwrap(), vec![hash(&other)]);
        assert_eq!(stored_count(dir.path()), 1);
    }

    #[tokio::test]
    async fn names_and_missing_databases() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stored_count(dir.path()), 0);
        assert!(!dir.path().join(DB_FILE).exists());
        let store = TokenStore::open(dir.path()).unwrap();
        for bad in ["", "has space", "-flag", "a/b", &"x".repeat(65), "é"] {
            let err = add(&store, bad).await.unwrap_err();
            assert!(matches!(err, TokenError::Name(_)), "{bad}");
            assert!(err.is_usage());
        }
    }
}
