//! The `parallel` command: many clients logged in (a bounded number of logins in flight) and
//! held, against kim and the baselines: memory per idle connection, login rate and cost, and
//! the memory left once they close.

use std::time::Duration;

use kim_benchmark::parallel;

use crate::figures::{self, detail, print_results};
use crate::runner::{Mode, Options, Target};
use kim_benchmark::wire::Wire;

/// The `parallel` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Clients to log in.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) clients: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 50)]
    pub(crate) in_flight: usize,
    /// Seconds to hold the connections before checking they still echo.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) hold: f64,
    /// Over TLS (wss; kim's websocket targets and the baselines, each with a self-signed
    /// ECDSA P-256 certificate made for the run): every login is a full handshake, made by
    /// kim's client rather than the epoll loop.
    #[arg(long)]
    pub(crate) tls: bool,
    /// With permessage-deflate negotiated on every connection (kim's client offering it,
    /// `kim-ws-deflate` accepting it with its default settings), against kim's websocket
    /// server without it (`kim-ws`) in the same runs.
    #[arg(long, conflicts_with = "tls")]
    pub(crate) deflate: bool,
    /// Save each kim server's heap profile before the logins and with every client logged in,
    /// in this directory (`<pid>-before.pb.gz`, `<pid>-held.pb.gz`; read them with `go tool
    /// pprof -sample_index=inuse_space -base`). kim's servers must be built with kim-examples'
    /// `heap-profile` feature.
    #[arg(long, value_name = "DIR", conflicts_with = "tls")]
    pub(crate) heap_profile: Option<std::path::PathBuf>,
    /// kim's servers log at info (`RUST_LOG=info`, to a log file): each connection then has
    /// its channel span in the subscriber's registry.
    #[arg(long)]
    pub(crate) tracing: bool,
}

/// Runs the workload against every target and reports it.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let certificate = if args.tls {
        Some(kim_benchmark::tls::Certificate::new()?)
    } else {
        None
    };
    let mut bench = if args.tls {
        opts.ws_only().server_bench()?
    } else if args.deflate {
        let targets = vec![Target::Kim(Wire::Ws), Target::KimDeflate(Wire::Ws)];
        opts.bench(opts.prepare()?, targets, true)
    } else {
        opts.server_bench()?
    };
    if let Some(c) = &certificate {
        bench.tls_args = c.server_args();
    }
    // kim's servers tell their heap in use on the debug listener's metrics.
    bench.kim_args = vec!["--debug-listen".into(), "127.0.0.1:0".into()];
    bench.kim_tracing = args.tracing;
    let heap = args.heap_profile.as_deref();
    let mut figs = Vec::new();
    let mut details = serde_json::Map::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let hold = Duration::try_from_secs_f64(args.hold)?;
    let res =
        bench.each(
            "parallel",
            Mode::Mock,
            |server, target| match &certificate {
                None if target == Target::KimDeflate(Wire::Ws) => rt.block_on(
                    parallel::run_deflate(server, args.clients, args.in_flight, hold, heap),
                ),
                Some(c) => rt.block_on(parallel::run_tls(
                    server,
                    args.clients,
                    args.in_flight,
                    hold,
                    &c.cert_pem,
                )),
                None => rt.block_on(parallel::run(
                    server,
                    target.wire(),
                    args.clients,
                    args.in_flight,
                    hold,
                    heap,
                )),
            },
        )?;
    figures::collect(
        &mut figs,
        "parallel",
        "server bytes per idle connection",
        false,
        &res,
        |r| r.bytes_per_conn,
    );
    figures::collect(
        &mut figs,
        "parallel",
        "server anonymous bytes per idle connection (RssAnon: without code pages)",
        false,
        &res,
        |r| r.anon_bytes_per_conn,
    );
    // Only the servers that tell their heap (kim's) have a row.
    let with_heap: Vec<_> = res
        .iter()
        .filter(|(_, runs)| runs.iter().all(|r| r.heap_bytes_per_conn.is_some()))
        .cloned()
        .collect();
    figures::collect(
        &mut figs,
        "parallel",
        "server heap bytes per idle connection (allocator's count)",
        false,
        &with_heap,
        |r| r.heap_bytes_per_conn.unwrap_or_default(),
    );
    figures::collect(
        &mut figs,
        "parallel",
        "logins per second",
        true,
        &res,
        |r| r.logins_per_sec,
    );
    figures::collect(
        &mut figs,
        "parallel",
        "server CPU us per login",
        false,
        &res,
        |r| r.server_cpu_us_per_login,
    );
    figures::collect(
        &mut figs,
        "parallel",
        "server MiB after close",
        false,
        &res,
        |r| r.rss_after as f64 / 1048576.0,
    );
    details.insert("parallel".into(), serde_json::to_value(detail(&res))?);
    print_results(opts, &bench, &figs, details)
}
