//! The `cluster` command's workloads work: pushes between two in-process nodes of a cluster on
//! a real nats-server all arrive, in order, and the nodes count each of them once; pushes on
//! one node without a cluster touch no broker; NATS's request round trip is measured. These
//! check function, not speed. They need nats-server 2.10 or newer (`./scripts/nats-server`).

use std::time::Duration;

use kim_benchmark::cluster::{self, PushLoad};
use kim_benchmark::nats::{self, NatsServer};
use kim_core::{DefaultServer, ServerHandle};
use kim_examples::{LogState, MockAcceptor, MockListener};
use kim_nats::{NatsCluster, NatsOptions};

const LOAD: PushLoad = PushLoad {
    pairs: 4,
    window: 3,
    warmup: Duration::from_millis(300),
    duration: Duration::from_millis(700),
};

fn broker() -> NatsServer {
    let bin = nats::find_binary(None).expect("nats-server: run ./scripts/nats-server");
    NatsServer::start(&bin, None).expect("nats-server starts")
}

async fn node(url: Option<&str>, name: &str) -> ServerHandle {
    let mut server = DefaultServer::new(kim_ws::WsUpgrader::default(), MockListener)
        .with_acceptor(MockAcceptor)
        .with_state_listener(LogState);
    if let Some(url) = url {
        let cluster = NatsCluster::connect(NatsOptions::new(url, name)).await;
        server = server.with_cluster(cluster.expect("the node joins"));
    }
    server.start("127.0.0.1:0").await.expect("the node listens")
}

/// The sum of the samples of `name` whose labels contain `labels`.
fn counter(handle: &ServerHandle, name: &str, labels: &str) -> f64 {
    handle
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_across_nodes_all_arrive_once_and_in_order() {
    let nats = broker();
    let (a, b) = (
        node(Some(&nats.url()), "a").await,
        node(Some(&nats.url()), "b").await,
    );
    let (from, to) = (a.local_addr().to_string(), b.local_addr().to_string());
    // The run fails on a lost, repeated or reordered push, or one found offline once measured.
    let r = tokio::task::spawn_blocking(move || cluster::pushes(&from, &to, "t", LOAD, || Ok(0.0)))
        .await
        .unwrap()
        .unwrap();
    assert!(r.pushes_per_sec > 0.0 && r.p50_us <= r.p99_us, "{r:?}");
    let sent = counter(&a, "kim_cluster_pushes_total", "direction=\"sent\"");
    let received = counter(&b, "kim_cluster_pushes_total", "direction=\"received\"");
    assert!(sent >= r.pushes_per_sec * 0.7 * 0.9, "{sent} sent, {r:?}");
    assert_eq!(sent, received, "every push crossed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_on_one_node_need_no_broker() {
    let alone = node(None, "").await;
    let addr = alone.local_addr().to_string();
    let to = addr.clone();
    let r = tokio::task::spawn_blocking(move || cluster::pushes(&addr, &to, "t", LOAD, || Ok(0.0)))
        .await
        .unwrap()
        .unwrap();
    assert!(r.pushes_per_sec > 0.0 && r.p50_us <= r.p99_us, "{r:?}");
    assert_eq!(counter(&alone, "kim_cluster_pushes_total", ""), 0.0);
    // Every push measured was written to a receiver.
    let written = counter(&alone, "kim_messages_sent_total", "");
    assert!(
        written >= r.pushes_per_sec * 0.7 * 0.9,
        "{written} written, {r:?}"
    );
}

#[tokio::test]
async fn the_brokers_round_trip_is_measured() {
    let nats = broker();
    let r = nats::requests(
        &nats.url(),
        Duration::from_millis(100),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert!(r.requests_per_sec > 10.0, "{r:?}");
    assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us, "{r:?}");
}
