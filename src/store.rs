//! The capture store: every delivery, replay and trigger with its answer, in one SQLite file
//! (WAL, created 0600). Writers batch many deliveries into one transaction; readers page by
//! `seq` so a view never holds more than its window.

mod error;
mod files;
mod filter;
mod rows;
mod schema;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

pub use self::error::StoreError;
use self::files::{create_private, sidecar};
use self::filter::where_clause;
pub use self::filter::{Filter, StatusFilter};
use self::rows::{
    read_row, repeat_of, write_large, BodyParam, COLUMNS, REQUEST_PART, RESPONSE_PART,
    SUMMARY_COLUMNS,
};
use crate::delivery::{Delivery, DeliveryId, Source};
use crate::headers::encode_blob;

/// What [`CaptureStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Deliveries deleted.
    pub deliveries: u64,
    /// Bytes the file gave back to the file system.
    pub released_bytes: u64,
}

/// Deliveries counted by outcome, for the inspector header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// All deliveries.
    pub total: u64,
    /// Local answer 2xx (or 1xx/3xx).
    pub ok: u64,
    /// Local answer 4xx.
    pub client_error: u64,
    /// Local answer 5xx.
    pub server_error: u64,
    /// No local answer.
    pub failed: u64,
    /// Filtered out by `--events`.
    pub skipped: u64,
}

/// `PRAGMA auto_vacuum` value for incremental vacuum.
const AUTO_VACUUM_INCREMENTAL: i64 = 2;
/// Page size of a new store. A delivery row is ~3 KB: with SQLite's 4 KiB pages a commit of
/// 150 deliveries wrote ~280 WAL frames (two `pwrite`s each) and read ~70 pages back; 16 KiB
/// pages cut both threefold for the same bytes (docs/benchmarks.md, "capture store").
const PAGE_SIZE: i64 = 16 * 1024;
/// WAL bytes between automatic checkpoints.
const CHECKPOINT_BYTES: i64 = 32 * 1024 * 1024;

/// An open capture store.
pub struct CaptureStore {
    conn: Connection,
    path: PathBuf,
}

impl CaptureStore {
    /// Opens (creating with mode 0600 if needed) and migrates the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |cause: String| StoreError::Open {
            path: path.to_path_buf(),
            cause,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::paths::create_private_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        create_private(path).map_err(|e| open_err(e.to_string()))?;
        // SQLite creates `-wal` and `-shm` with the store's own mode: a store an older release
        // left 0644 (and any leftovers of it) becomes 0600 before they are opened.
        for file in [
            path.to_path_buf(),
            sidecar(path, "-wal"),
            sidecar(path, "-shm"),
        ] {
            crate::paths::tighten_file(&file).map_err(|e| open_err(e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        // SQLite opens a file it cannot write read-only: the clear "not writable" error now,
        // instead of "readonly database" at the first write.
        if conn
            .is_readonly(rusqlite::DatabaseName::Main)
            .unwrap_or(false)
        {
            return Err(open_err(
                std::io::Error::from(std::io::ErrorKind::PermissionDenied).to_string(),
            ));
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Both only take effect on a file with no tables yet, page size first (setting
        // auto_vacuum fixes it); older stores switch to incremental vacuum in `migrate` and
        // keep their page size.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoint every ~32 MiB of WAL instead of SQLite's 4 MiB: the pages a burst of
        // deliveries rewrites (index leaves, the table's last page) are copied once per
        // checkpoint, so fewer checkpoints copy far less (docs/benchmarks.md).
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            CHECKPOINT_BYTES / page_size.max(512),
        )?;
        let mut store = CaptureStore {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = schema::MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        // Retention needs pages given back to the file system: a store made before
        // `auto_vacuum = INCREMENTAL` converts once (VACUUM cannot run in a transaction). Best
        // effort: while another process writes, it waits for the next open, and until then
        // pruning still deletes but the file does not shrink.
        let auto_vacuum: i64 = self
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if auto_vacuum != AUTO_VACUUM_INCREMENTAL {
            let _ = self
                .conn
                .execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;");
        }
        Ok(())
    }

    /// Keeps the write-ahead log small beside a store capped at `max_bytes`: a checkpoint once
    /// it holds an eighth of the cap (never more than the usual 32 MiB), and the log file cut
    /// back to that size after each, so the database and its log together stay near the cap.
    pub fn limit_wal(&self, max_bytes: u64) -> Result<(), StoreError> {
        let limit = (max_bytes / 8).min(CHECKPOINT_BYTES as u64) as i64;
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        self.conn.pragma_update(
            None,
            "wal_autocheckpoint",
            (limit / page_size.max(512)).max(1),
        )?;
        self.conn
            .query_row(&format!("PRAGMA journal_size_limit = {limit}"), [], |_| {
                Ok(())
            })?;
        Ok(())
    }

    /// Bytes the deliveries occupy: the file's pages minus its free list.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let pragma = |name: &str| -> Result<u64, StoreError> {
            Ok(self
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))?
                .max(0) as u64)
        };
        let pages = pragma("page_count")?.saturating_sub(pragma("freelist_count")?);
        Ok(pages * pragma("page_size")?)
    }

    /// Bytes the store takes on disk: the file and its WAL, which holds every commit since the
    /// last checkpoint (with 16 KiB pages, ~8 pages of index and table a commit beside the rows).
    pub fn disk_bytes(&self) -> u64 {
        let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        len(&self.path) + len(Path::new(&wal))
    }

    /// Deletes deliveries received before `older_than_ms`, then the oldest until what is left
    /// fits in `max_bytes` (the newest delivery always stays), and gives the freed pages back
    /// to the file system so the file shrinks. When the file and its WAL together still take
    /// more than `max_bytes`, the WAL is folded into the file and emptied.
    pub fn prune(&mut self, max_bytes: u64, older_than_ms: i64) -> Result<Pruned, StoreError> {
        let before = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM large_bodies WHERE seq IN (SELECT seq FROM deliveries WHERE received_at_ms < ?1)",
            [older_than_ms],
        )?;
        let mut deleted = tx.execute(
            "DELETE FROM deliveries WHERE received_at_ms < ?1",
            [older_than_ms],
        )? as u64;
        loop {
            let used = {
                let q = |name: &str| -> rusqlite::Result<i64> {
                    tx.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                };
                (q("page_count")? - q("freelist_count")?).max(0) as u64
                    * q("page_size")?.max(0) as u64
            };
            if used <= max_bytes {
                break;
            }
            // A few at a time: large bodies free many pages each, small ones few.
            let oldest: Vec<i64> = tx
                .prepare_cached(
                    "SELECT seq FROM deliveries WHERE seq < (SELECT MAX(seq) FROM deliveries) ORDER BY seq LIMIT 16",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if oldest.is_empty() {
                break;
            }
            for seq in &oldest {
                tx.execute("DELETE FROM large_bodies WHERE seq = ?1", [seq])?;
                deleted += tx.execute("DELETE FROM deliveries WHERE seq = ?1", [seq])? as u64;
            }
        }
        tx.commit()?;
        // A WAL that grew past the cap before anything was deleted (SQLite checkpoints only
        // every 32 MiB) is emptied too, and free pages go with it, so that the file and WAL fit
        // afterwards and the next commit does not land here again.
        if deleted > 0 || self.disk_bytes() > max_bytes {
            // Each step of this pragma frees pages: run it to the end.
            let mut vacuum = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut steps = vacuum.query([])?;
            while steps.next()?.is_some() {}
            drop(steps);
            drop(vacuum);
            // In WAL mode the file is truncated when the freed pages are checkpointed.
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        let after = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        Ok(Pruned {
            deliveries: deleted,
            released_bytes: before.saturating_sub(after),
        })
    }

    /// Opens a store that cannot grow past `max_pages` pages, so tests can fill it for real.
    #[cfg(any(test, feature = "testkit"))]
    pub fn open_capped(path: &Path, max_pages: u32) -> Result<Self, StoreError> {
        let store = Self::open(path)?;
        store
            .conn
            .query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |_| {
                Ok(())
            })?;
        Ok(store)
    }

    /// Inserts deliveries in one transaction. Sets each one's `seq` and `duplicate` flag;
    /// returns, per delivery, whether it was new (false: that id was already stored).
    pub fn insert_batch(&mut self, deliveries: &mut [Delivery]) -> Result<Vec<bool>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut inserted = Vec::with_capacity(deliveries.len());
        {
            let mut earlier = tx.prepare_cached(
                "SELECT status, skipped, duration_us FROM deliveries \
                 WHERE dedup_key = ?1 AND source != 'replay' ORDER BY seq",
            )?;
            let mut insert = tx.prepare_cached(&format!(
                "INSERT OR IGNORE INTO deliveries ({}) VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
                COLUMNS
            ))?;
            for d in deliveries.iter_mut() {
                if d.source != Source::Replay {
                    if let Some(key) = &d.dedup_key {
                        (d.duplicate, d.retry) = repeat_of(&mut earlier, key)?;
                    }
                }
                let resp = d.response.as_ref();
                let req_body = BodyParam::new(&d.request.body);
                let resp_body = resp.map(|r| BodyParam::new(&r.body));
                let n = insert.execute(params![
                    d.id.as_str(),
                    d.received_at_ms,
                    d.tunnel,
                    d.source.as_str(),
                    d.replay_of.as_ref().map(DeliveryId::as_str),
                    d.queued,
                    d.event,
                    d.resource_id,
                    d.dedup_key,
                    d.duplicate,
                    d.skipped,
                    d.target,
                    d.request.method,
                    d.request.path,
                    d.request.query,
                    encode_blob(&d.request.headers),
                    req_body,
                    resp.map(|r| r.status),
                    resp.map(|r| encode_blob(&r.headers)),
                    resp_body,
                    d.error,
                    d.duration_us,
                    d.retry,
                ])?;
                if n == 1 {
                    d.seq = tx.last_insert_rowid();
                    if let BodyParam::Large(body) = req_body {
                        write_large(&tx, d.seq, REQUEST_PART, body)?;
                    }
                    if let Some(BodyParam::Large(body)) = resp_body {
                        write_large(&tx, d.seq, RESPONSE_PART, body)?;
                    }
                }
                inserted.push(n == 1);
            }
        }
        tx.commit()?;
        Ok(inserted)
    }

    /// Runs `write` with every commit durable: `synchronous = FULL`, so each commit returns only
    /// after the write-ahead log is fsynced. For deliveries the relay drops once it hears
    /// `Recorded`; other commits stay at `NORMAL` (durable at the next checkpoint or durable
    /// commit), which a power cut may undo and nobody else holds a copy of.
    pub fn durably<T>(
        &mut self,
        write: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let written = write(self);
        let restored = self.conn.pragma_update(None, "synchronous", "NORMAL");
        let written = written?;
        restored?;
        Ok(written)
    }

    /// Makes every commit so far durable: fsyncs the write-ahead log, where commits made at
    /// `synchronous = NORMAL` wait for the next checkpoint (which fsyncs what it copies).
    pub fn sync(&self) -> std::io::Result<()> {
        match std::fs::File::open(sidecar(&self.path, "-wal")) {
            Ok(wal) => wal.sync_data(),
            // No log: every commit is in the database file, fsynced by its checkpoint.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether a delivery with this exact id is stored.
    pub fn contains(&self, id: &DeliveryId) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1")?;
        Ok(stmt.exists([id.as_str()])?)
    }

    /// The delivery with this id, or the only one whose id starts with it.
    pub fn get(&self, id_or_prefix: &str) -> Result<Option<Delivery>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = ?1");
        if let Some(mut d) = self
            .conn
            .query_row(&sql, [id_or_prefix], read_row)
            .optional()?
        {
            self.fill_large(&mut d)?;
            return Ok(Some(d));
        }
        if id_or_prefix.is_empty()
            || !id_or_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM deliveries WHERE id >= ?1 AND id < ?2 ORDER BY seq LIMIT 2"
        );
        let upper = format!("{id_or_prefix}\u{10ffff}");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut found: Vec<Delivery> = stmt
            .query_map([id_or_prefix, upper.as_str()], read_row)?
            .collect::<Result<_, _>>()?;
        for d in &mut found {
            self.fill_large(d)?;
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(StoreError::Ambiguous(id_or_prefix.to_string())),
        }
    }

    /// Deliveries matching `filter`, newest first, at most `limit`.
    pub fn list_newest(&self, filter: &Filter, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.query(filter, "ORDER BY seq DESC", limit)
    }

    /// Deliveries matching `filter`, oldest first, at most `limit`.
    pub fn list_oldest(&self, filter: &Filter, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.query(filter, "ORDER BY seq ASC", limit)
    }

    /// Deliveries matching `filter`, newest first, at most `limit`, without their bodies (both
    /// read as empty): a listing that reads a page of rows, never a body kept apart.
    pub fn list_newest_summaries(
        &self,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.summaries(filter, "ORDER BY seq DESC", limit)
    }

    /// Deliveries matching `filter`, oldest first, at most `limit`, without their bodies.
    pub fn list_oldest_summaries(
        &self,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.summaries(filter, "ORDER BY seq ASC", limit)
    }

    fn summaries(
        &self,
        filter: &Filter,
        order: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.select(SUMMARY_COLUMNS, filter, order, limit)
    }

    /// `columns` of the deliveries matching `filter`, in `order`, at most `limit`.
    fn select(
        &self,
        columns: &str,
        filter: &Filter,
        order: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (clause, mut args) = where_clause(filter);
        args.push(rusqlite::types::Value::Integer(
            limit.min(i64::MAX as usize) as i64,
        ));
        let sql = format!(
            "SELECT {columns} FROM deliveries {clause} {order} LIMIT ?{}",
            args.len()
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(args.iter()), read_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The `seq` of the newest delivery stored, 0 when there is none.
    pub fn newest_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM deliveries", [], |r| {
                r.get(0)
            })?)
    }

    /// How many deliveries match `filter`.
    pub fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
        let (clause, args) = where_clause(filter);
        let sql = format!("SELECT COUNT(*) FROM deliveries {clause}");
        Ok(self
            .conn
            .query_row(&sql, params_from_iter(args.iter()), |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Deliveries counted by outcome.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let sql = "SELECT COUNT(*),
            COALESCE(SUM(skipped = 0 AND status IS NOT NULL AND status < 400), 0),
            COALESCE(SUM(skipped = 0 AND status >= 400 AND status < 500), 0),
            COALESCE(SUM(skipped = 0 AND status >= 500), 0),
            COALESCE(SUM(skipped = 0 AND status IS NULL), 0),
            COALESCE(SUM(skipped), 0)
            FROM deliveries";
        Ok(self.conn.query_row(sql, [], |r| {
            Ok(Counts {
                total: r.get::<_, i64>(0)? as u64,
                ok: r.get::<_, i64>(1)? as u64,
                client_error: r.get::<_, i64>(2)? as u64,
                server_error: r.get::<_, i64>(3)? as u64,
                failed: r.get::<_, i64>(4)? as u64,
                skipped: r.get::<_, i64>(5)? as u64,
            })
        })?)
    }

    fn query(
        &self,
        filter: &Filter,
        order: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut found = self.select(COLUMNS, filter, order, limit)?;
        for d in &mut found {
            self.fill_large(d)?;
        }
        Ok(found)
    }

    /// Puts back bodies kept in `large_bodies` (rows whose body column is empty).
    fn fill_large(&self, d: &mut Delivery) -> Result<(), StoreError> {
        let response_empty = d.response.as_ref().is_some_and(|r| r.body.is_empty());
        if !d.request.body.is_empty() && !response_empty {
            return Ok(());
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT part, data FROM large_bodies WHERE seq = ?1")?;
        let mut rows = stmt.query([d.seq])?;
        while let Some(row) = rows.next()? {
            let body = Bytes::from(row.get::<_, Vec<u8>>(1)?);
            match (row.get::<_, i64>(0)?, d.response.as_mut()) {
                (REQUEST_PART, _) => d.request.body = body,
                (RESPONSE_PART, Some(r)) => r.body = body,
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
