//! `illumitunnel export`: captured deliveries, oldest first, as a HAR 1.2 log (`--har`) or as
//! one `show --json` object a line (`--jsonl`), filtered by `--event` and `--since`. Secret
//! header values are redacted unless `--include-secrets`; the file is readable by the user only.

use illumitunnel::store::{CaptureStore, Filter};
use illumitunnel::Delivery;

use super::{parse_event_type, since_ms, write_private, written_summary, Ctx};
use crate::cli::ExportArgs;

/// Most deliveries one export holds.
const MAX_EXPORT: usize = 100_000;

/// Writes the file and says how many deliveries it holds on stderr.
pub fn run(args: ExportArgs, ctx: &Ctx) -> anyhow::Result<()> {
    if let Some(event) = &args.event {
        parse_event_type(event)?;
    }
    let filter = Filter {
        event: args.event.clone(),
        since_ms: since_ms(args.since.as_deref())?,
        ..Filter::default()
    };
    let store = CaptureStore::open(&ctx.store)?;
    let mut deliveries = store.list_oldest(&filter, MAX_EXPORT)?;
    let redacted: usize = if args.include_secrets {
        0
    } else {
        deliveries.iter_mut().map(Delivery::redact_secrets).sum()
    };
    let (path, text) = match (&args.har, &args.jsonl) {
        (Some(path), _) => {
            let log = illumitunnel::har::log(&deliveries, env!("CARGO_PKG_VERSION"));
            let mut text = serde_json::to_string_pretty(&log)?;
            text.push('\n');
            (path, text)
        }
        (None, Some(path)) => {
            let mut text = String::new();
            for d in &deliveries {
                text.push_str(&d.detail_json().to_string());
                text.push('\n');
            }
            (path, text)
        }
        (None, None) => {
            return Err(super::UsageError("pass --har FILE or --jsonl FILE".into()).into())
        }
    };
    write_private(path, &text)?;
    let (summary, shown) = written_summary(deliveries.len(), redacted);
    eprintln!("exported {summary} to {}{shown}", path.display());
    Ok(())
}
