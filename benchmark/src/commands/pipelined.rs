//! The `pipelined` command: connections each keeping messages in flight, against kim and the
//! baselines: echoes per second, and echoes that never came back.

use std::time::Duration;

use crate::figures::{self, print_results};
use crate::runner::{Mode, Options};

/// The `pipelined` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Connections.
    #[arg(long, default_value_t = 100)]
    pub(crate) clients: usize,
    /// Messages unanswered per connection.
    #[arg(long, default_value_t = 2)]
    pub(crate) in_flight: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) size: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 8.0)]
    pub(crate) duration: f64,
}

/// Runs the workload against every target and reports it.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let bench = opts.server_bench()?;
    let mut figs = Vec::new();
    let &Args {
        clients,
        in_flight,
        size,
        duration,
    } = args;
    let duration = Duration::try_from_secs_f64(duration)?;
    let res = bench.each("pipelined", Mode::Mock, |server, target| {
        kim_benchmark::pipelined::pipelined(
            &server.addr,
            target.wire(),
            clients,
            in_flight,
            size,
            duration,
        )
    })?;
    let label = format!("pipelined {clients} x {in_flight} x {size} B");
    figures::collect(&mut figs, &label, "echoes per second", true, &res, |r| {
        r.msgs_per_sec
    });
    figures::collect(&mut figs, &label, "echoes lost", false, &res, |r| {
        r.lost as f64
    });
    figures::collect(&mut figs, &label, "messages sent", true, &res, |r| {
        r.sent as f64
    });
    print_results(opts, &bench, &figs, serde_json::Map::new())
}
