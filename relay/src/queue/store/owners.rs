//! Tunnel ownership in `relay.db`: who owns each name, claims by the one ownership rule, names
//! unused for `--tunnel-ttl` made dormant (queue forgotten, owner kept), and names the
//! operator released with `tunnel release`, noted for running relays.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use super::{QueueError, QueueStore};
use crate::auth::{decide, Claim, Owner};

/// How long a `tunnel release` stays noted for running relays to read (they read every 2 s).
const RELEASED_KEPT_MS: i64 = 24 * 3600 * 1000;

impl QueueStore {
    /// Every owned tunnel, for the registry at start-up.
    pub fn owners(&self) -> Result<Vec<(String, Owner)>, QueueError> {
        // Dormant names (unused for --tunnel-ttl) stay unknown until their owner comes back.
        let mut stmt = self
            .conn
            .prepare("SELECT name, owner FROM tunnels WHERE dormant = 0")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut owners = Vec::new();
        for row in rows {
            let (name, key) = row?;
            match Owner::parse_key(&key) {
                Some(owner) => owners.push((name, owner)),
                None => tracing::warn!(tunnel = %name, "ignoring an unreadable tunnel owner"),
            }
        }
        Ok(owners)
    }

    /// Claims `tunnel` by [`auth::decide`](crate::auth::decide): `presented` is what the
    /// client proves (token hash or kept claim key hash), `fresh` what it owns on a new claim.
    /// A new owner is recorded; a tunnel an older relay kept as anonymous changes hands here.
    pub fn claim(
        &mut self,
        tunnel: &str,
        presented: Option<Owner>,
        fresh: Owner,
        now_ms: i64,
    ) -> Result<Claim, QueueError> {
        let existing: Option<String> = self
            .conn
            .query_row("SELECT owner FROM tunnels WHERE name = ?1", [tunnel], |r| {
                r.get(0)
            })
            .optional()?;
        let current = match existing {
            None => None,
            // An owner this relay cannot read is nobody it could hand the tunnel to.
            Some(key) => match Owner::parse_key(&key) {
                Some(owner) => Some(owner),
                None => return Ok(Claim::Taken),
            },
        };
        let claim = decide(current, presented, fresh);
        match claim {
            Claim::Claimed(owner) => {
                if current.is_none() {
                    // A new owner starts empty: nothing queued while the name was released
                    // and not yet forgotten by a relay reaches it.
                    self.drop_unowned(tunnel)?;
                }
                self.conn.execute(
                    "INSERT INTO tunnels (name, owner, claimed_at_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?3)
                     ON CONFLICT (name) DO UPDATE SET owner = ?2, claimed_at_ms = ?3, last_seen_ms = ?3, dormant = 0",
                    params![tunnel, owner.key(), now_ms],
                )?;
            }
            // The owner of a dormant name takes it back.
            Claim::Joined(_) => {
                self.conn.execute(
                    "UPDATE tunnels SET dormant = 0, last_seen_ms = ?2 WHERE name = ?1 AND dormant = 1",
                    params![tunnel, now_ms],
                )?;
            }
            Claim::Taken => {}
        }
        Ok(claim)
    }

    /// Tunnels whose owner has not connected for `ttl`.
    pub fn stale_tunnels(&self, ttl: Duration, now_ms: i64) -> Result<Vec<String>, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM tunnels WHERE last_seen_ms < ?1 AND dormant = 0")?;
        let rows = stmt.query_map([stale_cutoff(ttl, now_ms)], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Forgets the queues and dead letters of those of `names` still unused for `ttl`, and
    /// makes them dormant: unknown to senders, but still their owner's to take back. Returns
    /// the names forgotten.
    pub fn release_stale(
        &mut self,
        ttl: Duration,
        names: &[String],
        now_ms: i64,
    ) -> Result<Vec<String>, QueueError> {
        let stale = self.stale_tunnels(ttl, now_ms)?;
        let mut released = Vec::new();
        for name in stale.into_iter().filter(|n| names.contains(n)) {
            for sql in [
                "DELETE FROM queued WHERE tunnel = ?1",
                "DELETE FROM dead_letters WHERE tunnel = ?1",
                "UPDATE tunnels SET dormant = 1, expired_unreported = 0 WHERE name = ?1",
            ] {
                self.conn.execute(sql, [&name])?;
            }
            self.forget_depth(&name);
            released.push(name);
        }
        Ok(released)
    }

    /// `tunnel release NAME`: deletes the name's owner, queue and dead letters, and notes the
    /// release for running relays. Returns how many queued deliveries went; `None` when no
    /// tunnel has the name.
    pub fn release(&mut self, name: &str, now_ms: i64) -> Result<Option<u64>, QueueError> {
        let owned = self
            .conn
            .execute("DELETE FROM tunnels WHERE name = ?1", [name])?;
        if owned == 0 {
            return Ok(None);
        }
        let dropped = self
            .conn
            .execute("DELETE FROM queued WHERE tunnel = ?1", [name])?;
        self.conn
            .execute("DELETE FROM dead_letters WHERE tunnel = ?1", [name])?;
        self.conn.execute(
            "DELETE FROM released WHERE released_at_ms < ?1",
            [now_ms.saturating_sub(RELEASED_KEPT_MS)],
        )?;
        self.conn.execute(
            "INSERT INTO released (name, released_at_ms) VALUES (?1, ?2)",
            params![name, now_ms],
        )?;
        self.forget_depth(name);
        Ok(Some(dropped as u64))
    }

    /// Names released by `tunnel release` after `after` (a `released` sequence number), with
    /// the last sequence number read. Rows queued for them since (a running relay still took
    /// deliveries until it read this) are dropped unless the name was claimed again.
    pub fn released_since(&mut self, after: i64) -> Result<(Vec<String>, i64), QueueError> {
        let rows: Vec<(i64, String)> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT seq, name FROM released WHERE seq > ?1 ORDER BY seq")?;
            let rows = stmt.query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let last = rows.last().map_or(after, |(seq, _)| *seq);
        let mut names = Vec::with_capacity(rows.len());
        for (_, name) in rows {
            self.drop_unowned(&name)?;
            names.push(name);
        }
        Ok((names, last))
    }

    /// Drops what was queued for `name` while it had no owner (a relay took deliveries for a
    /// released name until it forgot it), unless someone claimed it since.
    pub fn drop_unowned(&mut self, name: &str) -> Result<(), QueueError> {
        self.conn.execute(
            "DELETE FROM queued WHERE tunnel = ?1 AND NOT EXISTS (SELECT 1 FROM tunnels WHERE name = ?1)",
            [name],
        )?;
        self.reload_depth(name)
    }

    /// The newest `released` sequence number (0 when none).
    pub fn last_released(&self) -> Result<i64, QueueError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM released", [], |r| {
                r.get(0)
            })?)
    }

    fn forget_depth(&mut self, name: &str) {
        if let Some(depth) = self.depths.get(name).copied() {
            self.adjust(name, -(depth.count as i64), -(depth.bytes as i64));
        }
    }

    /// Reads one tunnel's depth from disk again (another process changed its rows).
    fn reload_depth(&mut self, name: &str) -> Result<(), QueueError> {
        let (count, bytes): (i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM queued WHERE tunnel = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let before = self.depth(name);
        self.adjust(
            name,
            count - before.count as i64,
            bytes - before.bytes as i64,
        );
        Ok(())
    }
}

/// Last-seen times before this are stale.
fn stale_cutoff(ttl: Duration, now_ms: i64) -> i64 {
    now_ms.saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}
