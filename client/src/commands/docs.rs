//! `illumitunnel completions SHELL` and `illumitunnel man`: generated from the clap
//! definition (clap_complete, clap_mangen), so they always match the flags, printed on stdout.

use std::io::Write as _;

use clap::CommandFactory as _;

use super::ignore_broken_pipe;
use crate::cli::Cli;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "illumitunnel", &mut script);
    write_stdout(&script)
}

/// Prints the man page (roff) for `illumitunnel`, its options and a section listing the
/// subcommands (each one's flags are in `illumitunnel help COMMAND`).
pub fn man() -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| anyhow::anyhow!("could not render the man page: {e}"))?;
    write_stdout(&page)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    ignore_broken_pipe(out.write_all(bytes).and_then(|()| out.flush()))
}
