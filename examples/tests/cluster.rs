//! Several gateway nodes as one, over a real nats-server on 127.0.0.1 (started by the tests;
//! they fail with a clear message when nats-server is missing): pushes and room publishes
//! across nodes, racing duplicate logins, presence, a node killed with SIGKILL and restarted,
//! nats-server restarted under traffic, and the single node with no broker.

mod common;
mod nats;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{login, no_heartbeat, read, EVENT};
use kim_client::ClientError;
use kim_core::cluster::Location;
use kim_core::{DefaultServer, DuplicatePolicy, PushError, ServerHandle, ServerOptions};
use kim_examples::{MockAcceptor, MockListener};
use kim_nats::{NatsCluster, NatsOptions};
use kim_tcp::TcpClient;
use nats::Nats;

/// This cluster's nodes: short timeouts and heartbeats, so the tests see failures quickly.
fn cluster_options(nats: &Nats, node: &str) -> NatsOptions {
    NatsOptions::new(nats.url(), node)
        .cluster("test")
        .request_timeout(Duration::from_secs(1))
        .heartbeat(Duration::from_millis(200))
}

/// Starts an in-process node of the mock protocol over raw TCP.
async fn node(nats: &Nats, name: &str, policy: DuplicatePolicy) -> ServerHandle {
    let cluster = NatsCluster::connect(cluster_options(nats, name))
        .await
        .expect("joins the cluster");
    let options = ServerOptions::builder()
        .duplicate_policy(policy)
        .build()
        .unwrap();
    DefaultServer::new(kim_tcp::TcpUpgrader, MockListener)
        .with_acceptor(MockAcceptor)
        .with_options(options)
        .with_cluster(cluster)
        .start("127.0.0.1:0")
        .await
        .expect("node starts")
}

fn addr(h: &ServerHandle) -> String {
    h.local_addr().to_string()
}

/// The text of the next message.
async fn said(c: &mut TcpClient) -> String {
    let f = read(c).await.expect("a message");
    String::from_utf8(f.payload.to_vec()).expect("UTF-8")
}

async fn say(c: &mut TcpClient, text: &str) {
    c.send_text(text.to_string()).await.expect("sent");
}

/// A metric's value in a node's exposition (`name` includes any labels).
fn metric(h: &ServerHandle, name: &str) -> f64 {
    let text = h.metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `f` holds, at most [`EVENT`].
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < EVENT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every node receives room `room`'s publishes.
async fn until_subscribed(nodes: &[&ServerHandle]) {
    until("room subscriptions", || {
        nodes
            .iter()
            .all(|n| metric(n, "kim_cluster_room_subscriptions") >= 1.0)
    })
    .await;
}

/// Logs in as `id`, returning the refusal's reason if the server refused.
async fn try_login(addr: &str, id: &str) -> Result<TcpClient, String> {
    let mut c = kim_tcp::connect(addr, &no_heartbeat())
        .await
        .expect("connects");
    match tokio::time::timeout(EVENT, c.login(id.to_string())).await {
        Ok(Ok(_)) => Ok(c),
        Ok(Err(ClientError::Closed(r))) => Err(r.reason.to_string()),
        other => panic!("login of {id}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_users_on_other_nodes_and_nobody_is_offline_at_once() {
    let nats = Nats::start();
    let n1 = node(&nats, "n1", DuplicatePolicy::Reject).await;
    let n2 = node(&nats, "n2", DuplicatePolicy::Reject).await;
    let n3 = node(&nats, "n3", DuplicatePolicy::Reject).await;
    let mut alice = login(&addr(&n1), "alice").await;
    let mut bob = login(&addr(&n2), "bob").await;
    let mut carol = login(&addr(&n3), "carol.c").await;

    say(&mut alice, "@bob hi bob").await;
    assert_eq!(said(&mut bob).await, "alice: hi bob");
    say(&mut bob, "@carol.c hi carol").await;
    assert_eq!(said(&mut carol).await, "bob: hi carol");
    say(&mut carol, "@alice back").await;
    assert_eq!(said(&mut alice).await, "carol.c: back");
    // Binary stays binary across nodes.
    alice.send_binary(&b"@bob \x00\x01"[..]).await.unwrap();
    let f = read(&mut bob).await.unwrap();
    assert_eq!(
        (f.op, &f.payload[..]),
        (kim_core::OpCode::Binary, &b"alice: \x00\x01"[..])
    );

    // Nobody holds "zed": the broker says so at once, without waiting for the timeout.
    let asked = Instant::now();
    say(&mut alice, "@zed anyone?").await;
    assert_eq!(said(&mut alice).await, "offline zed");
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        n1.push_text_to("zed", "x").await,
        Err(PushError::NotFound("zed".into()))
    );

    // Presence.
    assert_eq!(n1.locate("alice").await.unwrap(), Some(Location::Here));
    assert_eq!(
        n1.locate("carol.c").await.unwrap(),
        Some(Location::Node("n3".into()))
    );
    assert_eq!(n2.locate("zed").await.unwrap(), None);

    let sent = r#"kim_cluster_pushes_total{direction="sent"}"#;
    let received = r#"kim_cluster_pushes_total{direction="received"}"#;
    assert_eq!(metric(&n1, sent), 2.0);
    assert_eq!(metric(&n2, received), 2.0);
    assert_eq!(
        metric(&n1, r#"kim_cluster_failures_total{reason="offline"}"#),
        2.0
    );
    assert_eq!(metric(&n1, "kim_cluster_broker_connected"), 1.0);
    until("three nodes seen", || {
        metric(&n1, "kim_cluster_nodes") == 3.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_moves_to_another_node_is_found_there() {
    let nats = Nats::start();
    let n1 = node(&nats, "n1", DuplicatePolicy::Reject).await;
    let n2 = node(&nats, "n2", DuplicatePolicy::Reject).await;
    let n3 = node(&nats, "n3", DuplicatePolicy::Reject).await;
    let mut alice = login(&addr(&n1), "alice").await;
    let mut bob = login(&addr(&n2), "bob").await;
    // n1 now remembers that bob is on n2.
    say(&mut alice, "@bob one").await;
    assert_eq!(said(&mut bob).await, "alice: one");

    drop(bob);
    until("bob gone from n2", || n2.channel("bob").is_none()).await;
    let mut bob = login(&addr(&n3), "bob").await;
    // n2 says bob is not there; n1 reads the claims again and finds n3.
    say(&mut alice, "@bob two").await;
    assert_eq!(said(&mut bob).await, "alice: two");
    assert_eq!(
        n1.locate("bob").await.unwrap(),
        Some(Location::Node("n3".into()))
    );
    let offline = r#"kim_cluster_failures_total{reason="offline"}"#;
    assert_eq!(metric(&n1, offline), 0.0);

    drop(bob);
    until("bob gone from n3", || n3.channel("bob").is_none()).await;
    // Whether the release reached the broker yet or n3 says "not here", bob is offline.
    say(&mut alice, "@bob three").await;
    assert_eq!(said(&mut alice).await, "offline bob");
    assert_eq!(metric(&n1, offline), 1.0);
    // n2 was asked twice: "one", delivered, and "two", not there any more.
    assert_eq!(
        metric(&n2, r#"kim_cluster_pushes_total{direction="received"}"#),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_nodes_and_each_node_receives_a_publish_once() {
    let nats = Nats::start();
    let nodes = [
        node(&nats, "n1", DuplicatePolicy::Reject).await,
        node(&nats, "n2", DuplicatePolicy::Reject).await,
        node(&nats, "n3", DuplicatePolicy::Reject).await,
    ];
    let mut members = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..2 {
            let mut c = login(&addr(n), &format!("u{i}{j}")).await;
            say(&mut c, "/join lobby").await;
            assert_eq!(said(&mut c).await, "joined lobby");
            members.push(c);
        }
    }
    until_subscribed(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    assert_eq!(nodes[0].cluster_room_size("lobby").await.unwrap(), 6);
    assert_eq!(nodes[0].room_size("lobby").await.unwrap(), 2);

    say(&mut members[0], "#lobby hello all").await;
    for m in &mut members {
        assert_eq!(said(m).await, "u00#lobby: hello all");
    }
    let received = r#"kim_cluster_publishes_total{direction="received"}"#;
    // Two members on each node, one message per node.
    assert_eq!(
        metric(
            &nodes[0],
            r#"kim_cluster_publishes_total{direction="sent"}"#
        ),
        1.0
    );
    assert_eq!(metric(&nodes[1], received), 1.0);
    assert_eq!(metric(&nodes[2], received), 1.0);

    // n3's members leave: n3 stops receiving the room.
    for m in &mut members[4..] {
        say(m, "/leave lobby").await;
        assert_eq!(said(m).await, "left lobby");
    }
    until("n3 unsubscribed", || {
        metric(&nodes[2], "kim_cluster_room_subscriptions") == 0.0
    })
    .await;
    say(&mut members[2], "#lobby again").await;
    for m in &mut members[..4] {
        assert_eq!(said(m).await, "u10#lobby: again");
    }
    assert_eq!(metric(&nodes[0], received), 1.0);
    assert_eq!(metric(&nodes[2], received), 1.0, "n3 no longer receives it");
    assert_eq!(nodes[2].cluster_room_size("lobby").await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_logins_of_one_id_on_two_nodes_let_exactly_one_in() {
    let nats = Nats::start();
    let n1 = node(&nats, "n1", DuplicatePolicy::Reject).await;
    let n2 = node(&nats, "n2", DuplicatePolicy::Reject).await;
    let (a1, a2) = (addr(&n1), addr(&n2));
    let mut winners = Vec::new();
    for i in 0..20 {
        let id = format!("racer{i}");
        let (r1, r2) = tokio::join!(try_login(&a1, &id), try_login(&a2, &id));
        match (r1, r2) {
            (Ok(c), Err(why)) | (Err(why), Ok(c)) => {
                assert_eq!(why, "channel id is repeated");
                winners.push((id, c));
            }
            (Ok(_), Ok(_)) => panic!("{id}: both logins got in"),
            (Err(a), Err(b)) => panic!("{id}: both refused: {a} / {b}"),
        }
    }
    assert_eq!(n1.channel_count() + n2.channel_count(), 20);
    // Once the winner goes, the id is free on either node.
    let (id, c) = winners.pop().unwrap();
    drop(c);
    let free = Instant::now();
    loop {
        match try_login(&a2, &id).await {
            Ok(_) => break,
            Err(_) if free.elapsed() < EVENT => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(why) => panic!("{id} still held: {why}"),
        }
    }
    assert!(
        metric(&n1, r#"kim_cluster_claims_total{outcome="refused"}"#)
            + metric(&n2, r#"kim_cluster_claims_total{outcome="refused"}"#)
            >= 20.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_kick_policy_a_login_elsewhere_closes_the_older_channel() {
    let nats = Nats::start();
    let n1 = node(&nats, "n1", DuplicatePolicy::Kick).await;
    let n2 = node(&nats, "n2", DuplicatePolicy::Kick).await;
    let mut old = login(&addr(&n1), "dave").await;
    let mut new = login(&addr(&n2), "dave").await;
    match tokio::time::timeout(EVENT, old.read())
        .await
        .expect("closed in time")
    {
        Err(ClientError::Closed(r)) => assert_eq!(r.reason, "kicked by a new login"),
        other => panic!("expected the kick, got {other:?}"),
    }
    until("n1 without dave", || n1.channel_count() == 0).await;
    let mut eve = login(&addr(&n1), "eve").await;
    say(&mut eve, "@dave hello").await;
    assert_eq!(said(&mut new).await, "eve: hello");
    assert_eq!(
        n1.locate("dave").await.unwrap(),
        Some(Location::Node("n2".into()))
    );
}

/// A mock-server process that is a node of the cluster; returns it and its address. The
/// caller kills and waits for it.
#[allow(clippy::zombie_processes)]
fn spawn_node(nats: &Nats, name: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-server"))
        .args([
            "--transport",
            "tcp",
            "--listen",
            "127.0.0.1:0",
            "--read-wait",
            "60",
        ])
        .args([
            "--cluster",
            &nats.url(),
            "--node",
            name,
            "--cluster-name",
            "test",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mock-server starts");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            let status = child.wait();
            panic!("mock-server exited before listening: {status:?}");
        }
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            // Keep reading its output so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in out.lines() {});
            return (child, a.to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_are_offline_at_once_and_come_back_without_cleanup() {
    let nats = Nats::start();
    let (mut n1, a1) = spawn_node(&nats, "n1");
    let n2 = node(&nats, "n2", DuplicatePolicy::Reject).await;
    let mut sender = login(&addr(&n2), "sender").await;
    let mut u = login(&a1, "u").await;
    let _w = login(&a1, "w").await;
    say(&mut sender, "@u before").await;
    assert_eq!(said(&mut u).await, "sender: before");

    n1.kill().unwrap();
    n1.wait().unwrap();
    let killed = Instant::now();
    // Its users are offline as soon as nats-server sees its connection close.
    loop {
        say(&mut sender, "@u after").await;
        if said(&mut sender).await == "offline u" {
            break;
        }
    }
    let offline_after = killed.elapsed();
    assert!(offline_after < Duration::from_secs(2), "{offline_after:?}");
    assert_eq!(n2.locate("w").await.unwrap(), None);

    // u logs in on n2: the dead node's claim is taken over.
    let mut u = login(&addr(&n2), "u").await;
    say(&mut sender, "@u again").await;
    assert_eq!(said(&mut u).await, "sender: again");
    // n1 restarts under the same name; w logs in there again: its old claim is n1's.
    let (mut n1, a1) = spawn_node(&nats, "n1");
    let _w = login(&a1, "w").await;
    assert_eq!(
        n2.locate("w").await.unwrap(),
        Some(Location::Node("n1".into()))
    );
    // And u, now on n2, is a duplicate there.
    assert_eq!(
        try_login(&a1, "u").await.err().as_deref(),
        Some("channel id is repeated")
    );
    let _ = n1.kill();
    let _ = n1.wait();
    eprintln!("offline after SIGKILL: {offline_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_traffic_fails_cross_node_calls_clearly_and_heals() {
    let mut nats = Nats::start();
    let n1 = node(&nats, "n1", DuplicatePolicy::Reject).await;
    let n2 = node(&nats, "n2", DuplicatePolicy::Reject).await;
    let mut a = login(&addr(&n1), "a").await;
    let mut a2 = login(&addr(&n1), "a2").await;
    let mut b = login(&addr(&n2), "b").await;
    for c in [&mut a, &mut a2, &mut b] {
        say(c, "/join r").await;
        assert_eq!(said(c).await, "joined r");
    }
    until_subscribed(&[&n1, &n2]).await;

    nats.stop();
    until("n1 disconnected", || !n1.cluster().unwrap().is_connected()).await;
    // Local traffic goes on: echo, a local push, a room publish to local members.
    say(&mut a, "still here").await;
    assert_eq!(said(&mut a).await, "still here");
    say(&mut a, "@a2 local").await;
    assert_eq!(said(&mut a2).await, "a: local");
    say(&mut a, "#r local room").await;
    assert_eq!(said(&mut a).await, "a#r: local room");
    assert_eq!(said(&mut a2).await, "a#r: local room");
    // Across nodes: a clear error, at once.
    let asked = Instant::now();
    say(&mut a, "@b across").await;
    assert_eq!(
        said(&mut a).await,
        "unavailable b: cluster broker unreachable"
    );
    assert!(asked.elapsed() < Duration::from_millis(500));
    assert_eq!(metric(&n1, "kim_cluster_broker_connected"), 0.0);
    // A login meanwhile is let in here.
    let _c = login(&addr(&n1), "c").await;

    nats.restart();
    until("both reconnected", || {
        n1.cluster().unwrap().is_connected() && n2.cluster().unwrap().is_connected()
    })
    .await;
    // Everything is subscribed again: pushes and the room cross nodes.
    let healed = Instant::now();
    loop {
        say(&mut a, "@b back").await;
        let got = tokio::time::timeout(Duration::from_millis(300), read(&mut b)).await;
        if let Ok(Ok(f)) = got {
            assert_eq!(&f.payload[..], b"a: back");
            break;
        }
        // The sender was told why; drain it.
        let _ = said(&mut a).await;
        assert!(healed.elapsed() < EVENT, "pushes did not heal");
    }
    say(&mut a, "#r across again").await;
    assert_eq!(said(&mut b).await, "a#r: across again");
    // The login made during the outage was claimed once the broker came back.
    let claimed = Instant::now();
    loop {
        match try_login(&addr(&n2), "c").await {
            Err(why) => {
                assert_eq!(why, "channel id is repeated");
                break;
            }
            Ok(_) => assert!(claimed.elapsed() < EVENT, "c never claimed"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_single_node_needs_no_broker() {
    let h = DefaultServer::new(kim_tcp::TcpUpgrader, MockListener)
        .with_acceptor(MockAcceptor)
        .start("127.0.0.1:0")
        .await
        .unwrap();
    assert!(h.cluster().is_none());
    let mut a = login(&addr(&h), "a").await;
    let mut b = login(&addr(&h), "b").await;
    say(&mut a, "@b hi").await;
    assert_eq!(said(&mut b).await, "a: hi");
    say(&mut a, "@zed hi").await;
    assert_eq!(said(&mut a).await, "offline zed");
    assert_eq!(h.push_text_to("b", "direct").await, Ok(()));
    assert_eq!(said(&mut b).await, "direct");
    assert_eq!(h.locate("a").await.unwrap(), Some(Location::Here));
    assert_eq!(h.locate("zed").await.unwrap(), None);
    say(&mut b, "/join r").await;
    assert_eq!(said(&mut b).await, "joined r");
    assert_eq!(h.cluster_room_size("r").await.unwrap(), 1);
    assert!(!h.metrics_text().contains("kim_cluster_"));
}
