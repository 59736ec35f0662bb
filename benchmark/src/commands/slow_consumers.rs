//! The `slow-consumers` command: bursts of clients that never read, flooded with pushes,
//! round after round on one kim mock-server; after each round the server's resident memory
//! and its heap, printed as a Markdown table as they come. kim only; each run is a new server.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use kim_benchmark::proc::ServerProcess;
use kim_benchmark::slow_consumers::{heap, round, Config};

use crate::runner::Options;

/// The `slow-consumers` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Clients that never read, per round.
    #[arg(long, default_value_t = 200)]
    pub(crate) consumers: usize,
    /// Rounds per server.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Seconds of pushing per round.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) flood: f64,
    /// Payload bytes per push.
    #[arg(long, default_value_t = 100)]
    pub(crate) payload: usize,
    /// Seconds between the last channel closing and the measurement.
    #[arg(long, default_value_t = 12.0)]
    pub(crate) settle: f64,
}

/// Runs the rounds on `--runs` fresh servers and reports them.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let bins = opts.prepare()?;
    let config = Config {
        consumers: args.consumers,
        rounds: args.rounds,
        flood: Duration::try_from_secs_f64(args.flood)?,
        payload: args.payload,
        settle: Duration::try_from_secs_f64(args.settle)?,
    };
    slow_consumers(opts, &bins, &config)
}

/// The mock-server's arguments: `wire`, `threads` runtime threads, the debug listener up.
fn server_args(wire: &str, threads: &str) -> Vec<String> {
    [
        "--transport",
        wire,
        "--listen",
        "127.0.0.1:0",
        "--threads",
        threads,
        "--debug-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The rounds of `config` on a mock-server from `bins`, `--runs` times, a table row per round.
fn slow_consumers(opts: &Options, bins: &Path, config: &Config) -> anyhow::Result<()> {
    let Config {
        consumers,
        rounds,
        flood,
        payload,
        ..
    } = *config;
    let wire = opts.wires[0];
    let path = bins.join("mock-server");
    anyhow::ensure!(
        path.exists(),
        "{} not found: build with `cargo build --release -p kim-examples -p kim-benchmark`",
        path.display()
    );
    let args = server_args(wire.name(), &opts.threads().to_string());
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let opt_mb = |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{:.1}", mb(b)));
    println!(
        "slow consumers: {consumers} x {rounds} rounds of {:.1} s, {payload} B pushes, {}",
        flood.as_secs_f64(),
        wire.name()
    );
    println!(
        "| run | round | pushes | peak RSS MiB | RSS after MiB | heap in use MiB | heap free MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut all = Vec::new();
    for run in 1..=opts.runs {
        let server = ServerProcess::start(&path, &args, &[], opts.pin.then_some(0))?;
        let debug = server
            .debug_addr(Duration::from_secs(10))
            .context("the server printed no debug address")?;
        std::thread::sleep(Duration::from_millis(200));
        let (in_use, free) = heap(&debug)?;
        println!(
            "| {run} | start | | | {:.1} | {} | {} |",
            mb(server.rss()?),
            opt_mb(in_use),
            opt_mb(free)
        );
        for r in 1..=rounds {
            let res = round(&server, &debug, wire, config)
                .with_context(|| format!("run {run}, round {r}"))?;
            println!(
                "| {run} | {r} | {} | {:.1} | {:.1} | {} | {} |",
                res.pushes,
                mb(res.peak_rss),
                mb(res.rss_after),
                opt_mb(res.heap_in_use),
                opt_mb(res.heap_free)
            );
            all.push((run, r, res));
        }
    }
    if opts.json {
        let rows: Vec<_> = all
            .iter()
            .map(|(run, r, res)| serde_json::json!({"run": run, "round": r, "result": res}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}
