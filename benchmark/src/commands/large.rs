//! The `large` command: large messages echoed on one connection, against kim and the
//! baselines (uWebSockets' echo server among them when it is built): MB/s.

use kim_benchmark::workloads;

use crate::figures::{self, print_results};
use crate::runner::{Mode, Options};

/// The `large` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Messages to echo.
    #[arg(long, default_value_t = 2000)]
    pub(crate) count: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 512 * 1024)]
    pub(crate) size: usize,
}

/// Echoes `--count` messages of `--size` bytes against every target and reports the rate.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let &Args { count, size } = args;
    let bench = opts.echo_bench()?;
    let mut figs = Vec::new();
    let res = bench.each("large", Mode::Echo, |server, target| {
        workloads::large(&server.addr, target.wire(), count, size)
    })?;
    figures::collect(&mut figs, "large", "MB/s echoed", true, &res, |r| {
        r.mb_per_sec
    });
    print_results(opts, &bench, &figs, serde_json::Map::new())
}
