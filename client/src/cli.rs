//! The command line as clap types, nothing else: each command validates its own arguments
//! into the settings it runs with (see `commands::listen::ListenConfig`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// illumitunnel: forward IllumiChat webhooks to your local server and inspect every delivery.
/// The exit-code table, shown by `--help` and carried into the man page.
pub const EXIT_CODES: &str = "\
Exit codes (every command):
  0  everything asked for succeeded
  1  something sent failed or differed: a non-2xx answer or connection error from trigger or
     replay (after sending all), a test that differs, a relay that refused login
  2  bad usage: an unknown flag or value, an unknown or ambiguous delivery id, a missing file,
     a refused setting";

#[derive(Debug, Parser)]
#[command(name = "illumitunnel", version, about, after_help = EXIT_CODES)]
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
    /// Send a sample IllumiChat event to your local server or through a tunnel.
    Trigger(TriggerArgs),
    /// Send stored deliveries to the local server again.
    Replay(ReplayArgs),
    /// Write captured deliveries to a HAR or JSON-lines file.
    Export(ExportArgs),
    /// Send deliveries to your handler again and compare its answers with the recorded ones.
    Test(TestArgs),
    /// Save deliveries as a suite file for `test --suite` (e.g. in CI).
    Suite(SuiteArgs),
    /// List and manage your IllumiChat webhooks through IllumiChat's API.
    Webhooks(WebhooksArgs),
    /// Check a relay and token by connecting, then remember them in config.toml.
    Login(LoginArgs),
    /// Remove the token from config.toml.
    Logout,
    /// Show the relay, token (its first characters, never the value), tunnel, CA, target and
    /// whether a listen runs on this machine.
    Status(StatusArgs),
    /// Print a shell completion script, e.g. illumitunnel completions bash > ~/.local/share/bash-completion/completions/illumitunnel.
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. illumitunnel man | man -l -.
    Man,
}

/// `illumitunnel login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Relay base URL, e.g. https://relay.example.com (default: the one in config.toml).
    #[arg(long, value_name = "URL", env = "ILLUMITUNNEL_RELAY")]
    pub relay: Option<String>,

    /// Client token the relay accepts (default: read from standard input, so it stays out of
    /// the process list).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ILLUMITUNNEL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Also trust the certificates in this PEM file for the relay (kept in config.toml).
    #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,

    /// Accept any certificate the relay presents, e.g. a `--self-signed` one (kept in
    /// config.toml as insecure for that relay, so later commands accept it too).
    #[arg(long)]
    pub insecure: bool,

    /// Send the token to an http:// relay that is not on this machine anyway, unencrypted
    /// (kept in config.toml as allow_http for that relay).
    #[arg(long)]
    pub allow_http: bool,

    /// Print what was saved as one JSON object (relay, token_prefix, token_length, tunnel, ca,
    /// public_url, config); never the token.
    #[arg(long)]
    pub json: bool,
}

/// `illumitunnel status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON object (configured, config, relay, token_prefix, token_length, tunnel, ca,
    /// forward_to, last_target, listen).
    #[arg(long)]
    pub json: bool,
}

/// How to trust an https local server: `listen`, `test` and `replay`.
#[derive(Debug, Args, Clone, Default)]
pub struct ForwardTrustArgs {
    /// Also trust the certificates in this PEM file for an https local server, e.g. mkcert's
    /// rootCA.pem (in the folder `mkcert -CAROOT` prints).
    #[arg(long, value_name = "PEM", conflicts_with = "forward_insecure")]
    pub forward_ca: Option<PathBuf>,

    /// Accept any certificate from an https local server (self-signed ones).
    #[arg(long)]
    pub forward_insecure: bool,
}

/// `illumitunnel listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Where deliveries go: a port (3000 is http://localhost:3000), host:port/path
    /// (localhost:3000/webhooks) or a URL; the same as --forward-to.
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,

    /// Local URL every delivery goes to, e.g. http://localhost:3000/webhooks/illumichat
    /// (default: forward_to in config.toml).
    // Optional for clap so a missing value gets our one-sentence usage error.
    #[arg(long, value_name = "URL")]
    pub forward_to: Option<String>,

    #[command(flatten)]
    pub forward_trust: ForwardTrustArgs,

    /// Relay base URL, e.g. https://relay.example.com (default: relay in config.toml, else a
    /// relay embedded in this process).
    #[arg(long, value_name = "URL", env = "ILLUMITUNNEL_RELAY")]
    pub relay: Option<String>,

    /// Port of the relay embedded in this process when no --relay is given (default 8443); a
    /// taken port is an error, so the tunnel URL never changes silently.
    #[arg(long, value_name = "PORT", env = "ILLUMITUNNEL_PORT")]
    pub relay_port: Option<u16>,

    /// Join a tunnel another listen on this machine forwards: record and show its deliveries,
    /// never forward them (needs --relay).
    #[arg(long)]
    pub fan_out: bool,

    /// Client token the relay accepts.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ILLUMITUNNEL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Tunnel name, 3-40 of a-z, 0-9, - (default: tunnel in config.toml, else a random name
    /// kept across restarts).
    #[arg(long, value_name = "NAME", env = "ILLUMITUNNEL_TUNNEL")]
    pub tunnel: Option<String>,

    /// Also trust the certificates in this PEM file for the relay (default: ca in config.toml).
    #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,

    /// Accept any relay certificate (for self-signed relays you cannot get the PEM of).
    #[arg(long)]
    pub insecure: bool,

    /// Send the token to an http:// relay that is not on this machine anyway, unencrypted
    /// (default: allow_http in config.toml, for the relay remembered there).
    #[arg(long)]
    pub allow_http: bool,

    /// Print one line per delivery instead of the inspector.
    #[arg(long)]
    pub no_tui: bool,

    /// Print one JSON object per delivery.
    #[arg(long)]
    pub json: bool,

    /// Serve the web inspector and local API on this loopback address (default 127.0.0.1:4040,
    /// then the next free port up to 4049; ILLUMITUNNEL_INSPECT stands for it, off for
    /// --no-inspect); port 0 takes any free port.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_inspect")]
    pub inspect: Option<String>,

    /// Serve no web inspector and no local API.
    #[arg(long)]
    pub no_inspect: bool,

    /// Websocket ping interval in milliseconds.
    #[arg(long, value_name = "MS", hide = true)]
    pub keepalive_ms: Option<u64>,

    /// Forward only these event types (comma-separated); others are recorded as skipped and answered 200.
    #[arg(long, value_name = "TYPE,...", value_delimiter = ',')]
    pub events: Option<Vec<String>>,

    /// Send one event type to another path on the --forward-to origin, e.g. lead.captured=/crm/leads.
    #[arg(long, value_name = "TYPE=PATH")]
    pub route: Vec<String>,

    /// Largest request body taken from the relay and local response body passed back, in bytes
    /// (default 10 MiB, like the relay's). Larger local responses are recorded as cut and the
    /// sender gets 502.
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<usize>,

    /// Prune the oldest deliveries once the capture store holds more than this many bytes
    /// (default 2 GiB, i.e. 2147483648).
    #[arg(long, value_name = "BYTES")]
    pub store_max_bytes: Option<u64>,

    /// Prune deliveries older than this, e.g. 12h, 1d12h, 7d (default 30d).
    #[arg(long, value_name = "DURATION")]
    pub store_max_age: Option<String>,

    /// Register (or re-enable) an IllumiChat webhook for the tunnel URL; disable it on exit.
    #[arg(long)]
    pub register: bool,

    /// IllumiChat API access for --register.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Where IllumiChat's API is and how to sign in to it.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// IllumiChat API base URL.
    #[arg(
        long,
        value_name = "URL",
        env = "ILLUMICHAT_API_BASE",
        global = true,
        default_value = "https://beta.illumichat.com"
    )]
    pub api_base: String,

    /// IllumiChat API token (Authorization: Bearer).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ILLUMICHAT_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub api_token: Option<String>,

    /// Register a webhook URL IllumiChat cannot reach (loopback, private, link-local or plain
    /// http://), for testing against a fake IllumiChat.
    #[arg(long, global = true)]
    pub allow_private_url: bool,
}

/// `illumitunnel trigger`.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// Event type: chat.message.created, chat.session.created, ticket.created, ticket.updated, lead.captured or contact.created.
    #[arg(value_name = "TYPE")]
    pub event: String,

    /// Send straight to this local URL (and record the delivery here).
    #[arg(long, value_name = "URL", conflicts_with = "url")]
    pub forward_to: Option<String>,

    /// Send through this tunnel URL (default: the tunnel of the listen running on this machine).
    #[arg(long, value_name = "PUBLIC_URL")]
    pub url: Option<String>,

    /// Change a field of the payload, e.g. data.priority=high (value parsed as JSON when it parses).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,

    /// Send this JSON file instead of the sample (--set still applies); `-` reads stdin.
    #[arg(long, value_name = "PAYLOAD.json")]
    pub file: Option<PathBuf>,

    /// How many deliveries to send, each with fresh ids.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub count: u32,

    /// Send each delivery twice, unchanged, to test your handler's deduplication.
    #[arg(long)]
    pub duplicate: bool,

    /// Also trust the certificates in this PEM file for the tunnel URL (default: the ca, or
    /// insecure, that login saved for the relay the tunnel is on).
    #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,

    /// Accept any certificate for the tunnel URL.
    #[arg(long)]
    pub insecure: bool,

    /// One JSON object per delivery.
    #[arg(long)]
    pub json: bool,

    /// Retry as the named sender does when your handler answers non-2xx or not in time
    /// (illumichat: after 1, 5 and 30 minutes, same body and timestamp, stop at the first 2xx).
    #[arg(long, value_name = "SENDER", value_enum, conflicts_with = "duplicate")]
    pub retries: Option<RetryPolicy>,

    /// With --retries: wait this many times less between attempts, e.g. 600 turns 1m into 0.1s.
    #[arg(long, value_name = "N", requires = "retries", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub speed: u32,
}

/// Whose retry schedule `trigger --retries` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RetryPolicy {
    /// IllumiChat: retries after 1, 5 and 30 minutes.
    Illumichat,
}

/// `illumitunnel test`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "event", "suite"])))]
pub struct TestArgs {
    /// Delivery ids (or unique prefixes) from the capture store.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,

    /// Every delivery of this event type in the capture store (oldest first).
    #[arg(long, value_name = "TYPE", conflicts_with_all = ["ids", "suite"])]
    pub event: Option<String>,

    /// With --event: only deliveries received within this long, e.g. 15m, 1h30m, 1d.
    #[arg(long, value_name = "DURATION", requires = "event", conflicts_with_all = ["ids", "suite"])]
    pub since: Option<String>,

    /// A suite file from `suite save` (`-` reads stdin); needs no capture store and no relay.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ids", "event"])]
    pub suite: Option<PathBuf>,

    /// Send to this handler, each delivery's path under it (default: the current target of the
    /// listen running for the delivery's tunnel, else where it went; required with --suite).
    #[arg(long, value_name = "URL", conflicts_with = "to_recorded")]
    pub forward_to: Option<String>,

    /// Send to the origin each delivery went to when recorded, even when a listen running for
    /// its tunnel now forwards elsewhere.
    #[arg(long)]
    pub to_recorded: bool,

    #[command(flatten)]
    pub forward_trust: ForwardTrustArgs,

    /// JSON pointer in the response body to leave out of the comparison, e.g. /data/updatedAt
    /// (repeatable; a * segment matches any key or index).
    #[arg(long, value_name = "POINTER")]
    pub ignore: Vec<String>,

    /// Also write the results as JUnit XML, for CI test reports.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// One JSON object per delivery; the summary goes to stderr.
    #[arg(long)]
    pub json: bool,
}

/// `illumitunnel suite`.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// What to do with suites.
    #[command(subcommand)]
    pub action: SuiteAction,
}

/// `illumitunnel suite …` actions.
#[derive(Debug, Subcommand)]
pub enum SuiteAction {
    /// Write deliveries and their recorded answers to FILE, one a line (JSON Lines).
    Save(SuiteSaveArgs),
}

/// `illumitunnel suite save`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "event", "last"])))]
pub struct SuiteSaveArgs {
    /// The suite file to write (replaced if it exists); `-` writes to stdout.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Delivery ids (or unique prefixes).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,

    /// Every delivery of this event type (oldest first).
    #[arg(long, value_name = "TYPE", conflicts_with_all = ["ids", "last"])]
    pub event: Option<String>,

    /// With --event: only deliveries received within this long, e.g. 15m, 1h30m, 1d.
    #[arg(long, value_name = "DURATION", requires = "event", conflicts_with_all = ["ids", "last"])]
    pub since: Option<String>,

    /// The newest N deliveries.
    #[arg(long, value_name = "N", conflicts_with_all = ["ids", "event"],
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub last: Option<u32>,

    /// Keep the values of Authorization, Cookie, Proxy-Authorization and headers named like a
    /// token, secret, signature or key (by default they read REDACTED).
    #[arg(long)]
    pub include_secrets: bool,

    /// Say what was written as one JSON object (`path`, `count`, `redacted`) instead of a
    /// sentence; on stderr when the suite itself goes to stdout (`-`).
    #[arg(long)]
    pub json: bool,
}

/// `illumitunnel replay`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "last", "event"])))]
pub struct ReplayArgs {
    /// Delivery ids (or unique prefixes) to replay.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,

    /// Replay the newest delivery that is not itself a replay.
    #[arg(long, conflicts_with_all = ["ids", "event"])]
    pub last: bool,

    /// Replay every delivery of this event type (oldest first).
    #[arg(long, value_name = "TYPE", conflicts_with = "ids")]
    pub event: Option<String>,

    /// With --event: only deliveries received within this long, e.g. 15m, 1h30m, 1d.
    #[arg(long, value_name = "DURATION", requires = "event")]
    pub since: Option<String>,

    /// Send to exactly this URL (plus the stored query) instead of where the delivery went.
    #[arg(long, value_name = "URL", conflicts_with = "to_recorded")]
    pub forward_to: Option<String>,

    /// Send to the origin each delivery went to when recorded, even when a listen running for
    /// its tunnel now forwards elsewhere (default: that listen's current target).
    #[arg(long)]
    pub to_recorded: bool,

    #[command(flatten)]
    pub forward_trust: ForwardTrustArgs,

    /// Edit each body in $VISUAL or $EDITOR before sending it.
    #[arg(long)]
    pub edit: bool,

    /// One JSON object per replay.
    #[arg(long)]
    pub json: bool,
}

/// `illumitunnel export`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("format").required(true).args(["har", "jsonl"])))]
pub struct ExportArgs {
    /// Write a HAR 1.2 file (opens in browser devtools and HTTP tools); `-` writes to stdout.
    #[arg(long, value_name = "FILE")]
    pub har: Option<PathBuf>,

    /// Write one delivery a line, as show --json prints it; `-` writes to stdout.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,

    /// Only deliveries of this event type.
    #[arg(long, value_name = "TYPE")]
    pub event: Option<String>,

    /// Only deliveries received within this long, e.g. 15m, 1h30m, 1d.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,

    /// Keep the values of Authorization, Cookie, Proxy-Authorization and headers named like a
    /// token, secret, signature or key (by default they read REDACTED).
    #[arg(long)]
    pub include_secrets: bool,

    /// Say what was written as one JSON object (`path`, `format`, `count`, `redacted`) instead
    /// of a sentence; on stderr when the export itself goes to stdout (`-`).
    #[arg(long)]
    pub json: bool,
}

/// `illumitunnel webhooks`.
#[derive(Debug, Args)]
pub struct WebhooksArgs {
    /// What to do with the webhooks.
    #[command(subcommand)]
    pub action: WebhooksAction,

    /// IllumiChat API access.
    #[command(flatten)]
    pub api: ApiArgs,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `illumitunnel webhooks …` actions.
#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// List your workspace's webhooks.
    List,
    /// Create a webhook for URL with the given events.
    Register {
        /// The HTTPS URL IllumiChat should deliver to (e.g. your tunnel URL).
        #[arg(long, value_name = "URL")]
        url: String,
        /// Event types, comma-separated.
        #[arg(long, value_name = "TYPE,...", value_delimiter = ',', required = true)]
        events: Vec<String>,
    },
    /// Turn a webhook on.
    Enable {
        /// Webhook id.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Turn a webhook off (IllumiChat stops delivering to it).
    Disable {
        /// Webhook id.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Delete a webhook.
    Delete {
        /// Webhook id.
        #[arg(value_name = "ID")]
        id: String,
    },
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
mod tests;
