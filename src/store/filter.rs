//! Which deliveries a query returns ([`Filter`]) and the SQL `WHERE` clause it becomes.

/// Which deliveries a query returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this event type.
    pub event: Option<String>,
    /// Only deliveries received at or after this Unix ms.
    pub since_ms: Option<i64>,
    /// Only deliveries whose event, resource id, path, status or body contain this text.
    pub text: Option<String>,
    /// Only deliveries with `seq` below this.
    pub before_seq: Option<i64>,
    /// Only deliveries with `seq` above this.
    pub after_seq: Option<i64>,
    /// Only originals with an answer: no replays (nor test runs), nothing `--events` skipped,
    /// nothing the local server left unanswered. Limits count after this, not before.
    pub answered_originals: bool,
    /// Only deliveries whose local answer is of this kind.
    pub status: Option<StatusFilter>,
}

/// Which local answers a [`Filter`] keeps: a class (`2xx`), one status (`404`), or none (`err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Statuses from `100 * n` to `100 * n + 99`.
    Class(u16),
    /// Exactly this status.
    Exact(u16),
    /// No answer: the local server could not be reached, or it did not answer in time (not
    /// deliveries `--events` skipped, which were answered 200).
    NoAnswer,
}

impl StatusFilter {
    /// `2xx`…`5xx` (any case), `err`, or a status from 100 to 599.
    pub fn parse(text: &str) -> Option<Self> {
        let lower = text.to_ascii_lowercase();
        if lower == "err" {
            return Some(StatusFilter::NoAnswer);
        }
        if let Some(digit) = lower.strip_suffix("xx") {
            return match digit.parse::<u16>() {
                Ok(n @ 1..=5) if digit.len() == 1 => Some(StatusFilter::Class(n)),
                _ => None,
            };
        }
        match lower.parse::<u16>() {
            Ok(n @ 100..=599) if lower.len() == 3 => Some(StatusFilter::Exact(n)),
            _ => None,
        }
    }
}

pub(super) fn where_clause(filter: &Filter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut conds = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(event) = &filter.event {
        args.push(Value::Text(event.clone()));
        conds.push(format!("event = ?{}", args.len()));
    }
    if let Some(since) = filter.since_ms {
        args.push(Value::Integer(since));
        conds.push(format!("received_at_ms >= ?{}", args.len()));
    }
    if let Some(before) = filter.before_seq {
        args.push(Value::Integer(before));
        conds.push(format!("seq < ?{}", args.len()));
    }
    if let Some(after) = filter.after_seq {
        args.push(Value::Integer(after));
        conds.push(format!("seq > ?{}", args.len()));
    }
    match filter.status {
        Some(StatusFilter::Class(n)) => {
            args.push(Value::Integer(i64::from(n) * 100));
            let low = args.len();
            args.push(Value::Integer(i64::from(n) * 100 + 100));
            conds.push(format!("status >= ?{low} AND status < ?{}", args.len()));
        }
        Some(StatusFilter::Exact(n)) => {
            args.push(Value::Integer(i64::from(n)));
            conds.push(format!("status = ?{}", args.len()));
        }
        Some(StatusFilter::NoAnswer) => conds.push("status IS NULL AND skipped = 0".to_string()),
        None => {}
    }
    if filter.answered_originals {
        conds.push("source != 'replay' AND skipped = 0 AND status IS NOT NULL".to_string());
    }
    if let Some(text) = filter.text.as_ref().filter(|t| !t.is_empty()) {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        args.push(Value::Text(format!("%{escaped}%")));
        let n = args.len();
        conds.push(format!(
            "(event LIKE ?{n} ESCAPE '\\' OR resource_id LIKE ?{n} ESCAPE '\\' OR path LIKE ?{n} ESCAPE '\\' \
             OR CAST(status AS TEXT) LIKE ?{n} ESCAPE '\\' OR CAST(req_body AS TEXT) LIKE ?{n} ESCAPE '\\')"
        ));
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (clause, args)
}
