//! The `echo` command: connections each echoing messages of one size back and forth, against
//! kim and the baselines (uWebSockets' echo server among them when it is built): messages per
//! second and the server's CPU time per message. The `overhead` command runs the same
//! workload through [`echo_run`].

use std::time::Duration;

use kim_benchmark::proc::ServerProcess;
use kim_benchmark::wire::Wire;
use kim_benchmark::workloads;

use crate::figures::{self, print_results};
use crate::runner::{parse_preset, Mode, Options};

/// The `echo` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `100x20`, `10x1024`, `200x16384` (connections x bytes), or `all` for the three.
    #[arg(long, default_value = "all")]
    pub(crate) preset: String,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Seconds of warm-up.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup: f64,
}

/// Runs each preset (`CONNECTIONSxBYTES`, or `all` for three) against every target, and
/// reports them.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let bench = opts.echo_bench()?;
    let mut figs = Vec::new();
    let presets: Vec<(usize, usize)> = match args.preset.as_str() {
        "all" => vec![(100, 20), (10, 1024), (200, 16384)],
        p => vec![parse_preset(p)?],
    };
    let duration = Duration::try_from_secs_f64(args.duration)?;
    let warmup = Duration::try_from_secs_f64(args.warmup)?;
    for (conns, size) in presets {
        let label = format!("echo {conns} x {size} B");
        let res = bench.each(&label, Mode::Echo, |server, target| {
            echo_run(server, target.wire(), conns, size, warmup, duration)
        })?;
        collect_figures(&mut figs, &label, &res);
    }
    print_results(opts, &bench, &figs, serde_json::Map::new())
}

/// One echo run and the server CPU time it took.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct EchoRun {
    /// What the clients measured.
    #[serde(flatten)]
    pub(crate) echo: workloads::EchoResult,
    /// Server CPU time (user + system) per round trip, in microseconds, over the warm-up and
    /// the measured window together (connecting the clients included).
    pub(crate) server_cpu_us_per_msg: f64,
}

/// The figures of echo runs: messages per second and server CPU per message.
pub(crate) fn collect_figures(
    figs: &mut Vec<figures::Figure>,
    label: &str,
    res: &[(crate::runner::Target, Vec<EchoRun>)],
) {
    figures::collect(figs, label, "messages per second", true, res, |r| {
        r.echo.msgs_per_sec
    });
    figures::collect(figs, label, "server CPU us per message", false, res, |r| {
        r.server_cpu_us_per_msg
    });
}

/// The echo workload once against `server`, with the server's CPU time measured around it.
pub(crate) fn echo_run(
    server: &ServerProcess,
    wire: Wire,
    conns: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<EchoRun> {
    let before = server.cpu_seconds()?;
    let echo = workloads::echo(&server.addr, wire, conns, size, warmup, duration)?;
    let cpu = server.cpu_seconds()? - before;
    Ok(EchoRun {
        echo,
        server_cpu_us_per_msg: cpu * 1e6 / echo.replies.max(1) as f64,
    })
}
