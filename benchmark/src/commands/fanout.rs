//! The `fanout` command: N subscribers in one room and one publisher of small messages, as
//! fast as the server takes them (a window of messages in flight), against kim's
//! `echo-server --broadcast`, the tokio-tungstenite broadcast loop and uWebSockets' pub/sub
//! server: deliveries per second, delivery latency, and the server's CPU per delivery.

use std::time::Duration;

use kim_benchmark::fanout;

use crate::figures::{self, print_results};
use crate::runner::{Mode, Options, UWS_BROADCAST_SERVER};

/// The `fanout` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Subscribers in the room; repeat for several [default: 1000 and 10000].
    #[arg(long)]
    pub(crate) subscribers: Vec<usize>,
    /// Bytes per message (at least 16: a sequence number and a time).
    #[arg(long, default_value_t = 100)]
    pub(crate) size: usize,
    /// Messages the publisher keeps in flight (published, not yet received by every
    /// subscriber); repeat for several [default: 32 and 256]. A small window measures the
    /// servers at low latency, a large one how far batching takes them.
    #[arg(long)]
    pub(crate) window: Vec<usize>,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Seconds of warm-up.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup: f64,
}

/// Runs each room size against every target, alternating, and reports them.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let opts = opts.ws_only();
    let bench = opts.bench_with_uws(UWS_BROADCAST_SERVER)?;
    let sizes = if args.subscribers.is_empty() {
        vec![1000, 10_000]
    } else {
        args.subscribers.clone()
    };
    let duration = Duration::try_from_secs_f64(args.duration)?;
    let warmup = Duration::try_from_secs_f64(args.warmup)?;
    let mut figs = Vec::new();
    let mut details = serde_json::Map::new();
    let windows = if args.window.is_empty() {
        vec![32, 256]
    } else {
        args.window.clone()
    };
    let cases = sizes
        .iter()
        .flat_map(|&n| windows.iter().map(move |&w| (n, w)));
    for (n, window) in cases {
        let label = format!("fanout {n} subscribers x {} B, window {window}", args.size);
        let res = bench.each(&label, Mode::Broadcast, |server, _| {
            fanout::fanout(
                &[&server.addr],
                n,
                args.size,
                window,
                warmup,
                duration,
                || server.cpu_seconds(),
            )
        })?;
        figures::collect(
            &mut figs,
            &label,
            "deliveries per second",
            true,
            &res,
            |r| r.deliveries_per_sec,
        );
        figures::collect(&mut figs, &label, "p50 latency us", false, &res, |r| {
            r.p50_us
        });
        figures::collect(&mut figs, &label, "p99 latency us", false, &res, |r| {
            r.p99_us
        });
        figures::collect(
            &mut figs,
            &label,
            "server CPU us per delivery",
            false,
            &res,
            |r| r.server_cpu_us_per_delivery,
        );
        details.insert(label, figures::detail(&res));
    }
    print_results(&opts, &bench, &figs, details)
}
