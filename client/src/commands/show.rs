//! `illumitunnel show ID`: one delivery with its request, response and timings.

use illumitunnel::store::CaptureStore;

use super::{delivery_by_id, ignore_broken_pipe, Ctx};
use crate::cli::ShowArgs;
use crate::output;

/// Prints the delivery whose id is, or uniquely starts with, `args.id`.
pub fn run(args: ShowArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let store = CaptureStore::open(&ctx.store)?;
    let delivery = delivery_by_id(&store, &args.id)?;
    let stdout = std::io::stdout();
    ignore_broken_pipe(output::write_detail(
        &mut stdout.lock(),
        &delivery,
        args.json,
    ))
}
