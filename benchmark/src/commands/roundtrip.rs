//! The `roundtrip` command: messages one at a time on one connection, against kim and the
//! baselines: the rate and the latency percentiles.

use kim_benchmark::workloads;

use crate::figures::{self, print_results};
use crate::runner::{Mode, Options};

/// The `roundtrip` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Messages to send.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) count: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 50)]
    pub(crate) size: usize,
}

/// Runs `--count` round trips of `--size` bytes against every target and reports them.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let &Args { count, size } = args;
    let bench = opts.server_bench()?;
    let mut figs = Vec::new();
    let res = bench.each("roundtrip", Mode::Mock, |server, target| {
        workloads::roundtrip(&server.addr, target.wire(), count, size)
    })?;
    figures::collect(
        &mut figs,
        "roundtrip",
        "messages per second",
        true,
        &res,
        |r| r.msgs_per_sec,
    );
    figures::collect(
        &mut figs,
        "roundtrip",
        "p50 latency (us)",
        false,
        &res,
        |r| r.p50_us,
    );
    figures::collect(
        &mut figs,
        "roundtrip",
        "p90 latency (us)",
        false,
        &res,
        |r| r.p90_us,
    );
    figures::collect(
        &mut figs,
        "roundtrip",
        "p99 latency (us)",
        false,
        &res,
        |r| r.p99_us,
    );
    figures::collect(
        &mut figs,
        "roundtrip",
        "max latency (us)",
        false,
        &res,
        |r| r.max_us,
    );
    print_results(opts, &bench, &figs, serde_json::Map::new())
}
