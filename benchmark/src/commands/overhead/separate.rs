//! The `overhead` command's `--separate` method: each server alone for `--duration` per run,
//! the echo workload as `echo` runs it, alternating (every other round in reverse order);
//! the counters of each server with metrics on read after its run; then medians, ratios
//! (also paired run by run) and verdicts.

use std::time::Duration;

use kim_benchmark::wire::Wire;

use crate::commands::echo::{echo_run, EchoRun};
use crate::figures::{self, detail, median, print_markdown, Figure};
use crate::runner::{Bench, Mode, Obs, Options, Target};

use super::check::{self, MetricsCheck};
use super::{OVERHEAD_MAX_COST, OVERHEAD_MIN_RUNS};

/// Each target's echo runs.
type Results = Vec<(Target, Vec<EchoRun>)>;

/// A variant of kim against the bare one on one metric (medians). The instrumented variant's
/// comparisons are the verdicts; the others (with `--attribute`) only inform.
#[derive(Debug, Clone, serde::Serialize)]
struct OverheadRatio {
    /// The wire of both servers.
    wire: Wire,
    /// `instrumented`, `metrics only` or `tracing only`.
    variant: &'static str,
    /// `msgs/s` or `server CPU us/msg`.
    metric: &'static str,
    /// The variant's median / the bare median.
    ratio: f64,
    /// What the variant's observability costs, as a fraction of the bare figure (negative:
    /// no cost seen).
    cost: f64,
    /// The ratio in each round, the variant's run to the bare run of the same round (next to
    /// each other in time, so that a slow drift of the machine cancels out).
    paired: Vec<f64>,
    /// Their median.
    paired_median: f64,
    /// The most the instrumented variant may cost.
    max_cost: f64,
    /// Whether `cost` is at most `max_cost`.
    met: bool,
}

/// What the runs gave, for the report.
struct Outcome<'a> {
    opts: &'a Options,
    bench: &'a Bench,
    /// Connections of the echo workload.
    conns: usize,
    /// Bytes per message.
    size: usize,
    warmup: Duration,
    /// Measured, per run.
    duration: Duration,
    /// The workload's name in the tables.
    label: String,
    /// Every run of every target.
    res: Results,
    /// The medians of `res`.
    figs: Vec<Figure>,
    /// The counters read after each run with metrics on.
    checks: Vec<MetricsCheck>,
    /// The instrumented variant's ratios.
    verdicts: Vec<OverheadRatio>,
    /// The other variants' ratios (with `--attribute`).
    attribution: Vec<OverheadRatio>,
    /// The metrics check summed up.
    metrics_line: String,
    /// No metrics check failed.
    metrics_ok: bool,
    /// Too few runs for the verdicts to count.
    indicative: bool,
}

/// The `overhead` workload: kim instrumented and bare (and, with `--attribute`, with metrics
/// only and tracing only), alternating (every other round in reverse order), the echo
/// workload as `echo` runs it; the counters of each server with metrics on read after its
/// run; then medians, ratios and verdicts.
pub(super) fn run(
    opts: &Options,
    bench: &Bench,
    (conns, size): (usize, usize),
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<()> {
    let runs = bench.runs;
    let indicative = runs < OVERHEAD_MIN_RUNS;
    if indicative {
        eprintln!(
            "overhead: {runs} runs per target; the verdicts need at least {OVERHEAD_MIN_RUNS} \
             (fewer are indicative only)"
        );
    }
    let label = format!("overhead, echo {conns} x {size} B");
    let (res, checks) = measure(bench, &label, (conns, size), warmup, duration)?;
    let mut figs = Vec::new();
    crate::commands::echo::collect_figures(&mut figs, &label, &res);
    let (verdicts, attribution): (Vec<OverheadRatio>, Vec<OverheadRatio>) =
        ratios(bench, &opts.wires, &figs)
            .into_iter()
            .partition(|r| r.variant == "instrumented");
    let (metrics_line, metrics_ok) = check::summary(&checks);
    let out = Outcome {
        opts,
        bench,
        conns,
        size,
        warmup,
        duration,
        label,
        res,
        figs,
        checks,
        verdicts,
        attribution,
        metrics_line,
        metrics_ok,
        indicative,
    };
    if opts.json {
        return out.print_json();
    }
    if opts.markdown {
        out.print_markdown();
        return Ok(());
    }
    out.print_text();
    Ok(())
}

/// The echo workload against every target, `--runs` times; after each run of a server with
/// metrics on, its counters checked.
fn measure(
    bench: &Bench,
    label: &str,
    (conns, size): (usize, usize),
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(Results, Vec<MetricsCheck>)> {
    let mut checks: Vec<MetricsCheck> = Vec::new();
    let res = bench.each(label, Mode::Echo, |server, target| {
        let run = echo_run(server, target.wire(), conns, size, warmup, duration)?;
        if let Target::KimObs(_, obs) = target {
            if !obs.metrics {
                return Ok(run);
            }
            let n = checks.iter().filter(|c| c.target == target.name()).count();
            let log = obs.tracing.then_some(bench.server_log.as_path());
            let check = MetricsCheck::read(server, target, n + 1, &run, log);
            eprintln!("  {}", check.describe());
            checks.push(check);
        }
        Ok(run)
    })?;
    Ok((res, checks))
}

/// Every variant against the bare server of its wire, on both metrics.
fn ratios(bench: &Bench, wires: &[Wire], figs: &[Figure]) -> Vec<OverheadRatio> {
    let fig = |metric: &str, target: Target| {
        figs.iter()
            .find(|f| f.metric == metric && f.target == target.name())
    };
    let med = |metric: &str, target: Target| fig(metric, target).map_or(f64::NAN, |f| f.median);
    let mut ratios = Vec::new();
    for &w in wires {
        let off = Target::KimObs(w, Obs::NONE);
        for &target in &bench.targets {
            let Target::KimObs(tw, obs) = target else {
                continue;
            };
            let variant = match (obs.metrics, obs.tracing) {
                _ if tw != w => continue,
                (true, true) => "instrumented",
                (true, false) => "metrics only",
                (false, true) => "tracing only",
                (false, false) => continue,
            };
            for (metric, name, higher_is_better) in [
                ("messages per second", "msgs/s", true),
                ("server CPU us per message", "server CPU us/msg", false),
            ] {
                let ratio = med(metric, target) / med(metric, off);
                let cost = if higher_is_better {
                    1.0 - ratio
                } else {
                    ratio - 1.0
                };
                let paired: Vec<f64> = match (fig(metric, target), fig(metric, off)) {
                    (Some(a), Some(b)) => a.runs.iter().zip(&b.runs).map(|(a, b)| a / b).collect(),
                    _ => Vec::new(),
                };
                ratios.push(OverheadRatio {
                    wire: w,
                    variant,
                    metric: name,
                    ratio,
                    cost,
                    paired_median: median(&paired),
                    paired,
                    max_cost: OVERHEAD_MAX_COST,
                    met: cost <= OVERHEAD_MAX_COST,
                });
            }
        }
    }
    ratios
}

impl Outcome<'_> {
    /// One ratio as a line, with the verdict for the instrumented variant.
    fn ratio_line(&self, v: &OverheadRatio) -> String {
        let runs = self.bench.runs;
        let end = if v.variant != "instrumented" {
            ")".to_string()
        } else {
            format!(
                ", target <= {:.0}%): {}{}",
                v.max_cost * 100.0,
                if v.met { "PASS" } else { "FAIL" },
                if self.indicative {
                    format!(" (indicative: {runs} runs < {OVERHEAD_MIN_RUNS})")
                } else {
                    String::new()
                }
            )
        };
        format!(
            "{}{}/bare {} = {:.3} (cost {:.1}%{end}",
            if self.opts.wires.len() > 1 {
                format!("[{}] ", v.wire.name())
            } else {
                String::new()
            },
            v.variant,
            v.metric,
            v.ratio,
            v.cost * 100.0,
        )
    }

    /// The report as JSON (`--json`).
    fn print_json(&self) -> anyhow::Result<()> {
        let doc = serde_json::json!({
            "machine": {
                "cpus": self.opts.cpus,
                "pinned": self.opts.pin,
                "server_threads": self.bench.threads,
            },
            "runs": self.bench.runs,
            "overhead": {
                "connections": self.conns,
                "size": self.size,
                "warmup_secs": self.warmup.as_secs_f64(),
                "duration_secs": self.duration.as_secs_f64(),
            },
            "figures": self.figs,
            "targets": self.verdicts,
            "attribution": self.attribution,
            "metrics": self.checks,
            "metrics_ok": self.metrics_ok,
            "details": { self.label.clone(): detail(&self.res) },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        Ok(())
    }

    /// The report as Markdown (`--markdown`): the table, then the ratios and the metrics
    /// check as a list.
    fn print_markdown(&self) {
        print_markdown(&self.figs);
        println!();
        for v in self.verdicts.iter().chain(&self.attribution) {
            println!("- {}", self.ratio_line(v));
        }
        println!("- {}", self.metrics_line);
    }

    /// The report as text: the machine and the servers' settings, a table per metric, the
    /// metrics checks, and the ratios with the verdicts.
    fn print_text(&self) {
        self.print_header();
        self.print_tables();
        println!(
            "\nmetrics (GET /metrics after each run with metrics on; the clients' counts include \
             the warm-up):"
        );
        for c in &self.checks {
            println!("  {}", c.describe());
        }
        println!("  {}", self.metrics_line);
        let paired_line = |v: &OverheadRatio| {
            let rounds: Vec<String> = v.paired.iter().map(|r| format!("{r:.3}")).collect();
            format!(
                "    paired by round: median {:.3}; rounds {}",
                v.paired_median,
                rounds.join(" ")
            )
        };
        println!("\ntargets (medians):");
        for v in &self.verdicts {
            println!("  {}", self.ratio_line(v));
            println!("{}", paired_line(v));
        }
        if !self.attribution.is_empty() {
            println!("\nattribution (medians):");
            for v in &self.attribution {
                println!("  {}", self.ratio_line(v));
                println!("{}", paired_line(v));
            }
        }
    }

    /// The machine, and what each server runs with.
    fn print_header(&self) {
        println!(
            "machine: {} cpus; server {} (runtime threads {}); {} runs per target, \
             alternating (every other round in reverse order), medians",
            self.opts.cpus,
            if self.opts.pin {
                "pinned to cpu 0, load generator to cpu 1"
            } else {
                "unpinned"
            },
            self.bench.threads,
            self.bench.runs,
        );
        let w = self
            .opts
            .wires
            .iter()
            .map(|w| w.name())
            .collect::<Vec<_>>()
            .join("|");
        println!(
            "instrumented (kim-{w}): --metrics on, --debug-listen, RUST_LOG=info (log to a \
             file); bare (kim-{w}-bare): --metrics off, RUST_LOG=off"
        );
        if !self.attribution.is_empty() {
            println!(
                "metrics only (kim-{w}-metrics): --metrics on, --debug-listen, RUST_LOG=off; \
                 tracing only (kim-{w}-tracing): --metrics off, RUST_LOG=info (log to a file)"
            );
        }
    }

    /// A table per metric: each target's median, its ratio to its bare counterpart, its runs.
    fn print_tables(&self) {
        // Each kim target's bare counterpart, by name.
        let bare_of = |name: &str| {
            self.bench.targets.iter().find_map(|&t| match t {
                Target::KimObs(w, _) if t.name() == name => {
                    Some(Target::KimObs(w, Obs::NONE).name())
                }
                _ => None,
            })
        };
        for metric in figures::metrics(&self.figs) {
            let rows: Vec<&Figure> = self.figs.iter().filter(|f| f.metric == metric).collect();
            println!("\n{}: {metric}", self.label);
            println!("  {:<16} {:>14} {:>8}   runs", "target", "median", "/bare");
            for f in &rows {
                let bare = bare_of(&f.target)
                    .filter(|b| *b != f.target)
                    .and_then(|b| rows.iter().find(|r| r.target == b))
                    .map(|b| b.median)
                    .filter(|b| *b != 0.0);
                let runs: Vec<String> = f.runs.iter().map(|r| format!("{r:.3}")).collect();
                println!(
                    "  {:<16} {:>14.3} {:>8}   {}",
                    f.target,
                    f.median,
                    bare.map_or("-".into(), |b| format!("{:.3}", f.median / b)),
                    runs.join(" ")
                );
            }
        }
    }
}
