//! `illumitunnel events`: captured deliveries, newest first.

use illumitunnel::event::EventType;
use illumitunnel::store::{CaptureStore, Filter};

use super::{ignore_broken_pipe, Ctx};
use crate::cli::EventsArgs;
use crate::output::{self, Format};
use crate::usage::UsageError;

/// Lists deliveries from the capture store.
pub fn run(args: EventsArgs, ctx: &Ctx) -> anyhow::Result<()> {
    if let Some(event) = &args.event {
        if EventType::parse(event).is_none() {
            return Err(UsageError(format!(
                "unknown event type {event:?}; use one of {}",
                EventType::list()
            ))
            .into());
        }
    }
    let store = CaptureStore::open(&ctx.store)?;
    let filter = Filter {
        event: args.event.clone(),
        ..Filter::default()
    };
    let deliveries = store.list_newest(&filter, args.limit)?;
    if deliveries.is_empty() && !args.json {
        let what = args
            .event
            .as_deref()
            .map(|e| format!("{e} deliveries"))
            .unwrap_or_else(|| "deliveries".into());
        eprintln!("no {what} in {}", ctx.store.display());
        return Ok(());
    }
    let format = if args.json {
        Format::Json
    } else {
        Format::Lines
    };
    let stdout = std::io::stdout();
    ignore_broken_pipe(output::write_listing(
        &mut stdout.lock(),
        &deliveries,
        format,
        &ctx.clock,
        illumitunnel::now_ms(),
    ))
}
