//! `illumitunnel suite save FILE (ID… | --event TYPE [--since D] | --last N)`: deliveries from
//! the capture store and their recorded answers as a suite file (`illumitunnel::suite`), oldest
//! first, for `test --suite` in a CI job. Secret header values are redacted as `export` redacts
//! them (`Delivery::redact_secrets`) unless `--include-secrets`. Also the selection `test`
//! shares: which stored deliveries can be tests.

use illumitunnel::store::{CaptureStore, Filter};
use illumitunnel::suite::Case;
use illumitunnel::Delivery;

use super::export::{report_written, shown_path, write_target, Written};
use super::{parse_event_type, since_ms, written_summary, Ctx};
use crate::cli::{SuiteAction, SuiteArgs};
use crate::usage::UsageError;

/// Most deliveries one selection holds.
const MAX_CASES: usize = 10_000;

/// Which stored deliveries to use.
pub struct Selection<'a> {
    /// Ids or unique prefixes.
    pub ids: &'a [String],
    /// Every delivery of this event type.
    pub event: Option<&'a str>,
    /// With `event`: how far back, as typed.
    pub since: Option<&'a str>,
    /// The newest N.
    pub last: Option<usize>,
}

/// Runs `suite save`.
pub fn run(args: SuiteArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let SuiteAction::Save(args) = args.action;
    let store = CaptureStore::open(&ctx.store)?;
    let selection = Selection {
        ids: &args.ids,
        event: args.event.as_deref(),
        since: args.since.as_deref(),
        last: args.last.map(|n| n as usize),
    };
    let mut deliveries = select(&store, &selection)?;
    for d in &mut deliveries {
        // A suite keeps no response headers, so none are counted as redacted either.
        if let Some(response) = d.response.as_mut() {
            response.headers.clear();
        }
    }
    let redacted: usize = if args.include_secrets {
        0
    } else {
        deliveries.iter_mut().map(Delivery::redact_secrets).sum()
    };
    let mut text = String::new();
    for case in deliveries.iter().filter_map(Case::from_delivery) {
        text.push_str(&case.to_line());
        text.push('\n');
    }
    let path = &args.file;
    write_target(path, &text)?;
    if args.json {
        return report_written(&Written {
            path,
            format: None,
            count: deliveries.len(),
            redacted,
        });
    }
    let (summary, shown) = written_summary(deliveries.len(), redacted);
    let run_with = if super::export::is_stdio(path) {
        "save it to a file and run it".to_string()
    } else {
        "run them".to_string()
    };
    eprintln!(
        "saved {summary} to {}{shown}; {run_with} with illumitunnel test --suite {} --forward-to URL",
        shown_path(path),
        if super::export::is_stdio(path) {
            "FILE".to_string()
        } else {
            path.display().to_string()
        }
    );
    Ok(())
}

/// The selected deliveries that have a recorded answer, oldest first. Replays (earlier test
/// runs among them) and deliveries `--events` skipped are left out unless named by id; an
/// unknown id or an empty selection is a usage error.
pub fn select(store: &CaptureStore, selection: &Selection<'_>) -> anyhow::Result<Vec<Delivery>> {
    let usable = Filter {
        answered_originals: true,
        ..Filter::default()
    };
    if let Some(n) = selection.last {
        let mut found = store.list_newest(&usable, n)?;
        if found.is_empty() {
            return Err(UsageError(format!(
                "no answered deliveries in {}; capture some with illumitunnel listen or trigger",
                store.path().display()
            ))
            .into());
        }
        found.reverse();
        return Ok(found);
    }
    if let Some(event) = selection.event {
        parse_event_type(event)?;
        let filter = Filter {
            event: Some(event.to_string()),
            since_ms: since_ms(selection.since)?,
            ..usable
        };
        let found = store.list_oldest(&filter, MAX_CASES + 1)?;
        if found.len() > MAX_CASES {
            return Err(UsageError(format!(
                "more than {MAX_CASES} {event} deliveries match; narrow them with --since DURATION"
            ))
            .into());
        }
        if found.is_empty() {
            let within = selection
                .since
                .map(|s| format!(" within {s}"))
                .unwrap_or_default();
            return Err(UsageError(format!(
                "no answered {event} deliveries{within}; list them with illumitunnel events --event {event}"
            ))
            .into());
        }
        return Ok(found);
    }
    selection.ids.iter().map(|id| by_id(store, id)).collect()
}

fn by_id(store: &CaptureStore, id: &str) -> anyhow::Result<Delivery> {
    let shown = id.escape_debug();
    let d = super::delivery_by_id(store, id)?;
    if d.response.is_none() {
        let why = d.error.as_deref().unwrap_or("no answer");
        return Err(UsageError(format!(
            "delivery {shown} has no recorded answer ({}); pick one your handler answered",
            illumitunnel::escape::escape(why)
        ))
        .into());
    }
    Ok(d)
}
