//! `illumitunnel`: the client. `listen` forwards webhooks from a relay (or one it embeds) to a
//! local server and records every delivery; `events`, `show` and `export` read the capture
//! store; `trigger` and `replay` send deliveries; `test` compares a handler's answers with
//! recorded ones, from the store or a `suite save` file; `webhooks` talks to IllumiChat's API.
//!
//! # Layout
//! - `cli` — clap types.
//! - `commands` — one `run(args, ctx)` per subcommand.
//! - `session` — relay connection, reconnects; redeliveries in order, live ones concurrently;
//!   bounded chunk reassembly; `session::tls` trust.
//! - `backoff` — reconnect delays.
//! - `forward` — local requests, the origin guard, `--events` and `--route`.
//! - `editor` — `$VISUAL`/`$EDITOR`, for `replay --edit` and the inspector.
//! - `replay` — stored deliveries sent again, for `replay` and the inspector.
//! - `regression` — recorded answers compared with new ones (`test`, `t`), diffs, JUnit XML.
//! - `illumichat` — IllumiChat's webhook API, for `webhooks` and `listen --register`.
//! - `recorder` — the capture store writer thread: commits, store health, retention.
//! - `output` — every printed delivery, line and JSON.
//! - `proxy` — `HTTPS_PROXY`/`NO_PROXY` for the relay and IllumiChat's API.
//! - `settings` — `config.toml`: what `login` remembers; flags > env > file.
//! - `status` — what `listen` tells its screen.

mod backoff;
mod cli;
mod commands;
mod editor;
mod forward;
mod illumichat;
mod output;
mod proxy;
mod recorder;
mod regression;
mod replay;
mod session;
mod settings;
mod status;
mod tui;
mod usage;
mod web;

use std::process::ExitCode;

/// Many small allocations per delivery on a few threads: mimalloc spends less CPU on them than
/// the system allocator (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

use clap::Parser;
use illumitunnel_relay::logging;

use crate::cli::{Cli, Command};
use crate::commands::Ctx;
use crate::output::LocalClock;
use crate::usage::UsageError;

/// Environment variable with a `tracing` filter for the client's logs (stderr).
const LOG_ENV: &str = "ILLUMITUNNEL_LOG";

fn main() -> ExitCode {
    // Read while the process is single-threaded: the only time the platform allows it.
    let clock = LocalClock::detect();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    // While the inspector owns the terminal, logs go to a file; the guard flushes it on exit.
    let _log_guard = match &cli.command {
        Command::Listen(args) if commands::listen::wants_inspector(args.json, args.no_tui) => {
            log_to_file()
        }
        _ => {
            init_logging();
            None
        }
    };
    // Older releases made the config and data dirs 0755; they hold tokens and request bodies.
    if let Err(err) = illumitunnel::paths::tighten_own_dirs() {
        tracing::warn!(%err, "could not make the config and data dirs private (0700)");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ctx = Ctx {
        store: cli
            .store
            .clone()
            .unwrap_or_else(illumitunnel::paths::default_store),
        clock,
    };
    let result = match cli.command {
        // One thread runs the session, forwarders and inspector: on a small machine, hopping
        // deliveries between worker threads costs more than it gains (docs/benchmarks.md).
        Command::Listen(args) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let result = rt.block_on(commands::listen::run(args, &ctx));
                rt.shutdown_timeout(Duration::from_secs(1));
                result
            }
            Err(e) => Err(anyhow::anyhow!("could not start the async runtime: {e}")),
        },
        Command::Events(args) => commands::events::run(args, &ctx),
        Command::Show(args) => commands::show::run(args, &ctx),
        Command::Trigger(args) => commands::trigger::run(args, &ctx),
        Command::Replay(args) => commands::replay::run(args, &ctx),
        Command::Export(args) => commands::export::run(args, &ctx),
        Command::Test(args) => commands::test::run(args, &ctx),
        Command::Suite(args) => commands::suite::run(args, &ctx),
        Command::Webhooks(args) => commands::webhooks::run(args),
        Command::Login(args) => commands::login::run(args),
        Command::Logout => commands::login::logout(),
        Command::Status(args) => commands::status::run(args, &ctx),
        Command::Completions { shell } => commands::docs::completions(shell),
        Command::Man => commands::docs::man(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<commands::Reported>() => ExitCode::from(1),
        Err(err) => {
            // Sentences can carry what a relay or a server sent: nothing in them may reach the
            // terminal as a control or bidi character.
            eprintln!(
                "error: {}",
                illumitunnel::escape::escape(&format!("{err:#}"))
            );
            if err.chain().any(|e| e.is::<UsageError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Logs go to stderr, warnings and errors only unless `ILLUMITUNNEL_LOG` says otherwise.
fn init_logging() {
    let style = logging::Style {
        target: false,
        ..logging::Style::terminal()
    };
    logging::init(logging::env_filter(LOG_ENV, "warn"), std::io::stderr, style);
}

/// Logs go to `listen.log` in the data dir, readable by the user only (info and up unless
/// `ILLUMITUNNEL_LOG` says otherwise); nowhere if that file cannot be opened.
fn log_to_file() -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let dir = illumitunnel::paths::data_dir();
    illumitunnel::paths::ensure_own_dir(&dir).ok()?;
    let file = illumitunnel::paths::append_private(&dir.join("listen.log")).ok()?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    logging::init(
        logging::env_filter(LOG_ENV, "info"),
        writer,
        logging::Style::file(),
    );
    Some(guard)
}
