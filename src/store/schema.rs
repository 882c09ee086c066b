//! Capture store schema and its migrations, applied in order and tracked in `user_version`.

/// Each entry moves the schema from version `index` to `index + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: deliveries with request, response and the IllumiChat fields the views filter on.
    "CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        received_at_ms INTEGER NOT NULL,
        tunnel TEXT,
        source TEXT NOT NULL,
        replay_of TEXT,
        queued INTEGER NOT NULL DEFAULT 0,
        event TEXT,
        resource_id TEXT,
        dedup_key TEXT,
        duplicate INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0,
        target TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        query TEXT NOT NULL,
        req_headers BLOB NOT NULL,
        req_body BLOB NOT NULL,
        status INTEGER,
        resp_headers BLOB,
        resp_body BLOB,
        error TEXT,
        duration_us INTEGER NOT NULL
    );
    CREATE INDEX deliveries_dedup ON deliveries(dedup_key) WHERE dedup_key IS NOT NULL;
    CREATE INDEX deliveries_event ON deliveries(event, seq);
    CREATE INDEX deliveries_received ON deliveries(received_at_ms);",
    // 2: bodies over 256 KiB live apart, written in slices, so recording one never holds it
    // in memory twice more (see `BodyParam`). `part` 0 is the request body, 1 the response's.
    "CREATE TABLE large_bodies (
        seq INTEGER NOT NULL,
        part INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (seq, part)
    );",
    // 3: IllumiChat's retry number, so a retry (every earlier attempt failed) is told apart
    // from a true duplicate (an earlier one was delivered). Older rows read NULL.
    "ALTER TABLE deliveries ADD COLUMN retry INTEGER;",
];
