//! The `overhead` command: the cost of kim's observability on the echo workload, kim as
//! deployed (metrics on, tracing at info to a log file, the debug listener up) against the
//! same server with metrics and tracing off, in-process backend only; with `--attribute` also
//! metrics only and tracing only. Two methods: interleaved (the default, in `interleaved`)
//! and `--separate` (in `separate`, with the metrics check of `check`).

mod check;
mod interleaved;
mod separate;

use std::time::Duration;

use crate::runner::{parse_preset, Obs, Options, Target};

/// Fewer runs per target than this and the `overhead` verdicts are only indicative.
pub(crate) const OVERHEAD_MIN_RUNS: usize = 5;
/// The most observability may cost, as a fraction of the bare server's figure (medians).
const OVERHEAD_MAX_COST: f64 = 0.02;

/// The `overhead` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `CONNECTIONSxBYTES`.
    #[arg(long, default_value = "100x20")]
    pub(crate) preset: String,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 4.0)]
    pub(crate) duration: f64,
    /// Seconds of warm-up.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup: f64,
    /// Also run kim with metrics only (`kim-ws-metrics`) and with tracing only
    /// (`kim-ws-tracing`), to tell which of the two costs what.
    #[arg(long)]
    pub(crate) attribute: bool,
    /// Run each server alone for `--duration` per run (the `echo` method) instead of
    /// interleaving them in short slices within each run.
    #[arg(long)]
    pub(crate) separate: bool,
    /// Interleaved: milliseconds per slice.
    #[arg(long, default_value_t = 250)]
    pub(crate) slice_ms: u64,
    /// Interleaved: rounds per run (each round gives every server one slice).
    #[arg(long, default_value_t = 24)]
    pub(crate) rounds: usize,
}

/// Checks the backend, runs the method asked for against kim instrumented and bare (and the
/// halves with `--attribute`), and removes the servers' log.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let bins = opts.prepare()?;
    anyhow::ensure!(
        !opts.dgram,
        "overhead measures the in-process backend only (no --backend)"
    );
    let bench = opts.bench(bins, targets(opts, args.attribute), true);
    let (conns, size) = parse_preset(&args.preset)?;
    let warmup = Duration::try_from_secs_f64(args.warmup)?;
    let r = if args.separate {
        let duration = Duration::try_from_secs_f64(args.duration)?;
        separate::run(opts, &bench, (conns, size), warmup, duration)
    } else {
        let settings = interleaved::Settings {
            conns,
            size,
            warmup,
            slice: Duration::from_millis(args.slice_ms.max(10)),
            rounds: args.rounds.max(2),
        };
        interleaved::run(opts, &bench, &settings)
    };
    let _ = std::fs::remove_file(&bench.server_log);
    r
}

/// Per wire: kim instrumented and bare, and with `attribute` metrics only and tracing only.
fn targets(opts: &Options, attribute: bool) -> Vec<Target> {
    let mut targets = Vec::new();
    for &w in &opts.wires {
        targets.extend([Target::KimObs(w, Obs::ALL), Target::KimObs(w, Obs::NONE)]);
        if attribute {
            targets.extend([
                Target::KimObs(
                    w,
                    Obs {
                        metrics: true,
                        tracing: false,
                    },
                ),
                Target::KimObs(
                    w,
                    Obs {
                        metrics: false,
                        tracing: true,
                    },
                ),
            ]);
        }
    }
    targets
}
