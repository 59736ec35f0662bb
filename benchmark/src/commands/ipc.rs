//! The `ipc` command: the IPC wire of kim's worker-process backend alone, in this process (a
//! sender thread and a receiver thread), kim's `ChunkSender` and `Reassembler` against a bare
//! ceiling and a naive receiver (the variants of `kim_benchmark::ipc`): MB/s and CPU per
//! message, and whether kim reaches its targets against the two. No servers are started.

use anyhow::Context;

use kim_benchmark::ipc::{IpcRun, Variant};

use crate::figures::{self, median, print_markdown, Figure};
use crate::runner::Options;

/// kim / ceiling must reach this (MB/s medians).
const IPC_CEILING_TARGET: f64 = 0.85;
/// kim / naive must reach this (MB/s medians).
const IPC_NAIVE_TARGET: f64 = 1.5;

/// The `ipc` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Messages to send per run.
    #[arg(long, default_value_t = 2000)]
    pub(crate) count: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 512 * 1024)]
    pub(crate) size: usize,
    /// Payload bytes per datagram.
    #[arg(long, default_value_t = 65536)]
    pub(crate) chunk: usize,
}

/// A comparison of kim with another variant: its name, the ratio of MB/s medians, and the
/// least the ratio must be.
type IpcTarget = (&'static str, f64, f64);

/// The `ipc` workload: the three variants alternated run by run, then medians, ratios and the
/// targets.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let Args { count, size, chunk } = *args;
    anyhow::ensure!(count >= 1, "--count must be at least 1");
    let label = format!("ipc {count} x {size} B, {chunk} B chunks");
    let res = measure(opts, args)?;
    let figs = ipc_figures(&label, &res);
    let mb = |name: &str| {
        figs.iter()
            .find(|f| f.metric == "MB/s" && f.target == name)
            .map_or(f64::NAN, |f| f.median)
    };
    let vs_ceiling = mb("kim") / mb("ceiling");
    let vs_naive = mb("kim") / mb("naive");
    let targets = [
        ("kim / ceiling", vs_ceiling, IPC_CEILING_TARGET),
        ("kim / naive", vs_naive, IPC_NAIVE_TARGET),
    ];
    if opts.json {
        return print_json(opts, args, &figs, &targets, &res);
    }
    if opts.markdown {
        print_markdown(&figs);
        println!();
        for (name, ratio, min) in targets {
            println!("- {}", target_line(name, ratio, min));
        }
        return Ok(());
    }
    print_text(opts, &label, &figs, &targets, &res);
    Ok(())
}

/// An untimed warm-up of each variant, then `--runs` timed runs of each, alternating.
fn measure(opts: &Options, args: &Args) -> anyhow::Result<Vec<(Variant, Vec<IpcRun>)>> {
    let Args { count, size, chunk } = *args;
    let pin = opts.pin;
    let mut res: Vec<(Variant, Vec<IpcRun>)> = Variant::ALL.iter().map(|&v| (v, vec![])).collect();
    // An untimed warm-up of each variant first, so that the first timed run (kim's) does not
    // pay alone for cold caches and fresh pages.
    let warmup = count.min(200);
    eprintln!("ipc: warm-up, {warmup} messages per variant");
    for variant in Variant::ALL {
        variant
            .run(warmup, size, chunk, pin)
            .with_context(|| format!("ipc warm-up, {}", variant.name()))?;
    }
    for run in 0..opts.runs {
        for (variant, results) in res.iter_mut() {
            let r = variant
                .run(count, size, chunk, pin)
                .with_context(|| format!("ipc, {}", variant.name()))?;
            eprintln!(
                "ipc: run {} of {}, {:<7} {:>8.0} MB/s  {:>7.1} ms  receiver CPU {:>6.1} us/msg  \
                 waits rx {} tx {}",
                run + 1,
                opts.runs,
                variant.name(),
                r.mb_per_sec,
                r.elapsed_secs * 1e3,
                r.receiver_cpu_us_per_msg(),
                r.receiver_waits,
                r.sender_waits,
            );
            results.push(r);
        }
    }
    Ok(res)
}

/// The figures of every variant: MB/s, and the receiver's and the sender's CPU per message.
fn ipc_figures(label: &str, res: &[(Variant, Vec<IpcRun>)]) -> Vec<Figure> {
    let mut figs = Vec::new();
    let mut add = |metric: &str, higher_is_better: bool, get: fn(&IpcRun) -> f64| {
        for (variant, runs) in res {
            let v: Vec<f64> = runs.iter().map(get).collect();
            figs.push(Figure {
                workload: label.to_string(),
                metric: metric.into(),
                higher_is_better,
                target: variant.name().into(),
                median: median(&v),
                runs: v,
            });
        }
    };
    add("MB/s", true, |r| r.mb_per_sec);
    add("receiver CPU us per message", false, |r| {
        r.receiver_cpu_us_per_msg()
    });
    add("sender CPU us per message", false, |r| {
        r.sender_cpu_us_per_msg()
    });
    figs
}

/// The socket buffers (send, receive) of the first run.
fn buffers(res: &[(Variant, Vec<IpcRun>)]) -> Option<(usize, usize)> {
    res[0].1.first().map(|r| r.socket_buffers)
}

/// Whether one comparison met its target, as a line.
fn target_line(name: &str, ratio: f64, min: f64) -> String {
    format!(
        "{name} = {ratio:.2}x (target >= {min:.2}x): {}",
        if ratio >= min { "met" } else { "MISSED" }
    )
}

/// The report as JSON (`--json`).
fn print_json(
    opts: &Options,
    args: &Args,
    figs: &[Figure],
    targets: &[IpcTarget],
    res: &[(Variant, Vec<IpcRun>)],
) -> anyhow::Result<()> {
    let Args { count, size, chunk } = *args;
    let doc = serde_json::json!({
        "machine": { "cpus": opts.cpus, "pinned": opts.pin, "socket_buffers": buffers(res) },
        "runs": opts.runs,
        "ipc": { "count": count, "size": size, "chunk": chunk },
        "figures": figs,
        "targets": targets.iter().map(|(name, ratio, min)| serde_json::json!({
            "name": name, "ratio": ratio, "min": min, "met": ratio >= min,
        })).collect::<Vec<_>>(),
        "details": {
            "ipc": res
                .iter()
                .map(|(v, runs)| (v.name().to_string(), serde_json::to_value(runs).unwrap_or_default()))
                .collect::<serde_json::Map<_, _>>(),
        },
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// The report as text: the machine, a table per metric with the ratios to the ceiling and
/// the naive receiver, and the targets.
fn print_text(
    opts: &Options,
    label: &str,
    figs: &[Figure],
    targets: &[IpcTarget],
    res: &[(Variant, Vec<IpcRun>)],
) {
    println!(
        "machine: {} cpus; {}; socket buffers (snd, rcv) {}; {} runs per variant, medians",
        opts.cpus,
        if opts.pin {
            "receiver pinned to cpu 0, sender to cpu 1"
        } else {
            "unpinned"
        },
        buffers(res).map_or("-".into(), |(s, r)| format!("{s}, {r}")),
        opts.runs
    );
    for metric in figures::metrics(figs) {
        let rows: Vec<&Figure> = figs.iter().filter(|f| f.metric == metric).collect();
        let base = |name: &str| rows.iter().find(|f| f.target == name).map(|f| f.median);
        println!("\n{label}: {metric}");
        println!(
            "  {:<10} {:>12} {:>10} {:>10}   runs",
            "variant", "median", "/ceiling", "/naive"
        );
        for f in &rows {
            let ratio = |b: Option<f64>| figures::ratio(f.median, b);
            let runs = figures::runs(&f.runs);
            println!(
                "  {:<10} {:>12.1} {:>10} {:>10}   {}",
                f.target,
                f.median,
                ratio(base("ceiling")),
                ratio(base("naive")),
                runs.join(" ")
            );
        }
    }
    println!("\ntargets (MB/s medians):");
    for &(name, ratio, min) in targets {
        println!("  {}", target_line(name, ratio, min));
    }
}
