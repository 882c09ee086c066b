//! `illumitunnel test`: deliveries (from the capture store, or a suite file with no store and no
//! relay) sent to the handler again, same method, path, headers and body, and its answers
//! compared with the recorded ones (`crate::regression`). Prints a verdict a delivery with a diff
//! under each change, then `N passed, M failed`; exit 0 when all pass, 1 when any fails, 2 on
//! bad usage. Each result is recorded as a replay of its original when the original is in the
//! capture store, so the inspector shows it.

use std::io::{IsTerminal as _, Write};
use std::path::Path;

use illumitunnel::delivery::RequestRecord;
use illumitunnel::store::CaptureStore;
use illumitunnel::suite;
use illumitunnel::Delivery;

use super::suite::{select, Selection};
use super::{ignore_broken_pipe, write_private, Ctx, Reported};
use crate::cli::TestArgs;
use crate::commands::listen::{forwarder_trusting, TrustChoice};
use crate::forward::{Forwarder, Target};
use crate::regression::{
    self, case_json, junit, replay_report as report, BodyDiff, Pointer, Report,
};
use crate::replay;
use crate::usage::UsageError;

/// Where results are written besides stdout.
struct Sinks {
    /// Record each result here as a replay (`None` in CI: nothing is created).
    store: Option<CaptureStore>,
    /// JSON lines instead of text.
    json: bool,
    /// ANSI colours in the diffs.
    colour: bool,
}

/// Runs the deliveries and reports.
pub fn run(args: TestArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let ignore = args
        .ignore
        .iter()
        .map(|p| Pointer::parse(p).map_err(UsageError))
        .collect::<Result<Vec<_>, _>>()?;
    let forward_to = args
        .forward_to
        .as_deref()
        .map(Target::parse_shorthand)
        .transpose()
        .map_err(|e| UsageError(e.to_string()))?;
    let (originals, store) = match &args.suite {
        Some(path) => {
            if forward_to.is_none() {
                return Err(UsageError(
                    "test --suite needs --forward-to URL, your handler's address such as http://localhost:3000".into(),
                )
                .into());
            }
            (read_suite(path)?, existing_store(&ctx.store))
        }
        None => {
            let store = CaptureStore::open(&ctx.store)?;
            let selection = Selection {
                ids: &args.ids,
                event: args.event.as_deref(),
                since: args.since.as_deref(),
                last: None,
            };
            (select(&store, &selection)?, Some(store))
        }
    };
    let mut sinks = Sinks {
        store,
        json: args.json,
        colour: !args.json
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("could not start the async runtime: {e}"))?;
    let started = illumitunnel::now_ms();
    let trust = TrustChoice::forwarding(&args.forward_trust)?;
    if let Some(path) = &args.junit {
        // A report that cannot be written is bad usage, found before anything is sent.
        write_private(path, "").map_err(|e| UsageError(format!("--junit: {e:#}")))?;
    }
    let cases = runtime.block_on(run_all(
        &originals,
        (forward_to.as_ref(), args.to_recorded, &trust),
        &ignore,
        &mut sinks,
    ))?;
    if let Some(path) = &args.junit {
        let suite_name = match &args.suite {
            Some(p) => p.display().to_string(),
            None => "capture store".to_string(),
        };
        let doc = junit::document(&suite_name, &illumitunnel::rfc3339_ms(started), &cases);
        write_private(path, &doc)?;
    }
    summarize(&cases, &sinks)
}

/// The suite's deliveries; an unreadable file or line is a usage error naming it.
fn read_suite(path: &Path) -> anyhow::Result<Vec<Delivery>> {
    let shown = super::export::shown_source(path);
    let bytes = super::export::read_source(path).map_err(|e| {
        UsageError(format!(
            "could not read suite {shown}: {e}; write one with illumitunnel suite save FILE"
        ))
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        UsageError(format!(
            "suite {shown} is not UTF-8 text; save the suite again with illumitunnel suite save FILE"
        ))
    })?;
    let cases = suite::parse(&text).map_err(|e| {
        UsageError(format!(
            "suite {shown} {e}; fix or remove that line, or save the suite again"
        ))
    })?;
    if cases.is_empty() {
        return Err(UsageError(format!(
            "suite {} holds no deliveries; add some with illumitunnel suite save FILE --last N",
            path.display()
        ))
        .into());
    }
    Ok(cases.into_iter().map(suite::Case::into_delivery).collect())
}

/// The capture store if one exists already: a CI run creates nothing.
fn existing_store(path: &Path) -> Option<CaptureStore> {
    path.is_file()
        .then(|| CaptureStore::open(path).ok())
        .flatten()
}

async fn run_all(
    originals: &[Delivery],
    (forward_to, to_recorded, trust): (Option<&Target>, bool, &TrustChoice),
    ignore: &[Pointer],
    sinks: &mut Sinks,
) -> anyhow::Result<Vec<junit::Case>> {
    let mut pool: Option<Forwarder> = None;
    let mut cases = Vec::with_capacity(originals.len());
    for original in originals {
        let current = super::replay::current_target(original);
        let (target, request) =
            destination(original, forward_to, to_recorded, current.as_ref()).map_err(UsageError)?;
        let forwarder = match &pool {
            Some(f) => f.retarget(target),
            None => pool.insert(forwarder_trusting(target, trust)?).clone(),
        };
        let mut replayed = replay::send(original, &forwarder, request).await;
        let report = report(original, &replayed, ignore);
        // Recording is for the inspector; a busy or full store must not end the run.
        let recorded = sinks.store.as_mut().is_some_and(|store| {
            let stored = store.contains(&original.id).and_then(|known| {
                known
                    .then(|| store.insert_batch(std::slice::from_mut(&mut replayed)))
                    .transpose()
            });
            match stored {
                Ok(stored) => stored.is_some(),
                Err(err) => {
                    tracing::warn!(%err, "could not record the test's replay");
                    false
                }
            }
        });
        print_case(original, &replayed, &report, recorded, sinks)?;
        cases.push(junit_case(original, &replayed, &report));
    }
    Ok(cases)
}

/// Where a delivery goes and what is sent: with `--forward-to`, its path under that URL (a path
/// already under it is kept as is, so the URL `listen` forwarded to works too), by the rule
/// `listen` forwards with (`Target::uri_for`): dot segments, encoded ones too, never climb above
/// it; else the current target of the `listen` running for its tunnel unless `--to-recorded`
/// (see `replay::route`), else the origin it went to when captured.
fn destination(
    original: &Delivery,
    forward_to: Option<&Target>,
    to_recorded: bool,
    current: Option<&(Target, u32)>,
) -> Result<(Target, RequestRecord), String> {
    let Some(to) = forward_to else {
        let (route, note) = replay::route(original, None, to_recorded, current);
        if let Some(note) = note {
            eprintln!("{}", illumitunnel::escape::escape(&note));
        }
        return replay::prepare(original, route, None);
    };
    let (target, mut request) = replay::prepare(original, replay::Route::Exactly(to), None)?;
    request.path = path_below(to.path(), &original.request.path);
    Ok((target, request))
}

/// `recorded` as a path below `base`, for `base.uri_for`: its dot segments resolved first (as
/// `listen` resolves them), then the part under `base` when it is there already.
fn path_below(base: &str, recorded: &str) -> String {
    let recorded = crate::forward::remove_dot_segments(recorded);
    if base == "/" {
        return recorded;
    }
    match recorded.strip_prefix(base) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_string(),
        _ => recorded,
    }
}

fn print_case(
    original: &Delivery,
    replayed: &Delivery,
    report: &Report,
    recorded: bool,
    sinks: &Sinks,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let text = if sinks.json {
        let mut line =
            illumitunnel::escape::json_string(&case_json(original, replayed, report, recorded));
        line.push('\n');
        line
    } else {
        let verdict = match (report.passed(), sinks.colour) {
            (true, true) => "\x1b[32mPASS\x1b[0m",
            (true, false) => "PASS",
            (false, true) => "\x1b[31mFAIL\x1b[0m",
            (false, false) => "FAIL",
        };
        let status = replayed
            .status()
            .map_or_else(|| "ERR".to_string(), |s| s.to_string());
        format!(
            "{verdict}  {:<18}  {:<12} {} {}  {status}  {:.1}ms  {}\n{}",
            name_of(original),
            illumitunnel::escape::escape(original.resource_id.as_deref().unwrap_or("-")),
            illumitunnel::escape::escape(&original.request.method),
            illumitunnel::escape::escape(&replayed.request.path),
            replayed.duration_ms(),
            original.id,
            regression::render(report, "      ", sinks.colour),
        )
    };
    ignore_broken_pipe(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

fn name_of(d: &Delivery) -> String {
    illumitunnel::escape::escape(d.event.as_deref().unwrap_or("-")).into_owned()
}

fn junit_case(original: &Delivery, replayed: &Delivery, report: &Report) -> junit::Case {
    let name = format!(
        "{} {} ({})",
        original
            .event
            .as_deref()
            .unwrap_or(&original.request.method),
        original
            .resource_id
            .as_deref()
            .unwrap_or(&original.request.path),
        original.id
    );
    let outcome = if report.passed() {
        junit::Outcome::Passed
    } else if let Some(why) = &report.no_answer {
        junit::Outcome::Error {
            message: format!("no answer from the handler: {why}"),
        }
    } else {
        junit::Outcome::Failed {
            message: failure_message(report),
            details: regression::render(report, "", false),
        }
    };
    junit::Case {
        name,
        classname: original.event.clone().unwrap_or_else(|| "webhook".into()),
        seconds: replayed.duration_us as f64 / 1_000_000.0,
        outcome,
    }
}

/// One line: what changed.
fn failure_message(report: &Report) -> String {
    let mut parts = Vec::new();
    if let Some(actual) = report
        .actual_status
        .filter(|s| *s != report.expected_status)
    {
        parts.push(format!("status {} became {actual}", report.expected_status));
    }
    match &report.body {
        Some(BodyDiff::Json { changed, .. }) => parts.push(format!(
            "body differs at {}",
            regression::changed_list(changed)
        )),
        Some(_) => parts.push("body differs".into()),
        None => {}
    }
    parts.join("; ")
}

/// `N passed, M failed`: on stdout after the text, on stderr after JSON lines.
fn summarize(cases: &[junit::Case], sinks: &Sinks) -> anyhow::Result<()> {
    let failed = cases
        .iter()
        .filter(|c| c.outcome != junit::Outcome::Passed)
        .count();
    let passed = cases.len() - failed;
    let line = format!("{passed} passed, {failed} failed");
    if sinks.json {
        eprintln!("{line}");
    } else {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        ignore_broken_pipe(writeln!(out, "\n{line}").and_then(|()| out.flush()))?;
    }
    if failed > 0 {
        return Err(Reported(line).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_under_the_target_once() {
        let uri = |to: &str, recorded: &str| {
            let to = Target::parse(to).unwrap();
            to.uri_for(&path_below(to.path(), recorded), "").to_string()
        };
        let base = "http://127.0.0.1:3000/webhooks/illumichat";
        for (to, recorded, want) in [
            (
                "http://127.0.0.1:3000",
                "/webhooks/illumichat",
                "/webhooks/illumichat",
            ),
            (base, "/webhooks/illumichat", "/webhooks/illumichat"),
            (base, "/webhooks/illumichat/sub", "/webhooks/illumichat/sub"),
            (
                "http://127.0.0.1:3000/v2",
                "/webhooks/illumichat",
                "/v2/webhooks/illumichat",
            ),
            ("http://127.0.0.1:3000/web", "/webhooks", "/web/webhooks"),
            ("http://127.0.0.1:3000/web", "/", "/web"),
        ] {
            assert_eq!(
                uri(to, recorded),
                format!("http://127.0.0.1:3000{want}"),
                "{to} {recorded}"
            );
        }
    }

    #[test]
    fn suite_paths_with_dot_segments_stay_under_the_forward_path_as_in_listen() {
        let to = Target::parse("http://127.0.0.1:3000/webhooks").unwrap();
        for hostile in [
            "/../../admin",
            "/%2e%2e/%2E%2e/admin",
            "/.%2e/admin",
            "/webhooks/../admin",
            "/webhooks/../../admin",
            "/./admin",
            "admin",
            "/webhooks/x/../../admin",
        ] {
            let tested = to.uri_for(&path_below(to.path(), hostile), "");
            assert_eq!(tested.path(), "/webhooks/admin", "{hostile}");
            assert_eq!(tested.authority().unwrap().as_str(), "127.0.0.1:3000");
            // `listen` with the same --forward-to sends a sender's path to the same place.
            let listened = to.uri_for(hostile, "");
            assert!(
                listened.path().starts_with("/webhooks/"),
                "{hostile}: {listened}"
            );
        }
    }
}
