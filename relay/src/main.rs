//! `illumitunnel-relay`: parse, validate, bind, print the address, serve until SIGTERM or Ctrl-C;
//! or run a `token` or `tunnel` command on the data dir.

use std::process::ExitCode;

use clap::Parser;
use illumitunnel_relay::config::Args;
use illumitunnel_relay::{logging, node, server, tls, tokens, Config, TlsConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main(flavor = "current_thread")]
#[allow(clippy::print_stdout)] // the listening line is this binary's output
async fn main() -> ExitCode {
    let mut args = Args::parse();
    let data_dir =
        (args.data_dir.clone()).unwrap_or_else(illumitunnel::paths::default_relay_data_dir);
    match node::run_command(&args, &data_dir).await {
        Ok(false) => {}
        Ok(true) => return ExitCode::SUCCESS,
        Err(err) => return fail(&err, err.exit_code()),
    }
    args.stored_tokens = tokens::stored_count(&data_dir);
    let addr = args.listen;
    let mut config = match Config::try_from(args) {
        Ok(config) => config,
        Err(err) => return fail(&err, 2),
    };
    let filter = logging::env_filter(EnvFilter::DEFAULT_ENV, "info");
    logging::init(filter, std::io::stderr, logging::Style::terminal());
    let kept = match &config.tls {
        TlsConfig::SelfSigned { names } => match tls::self_signed_in(&config.data_dir, names) {
            Ok(kept) => Some(kept),
            Err(reason) => return fail(&std::io::Error::other(reason), 1),
        },
        _ => None,
    };
    let listener = match server::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => return fail(&err, 1),
    };
    // Handlers first: whoever reads the listening line may signal at once.
    let shutdown = CancellationToken::new();
    let signals = server::cancel_on_signal(shutdown.clone());
    // SIGHUP's default action ends the process: from here on tokio holds it, so a hangup that
    // comes before the relay's reload handler runs is ignored instead of fatal.
    let _hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let (scheme, local) = (config.tls.scheme(), listener.local_addr().unwrap_or(addr));
    println!("illumitunnel-relay listening on {scheme}://{local}");
    if let Some(kept) = kept {
        println!("certificate sha256 fingerprint {}", kept.fingerprint);
        let (ca, how) = (
            kept.path.display(),
            if kept.fresh { "made now" } else { "kept" },
        );
        println!("certificate {ca} ({how}); on clients: illumitunnel login --relay URL --ca {ca}");
        config.tls = kept.config();
    }
    tokio::spawn(signals);
    match illumitunnel_relay::run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err, 1),
    }
}

fn fail(err: &dyn std::error::Error, code: u8) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(code)
}
