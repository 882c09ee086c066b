//! The blocking side of the queue: one SQLite connection to `{data_dir}/relay.db` (WAL,
//! `synchronous = FULL`), tunnel ownership, queued deliveries, and per-tunnel depth kept in
//! memory so a limit check reads no disk. Only the queue thread calls it; tests call it
//! directly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use illumitunnel::headers::{decode_blob, encode_blob};
use illumitunnel::DeliveryId;
use rusqlite::{params, Connection, OptionalExtension};

use super::delivery::{Backlog, QueueLimits, QueuedDelivery, Row};
use super::error::{Limit, QueueError};
use super::schema;
use crate::metrics::QueueGauges;

mod owners;

/// The database file inside the data dir.
pub const DB_FILE: &str = "relay.db";
/// How long a statement waits for another process holding the database (embedded relays of
/// several `listen` processes may share one data dir).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Most rows one expiry pass deletes, so a huge backlog never stalls the queue thread.
pub const EXPIRE_BATCH: usize = 10_000;

/// Depth of one tunnel's queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    /// Queued deliveries.
    pub count: u64,
    /// Their bytes (body and headers).
    pub bytes: u64,
}

/// Tunnel ownership and queued deliveries on disk.
pub struct QueueStore {
    conn: Connection,
    path: PathBuf,
    limits: QueueLimits,
    depths: HashMap<String, Depth>,
    gauges: QueueGauges,
    in_batch: bool,
}

impl QueueStore {
    /// Opens `{dir}/relay.db`, creating the directory (0700) and the file (0600) when missing.
    pub fn open(dir: &Path, limits: QueueLimits, gauges: QueueGauges) -> Result<Self, QueueError> {
        let path = dir.join(DB_FILE);
        let open_err = |cause: String| QueueError::Open {
            path: path.clone(),
            cause,
        };
        create_private_dir(dir).map_err(|e| open_err(e.to_string()))?;
        create_private_file(&path).map_err(|e| open_err(e.to_string()))?;
        let conn = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        let setup = |conn: &Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // A 202 promises the delivery survives a crash of the machine, not only of the
            // relay: every commit reaches the disk. Commits are grouped, so this costs one
            // fsync per batch, not one per delivery.
            conn.pragma_update(None, "synchronous", "FULL")
        };
        setup(&conn).map_err(|e| open_err(e.to_string()))?;
        let mut store = QueueStore {
            conn,
            path: path.clone(),
            limits,
            depths: HashMap::new(),
            gauges,
            in_batch: false,
        };
        store.migrate().map_err(|e| open_err(e.to_string()))?;
        store.reload_depths()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<(), QueueError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = schema::MIGRATIONS.len() as i64;
        if version > known {
            return Err(QueueError::Storage(format!(
                "{} was written by a newer relay (schema {version}, this relay knows {known}); upgrade illumitunnel-relay",
                self.path.display()
            )));
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Re-reads every tunnel's depth from disk (at open, and after a failed commit).
    pub fn reload_depths(&mut self) -> Result<(), QueueError> {
        for tunnel in self.depths.keys() {
            self.gauges.remove(tunnel);
        }
        self.depths.clear();
        let mut stmt = self.conn.prepare(
            "SELECT tunnel, count(*), coalesce(sum(size), 0) FROM queued GROUP BY tunnel",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (tunnel, count, bytes) = row?;
            let depth = Depth {
                count: count.max(0) as u64,
                bytes: bytes.max(0) as u64,
            };
            self.gauges.set(&tunnel, depth.count, depth.bytes);
            self.depths.insert(tunnel, depth);
        }
        self.report_totals();
        Ok(())
    }

    /// Starts a transaction that groups the next writes into one commit.
    pub fn begin(&mut self) -> Result<(), QueueError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        self.in_batch = true;
        Ok(())
    }

    /// Commits the writes since [`begin`](Self::begin); on failure nothing of them is kept.
    pub fn commit(&mut self) -> Result<(), QueueError> {
        self.in_batch = false;
        if let Err(err) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.reload_depths()?;
            return Err(err.into());
        }
        Ok(())
    }

    /// Bytes queued across every tunnel.
    pub fn total_bytes(&self) -> u64 {
        self.depths.values().map(|d| d.bytes).sum()
    }

    /// The depth of `tunnel`'s queue.
    pub fn depth(&self, tunnel: &str) -> Depth {
        self.depths.get(tunnel).copied().unwrap_or_default()
    }

    /// Queues a delivery at the end of `tunnel`'s queue, unless a limit is reached (aged rows
    /// are expired first to make room). A delivery already queued under its id is kept once.
    pub fn push(
        &mut self,
        tunnel: &str,
        delivery: &QueuedDelivery,
        now_ms: i64,
    ) -> Result<(), QueueError> {
        let headers = encode_blob(&delivery.headers);
        let size = (headers.len() + delivery.body.len()) as u64;
        let fits = |store: &Self| -> Option<Limit> {
            let (d, limits) = (store.depth(tunnel), &store.limits);
            if d.count + 1 > limits.max_count {
                Some(Limit::Count(limits.max_count))
            } else if d.bytes + size > limits.max_bytes {
                Some(Limit::Bytes(limits.max_bytes))
            } else if !fair_share_fits(d, size, store.total_bytes(), store.depths.len(), limits) {
                Some(Limit::TotalBytes(limits.max_total_bytes))
            } else {
                None
            }
        };
        if fits(self).is_some() {
            self.expire(None, now_ms)?;
        }
        if let Some(limit) = fits(self) {
            return Err(QueueError::Full {
                tunnel: tunnel.to_owned(),
                limit,
            });
        }
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO queued (tunnel, id, received_at_ms, method, path, query, headers, body, size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                tunnel,
                delivery.id.as_str(),
                delivery.received_at_ms as i64,
                delivery.method,
                delivery.path,
                delivery.query,
                headers,
                delivery.body.as_ref(),
                size as i64,
            ],
        )?;
        if inserted == 1 {
            self.adjust(tunnel, 1, size as i64);
        }
        Ok(())
    }

    /// Up to `max_rows` rows of `tunnel`'s queue after `after_seq`, in arrival order, stopping
    /// once `max_bytes` are read (at least one row is returned when any is left).
    pub fn page(
        &self,
        tunnel: &str,
        after_seq: i64,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Vec<Row>, QueueError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, received_at_ms, method, path, query, headers, body, attempts FROM queued
             WHERE tunnel = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![tunnel, after_seq, max_rows as i64])?;
        let mut page = Vec::new();
        let mut bytes = 0usize;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let id: String = r.get(1)?;
            let Some(id) = DeliveryId::parse(&id) else {
                tracing::warn!(seq, "skipping a queued delivery with an unreadable id");
                continue;
            };
            let headers: Vec<u8> = r.get(6)?;
            let body: Vec<u8> = r.get(7)?;
            bytes += headers.len() + body.len();
            page.push(Row {
                seq,
                attempts: r.get::<_, i64>(8)?.clamp(0, i64::from(u32::MAX)) as u32,
                delivery: QueuedDelivery {
                    id,
                    received_at_ms: r.get::<_, i64>(2)?.max(0) as u64,
                    method: r.get(3)?,
                    path: r.get(4)?,
                    query: r.get(5)?,
                    headers: decode_blob(&headers).unwrap_or_default(),
                    body: Bytes::from(body),
                },
            });
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(page)
    }

    /// The oldest delivery in `tunnel`'s queue.
    pub fn head(&self, tunnel: &str) -> Result<Option<Row>, QueueError> {
        Ok(self.page(tunnel, 0, 1, usize::MAX)?.into_iter().next())
    }

    /// Drops the delivery at `seq` (recorded by the client); `false` when it was not queued.
    pub fn remove(&mut self, tunnel: &str, seq: i64) -> Result<bool, QueueError> {
        let size: Option<i64> = self
            .conn
            .query_row(
                "DELETE FROM queued WHERE tunnel = ?1 AND seq = ?2 RETURNING size",
                params![tunnel, seq],
                |r| r.get(0),
            )
            .optional()?;
        Ok(size
            .inspect(|size| self.adjust(tunnel, -1, -size))
            .is_some())
    }

    /// Counts one more session the delivery at `seq` ended or was rejected by; returns the
    /// count so far (0 when it is no longer queued).
    pub fn attempt_failed(&mut self, tunnel: &str, seq: i64) -> Result<u32, QueueError> {
        let attempts: Option<i64> = self
            .conn
            .query_row(
                "UPDATE queued SET attempts = attempts + 1 WHERE tunnel = ?1 AND seq = ?2 RETURNING attempts",
                params![tunnel, seq],
                |r| r.get(0),
            )
            .optional()?;
        Ok(attempts.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// Moves the delivery at `seq` out of the queue into the dead letters, with `reason`;
    /// `false` when it was not queued.
    pub fn dead_letter(
        &mut self,
        tunnel: &str,
        seq: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, QueueError> {
        self.conn.execute(
            "INSERT INTO dead_letters (tunnel, id, received_at_ms, dead_at_ms, reason, method, path, query, headers, body, size)
             SELECT tunnel, id, received_at_ms, ?3, ?4, method, path, query, headers, body, size
             FROM queued WHERE tunnel = ?1 AND seq = ?2",
            params![tunnel, seq, now_ms, reason],
        )?;
        let moved = self.remove(tunnel, seq)?;
        if moved {
            self.gauges.dead_lettered();
        }
        Ok(moved)
    }

    /// How many dead letters `tunnel` has.
    pub fn dead_letter_count(&self, tunnel: &str) -> Result<u64, QueueError> {
        let count: i64 = self.conn.query_row(
            "SELECT count(*) FROM dead_letters WHERE tunnel = ?1",
            [tunnel],
            |r| r.get(0),
        )?;
        Ok(count.max(0) as u64)
    }

    /// Drops a delivery the client has recorded; `false` when it was not queued.
    pub fn ack(&mut self, tunnel: &str, id: &DeliveryId) -> Result<bool, QueueError> {
        let size: Option<i64> = self
            .conn
            .query_row(
                "DELETE FROM queued WHERE tunnel = ?1 AND id = ?2 RETURNING size",
                params![tunnel, id.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        match size {
            Some(size) => {
                self.adjust(tunnel, -1, -size);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Deletes deliveries older than the age limit (one tunnel's or every tunnel's), at most
    /// [`EXPIRE_BATCH`]; counts them per tunnel for the next `Welcome`. Returns per-tunnel counts.
    pub fn expire(
        &mut self,
        tunnel: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<(String, u64)>, QueueError> {
        let cutoff = now_ms.saturating_sub(self.limits.max_age.as_millis() as i64);
        let deleted: Vec<(String, i64)> = {
            let mut stmt = self.conn.prepare_cached(
                "DELETE FROM queued WHERE seq IN (
                    SELECT seq FROM queued WHERE received_at_ms < ?1 AND (?2 IS NULL OR tunnel = ?2)
                    ORDER BY seq LIMIT ?3)
                 RETURNING tunnel, size",
            )?;
            let rows = stmt.query_map(params![cutoff, tunnel, EXPIRE_BATCH as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        // Dead letters are kept as long as queued deliveries are.
        self.conn.execute(
            "DELETE FROM dead_letters WHERE dead_at_ms < ?1 AND (?2 IS NULL OR tunnel = ?2)",
            params![cutoff, tunnel],
        )?;
        let mut per_tunnel: HashMap<String, (u64, i64)> = HashMap::new();
        for (tunnel, size) in deleted {
            let entry = per_tunnel.entry(tunnel).or_default();
            entry.0 += 1;
            entry.1 += size;
        }
        let mut counts = Vec::with_capacity(per_tunnel.len());
        for (tunnel, (count, bytes)) in per_tunnel {
            self.conn.execute(
                "UPDATE tunnels SET expired_unreported = expired_unreported + ?2 WHERE name = ?1",
                params![tunnel, count as i64],
            )?;
            self.adjust(&tunnel, -(count as i64), -bytes);
            self.gauges.expired(count);
            counts.push((tunnel, count));
        }
        Ok(counts)
    }

    /// A session of `tunnel` connects: expires aged rows, and returns how many are queued, how
    /// many expired since a session last heard it (that count is then reset), and how many are
    /// dead letters.
    pub fn connect(&mut self, tunnel: &str, now_ms: i64) -> Result<Backlog, QueueError> {
        self.expire(Some(tunnel), now_ms)?;
        self.conn.execute(
            "UPDATE tunnels SET last_seen_ms = ?2 WHERE name = ?1",
            params![tunnel, now_ms],
        )?;
        let expired: Option<i64> = self
            .conn
            .query_row(
                "SELECT expired_unreported FROM tunnels WHERE name = ?1",
                [tunnel],
                |r| r.get(0),
            )
            .optional()?;
        if expired.is_some_and(|n| n > 0) {
            self.conn.execute(
                "UPDATE tunnels SET expired_unreported = 0 WHERE name = ?1",
                [tunnel],
            )?;
        }
        Ok(Backlog {
            queued: self.depth(tunnel).count,
            expired: expired.unwrap_or(0).max(0) as u64,
            dead_letters: self.dead_letter_count(tunnel)?,
        })
    }

    /// Writes the WAL back into the database file (on a clean shutdown).
    pub fn checkpoint(&self) -> Result<(), QueueError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Whether a batch transaction is open.
    pub fn in_batch(&self) -> bool {
        self.in_batch
    }

    fn adjust(&mut self, tunnel: &str, count: i64, bytes: i64) {
        let depth = self.depths.entry(tunnel.to_owned()).or_default();
        depth.count = depth.count.saturating_add_signed(count);
        depth.bytes = depth.bytes.saturating_add_signed(bytes);
        let depth = *depth;
        if depth.count == 0 {
            self.depths.remove(tunnel);
            self.gauges.remove(tunnel);
        } else {
            self.gauges.set(tunnel, depth.count, depth.bytes);
        }
        self.report_totals();
    }

    fn report_totals(&self) {
        let count = self.depths.values().map(|d| d.count).sum();
        self.gauges.totals(count, self.total_bytes());
    }
}

/// Whether `size` more bytes for a tunnel at depth `d` fit `--queue-max-total-bytes` with
/// `total` bytes queued across `queues` tunnels with a queue: under the cap anything fits;
/// at the cap only a tunnel under its fair share (the cap divided by the tunnels with a queue,
/// this one included) still queues, so a few tunnels cannot fill it for everyone. Those late
/// pushes may take the total past the cap, never past twice it.
fn fair_share_fits(d: Depth, size: u64, total: u64, queues: usize, limits: &QueueLimits) -> bool {
    let cap = limits.max_total_bytes;
    if total + size <= cap {
        return true;
    }
    let queues = queues as u64 + u64::from(d.count == 0);
    let share = cap / queues.max(1);
    d.bytes + size <= share && total + size <= cap.saturating_mul(2)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(bytes: u64) -> Depth {
        Depth {
            count: u64::from(bytes > 0),
            bytes,
        }
    }

    #[test]
    fn at_the_cap_only_tunnels_under_their_share_queue_and_never_past_twice_it() {
        let limits = QueueLimits {
            max_total_bytes: 1000,
            ..QueueLimits::default()
        };
        // Under the cap anything fits, even a tunnel far over its share.
        assert!(fair_share_fits(depth(900), 50, 950, 2, &limits));
        // At the cap: four queues, shares of 250.
        assert!(!fair_share_fits(depth(700), 10, 1000, 4, &limits));
        assert!(fair_share_fits(depth(100), 150, 1000, 4, &limits));
        assert!(!fair_share_fits(depth(100), 151, 1000, 4, &limits));
        // A tunnel with no queue yet counts itself: five queues, shares of 200.
        assert!(fair_share_fits(depth(0), 200, 1000, 4, &limits));
        assert!(!fair_share_fits(depth(0), 201, 1000, 4, &limits));
        // Twice the cap is the ceiling, whatever the share.
        assert!(!fair_share_fits(depth(0), 10, 1995, 1, &limits));
    }
}
