//! The command line as clap types, nothing else: each command validates its own arguments
//! into the settings it runs with (see `commands::listen::ListenConfig`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// illumitunnel: forward IllumiChat webhooks to your local server and inspect every delivery.
#[derive(Debug, Parser)]
#[command(name = "illumitunnel", version, about)]
pub struct Cli {
    /// Capture store file (default: captures.db in the data dir).
    #[arg(long, global = true, value_name = "PATH")]
    pub store: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive webhooks on a public URL and forward them to a local server.
    Listen(ListenArgs),
    /// List captured deliveries, newest first.
    Events(EventsArgs),
    /// Show one delivery: request, response, timings.
    Show(ShowArgs),
}

/// `illumitunnel listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Local URL every delivery goes to, e.g. http://localhost:3000/webhooks/illumichat.
    // Optional for clap so a missing value gets our one-sentence usage error.
    #[arg(long, value_name = "URL")]
    pub forward_to: Option<String>,

    /// Relay base URL, e.g. https://relay.example.com (default: a relay embedded in this process).
    #[arg(long, value_name = "URL", env = "ILLUMITUNNEL_RELAY")]
    pub relay: Option<String>,

    /// Client token the relay accepts.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ILLUMITUNNEL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Tunnel name, 3-40 of a-z, 0-9, - (default: a random name kept across restarts).
    #[arg(long, value_name = "NAME")]
    pub tunnel: Option<String>,

    /// Also trust the certificates in this PEM file for the relay.
    #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,

    /// Accept any relay certificate (for self-signed relays you cannot get the PEM of).
    #[arg(long)]
    pub insecure: bool,

    /// Print one line per delivery instead of the inspector.
    #[arg(long)]
    pub no_tui: bool,

    /// Print one JSON object per delivery.
    #[arg(long)]
    pub json: bool,

    /// Websocket ping interval in milliseconds.
    #[arg(long, value_name = "MS", hide = true)]
    pub keepalive_ms: Option<u64>,
}

/// `illumitunnel events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only deliveries of this event type, e.g. ticket.created.
    #[arg(long, value_name = "TYPE")]
    pub event: Option<String>,

    /// How many deliveries to list.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,

    /// One JSON object per delivery.
    #[arg(long)]
    pub json: bool,
}

/// `illumitunnel show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Delivery id, or a unique prefix of it.
    #[arg(value_name = "ID")]
    pub id: String,

    /// One JSON object with request and response.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ca_and_insecure_conflict() {
        let err = Cli::try_parse_from([
            "illumitunnel",
            "listen",
            "--forward-to",
            "http://localhost:3000",
            "--ca",
            "x.pem",
            "--insecure",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn store_is_global() {
        let cli = Cli::try_parse_from(["illumitunnel", "events", "--store", "/tmp/x.db"]).unwrap();
        assert_eq!(cli.store, Some(PathBuf::from("/tmp/x.db")));
        assert!(matches!(
            cli.command,
            Command::Events(EventsArgs { limit: 50, .. })
        ));
    }
}
