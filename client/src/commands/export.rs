//! `illumitunnel export`: captured deliveries, oldest first, as a HAR 1.2 log (`--har`) or as
//! one `show --json` object a line (`--jsonl`), filtered by `--event` and `--since`. Secret
//! header values are redacted unless `--include-secrets`; the file is readable by the user only.
//! `-` as the file writes to stdout; `--json` says what was written as one JSON object. Also the
//! writing both `export` and `suite save` share ([`write_target`], [`report_written`]).

use std::path::Path;

use illumitunnel::store::{CaptureStore, Filter};
use illumitunnel::Delivery;

use super::{ignore_broken_pipe, parse_event_type, since_ms, write_private, written_summary, Ctx};
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
    let (path, kind, text) = match (&args.har, &args.jsonl) {
        (Some(path), _) => {
            let log = illumitunnel::har::log(&deliveries, env!("CARGO_PKG_VERSION"));
            let mut text = serde_json::to_string_pretty(&log)?;
            text.push('\n');
            (path, "har", text)
        }
        (None, Some(path)) => {
            let mut text = String::new();
            for d in &deliveries {
                text.push_str(&d.detail_json().to_string());
                text.push('\n');
            }
            (path, "jsonl", text)
        }
        (None, None) => {
            return Err(super::UsageError("pass --har FILE or --jsonl FILE".into()).into())
        }
    };
    write_target(path, &text)?;
    let written = Written {
        path,
        format: Some(kind),
        count: deliveries.len(),
        redacted,
    };
    if args.json {
        return report_written(&written);
    }
    let (summary, shown) = written_summary(deliveries.len(), redacted);
    eprintln!("exported {summary} to {}{shown}", shown_path(path));
    Ok(())
}

/// Whether a file argument is `-`: stdout for output, stdin for input.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Most bytes read from stdin for `-` (a payload or a suite; files are bounded by their size).
const MAX_STDIN: u64 = 256 * 1024 * 1024;

/// The bytes of the file at `path`, or of stdin for `-` (at most [`MAX_STDIN`]).
pub fn read_source(path: &Path) -> std::io::Result<Vec<u8>> {
    if !is_stdio(path) {
        return std::fs::read(path);
    }
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STDIN {
        return Err(std::io::Error::other(format!(
            "standard input is over {} MiB",
            MAX_STDIN / 1024 / 1024
        )));
    }
    Ok(bytes)
}

/// How a file is named in sentences: its path, or `stdin`/`stdout` for `-`.
pub fn shown_source(path: &Path) -> String {
    if is_stdio(path) {
        "stdin".to_string()
    } else {
        path.display().to_string()
    }
}

/// How a written file is named in sentences: its path, or `stdout` for `-`.
pub fn shown_path(path: &Path) -> String {
    if is_stdio(path) {
        "stdout".to_string()
    } else {
        path.display().to_string()
    }
}

/// Writes `text` to the file at `path` (readable by the user only), or to stdout for `-`.
pub fn write_target(path: &Path, text: &str) -> anyhow::Result<()> {
    if !is_stdio(path) {
        return write_private(path, text);
    }
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    ignore_broken_pipe(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

/// What a command wrote, for `--json`.
pub struct Written<'a> {
    /// The file, or `-` for stdout.
    pub path: &'a Path,
    /// `har` or `jsonl` for `export`; none for a suite.
    pub format: Option<&'static str>,
    /// Deliveries written.
    pub count: usize,
    /// Secret header values replaced with `REDACTED`.
    pub redacted: usize,
}

/// Prints `written` as one JSON object (`path`, `format` when there is one, `count`,
/// `redacted`): on stdout, or on stderr when the file itself went to stdout.
pub fn report_written(written: &Written<'_>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut v = serde_json::json!({ "path": written.path.to_string_lossy() });
    if let Some(format) = written.format {
        v["format"] = format.into();
    }
    v["count"] = written.count.into();
    v["redacted"] = written.redacted.into();
    if is_stdio(written.path) {
        let mut err = std::io::stderr().lock();
        illumitunnel::escape::write_json(&mut err, &v)?;
        writeln!(err)?;
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    ignore_broken_pipe(illumitunnel::escape::write_json(&mut out, &v).and_then(|()| writeln!(out)))
}
