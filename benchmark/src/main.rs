//! kim's benchmark tool: every workload runs against kim and against a tokio-tungstenite
//! baseline (in its default configuration and with the 4 KiB buffers its documentation advises
//! for many connections), alternating, several runs each; the report gives medians and the
//! kim / baseline ratios. Absolute numbers on a shared machine mean little; ratios from the
//! same run do.
//!
//! Servers run as separate processes (the open-files limit is per process, and a server's
//! memory is measured on its own). By default the server is pinned to CPU 0 with one runtime
//! thread and the load generator to CPU 1, so that each run measures the server's work, not
//! the two fighting over both cores.
//!
//! `overhead` compares kim with itself: as deployed (metrics on, tracing at info, the debug
//! listener up) against metrics and tracing off, on the same echo workload.
//!
//! `ipc` is the exception: it measures the IPC wire of kim's worker-process backend alone, in
//! this process (a sender thread on CPU 1, a receiver thread on CPU 0), against a bare
//! ceiling and a naive receiver instead of a server baseline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use kim_benchmark::ipc::{IpcRun, Variant};
use kim_benchmark::proc::{pin_current_process, sibling_bin, ServerProcess};
use kim_benchmark::wire::Wire;
use kim_benchmark::{parallel, prometheus, workloads};

#[derive(Debug, Parser)]
#[command(about = "kim's benchmarks, each side by side with a tokio-tungstenite baseline")]
struct Cli {
    /// kim's transport(s) to measure; the baseline always speaks websocket.
    #[arg(long, value_enum, default_value = "ws", global = true)]
    transport: TransportArg,
    /// Runs of each target, alternating targets; the report gives medians [default: 3; 5 for
    /// `overhead`].
    #[arg(long, global = true)]
    runs: Option<usize>,
    /// Print the results as JSON on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Print the results as Markdown tables (for README.md).
    #[arg(long, global = true)]
    markdown: bool,
    /// Do not pin the server to CPU 0 and the load generator to CPU 1.
    #[arg(long, global = true)]
    no_pin: bool,
    /// Runtime threads of each server (default: 1 when pinned, 2 otherwise).
    #[arg(long, global = true)]
    server_threads: Option<usize>,
    /// Where kim's listeners run: in-process, in worker processes over Unix datagrams, or
    /// both side by side (targets named `kim-ws-dgram` and so on).
    #[arg(long, value_enum, default_value = "inproc", global = true)]
    backend: BackendArg,
    /// Worker processes of the `dgram` backend (they share the server's CPU when pinned).
    #[arg(long, default_value_t = 1, global = true)]
    workers: usize,
    /// Measure only kim, without the baselines.
    #[arg(long, global = true)]
    kim_only: bool,
    /// Where the server binaries are (default: next to this one).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    workload: Workload,
}

impl Cli {
    /// `--runs`, or the workload's default.
    fn runs(&self) -> usize {
        self.runs.unwrap_or(match self.workload {
            Workload::Overhead { .. } => OVERHEAD_MIN_RUNS,
            _ => 3,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendArg {
    Inproc,
    Dgram,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    Ws,
    Tcp,
    All,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Log in many clients (at most 50 logins in flight) and measure memory per connection.
    Parallel {
        /// Clients to log in.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Logins in flight at once.
        #[arg(long, default_value_t = 50)]
        in_flight: usize,
        /// Seconds to hold the connections before checking they still echo.
        #[arg(long, default_value_t = 30.0)]
        hold: f64,
    },
    /// Messages one at a time on one connection: rate and latency percentiles.
    Roundtrip {
        /// Messages to send.
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 50)]
        size: usize,
    },
    /// C connections each echoing S bytes back and forth: messages per second.
    Echo {
        /// `100x20`, `10x1024`, `200x16384` (connections x bytes), or `all` for the three.
        #[arg(long, default_value = "all")]
        preset: String,
        /// Seconds measured (after the warm-up).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds of warm-up.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
    },
    /// The cost of kim's observability on the echo workload: kim with metrics on, tracing at
    /// info (to a log file) and the debug listener up (`kim-ws`), against the same server with
    /// metrics and tracing off (`kim-ws-bare`), alternating, in-process backend only. After
    /// each instrumented run its `GET /metrics` counters are checked against the clients'
    /// counts.
    Overhead {
        /// `CONNECTIONSxBYTES`.
        #[arg(long, default_value = "100x20")]
        preset: String,
        /// Seconds measured (after the warm-up).
        #[arg(long, default_value_t = 4.0)]
        duration: f64,
        /// Seconds of warm-up.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Also run kim with metrics only (`kim-ws-metrics`) and with tracing only
        /// (`kim-ws-tracing`), to tell which of the two costs what.
        #[arg(long)]
        attribute: bool,
        /// Run each server alone for `--duration` per run (the `echo` method) instead of
        /// interleaving them in short slices within each run.
        #[arg(long)]
        separate: bool,
        /// Interleaved: milliseconds per slice.
        #[arg(long, default_value_t = 250)]
        slice_ms: u64,
        /// Interleaved: rounds per run (each round gives every server one slice).
        #[arg(long, default_value_t = 24)]
        rounds: usize,
    },
    /// Slow consumers in bursts: clients that never read are flooded with pushes, round after
    /// round on one mock-server; after each round (the consumers gone), the server's resident
    /// memory and its heap in use and free (`kim_heap_bytes`). kim only; each run is a new
    /// server.
    SlowConsumers {
        /// Clients that never read, per round.
        #[arg(long, default_value_t = 200)]
        consumers: usize,
        /// Rounds per server.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds of pushing per round.
        #[arg(long, default_value_t = 3.0)]
        flood: f64,
        /// Payload bytes per push.
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// Seconds between the last channel closing and the measurement.
        #[arg(long, default_value_t = 12.0)]
        settle: f64,
    },
    /// Print Markdown tables from the JSON output (`--json`) of earlier runs.
    Report {
        /// JSON files written by `--json`.
        files: Vec<PathBuf>,
    },
    /// C connections each keeping W messages in flight (a new one whenever fewer are
    /// unanswered): echoes per second, and echoes lost (never answered; the drain at the end
    /// waits until no byte has come for 3 s).
    Pipelined {
        /// Connections.
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Messages unanswered per connection.
        #[arg(long, default_value_t = 2)]
        in_flight: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 1 << 20)]
        size: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 8.0)]
        duration: f64,
    },
    /// Large messages echoed on one connection: MB/s.
    Large {
        /// Messages to echo.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 512 * 1024)]
        size: usize,
    },
    /// The IPC wire of the worker-process backend alone (two threads, one process): kim's
    /// `ChunkSender` and `Reassembler` against a bare ceiling and a naive receiver, MB/s.
    Ipc {
        /// Messages to send per run.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 512 * 1024)]
        size: usize,
        /// Payload bytes per datagram.
        #[arg(long, default_value_t = 65536)]
        chunk: usize,
    },
}

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Kim(Wire),
    /// kim with its listeners in worker processes.
    KimDgram(Wire),
    /// kim in-process with its observability as given (the `overhead` workload's targets).
    /// With everything on it is named like `Kim`: it is kim as deployed.
    KimObs(Wire, Obs),
    Tungstenite,
    Tungstenite4k,
}

/// Which of kim's observability a server runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Obs {
    /// `--metrics on`, and the debug listener up to read them; otherwise `--metrics off`.
    metrics: bool,
    /// `RUST_LOG=info`, the log to a file; otherwise `RUST_LOG=off`.
    tracing: bool,
}

impl Obs {
    /// Metrics and tracing on: kim as deployed.
    const ALL: Obs = Obs {
        metrics: true,
        tracing: true,
    };
    /// Metrics and tracing off.
    const NONE: Obs = Obs {
        metrics: false,
        tracing: false,
    };

    /// What a target's name gets after `kim-ws`.
    fn suffix(self) -> &'static str {
        match (self.metrics, self.tracing) {
            (true, true) => "",
            (false, false) => "-bare",
            (true, false) => "-metrics",
            (false, true) => "-tracing",
        }
    }
}

impl Target {
    fn name(self) -> String {
        match self {
            Target::Kim(w) => format!("kim-{}", w.name()),
            Target::KimDgram(w) => format!("kim-{}-dgram", w.name()),
            Target::KimObs(w, obs) => format!("kim-{}{}", w.name(), obs.suffix()),
            Target::Tungstenite => "tungstenite".into(),
            Target::Tungstenite4k => "tungstenite-4k".into(),
        }
    }

    fn wire(self) -> Wire {
        match self {
            Target::Kim(w) | Target::KimDgram(w) | Target::KimObs(w, _) => w,
            Target::Tungstenite | Target::Tungstenite4k => Wire::Ws,
        }
    }
}

/// One figure of one target over the runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Figure {
    workload: String,
    metric: String,
    higher_is_better: bool,
    target: String,
    runs: Vec<f64>,
    median: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

struct Bench {
    cli_bins: PathBuf,
    pin: bool,
    threads: usize,
    targets: Vec<Target>,
    runs: usize,
    workers: usize,
    /// Run the targets in reverse order on every other run (A B, B A, A B, ...), so that a
    /// drift of the machine over a pair of runs does not always favour the same target.
    reverse_odd_runs: bool,
    /// Where `KimObs` servers with tracing on write their log (truncated at each start).
    server_log: PathBuf,
}

impl Bench {
    fn start(&self, target: Target, mock: bool) -> anyhow::Result<ServerProcess> {
        let threads = self.threads.to_string();
        let listen = "127.0.0.1:0".to_string();
        let mut env: Vec<(&str, &str)> = Vec::new();
        let mut stderr = std::process::Stdio::inherit();
        let (bin, args): (&str, Vec<String>) = match target {
            Target::Kim(w) | Target::KimDgram(w) | Target::KimObs(w, _) => {
                let mut args = vec![
                    "--transport".into(),
                    w.name().into(),
                    "--listen".into(),
                    listen,
                    "--threads".into(),
                    threads.clone(),
                ];
                if matches!(target, Target::KimDgram(_)) {
                    args.extend([
                        "--backend".into(),
                        "dgram".into(),
                        "--workers".into(),
                        self.workers.to_string(),
                    ]);
                }
                if let Target::KimObs(_, obs) = target {
                    let on_off = |on| if on { "on" } else { "off" }.to_string();
                    args.extend(["--metrics".into(), on_off(obs.metrics)]);
                    if obs.metrics {
                        args.extend(["--debug-listen".into(), "127.0.0.1:0".into()]);
                    }
                    env.push(("RUST_LOG", if obs.tracing { "info" } else { "off" }));
                    if obs.tracing {
                        let log = std::fs::File::create(&self.server_log).with_context(|| {
                            format!("creating the server log {}", self.server_log.display())
                        })?;
                        stderr = log.into();
                    }
                }
                (if mock { "mock-server" } else { "echo-server" }, args)
            }
            Target::Tungstenite | Target::Tungstenite4k => (
                "baseline-server",
                vec![
                    "--mode".into(),
                    if mock { "mock" } else { "echo" }.into(),
                    "--config".into(),
                    if target == Target::Tungstenite {
                        "default"
                    } else {
                        "small"
                    }
                    .into(),
                    "--listen".into(),
                    listen,
                    "--threads".into(),
                    threads,
                ],
            ),
        };
        let path = self.cli_bins.join(bin);
        anyhow::ensure!(
            path.exists(),
            "{} not found: build with `cargo build --release -p kim-examples -p kim-benchmark`",
            path.display()
        );
        ServerProcess::start_with_stderr(&path, &args, &env, self.pin.then_some(0), stderr)
    }

    /// Runs `measure` against every target, `runs` times, alternating targets.
    fn each<T>(
        &self,
        label: &str,
        mock: bool,
        mut measure: impl FnMut(&ServerProcess, Target) -> anyhow::Result<T>,
    ) -> anyhow::Result<Vec<(Target, Vec<T>)>> {
        let mut out: Vec<(Target, Vec<T>)> = self.targets.iter().map(|&t| (t, vec![])).collect();
        for run in 0..self.runs {
            let mut order: Vec<&mut (Target, Vec<T>)> = out.iter_mut().collect();
            if self.reverse_odd_runs && run % 2 == 1 {
                order.reverse();
            }
            for (target, results) in order {
                eprintln!(
                    "{label}: run {} of {}, {}",
                    run + 1,
                    self.runs,
                    target.name()
                );
                let server = self.start(*target, mock)?;
                let r = measure(&server, *target)
                    .with_context(|| format!("{label} against {}", target.name()))?;
                results.push(r);
            }
        }
        Ok(out)
    }
}

fn figures<T>(
    out: &mut Vec<Figure>,
    workload: &str,
    metric: &str,
    higher_is_better: bool,
    results: &[(Target, Vec<T>)],
    get: impl Fn(&T) -> f64,
) {
    for (target, runs) in results {
        let v: Vec<f64> = runs.iter().map(&get).collect();
        out.push(Figure {
            workload: workload.into(),
            metric: metric.into(),
            higher_is_better,
            target: target.name(),
            median: median(&v),
            runs: v,
        });
    }
}

fn print_table(figs: &[Figure]) {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for f in figs {
        if !groups.contains(&(f.workload.as_str(), f.metric.as_str())) {
            groups.push((&f.workload, &f.metric));
        }
    }
    for (workload, metric) in groups {
        let rows: Vec<&Figure> = figs
            .iter()
            .filter(|f| f.workload == workload && f.metric == metric)
            .collect();
        let base = |name: &str| rows.iter().find(|f| f.target == name).map(|f| f.median);
        println!("\n{workload}: {metric}");
        println!(
            "  {:<16} {:>14} {:>10} {:>10} {:>8}   runs",
            "target", "median", "/tung", "/tung-4k", "/inproc"
        );
        for f in &rows {
            let ratio = |b: Option<f64>| match b {
                Some(b) if b != 0.0 => format!("{:.2}x", f.median / b),
                _ => "-".into(),
            };
            let runs: Vec<String> = f.runs.iter().map(|r| format!("{r:.1}")).collect();
            let inproc = match f.target.strip_suffix("-dgram") {
                Some(kim) => ratio(base(kim)),
                None => "-".into(),
            };
            println!(
                "  {:<16} {:>14.1} {:>10} {:>10} {:>8}   {}",
                f.target,
                f.median,
                ratio(base("tungstenite")),
                ratio(base("tungstenite-4k")),
                inproc,
                runs.join(" ")
            );
        }
    }
}

/// One Markdown table per workload: a row per target, a column per metric (median), then the
/// ratios to tokio-tungstenite in its two configurations.
fn print_markdown(figs: &[Figure]) {
    let mut workloads: Vec<&str> = Vec::new();
    for f in figs {
        if !workloads.contains(&f.workload.as_str()) {
            workloads.push(&f.workload);
        }
    }
    for w in workloads {
        let of_w: Vec<&Figure> = figs.iter().filter(|f| f.workload == w).collect();
        let mut metrics: Vec<&str> = Vec::new();
        let mut targets: Vec<&str> = Vec::new();
        for f in &of_w {
            if !metrics.contains(&f.metric.as_str()) {
                metrics.push(&f.metric);
            }
            if !targets.contains(&f.target.as_str()) {
                targets.push(&f.target);
            }
        }
        let get = |t: &str, m: &str| of_w.iter().find(|f| f.target == t && f.metric == m);
        println!("\n**{w}** (medians)\n");
        let mut header = String::from("| target |");
        let mut rule = String::from("|---|");
        for m in &metrics {
            header.push_str(&format!(" {m} |"));
            rule.push_str("---|");
        }
        println!("{header}\n{rule}");
        for t in &targets {
            let mut row = format!("| {t} |");
            for m in &metrics {
                let cell = match get(t, m) {
                    Some(f) => {
                        let base = |b: &str| get(b, m).map(|x| x.median).filter(|v| *v != 0.0);
                        let mut c = format_value(f.median);
                        if t.starts_with("kim") {
                            let r: Vec<String> = [base("tungstenite"), base("tungstenite-4k")]
                                .iter()
                                .flatten()
                                .map(|b| format!("{:.2}x", f.median / b))
                                .collect();
                            if !r.is_empty() {
                                c.push_str(&format!(" ({})", r.join(" / ")));
                            }
                        }
                        c
                    }
                    None => "-".into(),
                };
                row.push_str(&format!(" {cell} |"));
            }
            println!("{row}");
        }
    }
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        let n = v.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else {
        format!("{v:.1}")
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(cli.runs() >= 1, "--runs must be at least 1");
    if let Workload::Report { files } = &cli.workload {
        let mut figs: Vec<Figure> = Vec::new();
        for f in files {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON from --json", f.display()))?;
            let part: Vec<Figure> = serde_json::from_value(doc["figures"].clone())
                .with_context(|| format!("{} has no figures", f.display()))?;
            figs.extend(part);
        }
        print_markdown(&figs);
        return Ok(());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = !cli.no_pin && cpus >= 2;
    if let Workload::Ipc { count, size, chunk } = cli.workload {
        // No servers: the threads pin themselves.
        return ipc(&cli, cpus, pin, count, size, chunk);
    }
    if pin {
        pin_current_process(1)?;
    }
    let bins = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => sibling_bin("kim-benchmark")?
            .parent()
            .context("binary directory")?
            .to_path_buf(),
    };
    if let Workload::SlowConsumers {
        consumers,
        rounds,
        flood,
        payload,
        settle,
    } = cli.workload
    {
        let config = kim_benchmark::slow_consumers::Config {
            consumers,
            rounds,
            flood: Duration::try_from_secs_f64(flood)?,
            payload,
            settle: Duration::try_from_secs_f64(settle)?,
        };
        return slow_consumers(&cli, &bins, pin, &config);
    }
    let wires = match cli.transport {
        TransportArg::Ws => vec![Wire::Ws],
        TransportArg::Tcp => vec![Wire::Tcp],
        TransportArg::All => vec![Wire::Ws, Wire::Tcp],
    };
    let is_overhead = matches!(cli.workload, Workload::Overhead { .. });
    anyhow::ensure!(
        !is_overhead || cli.backend == BackendArg::Inproc,
        "overhead measures the in-process backend only (no --backend)"
    );
    let mut targets = Vec::new();
    for &w in &wires {
        if is_overhead {
            targets.extend([Target::KimObs(w, Obs::ALL), Target::KimObs(w, Obs::NONE)]);
            if let Workload::Overhead {
                attribute: true, ..
            } = cli.workload
            {
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
            continue;
        }
        if cli.backend != BackendArg::Dgram {
            targets.push(Target::Kim(w));
        }
        if cli.backend != BackendArg::Inproc {
            targets.push(Target::KimDgram(w));
        }
    }
    if !cli.kim_only && !is_overhead {
        targets.extend([Target::Tungstenite, Target::Tungstenite4k]);
    }
    let bench = Bench {
        cli_bins: bins,
        pin,
        threads: cli.server_threads.unwrap_or(if pin { 1 } else { 2 }),
        targets,
        runs: cli.runs(),
        workers: cli.workers,
        reverse_odd_runs: is_overhead,
        server_log: std::env::temp_dir()
            .join(format!("kim-benchmark-{}-server.log", std::process::id())),
    };
    if let Workload::Overhead {
        ref preset,
        warmup,
        separate: false,
        slice_ms,
        rounds,
        ..
    } = cli.workload
    {
        let (conns, size) = parse_preset(preset)?;
        let r = overhead_interleaved(
            &cli,
            &bench,
            cpus,
            &wires,
            (conns, size),
            Duration::try_from_secs_f64(warmup)?,
            Duration::from_millis(slice_ms.max(10)),
            rounds.max(2),
        );
        let _ = std::fs::remove_file(&bench.server_log);
        return r;
    }
    if let Workload::Overhead {
        ref preset,
        duration,
        warmup,
        ..
    } = cli.workload
    {
        let (conns, size) = parse_preset(preset)?;
        let r = overhead(
            &cli,
            &bench,
            cpus,
            pin,
            &wires,
            (conns, size),
            Duration::try_from_secs_f64(warmup)?,
            Duration::try_from_secs_f64(duration)?,
        );
        let _ = std::fs::remove_file(&bench.server_log);
        return r;
    }
    let mut figs = Vec::new();
    let mut details = serde_json::Map::new();
    match cli.workload {
        Workload::Parallel {
            clients,
            in_flight,
            hold,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let hold = Duration::try_from_secs_f64(hold)?;
            let res = bench.each("parallel", true, |server, target| {
                rt.block_on(parallel::run(
                    server,
                    target.wire(),
                    clients,
                    in_flight,
                    hold,
                ))
            })?;
            figures(
                &mut figs,
                "parallel",
                "server bytes per idle connection",
                false,
                &res,
                |r| r.bytes_per_conn,
            );
            figures(
                &mut figs,
                "parallel",
                "logins per second",
                true,
                &res,
                |r| r.logins_per_sec,
            );
            figures(
                &mut figs,
                "parallel",
                "server CPU us per login",
                false,
                &res,
                |r| r.server_cpu_us_per_login,
            );
            figures(
                &mut figs,
                "parallel",
                "server MiB after close",
                false,
                &res,
                |r| r.rss_after as f64 / 1048576.0,
            );
            details.insert("parallel".into(), serde_json::to_value(detail(&res))?);
        }
        Workload::Roundtrip { count, size } => {
            let res = bench.each("roundtrip", true, |server, target| {
                workloads::roundtrip(&server.addr, target.wire(), count, size)
            })?;
            figures(
                &mut figs,
                "roundtrip",
                "messages per second",
                true,
                &res,
                |r| r.msgs_per_sec,
            );
            figures(
                &mut figs,
                "roundtrip",
                "p50 latency (us)",
                false,
                &res,
                |r| r.p50_us,
            );
            figures(
                &mut figs,
                "roundtrip",
                "p90 latency (us)",
                false,
                &res,
                |r| r.p90_us,
            );
            figures(
                &mut figs,
                "roundtrip",
                "p99 latency (us)",
                false,
                &res,
                |r| r.p99_us,
            );
            figures(
                &mut figs,
                "roundtrip",
                "max latency (us)",
                false,
                &res,
                |r| r.max_us,
            );
        }
        Workload::Echo {
            preset,
            duration,
            warmup,
        } => {
            let presets: Vec<(usize, usize)> = match preset.as_str() {
                "all" => vec![(100, 20), (10, 1024), (200, 16384)],
                p => vec![parse_preset(p)?],
            };
            let duration = Duration::try_from_secs_f64(duration)?;
            let warmup = Duration::try_from_secs_f64(warmup)?;
            for (conns, size) in presets {
                let label = format!("echo {conns} x {size} B");
                let res = bench.each(&label, false, |server, target| {
                    echo_run(server, target.wire(), conns, size, warmup, duration)
                })?;
                figures(&mut figs, &label, "messages per second", true, &res, |r| {
                    r.echo.msgs_per_sec
                });
                figures(
                    &mut figs,
                    &label,
                    "server CPU us per message",
                    false,
                    &res,
                    |r| r.server_cpu_us_per_msg,
                );
            }
        }
        // Handled above, before any server starts.
        Workload::Report { .. }
        | Workload::Ipc { .. }
        | Workload::Overhead { .. }
        | Workload::SlowConsumers { .. } => return Ok(()),
        Workload::Pipelined {
            clients,
            in_flight,
            size,
            duration,
        } => {
            let duration = Duration::try_from_secs_f64(duration)?;
            let res = bench.each("pipelined", true, |server, target| {
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
            figures(&mut figs, &label, "echoes per second", true, &res, |r| {
                r.msgs_per_sec
            });
            figures(&mut figs, &label, "echoes lost", false, &res, |r| {
                r.lost as f64
            });
            figures(&mut figs, &label, "messages sent", true, &res, |r| {
                r.sent as f64
            });
        }
        Workload::Large { count, size } => {
            let res = bench.each("large", false, |server, target| {
                workloads::large(&server.addr, target.wire(), count, size)
            })?;
            figures(&mut figs, "large", "MB/s echoed", true, &res, |r| {
                r.mb_per_sec
            });
        }
    }
    if cli.json {
        let doc = serde_json::json!({
            "machine": { "cpus": cpus, "pinned": pin, "server_threads": bench.threads },
            "runs": bench.runs,
            "figures": figs,
            "details": details,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if cli.markdown {
        print_markdown(&figs);
    } else {
        println!(
            "machine: {cpus} cpus; server {} (runtime threads {}); {} runs per target, medians",
            if pin {
                "pinned to cpu 0, load generator to cpu 1"
            } else {
                "unpinned"
            },
            bench.threads,
            bench.runs
        );
        print_table(&figs);
    }
    Ok(())
}

/// `CONNECTIONSxBYTES`, e.g. `100x20`.
fn parse_preset(p: &str) -> anyhow::Result<(usize, usize)> {
    let (c, s) = p
        .split_once('x')
        .context("--preset is CONNECTIONSxBYTES, e.g. 100x20")?;
    let conns: usize = c.parse().context("--preset connections")?;
    let size: usize = s.parse().context("--preset bytes")?;
    anyhow::ensure!(conns >= 1, "--preset needs at least one connection");
    Ok((conns, size))
}

/// One echo run and the server CPU time it took.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct EchoRun {
    #[serde(flatten)]
    echo: workloads::EchoResult,
    /// Server CPU time (user + system) per round trip, in microseconds, over the warm-up and
    /// the measured window together (connecting the clients included).
    server_cpu_us_per_msg: f64,
}

/// The echo workload once against `server`, with the server's CPU time measured around it.
fn echo_run(
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

fn detail<T: serde::Serialize + Clone>(res: &[(Target, Vec<T>)]) -> serde_json::Value {
    serde_json::Value::Object(
        res.iter()
            .map(|(t, v)| (t.name(), serde_json::to_value(v).unwrap_or_default()))
            .collect(),
    )
}

/// kim / ceiling must reach this (MB/s medians).
const IPC_CEILING_TARGET: f64 = 0.85;
/// kim / naive must reach this (MB/s medians).
const IPC_NAIVE_TARGET: f64 = 1.5;

/// The `ipc` workload: the three variants alternated run by run, then medians, ratios and the
/// targets.
fn slow_consumers(
    cli: &Cli,
    bins: &std::path::Path,
    pin: bool,
    config: &kim_benchmark::slow_consumers::Config,
) -> anyhow::Result<()> {
    use kim_benchmark::slow_consumers::round;
    let kim_benchmark::slow_consumers::Config {
        consumers,
        rounds,
        flood,
        payload,
        ..
    } = *config;
    let wire = match cli.transport {
        TransportArg::Tcp => Wire::Tcp,
        _ => Wire::Ws,
    };
    let path = bins.join("mock-server");
    anyhow::ensure!(
        path.exists(),
        "{} not found: build with `cargo build --release -p kim-examples -p kim-benchmark`",
        path.display()
    );
    let threads = cli
        .server_threads
        .unwrap_or(if pin { 1 } else { 2 })
        .to_string();
    let args: Vec<String> = [
        "--transport",
        wire.name(),
        "--listen",
        "127.0.0.1:0",
        "--threads",
        &threads,
        "--debug-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
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
    for run in 1..=cli.runs() {
        let server = ServerProcess::start(&path, &args, &[], pin.then_some(0))?;
        let debug = server
            .debug_addr(Duration::from_secs(10))
            .context("the server printed no debug address")?;
        std::thread::sleep(Duration::from_millis(200));
        let (in_use, free) = kim_benchmark::slow_consumers::heap(&debug)?;
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
    if cli.json {
        let rows: Vec<_> = all
            .iter()
            .map(|(run, r, res)| serde_json::json!({"run": run, "round": r, "result": res}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

fn ipc(
    cli: &Cli,
    cpus: usize,
    pin: bool,
    count: usize,
    size: usize,
    chunk: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(count >= 1, "--count must be at least 1");
    let label = format!("ipc {count} x {size} B, {chunk} B chunks");
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
    for run in 0..cli.runs() {
        for (variant, results) in res.iter_mut() {
            let r = variant
                .run(count, size, chunk, pin)
                .with_context(|| format!("ipc, {}", variant.name()))?;
            eprintln!(
                "ipc: run {} of {}, {:<7} {:>8.0} MB/s  {:>7.1} ms  receiver CPU {:>6.1} us/msg  \
                 waits rx {} tx {}",
                run + 1,
                cli.runs(),
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
    let mut figs = Vec::new();
    let mut add = |metric: &str, higher_is_better: bool, get: fn(&IpcRun) -> f64| {
        for (variant, runs) in &res {
            let v: Vec<f64> = runs.iter().map(get).collect();
            figs.push(Figure {
                workload: label.clone(),
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
    let buffers = res[0].1.first().map(|r| r.socket_buffers);
    if cli.json {
        let doc = serde_json::json!({
            "machine": { "cpus": cpus, "pinned": pin, "socket_buffers": buffers },
            "runs": cli.runs(),
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
        return Ok(());
    }
    let target_line = |name: &str, ratio: f64, min: f64| {
        format!(
            "{name} = {ratio:.2}x (target >= {min:.2}x): {}",
            if ratio >= min { "met" } else { "MISSED" }
        )
    };
    if cli.markdown {
        print_markdown(&figs);
        println!();
        for (name, ratio, min) in targets {
            println!("- {}", target_line(name, ratio, min));
        }
        return Ok(());
    }
    println!(
        "machine: {cpus} cpus; {}; socket buffers (snd, rcv) {}; {} runs per variant, medians",
        if pin {
            "receiver pinned to cpu 0, sender to cpu 1"
        } else {
            "unpinned"
        },
        buffers.map_or("-".into(), |(s, r)| format!("{s}, {r}")),
        cli.runs()
    );
    let mut metrics: Vec<&str> = Vec::new();
    for f in &figs {
        if !metrics.contains(&f.metric.as_str()) {
            metrics.push(&f.metric);
        }
    }
    for metric in metrics {
        let rows: Vec<&Figure> = figs.iter().filter(|f| f.metric == metric).collect();
        let base = |name: &str| rows.iter().find(|f| f.target == name).map(|f| f.median);
        println!("\n{label}: {metric}");
        println!(
            "  {:<10} {:>12} {:>10} {:>10}   runs",
            "variant", "median", "/ceiling", "/naive"
        );
        for f in &rows {
            let ratio = |b: Option<f64>| match b {
                Some(b) if b != 0.0 => format!("{:.2}x", f.median / b),
                _ => "-".into(),
            };
            let runs: Vec<String> = f.runs.iter().map(|r| format!("{r:.1}")).collect();
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
    for (name, ratio, min) in targets {
        println!("  {}", target_line(name, ratio, min));
    }
    Ok(())
}

/// Fewer runs per target than this and the `overhead` verdicts are only indicative.
const OVERHEAD_MIN_RUNS: usize = 5;
/// The most observability may cost, as a fraction of the bare server's figure (medians).
const OVERHEAD_MAX_COST: f64 = 0.02;

/// What the instrumented server's `GET /metrics` said after one run, against what the clients
/// counted.
#[derive(Debug, Clone, serde::Serialize)]
struct MetricsCheck {
    target: String,
    run: usize,
    /// The debug listener's address, from the server's `debug listening on ADDR` line.
    debug_addr: Option<String>,
    /// Requests the clients wrote whole, warm-up included.
    requests: u64,
    /// Echoes the clients read whole, warm-up included.
    replies: u64,
    /// `kim_messages_received_total`, all label sets.
    received: Option<f64>,
    /// `kim_messages_sent_total`, all label sets.
    sent: Option<f64>,
    /// Lines in the server's log at the end of the run (with tracing at info).
    log_lines: Option<usize>,
    /// Why the counters could not be read.
    error: Option<String>,
}

impl MetricsCheck {
    /// Reads the counters of `server` after `run`.
    fn read(
        server: &ServerProcess,
        target: Target,
        run: usize,
        echo: &EchoRun,
        log: Option<&Path>,
    ) -> Self {
        let mut check = MetricsCheck {
            target: target.name(),
            run,
            debug_addr: server.debug_addr(Duration::from_secs(2)),
            requests: echo.echo.requests,
            replies: echo.echo.replies,
            received: None,
            sent: None,
            log_lines: log
                .and_then(|l| std::fs::read(l).ok())
                .map(|b| b.iter().filter(|&&c| c == b'\n').count()),
            error: None,
        };
        let Some(addr) = &check.debug_addr else {
            check.error = Some("the server printed no `debug listening on ADDR` line".into());
            return check;
        };
        // The clients have closed; let the server finish with the requests still in flight.
        std::thread::sleep(Duration::from_millis(100));
        match prometheus::get(addr, "/metrics", Duration::from_secs(5)) {
            Ok(text) => {
                check.received = prometheus::sum(&text, "kim_messages_received_total");
                check.sent = prometheus::sum(&text, "kim_messages_sent_total");
                if check.received.is_none() {
                    check.error = Some("no kim_messages_received_total in GET /metrics".into());
                }
            }
            Err(e) => check.error = Some(format!("GET /metrics: {e:#}")),
        }
        check
    }

    /// `Err` when the counters are unusable (missing, or zero after a run); otherwise whether
    /// `kim_messages_received_total` lies between the echoes the clients read and the requests
    /// they wrote (the difference is what was in flight when they closed).
    fn verdict(&self) -> Result<bool, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.received {
            Some(r) if r > 0.0 => Ok(r >= self.replies as f64 && r <= self.requests as f64),
            _ => Err("kim_messages_received_total is 0 after a run".into()),
        }
    }

    fn describe(&self) -> String {
        let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let diff = self.received.map_or(String::new(), |r| {
            let d = r - self.requests as f64;
            format!(
                " ({d:+.0}, {:+.3}%)",
                d * 100.0 / self.requests.max(1) as f64
            )
        });
        let verdict = match self.verdict() {
            Ok(true) => "ok".to_string(),
            Ok(false) => "MISMATCH".to_string(),
            Err(e) => format!("FAILED: {e}"),
        };
        format!(
            "{} run {}: kim_messages_received_total {} vs {} requests written{diff}, {} echoes \
             read: {verdict}; kim_messages_sent_total {}{}",
            self.target,
            self.run,
            num(self.received),
            self.requests,
            self.replies,
            num(self.sent),
            self.log_lines
                .map_or(String::new(), |n| format!("; server log {n} lines")),
        )
    }
}

/// One interleaved run: the servers' figures over all their slices, and the per-round ratios.
#[derive(Debug, Clone, serde::Serialize)]
struct InterleavedRun {
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

/// The `overhead` workload, interleaved: per run, the instrumented and the bare server (and
/// with `--attribute` the two halves) are started side by side and loaded in turn, in slices
/// of `slice` (rounds in alternating order), by the same client thread. Slow drift of the
/// machine then weighs on every server alike; runs repeat that with fresh processes. The
/// verdict is on the median over runs of each run's msgs/s ratio.
#[allow(clippy::too_many_arguments)]
fn overhead_interleaved(
    cli: &Cli,
    bench: &Bench,
    cpus: usize,
    wires: &[Wire],
    (conns, size): (usize, usize),
    warmup: Duration,
    slice: Duration,
    rounds: usize,
) -> anyhow::Result<()> {
    let runs = bench.runs;
    let mut all: Vec<(Wire, Vec<InterleavedRun>)> = Vec::new();
    for &w in wires {
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
        for run in 1..=runs {
            eprintln!(
                "overhead (interleaved), echo {conns} x {size} B: run {run} of {runs}, {}",
                targets
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(" + ")
            );
            let servers = targets
                .iter()
                .map(|&t| bench.start(t, false))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
            let cpu0 = servers
                .iter()
                .map(|s| s.cpu_seconds())
                .collect::<anyhow::Result<Vec<_>>>()?;
            let slices =
                workloads::echo_interleaved(&addrs, w, conns, size, warmup, slice, rounds)?;
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
            let mut counters = Vec::new();
            for (k, (t, server)) in targets.iter().zip(&servers).enumerate() {
                let Target::KimObs(_, obs) = t else { continue };
                if !obs.metrics {
                    continue;
                }
                let got = server
                    .debug_addr(Duration::from_secs(2))
                    .context("the instrumented server printed no debug address")
                    .and_then(|a| prometheus::get(&a, "/metrics", Duration::from_secs(5)))
                    .map(|text| {
                        prometheus::sum(&text, "kim_messages_received_total").unwrap_or(0.0)
                    })?;
                counters.push((t.name(), got, echoes[k]));
            }
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
            per_run.push(InterleavedRun {
                run,
                msgs_per_sec,
                cpu_us_per_msg,
                round_ratios,
                counters,
            });
            drop(servers);
        }
        all.push((w, per_run));
    }

    let mut doc_targets = Vec::new();
    println!(
        "machine: {cpus} cpus; servers pinned to cpu 0 and loaded in turn, {} ms slices, \
         {rounds} rounds per run (alternating order), {runs} runs with fresh processes",
        slice.as_millis()
    );
    println!(
        "instrumented (kim-ws): --metrics on, --debug-listen, RUST_LOG=info (log to a file); \
         bare (kim-ws-bare): --metrics off, RUST_LOG=off\n"
    );
    for (w, per_run) in &all {
        let prefix = if wires.len() > 1 {
            format!("[{}] ", w.name())
        } else {
            String::new()
        };
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
        for (metric, pick, higher) in [
            ("messages per second", 0usize, true),
            ("server CPU us per message", 1, false),
        ] {
            println!("{prefix}overhead (interleaved), echo {conns} x {size} B: {metric}");
            println!("  {:<18} {:>12} {:>8}   runs", "target", "median", "/bare");
            let series = |name: &str| -> Vec<f64> {
                per_run
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
            };
            let bare_runs = series(&bare_name);
            for name in &names {
                let v = series(name);
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
                        "wire": w.name(), "target": name, "metric": metric,
                        "ratio_runs": ratio_runs, "ratio": ratio, "cost": cost,
                    }));
                }
            }
            println!();
        }
        println!("{prefix}targets (median over runs of each run's ratio to bare):");
        for d in &doc_targets {
            if d["wire"] != w.name() {
                continue;
            }
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
            println!(
                "  {name}/{bare_name} {} = {ratio:.3} (cost {:.1}%{}; runs {runs_txt}",
                d["metric"].as_str().unwrap_or(""),
                cost * 100.0,
                if verdict.is_empty() {
                    ")".to_string()
                } else {
                    verdict
                },
            );
        }
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
    if cli.json {
        let doc = serde_json::json!({
            "method": "interleaved",
            "slice_ms": slice.as_millis() as u64,
            "rounds": rounds,
            "runs": all.iter().map(|(w, r)| serde_json::json!({"wire": w.name(), "runs": r})).collect::<Vec<_>>(),
            "targets": doc_targets,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

/// A variant of kim against the bare one on one metric (medians). The instrumented variant's
/// comparisons are the verdicts; the others (with `--attribute`) only inform.
#[derive(Debug, Clone, serde::Serialize)]
struct OverheadRatio {
    wire: Wire,
    /// `instrumented`, `metrics only` or `tracing only`.
    variant: &'static str,
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
    met: bool,
}

/// The `overhead` workload: kim instrumented and bare (and, with `--attribute`, with metrics
/// only and tracing only), alternating (every other round in reverse order), the echo
/// workload as `echo` runs it; the counters of each server with metrics on read after its
/// run; then medians, ratios and verdicts.
#[allow(clippy::too_many_arguments)]
fn overhead(
    cli: &Cli,
    bench: &Bench,
    cpus: usize,
    pin: bool,
    wires: &[Wire],
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
    let mut checks: Vec<MetricsCheck> = Vec::new();
    let res = bench.each(&label, false, |server, target| {
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
    let mut figs = Vec::new();
    figures(&mut figs, &label, "messages per second", true, &res, |r| {
        r.echo.msgs_per_sec
    });
    figures(
        &mut figs,
        &label,
        "server CPU us per message",
        false,
        &res,
        |r| r.server_cpu_us_per_msg,
    );
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
    let (verdicts, attribution): (Vec<OverheadRatio>, Vec<OverheadRatio>) = ratios
        .into_iter()
        .partition(|r| r.variant == "instrumented");
    let ratio_line = |v: &OverheadRatio| {
        let end = if v.variant != "instrumented" {
            ")".to_string()
        } else {
            format!(
                ", target <= {:.0}%): {}{}",
                v.max_cost * 100.0,
                if v.met { "PASS" } else { "FAIL" },
                if indicative {
                    format!(" (indicative: {runs} runs < {OVERHEAD_MIN_RUNS})")
                } else {
                    String::new()
                }
            )
        };
        format!(
            "{}{}/bare {} = {:.3} (cost {:.1}%{end}",
            if wires.len() > 1 {
                format!("[{}] ", v.wire.name())
            } else {
                String::new()
            },
            v.variant,
            v.metric,
            v.ratio,
            v.cost * 100.0,
        )
    };
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            c.verdict()
                .err()
                .map(|e| format!("{} run {}: {e}", c.target, c.run))
        })
        .collect();
    let mismatched = checks.iter().filter(|c| c.verdict() == Ok(false)).count();
    let metrics_line = if !failed.is_empty() {
        format!("metrics check: FAILED ({})", failed.join("; "))
    } else if mismatched > 0 {
        format!(
            "metrics check: counters read, but in {mismatched} of {} runs \
             kim_messages_received_total is outside [echoes read, requests written]",
            checks.len()
        )
    } else {
        format!(
            "metrics check: ok (kim_messages_received_total between the echoes the clients \
             read and the requests they wrote, in all {} runs)",
            checks.len()
        )
    };
    if cli.json {
        let doc = serde_json::json!({
            "machine": { "cpus": cpus, "pinned": pin, "server_threads": bench.threads },
            "runs": runs,
            "overhead": {
                "connections": conns,
                "size": size,
                "warmup_secs": warmup.as_secs_f64(),
                "duration_secs": duration.as_secs_f64(),
            },
            "figures": figs,
            "targets": verdicts,
            "attribution": attribution,
            "metrics": checks,
            "metrics_ok": failed.is_empty(),
            "details": { label.clone(): detail(&res) },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if cli.markdown {
        print_markdown(&figs);
        println!();
        for v in verdicts.iter().chain(&attribution) {
            println!("- {}", ratio_line(v));
        }
        println!("- {metrics_line}");
        return Ok(());
    }
    println!(
        "machine: {cpus} cpus; server {} (runtime threads {}); {runs} runs per target, \
         alternating (every other round in reverse order), medians",
        if pin {
            "pinned to cpu 0, load generator to cpu 1"
        } else {
            "unpinned"
        },
        bench.threads,
    );
    let w = wires.iter().map(|w| w.name()).collect::<Vec<_>>().join("|");
    println!(
        "instrumented (kim-{w}): --metrics on, --debug-listen, RUST_LOG=info (log to a file); \
         bare (kim-{w}-bare): --metrics off, RUST_LOG=off"
    );
    if !attribution.is_empty() {
        println!(
            "metrics only (kim-{w}-metrics): --metrics on, --debug-listen, RUST_LOG=off; \
             tracing only (kim-{w}-tracing): --metrics off, RUST_LOG=info (log to a file)"
        );
    }
    // Each kim target's bare counterpart, by name.
    let bare_of = |name: &str| {
        bench.targets.iter().find_map(|&t| match t {
            Target::KimObs(w, _) if t.name() == name => Some(Target::KimObs(w, Obs::NONE).name()),
            _ => None,
        })
    };
    let mut metrics: Vec<&str> = Vec::new();
    for f in &figs {
        if !metrics.contains(&f.metric.as_str()) {
            metrics.push(&f.metric);
        }
    }
    for metric in metrics {
        let rows: Vec<&Figure> = figs.iter().filter(|f| f.metric == metric).collect();
        println!("\n{label}: {metric}");
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
    println!(
        "\nmetrics (GET /metrics after each run with metrics on; the clients' counts include the \
         warm-up):"
    );
    for c in &checks {
        println!("  {}", c.describe());
    }
    println!("  {metrics_line}");
    let paired_line = |v: &OverheadRatio| {
        let rounds: Vec<String> = v.paired.iter().map(|r| format!("{r:.3}")).collect();
        format!(
            "    paired by round: median {:.3}; rounds {}",
            v.paired_median,
            rounds.join(" ")
        )
    };
    println!("\ntargets (medians):");
    for v in &verdicts {
        println!("  {}", ratio_line(v));
        println!("{}", paired_line(v));
    }
    if !attribution.is_empty() {
        println!("\nattribution (medians):");
        for v in &attribution {
            println!("  {}", ratio_line(v));
            println!("{}", paired_line(v));
        }
    }
    Ok(())
}
