//! `illumitunnel show ID`: one delivery with its request, response and timings.

use illumitunnel::store::CaptureStore;

use super::{ignore_broken_pipe, Ctx};
use crate::cli::ShowArgs;
use crate::output;

/// Prints the delivery whose id is, or uniquely starts with, `args.id`.
pub fn run(args: ShowArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let store = CaptureStore::open(&ctx.store)?;
    let Some(delivery) = store.get(&args.id)? else {
        anyhow::bail!(
            "no delivery with id {}; list ids with illumitunnel events",
            args.id.escape_debug()
        );
    };
    let stdout = std::io::stdout();
    ignore_broken_pipe(output::write_detail(
        &mut stdout.lock(),
        &delivery,
        args.json,
    ))
}
