//! The room workloads work: `fanout` against kim's broadcast echo (in-process) and the
//! baseline's broadcast loop (a child process) completes with every delivery in order, and
//! `membership` against kim's mock server counts its joins. These check function, not speed.

use std::time::Duration;

use kim_benchmark::proc::ServerProcess;
use kim_benchmark::{fanout, membership};
use kim_core::{DefaultAcceptor, DefaultServer};
use kim_examples::{BroadcastListener, JoinBroadcast, MockAcceptor, MockListener};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn brief(addr: String) -> anyhow::Result<fanout::FanoutResult> {
    fanout::fanout(
        &[&addr],
        50,
        100,
        8,
        Duration::from_millis(200),
        Duration::from_millis(500),
        || Ok(0.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_runs_against_kim_and_the_baseline_loop() {
    let kim = DefaultServer::new(kim_ws::WsUpgrader::default(), BroadcastListener)
        .with_acceptor(DefaultAcceptor)
        .with_state_listener(JoinBroadcast)
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let addr = kim.local_addr().to_string();
    let r = blocking(move || brief(addr)).await.unwrap();
    assert!(r.deliveries_per_sec > 0.0 && r.publishes_per_sec > 0.0);
    // 50 subscribers: about 50 deliveries a publish.
    let per_publish = r.deliveries_per_sec / r.publishes_per_sec;
    assert!((40.0..=60.0).contains(&per_publish), "{per_publish}");
    assert!(r.p50_us <= r.p99_us);

    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_baseline-server"));
    let args: Vec<String> = ["--mode", "broadcast", "--threads", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let baseline = ServerProcess::start(&bin, &args, &[], None).unwrap();
    let addr = baseline.addr.clone();
    let r = blocking(move || brief(addr)).await.unwrap();
    assert!(r.deliveries_per_sec > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_joins_every_channel_to_its_rooms() {
    let kim = DefaultServer::new(kim_ws::WsUpgrader::default(), MockListener)
        .with_acceptor(MockAcceptor)
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let addr = kim.local_addr().to_string();
    // The run fails unless every join is answered `joined <room>`, in order.
    let r = blocking(move || membership::membership(&addr, 20, 5, 10, || Ok(0)))
        .await
        .unwrap();
    assert_eq!((r.channels, r.rooms_each, r.rooms), (20, 5, 10));
    assert!(r.joins_per_sec > 0.0);
    let joined = kim.metrics_text().lines().find_map(|l| {
        l.strip_prefix("kim_room_publishes_total ")
            .map(str::to_string)
    });
    assert_eq!(joined.as_deref(), Some("0"), "joins publish nothing");
}
