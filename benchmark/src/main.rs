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
//! The plain websocket echo workloads (`echo`, `large`) also run against uWebSockets' echo
//! example (`uws`, C++), when it is built (see `--uws-dir`): a reference for how fast a
//! websocket echo server can be. `loadtest` drives kim's echo server and that one with
//! uWebSockets' own load generator, so that the comparison does not rest on kim's client alone.
//!
//! `overhead` compares kim with itself: as deployed (metrics on, tracing at info, the debug
//! listener up) against metrics and tracing off, on the same echo workload.
//!
//! `ipc` is the exception: it measures the IPC wire of kim's worker-process backend alone, in
//! this process (a sender thread on CPU 1, a receiver thread on CPU 0), against a bare
//! ceiling and a naive receiver instead of a server baseline.
//!
//! This file only parses the command line and hands each command its settings: every command
//! runs and reports in its own module under `commands`; the servers under test, their runs
//! and the global options are in `runner`, the figures and their tables in `figures`.

mod commands;
mod figures;
mod runner;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use kim_benchmark::wire::Wire;

use crate::commands::{
    broadcast, cluster, deflate, echo, fanout, ipc, large, loadtest, membership, overhead,
    parallel, pipelined, report, roundtrip, sessions, slow_consumers,
};
use crate::runner::Options;

/// The command line: the global flags, then the workload and its own flags.
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
    /// Measure only kim, without the baselines (uWebSockets included).
    #[arg(long, global = true)]
    kim_only: bool,
    /// Where the server binaries are (default: next to this one).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Also measure kim's servers from this directory (another build of kim, say the one
    /// before a change), as targets named `kim-ws-compare` and so on, alternating with the
    /// others in the same run.
    #[arg(long, global = true)]
    compare_bin_dir: Option<PathBuf>,
    /// Where uWebSockets' `uws-echo-server` and `uws-load-test` (and, for `fanout` and
    /// `broadcast`, `uws-broadcast-server` and `uws-broadcast-test`) are, built apart from a
    /// uWebSockets checkout [default: `uws` in cargo's target directory]. Without them the
    /// `uws` baseline is skipped.
    #[arg(long, global = true)]
    uws_dir: Option<PathBuf>,
    /// The command to run.
    #[command(subcommand)]
    workload: Workload,
}

impl Cli {
    /// `--runs`, or the workload's default.
    fn runs(&self) -> usize {
        let overhead = matches!(self.workload, Workload::Overhead(_));
        self.runs.unwrap_or(if overhead {
            overhead::OVERHEAD_MIN_RUNS
        } else {
            3
        })
    }
}

/// `--backend`: where kim's listeners run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendArg {
    Inproc,
    Dgram,
    Both,
}

/// `--transport`: kim's transport(s) to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    Ws,
    Tcp,
    All,
}

/// The commands; the doc comment of each variant is its help text.
#[derive(Debug, Subcommand)]
enum Workload {
    /// Log in many clients (at most 50 logins in flight) and measure memory per connection.
    Parallel(parallel::Args),
    /// Messages one at a time on one connection: rate and latency percentiles.
    Roundtrip(roundtrip::Args),
    /// C connections each echoing S bytes back and forth: messages per second.
    Echo(echo::Args),
    /// uWebSockets' load generator (`uws-load-test`: C connections each echoing S bytes back
    /// and forth) against kim's echo server and uWebSockets' (`uws`): messages per second as
    /// it reports them, and the server's CPU per message.
    Loadtest(loadtest::Args),
    /// The cost of kim's observability on the echo workload: kim with metrics on, tracing at
    /// info (to a log file) and the debug listener up (`kim-ws`), against the same server with
    /// metrics and tracing off (`kim-ws-bare`), alternating, in-process backend only. After
    /// each instrumented run its `GET /metrics` counters are checked against the clients'
    /// counts.
    Overhead(overhead::Args),
    /// Slow consumers in bursts: clients that never read are flooded with pushes, round after
    /// round on one mock-server; after each round (the consumers gone), the server's resident
    /// memory and its heap in use and free (`kim_heap_bytes`). kim only; each run is a new
    /// server.
    SlowConsumers(slow_consumers::Args),
    /// Print Markdown tables from the JSON output (`--json`) of earlier runs.
    Report {
        /// JSON files written by `--json`.
        files: Vec<PathBuf>,
    },
    /// C connections each keeping W messages in flight (a new one whenever fewer are
    /// unanswered): echoes per second, and echoes lost (never answered; the drain at the end
    /// waits until no byte has come for 3 s).
    Pipelined(pipelined::Args),
    /// Large messages echoed on one connection: MB/s.
    Large(large::Args),
    /// N subscribers in one room and one publisher of small messages, as fast as the server
    /// takes them: deliveries per second, p50 and p99 delivery latency, server CPU per
    /// delivery; kim (`echo-server --broadcast`) against the tokio-tungstenite broadcast loop
    /// and uWebSockets' pub/sub server (`uws-broadcast-server`, when built).
    Fanout(fanout::Args),
    /// uWebSockets' broadcast benchmark (`uws-broadcast-test`: C connections each send a
    /// message and wait for all C) against the same servers as `fanout`: iterations per
    /// second as it reports them, and the server's CPU per delivery.
    Broadcast(broadcast::Args),
    /// The server memory of one room membership: C channels log in, each joins R rooms
    /// (kim's mock server only): resident memory growth / (C x R).
    Membership(membership::Args),
    /// kim's cluster over NATS (3 nodes and a nats-server, all on the servers' CPU) against
    /// one node, in the same runs: pushes on one node and across nodes (latency, with NATS's
    /// bare request round trip as the anchor, and rate), a room spread over 3 nodes against
    /// the same room on one node (deliveries per second), and the memory of a logged-in
    /// channel on a cluster node against one without. kim only.
    Cluster(cluster::Args),
    /// The IPC wire of the worker-process backend alone (two threads, one process): kim's
    /// `ChunkSender` and `Reassembler` against a bare ceiling and a naive receiver, MB/s.
    Ipc(ipc::Args),
    /// The deflate crates side by side on chat-like JSON (zlib-rs, which kim-ws uses;
    /// miniz_oxide, flate2's default; libdeflate), each message compressed and inflated on its
    /// own as kim does: payload bytes, nanoseconds each way, and the resident memory of one
    /// compressor or decompressor of each (with context takeover, a connection keeps one).
    /// In-process, no servers.
    Deflate(deflate::Args),
    /// What sessions cost, kim's mock server only, each beside the same workload without
    /// sessions in the same runs (`kim-ws` against `kim-ws-session`): the heap of an idle
    /// connection, echo and fan-out rates (clients acknowledging every 32 messages, or
    /// `--ack-every`); with sessions only, a held room message's cost per suspended member
    /// beyond its payload, and the replay of held messages to clients resuming at once (rate,
    /// p50/p99 latency).
    Sessions(sessions::Args),
}

impl Cli {
    /// The global flags for the commands, with `runs` runs and what this machine has.
    fn options(&self, runs: usize) -> Options {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Options {
            runs,
            json: self.json,
            markdown: self.markdown,
            cpus,
            pin: !self.no_pin && cpus >= 2,
            server_threads: self.server_threads,
            wires: match self.transport {
                TransportArg::Ws => vec![Wire::Ws],
                TransportArg::Tcp => vec![Wire::Tcp],
                TransportArg::All => vec![Wire::Ws, Wire::Tcp],
            },
            inproc: self.backend != BackendArg::Dgram,
            dgram: self.backend != BackendArg::Inproc,
            workers: self.workers,
            kim_only: self.kim_only,
            bin_dir: self.bin_dir.clone(),
            compare_bin_dir: self.compare_bin_dir.clone(),
            uws_dir: self.uws_dir.clone(),
        }
    }
}

/// Parses the command line, checks `--runs`, and runs the command.
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runs = cli.runs();
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    let opts = cli.options(runs);
    match &cli.workload {
        Workload::Report { files } => report::run(files),
        // No servers: the threads pin themselves.
        Workload::Ipc(args) => ipc::run(&opts, args),
        Workload::Deflate(args) => deflate::run(&opts, args),
        Workload::SlowConsumers(args) => slow_consumers::run(&opts, args),
        Workload::Overhead(args) => overhead::run(&opts, args),
        Workload::Parallel(args) => parallel::run(&opts, args),
        Workload::Roundtrip(args) => roundtrip::run(&opts, args),
        Workload::Echo(args) => echo::run(&opts, args),
        Workload::Loadtest(args) => loadtest::run(&opts, args),
        Workload::Pipelined(args) => pipelined::run(&opts, args),
        Workload::Large(args) => large::run(&opts, args),
        Workload::Fanout(args) => fanout::run(&opts, args),
        Workload::Broadcast(args) => broadcast::run(&opts, args),
        Workload::Membership(args) => membership::run(&opts, args),
        Workload::Cluster(args) => cluster::run(&opts, args),
        Workload::Sessions(args) => sessions::run(&opts, args),
    }
}
