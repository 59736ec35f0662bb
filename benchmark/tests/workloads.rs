//! The workloads and the baseline server work: each is driven briefly against a real server
//! on 127.0.0.1 (kim in-process, the baseline as a child process) and must complete with
//! every reply accounted for. These check function, not speed.

use std::time::Duration;

use kim_benchmark::proc::ServerProcess;
use kim_benchmark::wire::Wire;
use kim_benchmark::{parallel, workloads};
use kim_core::{DefaultServer, ServerHandle, Upgrader};
use kim_examples::{EchoListener, MockAcceptor, MockListener};

async fn kim<U: Upgrader<tokio::net::TcpStream>>(upgrader: U, mock: bool) -> ServerHandle {
    let s = if mock {
        DefaultServer::new(upgrader, MockListener)
            .with_acceptor(MockAcceptor)
            .start("127.0.0.1:0")
            .await
    } else {
        DefaultServer::new(upgrader, EchoListener)
            .start("127.0.0.1:0")
            .await
    };
    s.unwrap()
}

/// Runs a blocking workload off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_run_against_kim_over_both_transports() {
    for wire in [Wire::Ws, Wire::Tcp] {
        let (echo, mock) = match wire {
            Wire::Ws => (
                kim(kim_ws::WsUpgrader::new(), false).await,
                kim(kim_ws::WsUpgrader::new(), true).await,
            ),
            Wire::Tcp => (
                kim(kim_tcp::TcpUpgrader, false).await,
                kim(kim_tcp::TcpUpgrader, true).await,
            ),
        };
        let addr = echo.local_addr().to_string();
        let r = blocking(move || {
            workloads::echo(
                &addr,
                wire,
                4,
                1024,
                Duration::from_millis(100),
                Duration::from_millis(300),
            )
        })
        .await
        .unwrap();
        assert!(r.msgs_per_sec > 0.0, "{wire:?}: {r:?}");

        let addr = echo.local_addr().to_string();
        let r = blocking(move || workloads::large(&addr, wire, 20, 512 * 1024))
            .await
            .unwrap();
        assert!(r.mb_per_sec > 0.0);

        let addr = mock.local_addr().to_string();
        let r = blocking(move || {
            kim_benchmark::pipelined::pipelined(
                &addr,
                wire,
                4,
                3,
                64 * 1024,
                Duration::from_millis(300),
            )
        })
        .await
        .unwrap();
        assert!(r.sent >= 12, "{wire:?}: {r:?}");
        assert_eq!((r.echoed, r.lost), (r.sent, 0), "{wire:?}: {r:?}");
        assert!(r.msgs_per_sec > 0.0, "{wire:?}: {r:?}");
        // Its clients are gone before the next workload logs in.
        tokio::time::timeout(Duration::from_secs(5), async {
            while mock.channel_count() != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the pipelined clients' channels are gone");

        let addr = mock.local_addr().to_string();
        let r = blocking(move || workloads::roundtrip(&addr, wire, 500, 50))
            .await
            .unwrap();
        assert!(r.p50_us <= r.p99_us && r.p99_us <= r.max_us, "{r:?}");
        // The roundtrip client's socket is closed on return; its channel leaves the map.
        tokio::time::timeout(Duration::from_secs(5), async {
            while mock.channel_count() != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the roundtrip client's channel is gone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_speaks_the_mock_protocol_and_echoes() {
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_baseline-server"));
    for config in ["default", "small"] {
        let args = |mode: &str| -> Vec<String> {
            ["--mode", mode, "--config", config, "--threads", "1"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        let mock = ServerProcess::start(&bin, &args("mock"), &[], None).unwrap();
        let r = parallel::run(&mock, Wire::Ws, 50, 10, Duration::ZERO, None)
            .await
            .unwrap();
        assert_eq!(r.clients, 50);
        assert!(r.rss_with_all > 0 && r.logins_per_sec > 0.0);

        let addr = mock.addr.clone();
        let r = blocking(move || workloads::roundtrip(&addr, Wire::Ws, 200, 50))
            .await
            .unwrap();
        assert!(r.msgs_per_sec > 0.0);

        let echo = ServerProcess::start(&bin, &args("echo"), &[], None).unwrap();
        let addr = echo.addr.clone();
        let r = blocking(move || {
            workloads::echo(
                &addr,
                Wire::Ws,
                4,
                20,
                Duration::from_millis(100),
                Duration::from_millis(300),
            )
        })
        .await
        .unwrap();
        assert!(r.msgs_per_sec > 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_checks_that_every_id_can_log_in_again() {
    // Against kim's mock-server semantics in-process: the run fails if a channel lingers.
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_baseline-server"));
    let server = ServerProcess::start(
        &bin,
        &[
            "--mode".into(),
            "mock".into(),
            "--threads".into(),
            "1".into(),
        ],
        &[],
        None,
    )
    .unwrap();
    let r = parallel::run(&server, Wire::Ws, 200, 50, Duration::from_millis(50), None)
        .await
        .unwrap();
    assert_eq!(r.clients, 200);
    assert!(r.bytes_per_conn.is_finite());
}
