//! The `broadcast` command: uWebSockets' own broadcast benchmark (`uws-broadcast-test`, its
//! `benchmarks/broadcast_test.c`) against kim's `echo-server --broadcast`, the
//! tokio-tungstenite broadcast loop and uWebSockets' pub/sub server. Each of C connections
//! sends one 20-byte message, every connection waits for all C, and again: iterations per
//! second as it prints them every 4 s (the first figure, the ramp-up, dropped), and the
//! server's CPU per delivery (C x C deliveries an iteration).

use std::time::Duration;

use anyhow::bail;

use crate::commands::loadtest::{client_run, host_port, mean_after_ramp_up, PERIOD_SECS};
use crate::figures::{self, print_results};
use crate::runner::{Mode, Options, UWS_BROADCAST_SERVER, UWS_BROADCAST_TEST};

/// The `broadcast` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Connections; repeat for several [default: 100 and 500].
    #[arg(long)]
    pub(crate) connections: Vec<usize>,
    /// Seconds each run lasts, the ramp-up included (figures every 4 s, the first dropped).
    #[arg(long, default_value_t = 13.0)]
    pub(crate) duration: f64,
}

/// One run of broadcast_test against one server.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct BroadcastRun {
    /// The mean of its figures after the first.
    pub(crate) iterations_per_sec: f64,
    /// Every figure it printed.
    pub(crate) reported: Vec<f64>,
    /// Server CPU time per delivery, microseconds, over the figures kept.
    pub(crate) server_cpu_us_per_delivery: f64,
    /// The server's CPU time over those periods as a share of their wall time.
    pub(crate) server_cpu_percent: f64,
}

/// The figure on a line of broadcast_test's, `Iterations/second (C clients): X`.
fn parse_iterations(line: &str) -> Option<f64> {
    let rest = line.trim().strip_prefix("Iterations/second (")?;
    rest.split_once("):")?.1.trim().parse().ok()
}

/// broadcast_test's line when the server closed a connection (it exits).
fn is_failure(line: &str) -> bool {
    line.contains("disconnected")
}

/// Runs each connection count against every target, alternating, and reports them; fails at
/// once if uWebSockets' broadcast_test is not built.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let opts = opts.ws_only();
    let test = opts.uws_dir().join(UWS_BROADCAST_TEST);
    anyhow::ensure!(
        test.exists(),
        "uWebSockets' broadcast_test not built (no {}; --uws-dir tells where it is)",
        test.display()
    );
    let duration = Duration::try_from_secs_f64(args.duration)?;
    anyhow::ensure!(
        args.duration > 2.0 * PERIOD_SECS,
        "--duration must be over {} s: the first figure is dropped",
        2.0 * PERIOD_SECS
    );
    let bench = opts.bench_with_uws(UWS_BROADCAST_SERVER)?;
    let counts = if args.connections.is_empty() {
        vec![100, 500]
    } else {
        args.connections.clone()
    };
    let mut figs = Vec::new();
    let mut details = serde_json::Map::new();
    for conns in counts {
        let label = format!("broadcast {conns} connections");
        let res = bench.each(&label, Mode::Broadcast, |server, _| {
            let (host, port) = host_port(server)?;
            let n = conns.to_string();
            let seen = client_run(
                &test,
                &[&n, host, port, "0"],
                parse_iterations,
                is_failure,
                server,
                duration,
            )?;
            let reported: Vec<f64> = seen.iter().map(|&(v, _)| v).collect();
            let Some(iterations_per_sec) = mean_after_ramp_up(&reported) else {
                bail!(
                    "broadcast_test printed {} figure(s): a longer --duration",
                    reported.len()
                );
            };
            let periods = (seen.len() - 1) as f64;
            let cpu = seen[seen.len() - 1].1 - seen[0].1;
            let deliveries = iterations_per_sec * PERIOD_SECS * periods * (conns * conns) as f64;
            Ok(BroadcastRun {
                iterations_per_sec,
                reported,
                server_cpu_us_per_delivery: cpu * 1e6 / deliveries.max(1.0),
                server_cpu_percent: cpu * 100.0 / (PERIOD_SECS * periods),
            })
        })?;
        figures::collect(
            &mut figs,
            &label,
            "iterations per second",
            true,
            &res,
            |r| r.iterations_per_sec,
        );
        figures::collect(
            &mut figs,
            &label,
            "server CPU us per delivery",
            false,
            &res,
            |r| r.server_cpu_us_per_delivery,
        );
        figures::collect(&mut figs, &label, "server CPU %", false, &res, |r| {
            r.server_cpu_percent
        });
        details.insert(label, figures::detail(&res));
    }
    print_results(&opts, &bench, &figs, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iteration_lines() {
        assert_eq!(
            parse_iterations("Iterations/second (100 clients): 39.250000"),
            Some(39.25)
        );
        assert_eq!(parse_iterations("Running benchmark now..."), None);
        assert!(is_failure("Client was disconnected, exiting!"));
    }
}
