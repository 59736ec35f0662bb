//! Running servers under test: the global options every command runs with, the targets (kim
//! and the baselines) and how each is started as a separate process, and the alternation of
//! runs over the targets. Every command that starts servers goes through here, so that they
//! all start, pin and alternate them the same way.

use std::path::PathBuf;

use anyhow::Context;

use kim_benchmark::proc::{pin_current_process, sibling_bin, ServerProcess};
use kim_benchmark::wire::Wire;

/// The global flags as the commands use them, with what was found of the machine.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Runs of each target (`--runs`, or the command's default).
    pub(crate) runs: usize,
    /// `--json`: the results as JSON on stdout.
    pub(crate) json: bool,
    /// `--markdown`: the results as Markdown tables.
    pub(crate) markdown: bool,
    /// CPUs available to this process.
    pub(crate) cpus: usize,
    /// Whether servers go to CPU 0 and the load generator to CPU 1 (not `--no-pin`, and at
    /// least two CPUs).
    pub(crate) pin: bool,
    /// `--server-threads`.
    pub(crate) server_threads: Option<usize>,
    /// kim's transports to measure (`--transport`), in order.
    pub(crate) wires: Vec<Wire>,
    /// Measure kim with its listeners in-process (`--backend inproc` or `both`).
    pub(crate) inproc: bool,
    /// Measure kim with its listeners in worker processes (`--backend dgram` or `both`).
    pub(crate) dgram: bool,
    /// `--workers`: worker processes of the `dgram` backend.
    pub(crate) workers: usize,
    /// `--kim-only`: no baselines.
    pub(crate) kim_only: bool,
    /// `--bin-dir`: where the server binaries are.
    pub(crate) bin_dir: Option<PathBuf>,
    /// `--compare-bin-dir`: another build of kim's servers, measured beside this one.
    pub(crate) compare_bin_dir: Option<PathBuf>,
    /// `--uws-dir`: where uWebSockets' echo server and load generator are (built apart, as
    /// `uws-echo-server` and `uws-load-test`); `None` for `<target>/uws` beside this build.
    pub(crate) uws_dir: Option<PathBuf>,
}

/// uWebSockets' echo server (its `examples/EchoServer.cpp`, listening on the port given as
/// its argument and printing `listening on ADDR`), in the uws directory.
pub(crate) const UWS_ECHO_SERVER: &str = "uws-echo-server";
/// uWebSockets' echo example as an SSLApp (built apart with OpenSSL; `PORT CERT KEY`, printing
/// `listening on ADDR`), in the uws directory.
pub(crate) const UWS_SSL_ECHO_SERVER: &str = "uws-ssl-echo-server";
/// uWebSockets' echo example built with `SHARED_COMPRESSOR | SHARED_DECOMPRESSOR` (one
/// compressor and decompressor for the loop, none per socket) and echoing uncompressed, as
/// its example does, in the uws directory.
pub(crate) const UWS_DEFLATE_ECHO_SERVER: &str = "uws-deflate-echo-server";
/// uWebSockets' load generator (its `benchmarks/load_test.c`), in the uws directory.
pub(crate) const UWS_LOAD_TEST: &str = "uws-load-test";
/// The pub/sub baseline on uWebSockets (built apart: every connection subscribed to one topic,
/// every message published to it with `App::publish`), in the uws directory.
pub(crate) const UWS_BROADCAST_SERVER: &str = "uws-broadcast-server";
/// uWebSockets' broadcast benchmark (its `benchmarks/broadcast_test.c`), in the uws directory.
pub(crate) const UWS_BROADCAST_TEST: &str = "uws-broadcast-test";

/// What the servers under test do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Echo it (kim's `echo-server`).
    Echo,
    /// The mock protocol: logins, echo, pushes (kim's `mock-server`).
    Mock,
    /// Publish it to the one room every connection is in, the sender included
    /// (`echo-server --broadcast`).
    Broadcast,
}

impl Options {
    /// These options with kim measured over websocket only, for the workloads whose clients
    /// speak nothing else.
    pub(crate) fn ws_only(&self) -> Options {
        Options {
            wires: vec![Wire::Ws],
            ..self.clone()
        }
    }

    /// Runtime threads of each server: `--server-threads`, or 1 when pinned, 2 otherwise.
    pub(crate) fn threads(&self) -> usize {
        self.server_threads.unwrap_or(if self.pin { 1 } else { 2 })
    }

    /// Pins this process (the load generator) to CPU 1 when pinning, and returns the
    /// directory of the server binaries (`--bin-dir`, or the one this binary is in).
    pub(crate) fn prepare(&self) -> anyhow::Result<PathBuf> {
        if self.pin {
            pin_current_process(1)?;
        }
        Ok(match &self.bin_dir {
            Some(d) => d.clone(),
            None => sibling_bin("kim-benchmark")?
                .parent()
                .context("binary directory")?
                .to_path_buf(),
        })
    }

    /// The directory of uWebSockets' binaries: `--uws-dir`, or `uws` in cargo's target
    /// directory, which holds the directory this binary is in (`<target>/release`); `target/uws`
    /// if this binary's path cannot be had (then the uws baseline is reported missing, not
    /// fatal).
    pub(crate) fn uws_dir(&self) -> PathBuf {
        if let Some(d) = &self.uws_dir {
            return d.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|me| Some(me.parent()?.parent()?.join("uws")))
            .unwrap_or_else(|| PathBuf::from("target/uws"))
    }

    /// kim's targets on each of `wires`, on each backend asked for (and from the
    /// `--compare-bin-dir` build beside each).
    pub(crate) fn kim_targets(&self, wires: &[Wire]) -> Vec<Target> {
        let mut targets = Vec::new();
        let compare = self.compare_bin_dir.is_some();
        for &w in wires {
            if self.inproc {
                targets.push(Target::Kim(w));
                if compare {
                    targets.push(Target::KimCompare(w));
                }
            }
            if self.dgram {
                targets.push(Target::KimDgram(w));
                if compare {
                    targets.push(Target::KimDgramCompare(w));
                }
            }
        }
        targets
    }

    /// The targets of the workloads compared with the baselines: kim on each wire, on each
    /// backend asked for, then the baselines unless `--kim-only`.
    pub(crate) fn server_targets(&self) -> Vec<Target> {
        let mut targets = self.kim_targets(&self.wires);
        if !self.kim_only {
            targets.extend([Target::Tungstenite, Target::Tungstenite4k]);
        }
        targets
    }

    /// A bench of `targets` with the server binaries in `bins`.
    pub(crate) fn bench(
        &self,
        bins: PathBuf,
        targets: Vec<Target>,
        reverse_odd_runs: bool,
    ) -> Bench {
        Bench {
            cli_bins: bins,
            compare_bins: self.compare_bin_dir.clone(),
            pin: self.pin,
            threads: self.threads(),
            targets,
            runs: self.runs,
            workers: self.workers,
            reverse_odd_runs,
            uws_dir: self.uws_dir(),
            server_log: std::env::temp_dir()
                .join(format!("kim-benchmark-{}-server.log", std::process::id())),
            tls_args: Vec::new(),
            deflate_args: Vec::new(),
            kim_args: Vec::new(),
            kim_tracing: false,
            uws_deflate: false,
        }
    }

    /// The bench of the workloads compared with the baselines: [`Options::prepare`], then
    /// [`Options::server_targets`] in the order given, each run in the same order.
    pub(crate) fn server_bench(&self) -> anyhow::Result<Bench> {
        let bins = self.prepare()?;
        Ok(self.bench(bins, self.server_targets(), false))
    }

    /// [`Options::server_bench`] for the workloads that are plain websocket echo (no login,
    /// no mock protocol), which uWebSockets' echo server can serve too: with `uws` last among
    /// the baselines when its echo server is built; otherwise says once that it is skipped,
    /// so that a missing uWebSockets build leaves the report as it was without it.
    pub(crate) fn echo_bench(&self) -> anyhow::Result<Bench> {
        self.bench_with_uws(UWS_ECHO_SERVER)
    }

    /// [`Options::server_bench`] with `uws` last when uWebSockets' `server` (one of the uws
    /// binaries) is built; otherwise says once that it is skipped.
    pub(crate) fn bench_with_uws(&self, server: &str) -> anyhow::Result<Bench> {
        let mut bench = self.server_bench()?;
        if !self.kim_only {
            let server = bench.uws_dir.join(server);
            if server.exists() {
                bench.targets.push(Target::Uws);
            } else {
                eprintln!(
                    "uWebSockets not built (no {}; --uws-dir tells where it is): the uws \
                     baseline is skipped",
                    server.display()
                );
            }
        }
        Ok(bench)
    }
}

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// kim with its listeners in-process.
    Kim(Wire),
    /// kim with its listeners in worker processes.
    KimDgram(Wire),
    /// `Kim` from the `--compare-bin-dir` build.
    KimCompare(Wire),
    /// `KimDgram` from the `--compare-bin-dir` build.
    KimDgramCompare(Wire),
    /// kim in-process accepting permessage-deflate (`--deflate` and [`Bench::deflate_args`]).
    KimDeflate(Wire),
    /// kim in-process with its observability as given (the `overhead` workload's targets).
    /// With everything on it is named like `Kim`: it is kim as deployed.
    KimObs(Wire, Obs),
    /// tokio-tungstenite in its default configuration.
    Tungstenite,
    /// tokio-tungstenite with 4 KiB buffers.
    Tungstenite4k,
    /// uWebSockets' echo example (C++, one thread): a reference for how fast a plain websocket
    /// echo can be, to see how far kim is from it.
    Uws,
}

/// Which of kim's observability a server runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Obs {
    /// `--metrics on`, and the debug listener up to read them; otherwise `--metrics off`.
    pub(crate) metrics: bool,
    /// `RUST_LOG=info`, the log to a file; otherwise `RUST_LOG=off`.
    pub(crate) tracing: bool,
}

impl Obs {
    /// Metrics and tracing on: kim as deployed.
    pub(crate) const ALL: Obs = Obs {
        metrics: true,
        tracing: true,
    };
    /// Metrics and tracing off.
    pub(crate) const NONE: Obs = Obs {
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
    /// The target's name in the reports, e.g. `kim-ws-dgram` or `tungstenite-4k`.
    pub(crate) fn name(self) -> String {
        match self {
            Target::Kim(w) => format!("kim-{}", w.name()),
            Target::KimDgram(w) => format!("kim-{}-dgram", w.name()),
            Target::KimCompare(w) => format!("kim-{}-compare", w.name()),
            Target::KimDgramCompare(w) => format!("kim-{}-dgram-compare", w.name()),
            Target::KimObs(w, obs) => format!("kim-{}{}", w.name(), obs.suffix()),
            Target::KimDeflate(w) => format!("kim-{}-deflate", w.name()),
            Target::Tungstenite => "tungstenite".into(),
            Target::Tungstenite4k => "tungstenite-4k".into(),
            Target::Uws => "uws".into(),
        }
    }

    /// The wire the target's clients speak (the baselines speak websocket).
    pub(crate) fn wire(self) -> Wire {
        match self {
            Target::Kim(w)
            | Target::KimDgram(w)
            | Target::KimCompare(w)
            | Target::KimDgramCompare(w)
            | Target::KimObs(w, _)
            | Target::KimDeflate(w) => w,
            Target::Tungstenite | Target::Tungstenite4k | Target::Uws => Wire::Ws,
        }
    }
}

/// The servers of one command and how to run them.
pub(crate) struct Bench {
    /// Where the server binaries are.
    pub(crate) cli_bins: PathBuf,
    /// Where the `--compare-bin-dir` build's servers are.
    pub(crate) compare_bins: Option<PathBuf>,
    /// Whether servers are pinned to CPU 0.
    pub(crate) pin: bool,
    /// Runtime threads of each server.
    pub(crate) threads: usize,
    /// The servers under test, in the order they run.
    pub(crate) targets: Vec<Target>,
    /// Runs of each target.
    pub(crate) runs: usize,
    /// Worker processes of the `dgram` backend.
    pub(crate) workers: usize,
    /// Run the targets in reverse order on every other run (A B, B A, A B, ...), so that a
    /// drift of the machine over a pair of runs does not always favour the same target.
    pub(crate) reverse_odd_runs: bool,
    /// Where uWebSockets' binaries are, for `Uws`.
    pub(crate) uws_dir: PathBuf,
    /// Where servers with tracing on write their log (truncated at each start).
    pub(crate) server_log: PathBuf,
    /// `--tls-cert FILE --tls-key FILE` for kim's servers and the baseline, when the run is
    /// over TLS.
    pub(crate) tls_args: Vec<String>,
    /// Flags after `--deflate` for `KimDeflate` servers.
    pub(crate) deflate_args: Vec<String>,
    /// Flags for every kim server (a debug listener for heap profiles).
    pub(crate) kim_args: Vec<String>,
    /// Every kim server logs at info (`RUST_LOG=info`, to the server log): what tracing
    /// costs, its channel spans included.
    pub(crate) kim_tracing: bool,
    /// `Uws` is the echo server with a shared compressor ([`UWS_DEFLATE_ECHO_SERVER`]).
    pub(crate) uws_deflate: bool,
}

impl Bench {
    /// Starts `target` as a process in `mode`: kim's `mock-server` or `echo-server`, or the
    /// baseline server in the same mode (uWebSockets has no mock server).
    pub(crate) fn start(&self, target: Target, mode: Mode) -> anyhow::Result<ServerProcess> {
        let mock = mode == Mode::Mock;
        let threads = self.threads.to_string();
        let listen = "127.0.0.1:0".to_string();
        let mut env: Vec<(&str, &str)> = Vec::new();
        let mut stderr = std::process::Stdio::inherit();
        let (bin, args): (&str, Vec<String>) = match target {
            Target::Kim(w)
            | Target::KimDgram(w)
            | Target::KimCompare(w)
            | Target::KimDgramCompare(w)
            | Target::KimObs(w, _)
            | Target::KimDeflate(w) => {
                let mut args = vec![
                    "--transport".into(),
                    w.name().into(),
                    "--listen".into(),
                    listen,
                    "--threads".into(),
                    threads.clone(),
                ];
                if matches!(target, Target::KimDgram(_) | Target::KimDgramCompare(_)) {
                    args.extend([
                        "--backend".into(),
                        "dgram".into(),
                        "--workers".into(),
                        self.workers.to_string(),
                    ]);
                }
                if mode == Mode::Broadcast {
                    args.push("--broadcast".into());
                }
                args.extend(self.tls_args.iter().cloned());
                args.extend(self.kim_args.iter().cloned());
                if let Target::KimDeflate(_) = target {
                    args.push("--deflate".into());
                    args.extend(self.deflate_args.iter().cloned());
                }
                if self.kim_tracing {
                    env.push(("RUST_LOG", "info"));
                    let log = std::fs::File::create(&self.server_log).with_context(|| {
                        format!("creating the server log {}", self.server_log.display())
                    })?;
                    stderr = log.into();
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
                    match mode {
                        Mode::Echo => "echo",
                        Mode::Mock => "mock",
                        Mode::Broadcast => "broadcast",
                    }
                    .into(),
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
                ]
                .into_iter()
                .chain(self.tls_args.iter().cloned())
                .collect(),
            ),
            Target::Uws => return self.start_uws(mode),
        };
        let bins = match (target, &self.compare_bins) {
            (Target::KimCompare(_) | Target::KimDgramCompare(_), Some(dir)) => dir,
            _ => &self.cli_bins,
        };
        let path = bins.join(bin);
        anyhow::ensure!(
            path.exists(),
            "{} not found: build with `cargo build --release -p kim-examples -p kim-benchmark`",
            path.display()
        );
        ServerProcess::start_with_stderr(&path, &args, &env, self.pin.then_some(0), stderr)
    }

    /// Starts uWebSockets' echo server on a port the kernel picks (it prints it as kim's
    /// servers do), pinned as they are; it has one thread whatever `threads` says, and no mock
    /// server.
    fn start_uws(&self, mode: Mode) -> anyhow::Result<ServerProcess> {
        let tls = !self.tls_args.is_empty();
        let bin = match mode {
            Mode::Echo if self.uws_deflate => UWS_DEFLATE_ECHO_SERVER,
            Mode::Echo if tls => UWS_SSL_ECHO_SERVER,
            Mode::Echo => UWS_ECHO_SERVER,
            Mode::Broadcast => UWS_BROADCAST_SERVER,
            Mode::Mock => anyhow::bail!("uWebSockets has no mock server (logins, pushes)"),
        };
        let path = self.uws_dir.join(bin);
        anyhow::ensure!(
            path.exists(),
            "uWebSockets not built: no {} (--uws-dir tells where it is)",
            path.display()
        );
        let mut args = vec!["0".to_string()];
        if tls {
            // `--tls-cert CERT --tls-key KEY` as uWebSockets' `CERT KEY`.
            args.extend(self.tls_args.iter().skip(1).step_by(2).cloned());
        }
        ServerProcess::start(&path, &args, &[], self.pin.then_some(0))
    }

    /// Runs `measure` against every target, `runs` times, alternating targets.
    pub(crate) fn each<T>(
        &self,
        label: &str,
        mode: Mode,
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
                let server = self.start(*target, mode)?;
                let r = measure(&server, *target)
                    .with_context(|| format!("{label} against {}", target.name()))?;
                results.push(r);
            }
        }
        Ok(out)
    }
}

/// `CONNECTIONSxBYTES`, e.g. `100x20`.
pub(crate) fn parse_preset(p: &str) -> anyhow::Result<(usize, usize)> {
    let (c, s) = p
        .split_once('x')
        .context("--preset is CONNECTIONSxBYTES, e.g. 100x20")?;
    let conns: usize = c.parse().context("--preset connections")?;
    let size: usize = s.parse().context("--preset bytes")?;
    anyhow::ensure!(conns >= 1, "--preset needs at least one connection");
    Ok((conns, size))
}
