//! One module per subcommand, each with `run(args, ctx)`, plus what they share.

pub mod docs;
pub mod events;
pub mod export;
pub mod listen;
pub mod login;
pub mod replay;
pub mod show;
pub mod status;
pub mod suite;
pub mod test;
pub mod trigger;
pub mod webhooks;

use std::path::PathBuf;

use crate::output::LocalClock;
use crate::usage::UsageError;

/// What every command gets besides its own arguments.
pub struct Ctx {
    /// Capture store file (`--store`, else the platform default).
    pub store: PathBuf,
    /// Local time for printed deliveries.
    pub clock: LocalClock,
}

/// An outcome the command has already reported on stdout (deliveries that differ, attempts that
/// all failed): exit 1 with nothing more printed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reported(pub String);

/// The delivery whose id is, or uniquely starts with, `id`; an unknown or ambiguous id is a
/// usage error (exit 2) that says how to find the right one.
pub fn delivery_by_id(
    store: &illumitunnel::store::CaptureStore,
    id: &str,
) -> anyhow::Result<illumitunnel::Delivery> {
    use illumitunnel::store::StoreError;
    match store.get(id) {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(UsageError(format!(
            "no delivery with id {}; list ids with illumitunnel events",
            id.escape_debug()
        ))
        .into()),
        Err(e @ StoreError::Ambiguous(_)) => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

/// Treats a closed stdout (`illumitunnel events | head`) as a normal end.
pub fn ignore_broken_pipe(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Checks an event type name; a usage error lists the six.
pub fn parse_event_type(name: &str) -> Result<illumitunnel::event::EventType, UsageError> {
    illumitunnel::event::EventType::parse(name.trim()).ok_or_else(|| {
        UsageError(format!(
            "unknown event type {:?}; use one of {}",
            name.trim(),
            illumitunnel::event::EventType::list()
        ))
    })
}

/// `--since 15m` as the earliest Unix ms to include.
pub fn since_ms(since: Option<&str>) -> Result<Option<i64>, UsageError> {
    let Some(text) = since else { return Ok(None) };
    let d = illumitunnel::parse_duration(text).ok_or_else(|| {
        UsageError(format!(
            "invalid --since {text:?}; write a number and a unit such as 30s, 15m, 1h30m or 7d"
        ))
    })?;
    Ok(Some(illumitunnel::now_ms().saturating_sub(
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
    )))
}

/// Writes `text` to a new file only the user can read (exports and suites hold request bodies).
pub fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let mut file = illumitunnel::paths::create_private(path).with_context(|| {
        format!(
            "could not write {}; check the folder exists and is writable",
            path.display()
        )
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.flush())
        .with_context(|| format!("could not write {}", path.display()))
}

/// `3 deliveries` and what redaction did (`; 1 secret header value redacted …`, or nothing), for
/// the line that says a file was written.
pub fn written_summary(count: usize, redacted: usize) -> (String, String) {
    let noun = if count == 1 { "delivery" } else { "deliveries" };
    let note = match redacted {
        0 => String::new(),
        1 => "; 1 secret header value redacted (--include-secrets keeps it)".to_string(),
        n => format!("; {n} secret header values redacted (--include-secrets keeps them)"),
    };
    (format!("{count} {noun}"), note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_combined_units_and_refuses_bare_numbers() {
        // The clock may tick between the reads: the cut-off lies between the two.
        let before = illumitunnel::now_ms();
        let since = since_ms(Some("1h30m")).unwrap().unwrap();
        let after = illumitunnel::now_ms();
        let window = before - 5_400_000..=after - 5_400_000;
        assert!(window.contains(&since), "{since} not in {window:?}");
        assert_eq!(since_ms(None).unwrap(), None);
        let err = since_ms(Some("90")).unwrap_err().to_string();
        assert!(err.contains("1h30m"), "{err}");
    }
}
