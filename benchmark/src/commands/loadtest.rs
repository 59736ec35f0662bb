//! The `loadtest` command: uWebSockets' own load generator (`uws-load-test`, its
//! `benchmarks/load_test.c`) against kim's echo server and uWebSockets' echo example, so that
//! the comparison with uWebSockets does not rest on kim's client alone. load_test opens C
//! connections, each sending an S-byte binary message and waiting for its echo, and prints
//! `Msg/sec: N` every 4 s; the first figure counts the connections' ramp-up too and is dropped,
//! the others are averaged into the run's figure. The server's CPU time is read at each figure,
//! so that its CPU per message covers the same periods.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use kim_benchmark::proc::ServerProcess;
use kim_benchmark::wire::Wire;

use crate::figures::{self, print_results};
use crate::runner::{
    parse_preset, Mode, Options, Target, UWS_DEFLATE_ECHO_SERVER, UWS_ECHO_SERVER, UWS_LOAD_TEST,
    UWS_SSL_ECHO_SERVER,
};

/// Seconds between the figures of uWebSockets' benchmark clients (uSockets' timeout
/// granularity).
pub(crate) const PERIOD_SECS: f64 = 4.0;

/// The `loadtest` command's flags (its help text is the doc comment of its variant of
/// `Workload` in `main`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// `CONNECTIONSxBYTES`; repeat for several [default: 100x20, 10x1024, 200x16384].
    #[arg(long)]
    pub(crate) preset: Vec<String>,
    /// Seconds each run lasts, the connections' ramp-up included: load_test reports every
    /// 4 s and its first figure is dropped, so at least 9 s for one figure kept.
    #[arg(long, default_value_t = 13.0)]
    pub(crate) duration: f64,
    /// Over TLS: load_test with its ssl argument set (it must be built with OpenSSL), kim's
    /// echo server over wss, uWebSockets' echo example as an SSLApp
    /// (`uws-ssl-echo-server PORT CERT KEY`) and tokio-tungstenite over tokio-rustls, each
    /// with a self-signed ECDSA P-256 certificate made for the run.
    #[arg(long)]
    pub(crate) tls: bool,
    /// With permessage-deflate [default presets: 100x20, 10x1024]: load_test with its deflate
    /// argument set (it offers `permessage-deflate` and sends every message compressed: JSON
    /// cut from its own placeholder), against kim's echo server with `--deflate`
    /// (`kim-ws-deflate`) and uWebSockets' echo example with `SHARED_COMPRESSOR |
    /// SHARED_DECOMPRESSOR` (`uws-deflate-echo-server`). load_test expects each echo
    /// uncompressed, as uWebSockets' example sends it, so kim's echoes go uncompressed too
    /// (`--deflate-threshold` above any message): each server inflates every message under
    /// its size limit and echoes it.
    #[arg(long, conflicts_with = "tls")]
    pub(crate) deflate: bool,
}

/// One run of load_test against one server.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LoadRun {
    /// The mean of load_test's figures after the first.
    pub(crate) msgs_per_sec: f64,
    /// Every figure load_test printed, the first (ramp-up) included.
    pub(crate) reported: Vec<f64>,
    /// Server CPU time (user + system) per echo, in microseconds, over the periods of the
    /// figures kept.
    pub(crate) server_cpu_us_per_msg: f64,
    /// The server's CPU time over those periods, as a share of their wall time (100: one
    /// core busy all along; well under 100 means load_test, not the server, set the pace).
    pub(crate) server_cpu_percent: f64,
}

/// Runs every preset against kim's echo server (websocket; each backend asked for) and
/// uWebSockets', alternating, and reports them; fails at once if uWebSockets is not built.
pub(crate) fn run(opts: &Options, args: &Args) -> anyhow::Result<()> {
    let dir = opts.uws_dir();
    let echo_server = if args.tls {
        UWS_SSL_ECHO_SERVER
    } else if args.deflate {
        UWS_DEFLATE_ECHO_SERVER
    } else {
        UWS_ECHO_SERVER
    };
    for bin in [echo_server, UWS_LOAD_TEST] {
        let path = dir.join(bin);
        anyhow::ensure!(
            path.exists(),
            "uWebSockets not built (no {}; --uws-dir tells where it is): loadtest needs its \
             echo server and load generator",
            path.display()
        );
    }
    let load_test = dir.join(UWS_LOAD_TEST);
    let presets: Vec<(usize, usize)> = if args.preset.is_empty() && args.deflate {
        vec![(100, 20), (10, 1024)]
    } else if args.preset.is_empty() {
        vec![(100, 20), (10, 1024), (200, 16384)]
    } else {
        args.preset
            .iter()
            .map(|p| parse_preset(p))
            .collect::<anyhow::Result<_>>()?
    };
    let duration = Duration::try_from_secs_f64(args.duration)?;
    anyhow::ensure!(
        args.duration > 2.0 * PERIOD_SECS,
        "--duration must be over {} s: load_test reports every {PERIOD_SECS} s and its first \
         figure (the ramp-up) is dropped",
        2.0 * PERIOD_SECS
    );
    // load_test speaks websocket only.
    let mut targets = if args.deflate {
        vec![Target::KimDeflate(Wire::Ws)]
    } else {
        opts.kim_targets(&[Wire::Ws])
    };
    if args.tls && !opts.kim_only {
        targets.push(Target::Tungstenite);
    }
    targets.push(Target::Uws);
    let mut bench = opts.bench(opts.prepare()?, targets, false);
    let certificate = if args.tls {
        Some(kim_benchmark::tls::Certificate::new()?)
    } else {
        None
    };
    if let Some(c) = &certificate {
        bench.tls_args = c.server_args();
    }
    if args.deflate {
        bench.deflate_args = vec!["--deflate-threshold".into(), u32::MAX.to_string()];
        bench.uws_deflate = true;
    }
    let ssl = if args.tls { "1" } else { "0" };
    let deflate = if args.deflate { "1" } else { "0" };
    let mut figs = Vec::new();
    let mut details = serde_json::Map::new();
    for (conns, size) in presets {
        let over = match (args.tls, args.deflate) {
            (true, _) => " over TLS",
            (_, true) => " deflated",
            _ => "",
        };
        let label = format!("loadtest {conns} x {size} B{over}");
        let res = bench.each(&label, Mode::Echo, |server, _| {
            load_run(&load_test, server, conns, size, ssl, deflate, duration)
        })?;
        figures::collect(&mut figs, &label, "messages per second", true, &res, |r| {
            r.msgs_per_sec
        });
        figures::collect(
            &mut figs,
            &label,
            "server CPU us per message",
            false,
            &res,
            |r| r.server_cpu_us_per_msg,
        );
        figures::collect(&mut figs, &label, "server CPU %", false, &res, |r| {
            r.server_cpu_percent
        });
        details.insert(label, figures::detail(&res));
    }
    print_results(opts, &bench, &figs, details)
}

/// load_test's figure on `line`, if it is a `Msg/sec: N` line.
fn parse_msgs_per_sec(line: &str) -> Option<f64> {
    line.trim().strip_prefix("Msg/sec:")?.trim().parse().ok()
}

/// A line of load_test's that means a run went wrong: a connection closed, or more bytes
/// came than the echo it waited for.
fn is_failure(line: &str) -> bool {
    let line = line.trim();
    line == "Closed!" || line.starts_with("ERROR")
}

/// One run of load_test (on this process's CPU) against `server`, for `duration`: the figures
/// it printed and the server's CPU time at each, then killed.
fn load_run(
    load_test: &std::path::Path,
    server: &ServerProcess,
    conns: usize,
    size: usize,
    ssl: &str,
    deflate: &str,
    duration: Duration,
) -> anyhow::Result<LoadRun> {
    let (host, port) = host_port(server)?;
    let args = [
        &conns.to_string(),
        host,
        port,
        ssl,
        deflate,
        &size.to_string(),
    ];
    let seen = client_run(
        load_test,
        &args,
        parse_msgs_per_sec,
        is_failure,
        server,
        duration,
    )?;
    let reported: Vec<f64> = seen.iter().map(|&(v, _)| v).collect();
    let Some(msgs_per_sec) = mean_after_ramp_up(&reported) else {
        bail!(
            "load_test printed {} figure(s) in {duration:?}; at least two are needed (the first \
             is the ramp-up): a longer --duration",
            reported.len()
        );
    };
    // Over the periods of the figures kept: from the first figure to the last.
    let periods = (seen.len() - 1) as f64;
    let cpu = seen[seen.len() - 1].1 - seen[0].1;
    let msgs = msgs_per_sec * PERIOD_SECS * periods;
    Ok(LoadRun {
        msgs_per_sec,
        reported,
        server_cpu_us_per_msg: cpu * 1e6 / msgs.max(1.0),
        server_cpu_percent: cpu * 100.0 / (PERIOD_SECS * periods),
    })
}

/// The host and port of `server`'s address.
pub(crate) fn host_port(server: &ServerProcess) -> anyhow::Result<(&str, &str)> {
    server
        .addr
        .rsplit_once(':')
        .with_context(|| format!("no port in the server's address {}", server.addr))
}

/// Runs one of uWebSockets' benchmark clients (`bin` with `args`, on this process's CPU)
/// against `server` for `duration`, then kills it: every figure it printed (as `parse` reads
/// its lines), each with the server's CPU seconds when it came. A line `is_failure` accepts
/// ends the run with an error.
pub(crate) fn client_run(
    bin: &std::path::Path,
    args: &[&str],
    parse: fn(&str) -> Option<f64>,
    is_failure: fn(&str) -> bool,
    server: &ServerProcess,
    duration: Duration,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("load_test's stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + duration;
    // (figure, server CPU seconds when it came) for every figure.
    let mut seen: Vec<(f64, f64)> = Vec::new();
    let outcome = loop {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            break Ok(());
        };
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(v) = parse(&line) {
                    seen.push((v, server.cpu_seconds()?));
                } else if is_failure(&line) {
                    break Err(anyhow::anyhow!("{}: {line}", bin.display()));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break Ok(()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!(
                    "{} ended early ({:?})",
                    bin.display(),
                    child.wait()
                ));
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    outcome?;
    Ok(seen)
}

/// The mean of `figures` after the first (which counts the ramp-up too); `None` without one.
pub(crate) fn mean_after_ramp_up(figures: &[f64]) -> Option<f64> {
    let kept = figures.get(1..).filter(|k| !k.is_empty())?;
    Some(kept.iter().sum::<f64>() / kept.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// load_test's figures are read from its `Msg/sec` lines, and nothing else it prints
    /// (the upgrade responses, its settings) is taken for one.
    #[test]
    fn msgs_per_sec_lines() {
        let output = "Using message size of 20 bytes\nResponse: HTTP/1.1 101 Switching \
                      Protocols\r\nuWebSockets: 20\r\n\r\nRunning benchmark now...\n\
                      Msg/sec: 100033.000000\nMsg/sec: 68656.750000\nMsg/sec: 60225.750000\n";
        let figures: Vec<f64> = output.lines().filter_map(parse_msgs_per_sec).collect();
        assert_eq!(figures, [100033.0, 68656.75, 60225.75]);
        assert_eq!(parse_msgs_per_sec("Msg/sec: nan?"), None);
        assert!(is_failure("Closed!"));
        assert!(is_failure("ERROR: outstanding bytes negative!"));
        assert!(!is_failure("Msg/sec: 1.0"));
    }

    /// The first figure (ramp-up) is dropped and the rest averaged; one figure is not enough.
    #[test]
    fn ramp_up_dropped() {
        assert_eq!(mean_after_ramp_up(&[100.0, 60.0, 70.0]), Some(65.0));
        assert_eq!(mean_after_ramp_up(&[100.0]), None);
        assert_eq!(mean_after_ramp_up(&[]), None);
    }
}
