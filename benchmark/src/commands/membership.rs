//! The `membership` command: the server memory one room membership costs, kim only (the
//! mock protocol's `/join`): C channels log in, then each joins R rooms, and the growth of the
//! server's resident memory is divided by C x R.

use kim_benchmark::membership;

use crate::figures::{self, print_results};
use crate::runner::{Mode, Options, Target};

/// The `membership` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Channels logged in.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) channels: usize,
    /// Rooms each channel joins.
    #[arg(long, default_value_t = 100)]
    pub(crate) rooms_each: usize,
    /// Rooms in all (each gets channels x rooms-each / rooms members).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) rooms: usize,
}

/// Runs the joins against kim's mock server `--runs` times and reports them.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let bench = opts.bench(
        opts.prepare()?,
        vec![Target::Kim(kim_benchmark::wire::Wire::Ws)],
        false,
    );
    let label = format!(
        "membership {} channels x {} rooms each, {} rooms",
        args.channels, args.rooms_each, args.rooms
    );
    let res = bench.each(&label, Mode::Mock, |server, _| {
        membership::membership(
            &server.addr,
            args.channels,
            args.rooms_each,
            args.rooms,
            || server.rss(),
        )
    })?;
    let mut figs = Vec::new();
    figures::collect(
        &mut figs,
        &label,
        "bytes per membership",
        false,
        &res,
        |r| r.bytes_per_membership,
    );
    figures::collect(&mut figs, &label, "joins per second", true, &res, |r| {
        r.joins_per_sec
    });
    let mut details = serde_json::Map::new();
    details.insert(label, figures::detail(&res));
    print_results(opts, &bench, &figs, details)
}
