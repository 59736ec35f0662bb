//! The `sessions` command: what sessions cost, each figure beside the same workload without
//! sessions on the same build in the same run (`kim-ws` against `kim-ws-session`, alternating
//! which goes first): the heap of an idle connection, echo rates (the clients acknowledging
//! every 32 messages, or `--ack-every`), fan-out deliveries; and, with sessions only, what a
//! held room message costs each suspended member beyond its payload, and the replay of held
//! messages to many clients resuming at once.

use std::time::{Duration, Instant};

use kim_benchmark::proc::ServerProcess;
use kim_benchmark::sessions;

use crate::figures::{self, print_results, Figure};
use crate::runner::{parse_preset, Mode, Options, Target};

/// The `sessions` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Idle clients logged in for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) clients: usize,
    /// Echo presets (connections x bytes), comma-separated.
    #[arg(long, default_value = "100x20,200x16384")]
    pub(crate) echo: String,
    /// Fan-out subscribers in one room.
    #[arg(long, default_value_t = 1000)]
    pub(crate) subscribers: usize,
    /// Fan-out messages in flight (the publisher's window).
    #[arg(long, default_value_t = 32)]
    pub(crate) window: usize,
    /// Suspended members of one room for the held-message figure.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) members: usize,
    /// Messages held by each of them, and their payload bytes.
    #[arg(long, default_value = "20x1000")]
    pub(crate) held: String,
    /// Resuming clients x held messages each, for the replay.
    #[arg(long, default_value = "1000x1000")]
    pub(crate) replay: String,
    /// The clients of the echo and fan-out rates acknowledge every this many messages.
    #[arg(long, default_value_t = sessions::ACK_EVERY)]
    pub(crate) ack_every: u64,
    /// Seconds measured per rate (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) duration: f64,
}

/// The server's heap in use (jemalloc's count, on its debug listener).
fn heap(server: &ServerProcess) -> anyhow::Result<f64> {
    let debug = server
        .debug_addr(Duration::from_secs(2))
        .ok_or_else(|| anyhow::anyhow!("kim's server has no debug listener"))?;
    let text = kim_benchmark::prometheus::get(&debug, "/metrics", Duration::from_secs(5))?;
    kim_benchmark::prometheus::sample(&text, "kim_heap_bytes", "state=\"in_use\"")
        .ok_or_else(|| anyhow::anyhow!("no kim_heap_bytes"))
}

/// One run's figures of one variant (sessions off or on).
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Variant {
    heap_per_conn: f64,
    echo: Vec<f64>,
    fanout: f64,
}

/// Runs the workloads `--runs` times on every transport and reports them.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let bins = opts.prepare()?;
    let mut bench = opts.bench(bins, opts.kim_targets(&opts.wires), false);
    bench.kim_args = vec!["--debug-listen".into(), "127.0.0.1:0".into()];
    let presets: Vec<(usize, usize)> = args
        .echo
        .split(',')
        .map(parse_preset)
        .collect::<anyhow::Result<_>>()?;
    let (held_n, held_size) = parse_preset(&args.held)?;
    let (replay_clients, replay_n) = parse_preset(&args.replay)?;
    let pace = sessions::Pace {
        warmup: Duration::from_secs(1),
        duration: Duration::try_from_secs_f64(args.duration)?,
        ack_every: args.ack_every,
    };
    let mut figs: Vec<Figure> = Vec::new();
    let mut details = serde_json::Map::new();
    let targets: Vec<Target> = bench
        .targets
        .iter()
        .copied()
        .filter(|t| matches!(t, Target::Kim(_)))
        .collect();
    for target in targets {
        let wire = target.wire();
        let name = target.name();
        let mut runs: [Vec<Variant>; 2] = [Vec::new(), Vec::new()];
        let mut held_cost = Vec::new();
        let mut replays = Vec::new();
        for run in 0..bench.runs {
            let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
            for v in order {
                let session = v == 1;
                eprintln!(
                    "sessions {name}: run {} of {}, session {session}",
                    run + 1,
                    bench.runs
                );
                let mut out = Variant::default();
                let server = bench.start(target, Mode::Mock)?;
                std::thread::sleep(Duration::from_millis(300));
                let before = heap(&server)?;
                let held = kim_benchmark::parallel::lean_logins(
                    &server.addr,
                    wire,
                    args.clients,
                    50,
                    session,
                )?;
                std::thread::sleep(Duration::from_secs(1));
                out.heap_per_conn = (heap(&server)? - before) / args.clients as f64;
                drop(held);
                drop(server);
                let server = bench.start(target, Mode::Mock)?;
                for &(conns, size) in &presets {
                    let rate = sessions::echo(&server.addr, wire, conns, size, session, pace)?;
                    out.echo.push(rate);
                }
                drop(server);
                let server = bench.start(target, Mode::Mock)?;
                out.fanout = sessions::fanout(
                    &server.addr,
                    wire,
                    args.subscribers,
                    20,
                    args.window,
                    session,
                    pace,
                )?;
                drop(server);
                runs[v].push(out);
            }
            eprintln!(
                "sessions {name}: run {} of {}, held messages",
                run + 1,
                bench.runs
            );
            let server = bench.start(target, Mode::Mock)?;
            sessions::suspend_members(&server.addr, wire, args.members)?;
            std::thread::sleep(Duration::from_secs(1));
            let before = heap(&server)?;
            sessions::publish_held(&server.addr, wire, held_n, held_size)?;
            std::thread::sleep(Duration::from_millis(500));
            let grown = heap(&server)? - before;
            // The payloads (once each, with the frame the room shares) are taken out; what is
            // left is what each member's session adds per message.
            let payloads = (held_n * held_size) as f64;
            held_cost.push((grown - payloads) / (args.members * held_n) as f64);
            drop(server);
            eprintln!("sessions {name}: run {} of {}, replay", run + 1, bench.runs);
            let server = bench.start(target, Mode::Mock)?;
            let started = Instant::now();
            replays.push(sessions::replay(
                &server.addr,
                wire,
                replay_clients,
                replay_n,
            )?);
            eprintln!("  replay run took {:?}", started.elapsed());
        }
        let variants = [name.clone(), format!("{name}-session")];
        let named = |i: usize| (variants[i].clone(), runs[i].as_slice());
        figures::collect_named(
            &mut figs,
            &format!("sessions: idle connections ({})", args.clients),
            "server heap bytes per idle connection",
            false,
            [named(0), named(1)],
            |v| v.heap_per_conn,
        );
        for (i, (conns, size)) in presets.iter().enumerate() {
            figures::collect_named(
                &mut figs,
                &format!("sessions: echo {conns} x {size} B"),
                "messages per second",
                true,
                [named(0), named(1)],
                |v| v.echo[i],
            );
        }
        figures::collect_named(
            &mut figs,
            &format!(
                "sessions: fan-out {} subscribers, window {}",
                args.subscribers, args.window
            ),
            "deliveries per second",
            true,
            [named(0), named(1)],
            |v| v.fanout,
        );
        figures::collect_named(
            &mut figs,
            &format!(
                "sessions: {held_n} room messages of {held_size} B held by {} suspended members",
                args.members
            ),
            "server heap bytes per member per message beyond the payload",
            false,
            [(variants[1].clone(), held_cost.as_slice())],
            |v| *v,
        );
        let replay =
            format!("sessions: replay {replay_n} held messages to {replay_clients} clients");
        for (metric, higher, get) in [
            (
                "messages per second",
                true,
                (|r: &sessions::ReplayResult| r.msgs_per_sec) as fn(&_) -> f64,
            ),
            ("p50 ms from connect to the last replayed", false, |r| {
                r.p50_ms
            }),
            ("p99 ms from connect to the last replayed", false, |r| {
                r.p99_ms
            }),
        ] {
            figures::collect_named(
                &mut figs,
                &replay,
                metric,
                higher,
                [(variants[1].clone(), replays.as_slice())],
                get,
            );
        }
        details.insert(
            name.clone(),
            serde_json::json!({ "off": runs[0], "on": runs[1], "held": held_cost, "replay": replays }),
        );
    }
    print_results(opts, &bench, &figs, details)?;
    if !opts.json {
        print_ratios(&figs);
    }
    Ok(())
}

/// Each `-session` row's median against the row without sessions of the same table.
fn print_ratios(figs: &[Figure]) {
    println!("\nsessions on / off (medians):");
    for on in figs.iter().filter(|f| f.target.ends_with("-session")) {
        let off_name = on.target.trim_end_matches("-session");
        let off = figs
            .iter()
            .find(|f| f.workload == on.workload && f.metric == on.metric && f.target == off_name);
        if let Some(off) = off {
            let diff = on.median - off.median;
            println!(
                "  {} {}, {}: {:.3}x ({:+.1})",
                off_name,
                on.workload,
                on.metric,
                on.median / off.median,
                diff
            );
        }
    }
}
