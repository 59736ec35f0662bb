//! The pieces of the `overhead` workload: server processes started with extra environment and
//! read for their debug listener's address, the Prometheus scrape, and the subcommand itself
//! end to end (when kim's example servers are built next to the benchmark with their
//! `--debug-listen` flag; skipped otherwise). These check function, not speed.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kim_benchmark::proc::ServerProcess;
use kim_benchmark::prometheus;

/// A stand-in server: `sh -c script`.
fn sh(script: &str, env: &[(&str, &str)]) -> anyhow::Result<ServerProcess> {
    ServerProcess::start(
        Path::new("/bin/sh"),
        &["-c".to_string(), script.to_string()],
        env,
        None,
    )
}

#[test]
fn the_debug_line_before_listening_is_read_with_the_environment_given() {
    let s = sh(
        "echo \"debug listening on $DEBUG_ADDR\"; echo \"listening on $RUST_LOG\"; exec sleep 30",
        &[("DEBUG_ADDR", "127.0.0.1:9"), ("RUST_LOG", "off")],
    )
    .unwrap();
    // RUST_LOG given replaces the default `warn`.
    assert_eq!(s.addr, "off");
    assert_eq!(s.debug_addr(Duration::ZERO).as_deref(), Some("127.0.0.1:9"));
}

#[test]
fn a_debug_line_after_listening_is_read_in_the_background() {
    let s = sh(
        "echo 'listening on 127.0.0.1:1'; sleep 0.2; echo 'debug listening on 127.0.0.1:2'; \
         exec sleep 30",
        &[],
    )
    .unwrap();
    assert_eq!(s.addr, "127.0.0.1:1");
    assert_eq!(
        s.debug_addr(Duration::from_secs(10)).as_deref(),
        Some("127.0.0.1:2")
    );
}

#[test]
fn no_debug_line_and_no_address() {
    let s = sh(
        "echo \"other $RUST_LOG\"; echo 'listening on 127.0.0.1:1'; exec sleep 30",
        &[],
    )
    .unwrap();
    assert_eq!(s.debug_addr(Duration::from_millis(100)), None);
    let e = sh("echo 'no address here'", &[])
        .err()
        .expect("no listening line");
    assert!(format!("{e:#}").contains("without printing"), "{e:#}");
}

/// Serves `response` once to the first connection, after reading its request head; then
/// closes it, or with `keep_alive` holds it open.
fn serve_once(response: &'static [u8], keep_alive: bool) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap() == 1 {
            head.push(b[0]);
        }
        assert!(head.starts_with(b"GET /metrics HTTP/1.1\r\n"));
        s.write_all(response).unwrap();
        if keep_alive {
            std::thread::sleep(Duration::from_secs(30));
        }
    });
    addr
}

#[test]
fn scrapes_counters_sized_or_chunked() {
    let addr = serve_once(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 58\r\n\r\n\
          kim_messages_received_total 42\nkim_messages_sent_total 41\n",
        true,
    );
    // Kept alive: the body is whole by its length, so there is nothing to wait for.
    let started = std::time::Instant::now();
    let text = prometheus::get(&addr, "/metrics", Duration::from_secs(5)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        prometheus::sum(&text, "kim_messages_received_total"),
        Some(42.0)
    );
    assert_eq!(
        prometheus::sum(&text, "kim_messages_sent_total"),
        Some(41.0)
    );

    let addr = serve_once(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          1d\r\nkim_messages_received_total 7\r\n1\r\n\n\r\n0\r\n\r\n",
        false,
    );
    let text = prometheus::get(&addr, "/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(
        prometheus::sum(&text, "kim_messages_received_total"),
        Some(7.0)
    );

    let addr = serve_once(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    let e = prometheus::get(&addr, "/metrics", Duration::from_secs(5)).unwrap_err();
    assert!(e.to_string().contains("404"), "{e:#}");
}

/// The directory of an `echo-server` that has `--debug-listen`: next to the benchmark's
/// binary, or in the release directory beside it.
fn example_servers() -> Option<PathBuf> {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_kim-benchmark"));
    let dir = me.parent()?;
    let candidates = [dir.to_path_buf(), dir.parent()?.join("release")];
    candidates.into_iter().find(|d| {
        Command::new(d.join("echo-server"))
            .arg("--help")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--debug-listen"))
    })
}

fn benchmark(bins: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kim-benchmark"))
        .args(["--no-pin", "--bin-dir"])
        .arg(bins)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kim-benchmark {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_overhead_subcommand_runs_both_targets_and_checks_the_counters() {
    let Some(bins) = example_servers() else {
        eprintln!(
            "skipped: no echo-server with --debug-listen built \
             (`cargo build -p kim-examples` or `cargo build --release -p kim-examples`)"
        );
        return;
    };
    let tiny = [
        "overhead",
        "--separate",
        "--preset",
        "4x20",
        "--warmup",
        "0.1",
        "--duration",
        "0.3",
    ];
    let mut args = vec!["--runs", "2"];
    args.extend(tiny);
    let out = benchmark(&bins, &args);
    for needle in [
        "\n  kim-ws ",
        "\n  kim-ws-bare ",
        "instrumented/bare msgs/s = ",
        "instrumented/bare server CPU us/msg = ",
        "indicative: 2 runs < 5",
        "metrics check: ok",
    ] {
        assert!(out.contains(needle), "no {needle:?} in\n{out}");
    }
    assert!(out.contains(": PASS") || out.contains(": FAIL"), "{out}");

    let mut args = vec!["--runs", "1", "--json"];
    args.extend(tiny);
    args.push("--attribute");
    let doc: serde_json::Value = serde_json::from_str(&benchmark(&bins, &args)).unwrap();
    assert_eq!(doc["targets"].as_array().unwrap().len(), 2, "{doc:#}");
    // Metrics only and tracing only, each on both metrics.
    assert_eq!(doc["attribution"].as_array().unwrap().len(), 4, "{doc:#}");
    let checks = doc["metrics"].as_array().unwrap();
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["target"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kim-ws", "kim-ws-metrics"], "{doc:#}");
    for c in checks {
        assert!(c["received"].as_f64().unwrap() > 0.0, "{doc:#}");
    }
    assert_eq!(doc["metrics_ok"], true, "{doc:#}");
}

#[test]
fn the_interleaved_overhead_runs_the_servers_in_turn() {
    let Some(bins) = example_servers() else {
        eprintln!("skipped: no echo-server with --debug-listen built");
        return;
    };
    let args = [
        "--runs",
        "2",
        "overhead",
        "--preset",
        "4x20",
        "--warmup",
        "0.2",
        "--slice-ms",
        "50",
        "--rounds",
        "4",
        "--attribute",
    ];
    let out = benchmark(&bins, &args);
    for needle in [
        "\n  kim-ws ",
        "\n  kim-ws-bare ",
        "\n  kim-ws-metrics ",
        "\n  kim-ws-tracing ",
        "kim-ws/kim-ws-bare messages per second = ",
        "kim-ws/kim-ws-bare server CPU us per message = ",
        "metrics check: ok (kim_messages_received_total at least the echoes the client counted, in all 4 scrapes)",
        "run 2 kim-ws: per-round msgs/s ratio median",
    ] {
        assert!(out.contains(needle), "no {needle:?} in\n{out}");
    }
    assert!(out.contains(": PASS") || out.contains(": FAIL"), "{out}");
}
