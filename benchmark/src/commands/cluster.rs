//! The `cluster` command: kim's nodes over NATS against kim on one node, in the same run.
//!
//! Every run starts its own nats-server and nodes (all pinned to the servers' CPU) and
//! measures, in an order that alternates from run to run:
//! - pushes: NATS's bare request round trip (the anchor), then pushes between users on the
//!   same node and on two nodes of three, one at a time (latency), then many pairs with
//!   several pushes in flight each (rate and CPU per push);
//! - a room of N members spread over 3 nodes against the same room on one node without a
//!   cluster: deliveries per second;
//! - the server memory of a logged-in idle channel on a node of a cluster against one without.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kim_benchmark::cluster::{self, PushLoad, PushResult};
use kim_benchmark::fanout::{self, FanoutResult};
use kim_benchmark::nats::{self, NatsServer, RequestResult};
use kim_benchmark::parallel::{self, ParallelResult};
use kim_benchmark::proc::ServerProcess;
use kim_benchmark::wire::Wire;

use crate::figures::{collect_named, print_results, Figure};
use crate::runner::Options;

/// The `cluster` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The nats-server to run [default: $NATS_SERVER, else the one `./scripts/nats-server`
    /// installs under the target directory, else `nats-server` on PATH]; 2.10 or newer.
    #[arg(long)]
    pub(crate) nats_server: Option<PathBuf>,
    /// The parts to run; repeat for several [default: all].
    #[arg(long, value_enum)]
    pub(crate) part: Vec<Part>,
    /// Sender and receiver pairs of the push rate.
    #[arg(long, default_value_t = 64)]
    pub(crate) pairs: usize,
    /// Pushes each sender of the push rate keeps in flight.
    #[arg(long, default_value_t = 4)]
    pub(crate) window: usize,
    /// Members of the room.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) members: usize,
    /// Room messages the publisher keeps in flight.
    #[arg(long, default_value_t = 32)]
    pub(crate) room_window: usize,
    /// Channels logged in for the memory part.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) clients: usize,
    /// Seconds measured in each push and room case (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) duration: f64,
    /// Seconds of warm-up of each push and room case.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup: f64,
}

/// A part of the `cluster` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    /// Pushes on one node and across nodes, and NATS's request round trip.
    Push,
    /// A room spread over 3 nodes against one node.
    Room,
    /// Memory per logged-in channel with and without a cluster.
    Memory,
}

/// Nodes of the cluster in the push and room parts.
const NODES: usize = 3;

/// How the parts start servers: the binaries, NATS, pinning.
struct Setup {
    bins: PathBuf,
    nats: PathBuf,
    pin: Option<usize>,
    threads: String,
}

impl Setup {
    /// Starts kim's `bin` with `extra` arguments, on a port the kernel picks.
    fn node(&self, bin: &str, extra: &[String]) -> anyhow::Result<ServerProcess> {
        let mut args: Vec<String> = ["--transport", "ws", "--listen", "127.0.0.1:0", "--threads"]
            .map(String::from)
            .into();
        args.push(self.threads.clone());
        args.extend_from_slice(extra);
        let path = self.bins.join(bin);
        anyhow::ensure!(
            path.exists(),
            "{} not found: build with `cargo build --release -p kim-examples -p kim-benchmark`",
            path.display()
        );
        ServerProcess::start(&path, &args, &[], self.pin)
    }

    /// A nats-server and `nodes` of kim's `bin` joined to it as `n1`, `n2`, ...
    fn cluster(
        &self,
        bin: &str,
        extra: &[String],
        nodes: usize,
    ) -> anyhow::Result<(NatsServer, Vec<ServerProcess>)> {
        let broker = NatsServer::start(&self.nats, self.pin)?;
        let mut started = Vec::with_capacity(nodes);
        for k in 1..=nodes {
            let mut args = extra.to_vec();
            args.extend([
                "--cluster".into(),
                broker.url(),
                "--node".into(),
                format!("n{k}"),
            ]);
            started.push(self.node(bin, &args)?);
        }
        Ok((broker, started))
    }
}

/// CPU seconds of a broker and its nodes together.
fn cpu_of_all(broker: &NatsServer, nodes: &[ServerProcess]) -> anyhow::Result<f64> {
    let mut total = broker.cpu_seconds()?;
    for n in nodes {
        total += n.cpu_seconds()?;
    }
    Ok(total)
}

/// Every run's results of every part, by case.
#[derive(Default)]
struct Results {
    requests: Vec<RequestResult>,
    latency: [Vec<PushResult>; 2],
    rate: [Vec<PushResult>; 2],
    room: [Vec<FanoutResult>; 2],
    memory: [Vec<ParallelResult>; 2],
}

/// Runs the parts `--runs` times and reports them.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let bins = opts.prepare()?;
    let nats = nats::find_binary(args.nats_server.as_deref())?;
    check_nats_version(&nats)?;
    let setup = Setup {
        bins: bins.clone(),
        nats,
        pin: opts.pin.then_some(0),
        threads: opts.threads().to_string(),
    };
    let parts = if args.part.is_empty() {
        vec![Part::Push, Part::Room, Part::Memory]
    } else {
        args.part.clone()
    };
    let warmup = Duration::try_from_secs_f64(args.warmup)?;
    let duration = Duration::try_from_secs_f64(args.duration)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut res = Results::default();
    for run in 0..opts.runs {
        // Even runs measure one node first, odd runs the cluster first.
        let order: [usize; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        if parts.contains(&Part::Push) {
            eprintln!("cluster pushes: run {} of {}", run + 1, opts.runs);
            let (broker, nodes) = setup.cluster("mock-server", &[], NODES)?;
            let cpu = || cpu_of_all(&broker, &nodes);
            res.requests
                .push(rt.block_on(nats::requests(&broker.url(), warmup, duration))?);
            let loads = [
                PushLoad {
                    pairs: 1,
                    window: 1,
                    warmup,
                    duration,
                },
                PushLoad {
                    pairs: args.pairs,
                    window: args.window,
                    warmup,
                    duration,
                },
            ];
            for (l, load) in loads.into_iter().enumerate() {
                for &case in &order {
                    let to = &nodes[case].addr;
                    let tag = format!("{run}{l}{case}");
                    let r = cluster::pushes(&nodes[0].addr, to, &tag, load, cpu)?;
                    if l == 0 {
                        res.latency[case].push(r);
                    } else {
                        res.rate[case].push(r);
                    }
                }
            }
        }
        if parts.contains(&Part::Room) {
            for &case in &order {
                eprintln!(
                    "cluster room of {}: run {} of {}, {}",
                    args.members,
                    run + 1,
                    opts.runs,
                    CASES_ROOM[case]
                );
                let broadcast = ["--broadcast".to_string()];
                let r = if case == 0 {
                    let node = setup.node("echo-server", &broadcast)?;
                    let (addr, cpu) = (node.addr.as_str(), || node.cpu_seconds());
                    fanout::fanout(
                        &[addr],
                        args.members,
                        100,
                        args.room_window,
                        warmup,
                        duration,
                        cpu,
                    )?
                } else {
                    let (broker, nodes) = setup.cluster("echo-server", &broadcast, NODES)?;
                    let addrs: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
                    let cpu = || cpu_of_all(&broker, &nodes);
                    fanout::fanout(
                        &addrs,
                        args.members,
                        100,
                        args.room_window,
                        warmup,
                        duration,
                        cpu,
                    )?
                };
                res.room[case].push(r);
            }
        }
        if parts.contains(&Part::Memory) {
            for &case in &order {
                eprintln!(
                    "cluster memory: run {} of {}, {}",
                    run + 1,
                    opts.runs,
                    CASES_MEMORY[case]
                );
                let hold = Duration::from_secs(2);
                let r = if case == 0 {
                    let node = setup.node("mock-server", &[])?;
                    rt.block_on(parallel::run(&node, Wire::Ws, args.clients, 50, hold, None))?
                } else {
                    let (_broker, nodes) = setup.cluster("mock-server", &[], 1)?;
                    rt.block_on(parallel::run(
                        &nodes[0],
                        Wire::Ws,
                        args.clients,
                        50,
                        hold,
                        None,
                    ))?
                };
                res.memory[case].push(r);
            }
        }
    }
    let figs = figures_of(&res, args);
    let mut details = serde_json::Map::new();
    details.insert("nats_requests".into(), serde_json::to_value(&res.requests)?);
    details.insert("push_latency".into(), serde_json::to_value(&res.latency)?);
    details.insert("push_rate".into(), serde_json::to_value(&res.rate)?);
    details.insert("room".into(), serde_json::to_value(&res.room)?);
    details.insert("memory".into(), serde_json::to_value(&res.memory)?);
    let bench = opts.bench(bins, Vec::new(), false);
    print_results(opts, &bench, &figs, details)?;
    if !opts.json {
        print_summary(&figs);
    }
    Ok(())
}

/// The names of the two cases of each part, by index.
const CASES_PUSH: [&str; 2] = ["same-node", "cross-node"];
const CASES_ROOM: [&str; 2] = ["one-node", "3-nodes"];
const CASES_MEMORY: [&str; 2] = ["no-cluster", "cluster"];

/// A metric of a part: its name, whether more is better, and how to read it from a result.
type Metric<T> = (&'static str, bool, fn(&T) -> f64);

/// Adds every one of `metrics` of every row to `figs`.
fn collect_all<T>(
    figs: &mut Vec<Figure>,
    workload: &str,
    rows: &[(String, &[T])],
    metrics: &[Metric<T>],
) {
    for &(metric, higher, get) in metrics {
        collect_named(figs, workload, metric, higher, rows.iter().cloned(), get);
    }
}

/// The rows of a part's two cases that ran, named.
fn rows<'a, T>(cases: [&str; 2], runs: &'a [Vec<T>; 2]) -> Vec<(String, &'a [T])> {
    cases
        .iter()
        .map(|c| c.to_string())
        .zip(runs.iter().map(Vec::as_slice))
        .filter(|(_, r)| !r.is_empty())
        .collect()
}

/// The figures of every case that ran.
fn figures_of(res: &Results, args: &Args) -> Vec<Figure> {
    let mut figs = Vec::new();
    let latency = "cluster push, 1 pair, 1 in flight";
    let anchor = [("nats-request".to_string(), res.requests.as_slice())];
    let round_trips: [Metric<RequestResult>; 2] = [
        ("p50 latency us", false, |r| r.p50_us),
        ("p99 latency us", false, |r| r.p99_us),
    ];
    if !res.requests.is_empty() {
        collect_all(&mut figs, latency, &anchor, &round_trips);
    }
    let latencies: [Metric<PushResult>; 2] = [
        ("p50 latency us", false, |r| r.p50_us),
        ("p99 latency us", false, |r| r.p99_us),
    ];
    collect_all(
        &mut figs,
        latency,
        &rows(CASES_PUSH, &res.latency),
        &latencies,
    );
    let rate = format!(
        "cluster push, {} pairs, {} in flight each",
        args.pairs, args.window
    );
    let metrics: [Metric<PushResult>; 4] = [
        ("pushes per second", true, |r| r.pushes_per_sec),
        latencies[0],
        latencies[1],
        ("server CPU us per push", false, |r| {
            r.server_cpu_us_per_push
        }),
    ];
    collect_all(&mut figs, &rate, &rows(CASES_PUSH, &res.rate), &metrics);
    let room = format!(
        "cluster room of {} members, window {}",
        args.members, args.room_window
    );
    let metrics: [Metric<FanoutResult>; 4] = [
        ("deliveries per second", true, |r| r.deliveries_per_sec),
        ("p50 latency us", false, |r| r.p50_us),
        ("p99 latency us", false, |r| r.p99_us),
        ("server CPU us per delivery", false, |r| {
            r.server_cpu_us_per_delivery
        }),
    ];
    collect_all(&mut figs, &room, &rows(CASES_ROOM, &res.room), &metrics);
    let memory = format!("cluster memory, {} idle logged-in channels", args.clients);
    let metrics: [Metric<ParallelResult>; 2] = [
        ("server bytes per idle connection", false, |r| {
            r.bytes_per_conn
        }),
        ("logins per second", true, |r| r.logins_per_sec),
    ];
    collect_all(
        &mut figs,
        &memory,
        &rows(CASES_MEMORY, &res.memory),
        &metrics,
    );
    figs
}

/// The comparisons the issue asks for, from the medians: what crossing nodes adds to a push
/// against NATS's own round trip, and the cluster's fan-out against one node's.
fn print_summary(figs: &[Figure]) {
    let median = |workload_starts: &str, metric: &str, target: &str| {
        figs.iter()
            .find(|f| {
                f.workload.starts_with(workload_starts) && f.metric == metric && f.target == target
            })
            .map(|f| f.median)
    };
    let p50 = |t| median("cluster push, 1 pair", "p50 latency us", t);
    if let (Some(same), Some(cross), Some(anchor)) =
        (p50("same-node"), p50("cross-node"), p50("nats-request"))
    {
        println!(
            "\ncrossing nodes adds {:.0} us to a push at p50; NATS's bare request round trip: \
             {anchor:.0} us ({:.2}x of it)",
            cross - same,
            (cross - same) / anchor
        );
    }
    let rooms = |t| median("cluster room", "deliveries per second", t);
    if let (Some(one), Some(three)) = (rooms("one-node"), rooms("3-nodes")) {
        println!(
            "a room over 3 nodes delivers {:.2}x of one node's rate",
            three / one
        );
    }
    let bytes = |t| median("cluster memory", "server bytes per idle connection", t);
    if let (Some(alone), Some(joined)) = (bytes("no-cluster"), bytes("cluster")) {
        println!(
            "a logged-in channel on a cluster node costs {:.0} bytes more",
            joined - alone
        );
    }
}

/// Refuses a nats-server older than 2.10, whose JetStream answers kim's cluster does not read.
fn check_nats_version(path: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().trim_start_matches("nats-server: v");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    anyhow::ensure!(
        (major, minor) >= (2, 10),
        "{} is nats-server {version}; kim's cluster needs 2.10 or newer (`./scripts/nats-server` \
         installs one)",
        path.display()
    );
    Ok(())
}
