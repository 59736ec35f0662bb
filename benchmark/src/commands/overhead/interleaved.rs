//! The `overhead` command's default method, interleaved: per run, the instrumented and the
//! bare server (and with `--attribute` the two halves) are started side by side and loaded in
//! turn, in short slices (rounds in alternating order), by the same client thread. Slow drift
//! of the machine then weighs on every server alike; runs repeat that with fresh processes.
//! The verdict is on the median over runs of each run's msgs/s ratio.

use std::time::Duration;

use anyhow::Context;

use kim_benchmark::proc::ServerProcess;
use kim_benchmark::prometheus;
use kim_benchmark::wire::Wire;
use kim_benchmark::workloads::{self, Slice};

use crate::figures::median;
use crate::runner::{Bench, Mode, Options, Target};

use super::OVERHEAD_MAX_COST;

/// How each run loads the servers.
pub(super) struct Settings {
    /// Connections of the client.
    pub(super) conns: usize,
    /// Bytes per message.
    pub(super) size: usize,
    /// Warm-up, before the slices measured.
    pub(super) warmup: Duration,
    /// Each server's turn.
    pub(super) slice: Duration,
    /// Rounds per run (each round gives every server one slice).
    pub(super) rounds: usize,
}

/// One interleaved run: the servers' figures over all their slices, and the per-round ratios.
#[derive(Debug, Clone, serde::Serialize)]
struct InterleavedRun {
    /// The run, from 1.
    run: usize,
    /// Per target (name): messages per second over its slices.
    msgs_per_sec: Vec<(String, f64)>,
    /// Per target: server CPU microseconds per message over the run.
    cpu_us_per_msg: Vec<(String, f64)>,
    /// Per variant: its msgs/s over the bare server's, per round (adjacent slices).
    round_ratios: Vec<(String, Vec<f64>)>,
    /// Per server with metrics on: its `kim_messages_received_total` after the run, and the
    /// round trips the client counted outside the warm-up (the counter must not be lower).
    counters: Vec<(String, f64, u64)>,
}

/// The `overhead` workload, interleaved: `--runs` runs on each wire, then per wire a table per
/// metric, the ratios with their verdicts, the metrics check and the per-round ratios; with
/// `--json` also the runs and the ratios as JSON.
pub(super) fn run(opts: &Options, bench: &Bench, settings: &Settings) -> anyhow::Result<()> {
    let mut all: Vec<(Wire, Vec<InterleavedRun>)> = Vec::new();
    for &w in &opts.wires {
        all.push((w, measure_wire(bench, w, settings)?));
    }
    let mut doc_targets = Vec::new();
    println!(
        "machine: {} cpus; servers pinned to cpu 0 and loaded in turn, {} ms slices, \
         {} rounds per run (alternating order), {} runs with fresh processes",
        opts.cpus,
        settings.slice.as_millis(),
        settings.rounds,
        bench.runs,
    );
    println!(
        "instrumented (kim-ws): --metrics on, --debug-listen, RUST_LOG=info (log to a file); \
         bare (kim-ws-bare): --metrics off, RUST_LOG=off\n"
    );
    for (w, per_run) in &all {
        let prefix = if opts.wires.len() > 1 {
            format!("[{}] ", w.name())
        } else {
            String::new()
        };
        print_wire(&prefix, *w, per_run, settings, &mut doc_targets);
    }
    if opts.json {
        let doc = serde_json::json!({
            "method": "interleaved",
            "slice_ms": settings.slice.as_millis() as u64,
            "rounds": settings.rounds,
            "runs": all.iter().map(|(w, r)| serde_json::json!({"wire": w.name(), "runs": r})).collect::<Vec<_>>(),
            "targets": doc_targets,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

/// The runs on wire `w`: its targets side by side, `--runs` times with fresh processes.
fn measure_wire(
    bench: &Bench,
    w: Wire,
    settings: &Settings,
) -> anyhow::Result<Vec<InterleavedRun>> {
    let targets: Vec<Target> = bench
        .targets
        .iter()
        .copied()
        .filter(|t| matches!(t, Target::KimObs(tw, _) if *tw == w))
        .collect();
    let bare = targets
        .iter()
        .position(|t| matches!(t, Target::KimObs(_, o) if !o.metrics && !o.tracing))
        .context("a bare target")?;
    let mut per_run = Vec::new();
    for run in 1..=bench.runs {
        per_run.push(run_once(bench, w, &targets, bare, run, settings)?);
    }
    Ok(per_run)
}

/// One run: `targets` started, loaded in turn, their counters read, then stopped.
fn run_once(
    bench: &Bench,
    w: Wire,
    targets: &[Target],
    bare: usize,
    run: usize,
    settings: &Settings,
) -> anyhow::Result<InterleavedRun> {
    let &Settings {
        conns,
        size,
        warmup,
        slice,
        rounds,
    } = settings;
    eprintln!(
        "overhead (interleaved), echo {conns} x {size} B: run {run} of {}, {}",
        bench.runs,
        targets
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(" + ")
    );
    let servers = targets
        .iter()
        .map(|&t| bench.start(t, Mode::Echo))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let cpu0 = servers
        .iter()
        .map(|s| s.cpu_seconds())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let slices = workloads::echo_interleaved(&addrs, w, conns, size, warmup, slice, rounds)?;
    let cpu1 = servers
        .iter()
        .map(|s| s.cpu_seconds())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let n = targets.len();
    let mut echoes = vec![0u64; n];
    let mut secs = vec![0f64; n];
    for sl in &slices {
        echoes[sl.server] += sl.echoes;
        secs[sl.server] += sl.secs;
    }
    let counters = counters(targets, &servers, &echoes)?;
    let round_ratios = round_ratios(targets, bare, &slices);
    let msgs_per_sec = targets
        .iter()
        .enumerate()
        .map(|(k, t)| (t.name(), echoes[k] as f64 / secs[k]))
        .collect();
    // The CPU read spans the warm-up too (its slices alternate the same way); its
    // messages are estimated at each server's measured rate and share of the time.
    let measured: f64 = secs.iter().sum();
    let cpu_us_per_msg = targets
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let rate = echoes[k] as f64 / secs[k];
            let warm = rate * warmup.as_secs_f64() * secs[k] / measured;
            (
                t.name(),
                (cpu1[k] - cpu0[k]) * 1e6 / (echoes[k] as f64 + warm),
            )
        })
        .collect();
    Ok(InterleavedRun {
        run,
        msgs_per_sec,
        cpu_us_per_msg,
        round_ratios,
        counters,
    })
}

/// Each server with metrics on: its name, its `kim_messages_received_total` read now, and the
/// echoes the client counted of it.
fn counters(
    targets: &[Target],
    servers: &[ServerProcess],
    echoes: &[u64],
) -> anyhow::Result<Vec<(String, f64, u64)>> {
    let mut counters = Vec::new();
    for (k, (t, server)) in targets.iter().zip(servers).enumerate() {
        let Target::KimObs(_, obs) = t else { continue };
        if !obs.metrics {
            continue;
        }
        let got = server
            .debug_addr(Duration::from_secs(2))
            .context("the instrumented server printed no debug address")
            .and_then(|a| prometheus::get(&a, "/metrics", Duration::from_secs(5)))
            .map(|text| prometheus::sum(&text, "kim_messages_received_total").unwrap_or(0.0))?;
        counters.push((t.name(), got, echoes[k]));
    }
    Ok(counters)
}

/// Each target but the bare one: its msgs/s over the bare server's, round by round.
fn round_ratios(targets: &[Target], bare: usize, slices: &[Slice]) -> Vec<(String, Vec<f64>)> {
    let n = targets.len();
    let mut round_ratios = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        if k == bare {
            continue;
        }
        let rate = |idx: usize, r: usize| {
            slices
                .iter()
                .skip(r * n)
                .take(n)
                .find(|sl| sl.server == idx)
                .map_or(f64::NAN, |sl| sl.echoes as f64 / sl.secs)
        };
        let ratios: Vec<f64> = (0..slices.len() / n)
            .map(|r| rate(k, r) / rate(bare, r))
            .collect();
        round_ratios.push((t.name(), ratios));
    }
    round_ratios
}

/// The report of wire `w`: a table per metric (its ratios added to `doc_targets`), the
/// ratios with their verdicts, the metrics check and the per-round ratios.
fn print_wire(
    prefix: &str,
    w: Wire,
    per_run: &[InterleavedRun],
    settings: &Settings,
    doc_targets: &mut Vec<serde_json::Value>,
) {
    let names: Vec<String> = per_run[0]
        .msgs_per_sec
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let bare_name = names
        .iter()
        .find(|n| n.ends_with("-bare"))
        .cloned()
        .unwrap_or_default();
    let table = Table {
        prefix,
        w,
        per_run,
        names: &names,
        bare_name: &bare_name,
    };
    for (metric, pick, higher) in [
        ("messages per second", 0usize, true),
        ("server CPU us per message", 1, false),
    ] {
        table.print_metric(settings, metric, pick, higher, doc_targets);
    }
    println!("{prefix}targets (median over runs of each run's ratio to bare):");
    for d in doc_targets.iter() {
        if d["wire"] != w.name() {
            continue;
        }
        println!("{}", target_line(d, &bare_name));
    }
    print_metrics_check(per_run);
    for r in per_run {
        for (name, ratios) in &r.round_ratios {
            println!(
                "  run {} {name}: per-round msgs/s ratio median {:.3} (min {:.3}, max {:.3})",
                r.run,
                median(ratios),
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            );
        }
    }
}

/// The runs of one wire, for its tables.
struct Table<'a> {
    /// `[ws] ` and so on before each title, when there are several wires.
    prefix: &'a str,
    /// The wire.
    w: Wire,
    /// Its runs.
    per_run: &'a [InterleavedRun],
    /// The targets' names, in the order they ran.
    names: &'a [String],
    /// The bare target's name.
    bare_name: &'a str,
}

impl Table<'_> {
    /// The figure of target `name` in each run: msgs/s (`pick` 0) or CPU us per message.
    fn series(&self, name: &str, pick: usize) -> Vec<f64> {
        self.per_run
            .iter()
            .map(|r| {
                let v = if pick == 0 {
                    &r.msgs_per_sec
                } else {
                    &r.cpu_us_per_msg
                };
                v.iter()
                    .find(|(n, _)| n == name)
                    .map_or(f64::NAN, |(_, x)| *x)
            })
            .collect()
    }

    /// The table of one metric: each target's median, its ratio to bare (the median over runs
    /// of each run's ratio) and its runs; each ratio is also added to `doc_targets`.
    fn print_metric(
        &self,
        settings: &Settings,
        metric: &str,
        pick: usize,
        higher: bool,
        doc_targets: &mut Vec<serde_json::Value>,
    ) {
        let (prefix, bare_name) = (self.prefix, self.bare_name);
        let (conns, size) = (settings.conns, settings.size);
        println!("{prefix}overhead (interleaved), echo {conns} x {size} B: {metric}");
        println!("  {:<18} {:>12} {:>8}   runs", "target", "median", "/bare");
        let bare_runs = self.series(bare_name, pick);
        for name in self.names {
            let v = self.series(name, pick);
            let ratio_runs: Vec<f64> = v.iter().zip(&bare_runs).map(|(a, b)| a / b).collect();
            let ratio = median(&ratio_runs);
            println!(
                "  {:<18} {:>12.3} {:>8}   {}",
                name,
                median(&v),
                if *name == bare_name {
                    "-".to_string()
                } else {
                    format!("{ratio:.3}")
                },
                v.iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            if *name != bare_name {
                let cost = if higher { 1.0 - ratio } else { ratio - 1.0 };
                doc_targets.push(serde_json::json!({
                    "wire": self.w.name(), "target": name, "metric": metric,
                    "ratio_runs": ratio_runs, "ratio": ratio, "cost": cost,
                }));
            }
        }
        println!();
    }
}

/// One ratio of `doc_targets` as a line, with the verdict for kim as deployed.
fn target_line(d: &serde_json::Value, bare_name: &str) -> String {
    let name = d["target"].as_str().unwrap_or("");
    let ratio = d["ratio"].as_f64().unwrap_or(f64::NAN);
    let cost = d["cost"].as_f64().unwrap_or(f64::NAN);
    let runs_txt = d["ratio_runs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("{:.3}", x.as_f64().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let verdict = if name.ends_with("-metrics") || name.ends_with("-tracing") {
        String::new()
    } else {
        format!(
            ", target <= {:.0}%): {}",
            OVERHEAD_MAX_COST * 100.0,
            if cost <= OVERHEAD_MAX_COST {
                "PASS"
            } else {
                "FAIL"
            }
        )
    };
    format!(
        "  {name}/{bare_name} {} = {ratio:.3} (cost {:.1}%{}; runs {runs_txt}",
        d["metric"].as_str().unwrap_or(""),
        cost * 100.0,
        if verdict.is_empty() {
            ")".to_string()
        } else {
            verdict
        },
    )
}

/// Whether every scrape's `kim_messages_received_total` reached the echoes the client counted.
fn print_metrics_check(per_run: &[InterleavedRun]) {
    let mut counted = 0;
    let mut short = Vec::new();
    for r in per_run {
        for (name, got, echoes) in &r.counters {
            counted += 1;
            if *got < *echoes as f64 || *got <= 0.0 {
                short.push(format!(
                    "run {} {name}: kim_messages_received_total {got} < {echoes} echoes",
                    r.run
                ));
            }
        }
    }
    if short.is_empty() {
        println!(
            "  metrics check: ok (kim_messages_received_total at least the echoes the \
             client counted, in all {counted} scrapes)"
        );
    } else {
        println!("  metrics check: FAILED ({})", short.join("; "));
    }
}
