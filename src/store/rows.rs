//! One delivery as a `deliveries` row: the column list, reading a row back, and bodies over
//! 256 KiB, which go into `large_bodies` in slices instead of through a bound parameter.

use bytes::Bytes;
use rusqlite::{params, Row};

use crate::delivery::{Delivery, DeliveryId, RequestRecord, ResponseRecord, Source};
use crate::headers::decode_blob;

/// The `deliveries` columns, in the order [`read_row`] reads them.
pub(super) const COLUMNS: &str = "seq, id, received_at_ms, tunnel, source, replay_of, queued, event, resource_id, dedup_key, \
     duplicate, skipped, target, method, path, query, req_headers, req_body, status, resp_headers, resp_body, error, duration_us, retry";

/// [`COLUMNS`] with both bodies read as empty, for listings that show no body.
pub(super) const SUMMARY_COLUMNS: &str = "seq, id, received_at_ms, tunnel, source, replay_of, queued, event, resource_id, dedup_key, \
     duplicate, skipped, target, method, path, query, req_headers, X'' AS req_body, status, resp_headers, X'' AS resp_body, error, duration_us, retry";

/// Bodies above this go in through incremental blob I/O.
pub(super) const LARGE_BODY: usize = 256 * 1024;

/// A body as an insert parameter. Binding a large body would make SQLite copy it twice (its own
/// copy of the parameter, then the whole row as one record); a large body is instead left empty
/// in the row and written in slices into `large_bodies`, so recording a 10 MiB delivery does not
/// cost 20 MiB more memory.
#[derive(Clone, Copy)]
pub(super) enum BodyParam<'a> {
    Small(&'a [u8]),
    Large(&'a [u8]),
}

impl<'a> BodyParam<'a> {
    pub(super) fn new(body: &'a [u8]) -> Self {
        if body.len() > LARGE_BODY {
            BodyParam::Large(body)
        } else {
            BodyParam::Small(body)
        }
    }
}

impl rusqlite::ToSql for BodyParam<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            BodyParam::Small(body) => body.to_sql(),
            BodyParam::Large(_) => Ok(rusqlite::types::ToSqlOutput::from(&[][..])),
        }
    }
}

/// `large_bodies.part` of a request body.
pub(super) const REQUEST_PART: i64 = 0;
/// `large_bodies.part` of a response body.
pub(super) const RESPONSE_PART: i64 = 1;

/// Writes a large body into `large_bodies` in slices (see [`BodyParam`]).
pub(super) fn write_large(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    part: i64,
    body: &[u8],
) -> rusqlite::Result<()> {
    let len = i64::try_from(body.len()).unwrap_or(i64::MAX);
    // A zero-filled blob as the row's last column stays unexpanded until written in place.
    tx.prepare_cached(
        "INSERT OR REPLACE INTO large_bodies (seq, part, data) VALUES (?1, ?2, zeroblob(?3))",
    )?
    .execute(params![seq, part, len])?;
    let rowid = tx.last_insert_rowid();
    let mut blob = tx.blob_open(
        rusqlite::DatabaseName::Main,
        "large_bodies",
        "data",
        rowid,
        false,
    )?;
    for slice in body.chunks(64 * 1024) {
        std::io::Write::write_all(&mut blob, slice)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    }
    Ok(())
}

/// A `deliveries` row selected with [`COLUMNS`] as a delivery (large bodies still to fill).
pub(super) fn read_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let headers = |i: usize| -> rusqlite::Result<Vec<crate::headers::Header>> {
        let blob: Vec<u8> = r.get(i)?;
        Ok(decode_blob(&blob).unwrap_or_default())
    };
    let status: Option<u16> = r.get(18)?;
    let response = match status {
        Some(status) => Some(ResponseRecord {
            status,
            headers: headers(19)?,
            body: Bytes::from(r.get::<_, Vec<u8>>(20)?),
        }),
        None => None,
    };
    let id: String = r.get(1)?;
    let replay_of: Option<String> = r.get(5)?;
    Ok(Delivery {
        seq: r.get(0)?,
        id: DeliveryId::parse(&id).unwrap_or_else(DeliveryId::generate),
        received_at_ms: r.get(2)?,
        tunnel: r.get(3)?,
        source: Source::parse(&r.get::<_, String>(4)?),
        replay_of: replay_of.as_deref().and_then(DeliveryId::parse),
        queued: r.get(6)?,
        event: r.get(7)?,
        resource_id: r.get(8)?,
        dedup_key: r.get(9)?,
        duplicate: r.get(10)?,
        skipped: r.get(11)?,
        target: r.get(12)?,
        request: RequestRecord {
            method: r.get(13)?,
            path: r.get(14)?,
            query: r.get(15)?,
            headers: headers(16)?,
            body: Bytes::from(r.get::<_, Vec<u8>>(17)?),
        },
        response,
        error: r.get(21)?,
        duration_us: r.get(22)?,
        retry: r.get(23)?,
    })
}

/// An earlier delivery with the same dedup key, as much of it as tells a retry from a duplicate.
struct Attempt {
    /// The local answer's status, if any.
    pub status: Option<u16>,
    /// Whether `--events` skipped it (answered 200 without forwarding).
    pub skipped: bool,
    /// How long the answer took.
    pub duration_us: i64,
}

impl Attempt {
    /// Whether IllumiChat would count it delivered: skipped (answered 200 at once), or a 2xx
    /// within its timeout. Anything else, IllumiChat retries.
    fn delivered(&self) -> bool {
        let in_time = self.duration_us <= crate::event::SENDER_TIMEOUT.as_micros() as i64;
        self.skipped || (self.status.is_some_and(|s| (200..300).contains(&s)) && in_time)
    }
}

/// Earlier attempts of one event read at most: IllumiChat retries three times, and a sender
/// that repeats one event id without end must not make every insert read all of them.
pub(super) const MAX_ATTEMPTS_READ: usize = 64;

/// `(duplicate, retry)` for a delivery with dedup key `key`, from the earlier non-replay
/// deliveries `earlier` (a statement taking the key) finds, oldest first: none, a first attempt;
/// one delivered, a true duplicate; all failed, IllumiChat's retry number (how many there were,
/// counted up to [`MAX_ATTEMPTS_READ`]). Reading stops at the first delivered one, so an event
/// delivered once and repeated many times costs one row, not all of them.
pub(super) fn repeat_of(
    earlier: &mut rusqlite::CachedStatement<'_>,
    key: &str,
) -> rusqlite::Result<(bool, Option<u32>)> {
    let mut rows = earlier.query([key])?;
    let mut failed = 0u32;
    while let Some(row) = rows.next()? {
        let attempt = Attempt {
            status: row.get(0)?,
            skipped: row.get(1)?,
            duration_us: row.get(2)?,
        };
        if attempt.delivered() {
            return Ok((true, None));
        }
        failed += 1;
        if failed as usize >= MAX_ATTEMPTS_READ {
            break;
        }
    }
    Ok((false, (failed > 0).then_some(failed)))
}
