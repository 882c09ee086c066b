//! `illumitunnel replay`: stored deliveries sent to the local server again (see `crate::replay`
//! for where they go: the current `listen` target unless `--to-recorded`, and a line on stderr
//! names it when it differs from the recorded one), each recorded with `replay_of` and printed. `--edit` opens each body in
//! `$VISUAL`/`$EDITOR` first.

use std::io::Write;

use anyhow::Context as _;
use bytes::Bytes;
use illumitunnel::delivery::Source;
use illumitunnel::store::{CaptureStore, Filter};
use illumitunnel::Delivery;

use super::{delivery_by_id, ignore_broken_pipe, parse_event_type, since_ms, Ctx};
use crate::cli::ReplayArgs;
use crate::commands::listen::{forwarder_trusting, Running, TrustChoice};
use crate::forward::Target;
use crate::output::{self, Format};
use crate::replay;
use crate::usage::UsageError;

/// Most deliveries one `replay --event` sends.
const MAX_REPLAYS: usize = 1000;

/// Replays the chosen deliveries one after another.
pub fn run(args: ReplayArgs, ctx: &Ctx) -> anyhow::Result<()> {
    if let Some(event) = &args.event {
        parse_event_type(event)?;
    }
    let since = since_ms(args.since.as_deref())?;
    let forward_to = args
        .forward_to
        .as_deref()
        .map(Target::parse)
        .transpose()
        .map_err(|e| UsageError(e.to_string()))?;
    let trust = TrustChoice::forwarding(&args.forward_trust)?;
    let mut store = CaptureStore::open(&ctx.store)?;
    let originals = select(&args, since, &store)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("could not start the async runtime: {e}"))?;
    let format = if args.json {
        Format::Json
    } else {
        Format::Lines
    };
    let mut failed = 0usize;
    for original in &originals {
        let body = if args.edit {
            Some(edit_body(original)?)
        } else {
            None
        };
        let current = current_target(original);
        let (route, note) = replay::route(
            original,
            forward_to.as_ref(),
            args.to_recorded,
            current.as_ref(),
        );
        if let Some(note) = note {
            eprintln!("{}", illumitunnel::escape::escape(&note));
        }
        let (target, request) =
            replay::prepare(original, route, body).map_err(anyhow::Error::msg)?;
        let forwarder = forwarder_trusting(target, &trust)?;
        let mut replayed = runtime.block_on(replay::send(original, &forwarder, request));
        if !replayed.status().is_some_and(|s| (200..300).contains(&s)) {
            failed += 1;
        }
        store.insert_batch(std::slice::from_mut(&mut replayed))?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        ignore_broken_pipe(
            output::write_delivery(&mut out, &replayed, format, &ctx.clock)
                .and_then(|()| out.flush()),
        )?;
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} replays got no 2xx answer; see the lines above and your handler's log",
            originals.len()
        );
    }
    Ok(())
}

/// The target of the `listen` running on this machine for the tunnel `original` came through,
/// and that listen's PID; `None` when none runs (or the delivery came through no tunnel).
pub fn current_target(original: &Delivery) -> Option<(Target, u32)> {
    let tunnel = original.tunnel.as_deref()?;
    let running = Running::live(tunnel)?;
    let target = Target::parse(&running.target).ok()?;
    Some((target, running.pid))
}

/// The deliveries to replay, in the order they are sent.
fn select(
    args: &ReplayArgs,
    since: Option<i64>,
    store: &CaptureStore,
) -> anyhow::Result<Vec<Delivery>> {
    // Replays of replays, and deliveries `--events` never forwarded, are left out of
    // `--last` and `--event`; name them by id to replay them.
    let original = |d: &Delivery| d.source != Source::Replay && !d.skipped;
    if args.last {
        let newest = store.list_newest(&Filter::default(), 200)?;
        return match newest.into_iter().find(original) {
            Some(d) => Ok(vec![d]),
            None => anyhow::bail!(
                "no delivery to replay in {}; trigger one with illumitunnel trigger TYPE",
                store.path().display()
            ),
        };
    }
    if let Some(event) = &args.event {
        let filter = Filter {
            event: Some(event.clone()),
            since_ms: since,
            ..Filter::default()
        };
        let found: Vec<Delivery> = store
            .list_oldest(&filter, MAX_REPLAYS + 1)?
            .into_iter()
            .filter(original)
            .collect();
        if found.is_empty() {
            let within = args
                .since
                .as_deref()
                .map(|s| format!(" within {s}"))
                .unwrap_or_default();
            anyhow::bail!("no {event} deliveries{within} to replay; list them with illumitunnel events --event {event}");
        }
        if found.len() > MAX_REPLAYS {
            return Err(UsageError(format!(
                "more than {MAX_REPLAYS} {event} deliveries match; narrow them with --since DURATION"
            ))
            .into());
        }
        return Ok(found);
    }
    args.ids
        .iter()
        .map(|id| delivery_by_id(store, id))
        .collect()
}

/// Opens the body in the user's editor and returns what they saved.
fn edit_body(original: &Delivery) -> anyhow::Result<Bytes> {
    let body = &original.request.body;
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let mut file = tempfile::Builder::new()
        .prefix(&format!("illumitunnel-{}-", original.id))
        .suffix(if json.is_some() { ".json" } else { ".txt" })
        .tempfile()
        .context("could not create a temporary file for the editor")?;
    // Pretty JSON is easier to edit; the edited file is sent as saved.
    let text = match &json {
        Some(v) => serde_json::to_vec_pretty(v)?,
        None => body.to_vec(),
    };
    file.write_all(&text)
        .and_then(|()| file.flush())
        .context("could not write the body for the editor")?;
    run_editor(file.path())?;
    let edited = std::fs::read(file.path()).context("could not read the edited body")?;
    if json.is_some() {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&edited) {
            anyhow::bail!(
                "the edited body of {} is not valid JSON ({e}); nothing was sent",
                original.id
            );
        }
    }
    Ok(Bytes::from(edited))
}

/// Opens `path` in the user's editor and waits for it (see `crate::editor`).
fn run_editor(path: &std::path::Path) -> anyhow::Result<()> {
    let editor = crate::editor::configured();
    let status = crate::editor::command(&editor, path)
        .map_err(anyhow::Error::msg)?
        .status()
        .with_context(|| format!("could not start the editor {editor:?}; set VISUAL or EDITOR"))?;
    if !status.success() {
        anyhow::bail!("the editor {editor:?} exited with {status}; nothing was sent");
    }
    Ok(())
}
