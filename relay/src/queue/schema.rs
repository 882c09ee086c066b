//! The relay database's schema and its migrations, applied in order and tracked in
//! `user_version`.

/// Each entry moves the schema from version `index` to `index + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: tunnel ownership and the offline queue. `seq` is AUTOINCREMENT so a sequence number is
    // never reused after a delete: a redelivery cursor (`seq > last sent`) never skips a row.
    "CREATE TABLE tunnels (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        claimed_at_ms INTEGER NOT NULL,
        expired_unreported INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE queued (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tunnel TEXT NOT NULL,
        id TEXT NOT NULL,
        received_at_ms INTEGER NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        query TEXT NOT NULL,
        headers BLOB NOT NULL,
        body BLOB NOT NULL,
        size INTEGER NOT NULL
    );
    CREATE INDEX queued_tunnel_seq ON queued(tunnel, seq);
    CREATE UNIQUE INDEX queued_tunnel_id ON queued(tunnel, id);
    CREATE INDEX queued_received ON queued(received_at_ms);",
    // 2: failed attempts per queued delivery (a delivery that ends the client's session or is
    // rejected three times in a row is set aside) and the dead letters set aside.
    "ALTER TABLE queued ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE dead_letters (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tunnel TEXT NOT NULL,
        id TEXT NOT NULL,
        received_at_ms INTEGER NOT NULL,
        dead_at_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        query TEXT NOT NULL,
        headers BLOB NOT NULL,
        body BLOB NOT NULL,
        size INTEGER NOT NULL
    );
    CREATE INDEX dead_letters_tunnel ON dead_letters(tunnel, seq);
    CREATE INDEX dead_letters_dead_at ON dead_letters(dead_at_ms);",
    // 3: when each tunnel's owner last connected, so a name unused for --tunnel-ttl is released.
    // Older databases never tracked it: every name gets a full TTL from the upgrade.
    "ALTER TABLE tunnels ADD COLUMN last_seen_ms INTEGER NOT NULL DEFAULT 0;
    UPDATE tunnels SET last_seen_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000;",
    // 4: client tokens added with `illumitunnel-relay token add`: a name to revoke by and the
    // token's SHA-256 in hex; the token itself is never stored.
    "CREATE TABLE tokens (
        name TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL
    );",
    // 5: --tunnel-ttl forgets a tunnel's queue but keeps its owner (`dormant`), so only the
    // same token or claim key takes the name back; `tunnel release NAME` deletes the owner
    // and notes the name in `released`, which a running relay reads to forget it too.
    "ALTER TABLE tunnels ADD COLUMN dormant INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE released (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        released_at_ms INTEGER NOT NULL
    );",
];
