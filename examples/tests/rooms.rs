//! Rooms with real clients on 127.0.0.1: the mock protocol's room commands over raw TCP and
//! websocket, membership cleaned before the disconnect callback however a channel ends,
//! members that never read under both full-outbox policies, many rooms joined and left from
//! several tasks at once, the broadcast echo, and the metrics.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{login, login_ws, no_heartbeat, read, EVENT};
use kim_client::{Client, ClientError};
use kim_core::room::{RoomPolicy, SlowMember};
use kim_core::{
    Channel, ChannelId, DefaultAcceptor, DefaultServer, DuplicatePolicy, Frame, FrameReader,
    FrameWriter, OpCode, ServerHandle, ServerOptions, StateListener, Upgrader,
};
use kim_examples::{BroadcastListener, JoinBroadcast, MockAcceptor, MockListener};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Reports, for every disconnect, the channel's id, the rooms it was still in, and the size of
/// room `r` as the callback saw it.
#[derive(Clone)]
struct RoomsAtDisconnect(mpsc::UnboundedSender<(ChannelId, Vec<String>, usize)>);

impl StateListener for RoomsAtDisconnect {
    async fn disconnect(&self, agent: &Channel) {
        let rooms = agent.rooms().await.expect("rooms answered");
        let size = agent.server().room_size("r").await.expect("size answered");
        let _ = self.0.send((agent.id().clone(), rooms, size));
    }
}

type Reports = mpsc::UnboundedReceiver<(ChannelId, Vec<String>, usize)>;

async fn start<U: Upgrader<TcpStream>>(
    upgrader: U,
    options: ServerOptions,
) -> (ServerHandle, Reports) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = DefaultServer::new(upgrader, MockListener)
        .with_acceptor(MockAcceptor)
        .with_state_listener(RoomsAtDisconnect(tx))
        .with_options(options)
        .start("127.0.0.1:0")
        .await
        .expect("server starts");
    (handle, rx)
}

/// The next message's opcode and text.
async fn next<R: FrameReader, W: FrameWriter>(c: &mut Client<R, W>) -> (OpCode, String) {
    let f = read(c).await.expect("a message");
    (f.op, String::from_utf8(f.payload.to_vec()).expect("UTF-8"))
}

async fn said<R: FrameReader, W: FrameWriter>(c: &mut Client<R, W>) -> String {
    next(c).await.1
}

/// Waits until `f` holds, at most [`EVENT`].
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    tokio::time::timeout(EVENT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Waits until room `room` has `n` members, at most [`EVENT`].
async fn wait_size(handle: &ServerHandle, room: &str, n: usize) {
    tokio::time::timeout(EVENT, async {
        while handle.room_size(room).await.unwrap() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {n} members in {room}"));
}

async fn next_report(reports: &mut Reports) -> (ChannelId, Vec<String>, usize) {
    tokio::time::timeout(EVENT, reports.recv())
        .await
        .expect("a disconnect in time")
        .expect("the server lives")
}

/// The value of a metric line (`name` with its labels) in the server's metrics text.
fn metric(handle: &ServerHandle, name: &str) -> u64 {
    let text = handle.metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// The mock protocol's room commands, whatever the transport carries them.
macro_rules! mock_protocol_test {
    ($login:ident, $upgrader:expr) => {{
        let (handle, _reports) = start($upgrader, ServerOptions::default()).await;
        let addr = handle.local_addr().to_string();
        let mut alice = $login(&addr, "alice").await;
        let mut bob = $login(&addr, "bob").await;
        let mut carol = $login(&addr, "carol").await;

        alice.send_text("/join r").await.unwrap();
        assert_eq!(said(&mut alice).await, "joined r");
        bob.send_text("/join r").await.unwrap();
        assert_eq!(said(&mut bob).await, "joined r");
        assert_eq!(handle.room_size("r").await.unwrap(), 2);

        // A member's message reaches every member, the sender included, with its opcode.
        alice.send_text("#r hello all").await.unwrap();
        assert_eq!(
            next(&mut alice).await,
            (OpCode::Text, "alice#r: hello all".into())
        );
        assert_eq!(
            next(&mut bob).await,
            (OpCode::Text, "alice#r: hello all".into())
        );
        bob.send_binary(&b"#r bin"[..]).await.unwrap();
        assert_eq!(
            next(&mut alice).await,
            (OpCode::Binary, "bob#r: bin".into())
        );
        assert_eq!(next(&mut bob).await, (OpCode::Binary, "bob#r: bin".into()));

        // A non-member is told so, and nobody else hears anything.
        carol.send_text("#r sneaky").await.unwrap();
        assert_eq!(said(&mut carol).await, "not in r");
        for bad in [
            "/join a b",
            "/join",
            "#",
            &format!("/join {}", "x".repeat(65)),
            "/leave  ",
        ] {
            carol.send_text(bad).await.unwrap();
            assert_eq!(said(&mut carol).await, "bad room", "{bad:?}");
        }
        carol.send_binary(&b"/join \xff"[..]).await.unwrap();
        assert_eq!(next(&mut carol).await, (OpCode::Binary, "bad room".into()));
        // Ordinary messages are still echoed, and pushes still work.
        carol.send_text("/joinery").await.unwrap();
        assert_eq!(said(&mut carol).await, "/joinery");

        bob.send_text("/leave r").await.unwrap();
        assert_eq!(said(&mut bob).await, "left r");
        bob.send_text("/leave r").await.unwrap();
        assert_eq!(said(&mut bob).await, "left r");
        alice.send_text("#r only me").await.unwrap();
        assert_eq!(said(&mut alice).await, "alice#r: only me");
        bob.send_text("#r back?").await.unwrap();
        assert_eq!(said(&mut bob).await, "not in r");
        assert_eq!(
            handle.room_members("r").await.unwrap(),
            vec![ChannelId::new("alice")]
        );
        let rooms = handle.channel("alice").unwrap().rooms().await.unwrap();
        assert_eq!(rooms, vec!["r".to_string()]);
        handle.shutdown(Duration::from_secs(2)).await;
    }};
}

#[tokio::test]
async fn mock_protocol_rooms_over_tcp() {
    mock_protocol_test!(login, kim_tcp::TcpUpgrader);
}

#[tokio::test]
async fn mock_protocol_rooms_over_websocket() {
    mock_protocol_test!(login_ws, kim_ws::WsUpgrader::default());
}

#[tokio::test]
async fn a_channel_leaves_its_rooms_before_its_disconnect_runs_however_it_ends() {
    let options = ServerOptions::builder()
        .duplicate_policy(DuplicatePolicy::Kick)
        .read_wait(Duration::from_millis(600))
        .build()
        .unwrap();
    let (handle, mut reports) = start(kim_tcp::TcpUpgrader, options).await;
    let addr = handle.local_addr().to_string();
    let beating = kim_client::ClientOptions {
        heartbeat: Some(Duration::from_millis(100)),
        ..kim_client::ClientOptions::default()
    };
    let join = |id: &'static str| {
        let handle = handle.clone();
        let addr = addr.clone();
        let opts = if id == "silent" {
            no_heartbeat()
        } else {
            beating.clone()
        };
        async move {
            let mut c = common::login_with(&addr, id, &opts).await;
            c.send_text("/join r").await.unwrap();
            assert_eq!(said(&mut c).await, "joined r");
            handle.join(id, &format!("own-{id}")).unwrap();
            c
        }
    };
    let expect_clean =
        |(id, rooms, size): (ChannelId, Vec<String>, usize), who: &str, left: usize| {
            assert_eq!(id.as_str(), who);
            assert!(
                rooms.is_empty(),
                "{who} was still in {rooms:?} at its disconnect"
            );
            assert_eq!(size, left, "room r's size as {who}'s disconnect saw it");
        };

    // Stays in r throughout, with a heartbeat.
    let mut stay = kim_tcp::connect(&addr, &beating).await.unwrap();
    stay.login("stay").await.unwrap();
    stay.send_text("/join r").await.unwrap();
    assert_eq!(said(&mut stay).await, "joined r");

    // The peer closes.
    let a = join("peer").await;
    a.close().await.unwrap();
    expect_clean(next_report(&mut reports).await, "peer", 1);
    // A newer login with the same id kicks it.
    let _b = join("dup").await;
    let mut b2 = common::login_with(&addr, "dup", &beating).await;
    expect_clean(next_report(&mut reports).await, "dup", 1);
    b2.send_text("#r still?").await.unwrap();
    assert_eq!(
        said(&mut b2).await,
        "not in r",
        "the new login is not the old one's member"
    );
    // The app closes it.
    let _c = join("server").await;
    handle
        .channel("server")
        .unwrap()
        .close(kim_core::CloseReason::normal("bye"));
    expect_clean(next_report(&mut reports).await, "server", 1);
    // It stops sending: the read deadline closes it.
    let _d = join("silent").await;
    expect_clean(next_report(&mut reports).await, "silent", 1);
    // The rooms of the gone are gone too.
    for id in ["peer", "dup", "server", "silent"] {
        assert_eq!(handle.room_size(&format!("own-{id}")).await.unwrap(), 0);
    }
    assert_eq!(handle.room_size("r").await.unwrap(), 1);
    // Shutdown.
    drop(b2);
    expect_clean(next_report(&mut reports).await, "dup", 1);
    handle.shutdown(Duration::from_secs(2)).await;
    expect_clean(next_report(&mut reports).await, "stay", 0);
    assert_eq!(metric(&handle, "kim_rooms"), 0);
    assert_eq!(metric(&handle, "kim_room_memberships"), 0);
}

/// A member that never reads: the publisher and the other members go on, memory stays within
/// the outbox bound, and the policy decides whether it is skipped or closed.
async fn never_reading_member(policy: SlowMember) {
    let options = ServerOptions::builder()
        .outbound_queue(64)
        .outbound_queue_bytes(256 << 10)
        .room_policy(RoomPolicy::new(move |name| {
            if name == "r" {
                policy
            } else {
                SlowMember::Skip
            }
        }))
        .build()
        .unwrap();
    let (handle, _reports) = start(kim_tcp::TcpUpgrader, options).await;
    let addr = handle.local_addr().to_string();
    // The slow member logs in with a raw socket, joins, and never reads again.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(&common::raw_frame(2, b"slow"))
        .await
        .unwrap();
    slow.write_all(&common::raw_frame(1, b"/join r"))
        .await
        .unwrap();
    until("the slow member's join", || {
        handle.channel("slow").is_some()
    })
    .await;
    let mut fast = login(&addr, "fast").await;
    fast.send_text("/join r").await.unwrap();
    assert_eq!(said(&mut fast).await, "joined r");
    wait_size(&handle, "r", 2).await;

    let payload = bytes::Bytes::from(vec![b'x'; 32 << 10]);
    let (mut delivered, mut skipped, mut closed) = (0, 0, 0);
    let publishes = 400;
    // In step with the fast member, which reads each publish before the next: the slow one's
    // socket buffers fill, then its outbox.
    for _ in 0..publishes {
        let done = handle.publish("r", Frame::binary(payload.clone())).unwrap();
        delivered += done.delivered;
        skipped += done.skipped;
        closed += done.closed;
        if let Some(c) = handle.channel("slow") {
            assert!(c.queued() <= 64, "the slow member's outbox is bounded");
        }
        let f = read(&mut fast)
            .await
            .expect("the fast member gets every publish");
        assert_eq!(f.payload.len(), 32 << 10);
    }
    assert!(
        delivered >= publishes,
        "every publish reached the fast member"
    );
    match policy {
        SlowMember::Skip => {
            assert!(
                skipped > 0 && closed == 0,
                "skipped {skipped}, closed {closed}"
            );
            assert!(handle.channel("slow").is_some(), "a skipped member stays");
            assert_eq!(metric(&handle, "kim_room_skipped_total"), skipped as u64);
        }
        SlowMember::Close => {
            assert!(
                closed == 1 && skipped == 0,
                "skipped {skipped}, closed {closed}"
            );
            until("the slow member's end", || handle.channel("slow").is_none()).await;
            assert_eq!(
                metric(
                    &handle,
                    "kim_channels_closed_total{cause=\"slow_consumer\"}"
                ),
                1
            );
            assert_eq!(metric(&handle, "kim_room_slow_consumers_closed_total"), 1);
            assert_eq!(handle.room_size("r").await.unwrap(), 1);
        }
    }
    assert_eq!(
        metric(&handle, "kim_room_publishes_total"),
        publishes as u64
    );
    assert_eq!(
        metric(&handle, "kim_room_deliveries_total"),
        delivered as u64
    );
    // The fast member is unaffected.
    fast.send_text("still here").await.unwrap();
    assert_eq!(said(&mut fast).await, "still here");
    drop(slow);
}

#[tokio::test]
async fn a_never_reading_member_is_skipped_under_the_skip_policy() {
    never_reading_member(SlowMember::Skip).await;
}

#[tokio::test]
async fn a_never_reading_member_is_closed_under_the_close_policy() {
    never_reading_member(SlowMember::Close).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rooms_of_a_hundred_stay_consistent_under_concurrent_joins_and_leaves() {
    const ROOMS: usize = 1000;
    const MEMBERS: usize = 100;
    const TASKS: usize = 4;
    let (handle, _reports) = start(kim_tcp::TcpUpgrader, ServerOptions::default()).await;
    let addr = handle.local_addr().to_string();
    let mut clients = Vec::new();
    for m in 0..MEMBERS {
        clients.push(login(&addr, &format!("m{m}")).await);
    }
    // Each task owns a quarter of the members and ends with its own random memberships.
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let handle = handle.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ t as u64;
            let mut rand = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut model: HashMap<usize, BTreeSet<usize>> = HashMap::new();
            for m in (t..MEMBERS).step_by(TASKS) {
                let id = format!("m{m}");
                let mine = model.entry(m).or_default();
                // Everyone joins every room, then leaves about half of them at random, and
                // rejoins some.
                for r in 0..ROOMS {
                    handle.join(&id, &format!("room{r}")).unwrap();
                    mine.insert(r);
                }
                for _ in 0..ROOMS {
                    let r = (rand() % ROOMS as u64) as usize;
                    if rand() % 3 == 0 {
                        handle.join(&id, &format!("room{r}")).unwrap();
                        mine.insert(r);
                    } else {
                        handle.leave(&id, &format!("room{r}")).unwrap();
                        mine.remove(&r);
                    }
                }
            }
            model
        }));
    }
    let mut model: HashMap<usize, BTreeSet<usize>> = HashMap::new();
    for t in tasks {
        model.extend(t.await.unwrap());
    }
    let mut expected_members: Vec<BTreeSet<String>> = vec![BTreeSet::new(); ROOMS];
    let mut total = 0;
    for (m, rooms) in &model {
        let got: BTreeSet<String> = handle
            .rooms_of(&format!("m{m}"))
            .await
            .unwrap()
            .into_iter()
            .collect();
        let want: BTreeSet<String> = rooms.iter().map(|r| format!("room{r}")).collect();
        assert_eq!(got, want, "m{m}'s rooms");
        for r in rooms {
            expected_members[*r].insert(format!("m{m}"));
        }
        total += rooms.len();
    }
    for (r, want) in expected_members.iter().enumerate() {
        let got: BTreeSet<String> = handle
            .room_members(&format!("room{r}"))
            .await
            .unwrap()
            .into_iter()
            .map(|id| id.as_str().to_string())
            .collect();
        assert_eq!(&got, want, "room{r}'s members");
    }
    let live_rooms = expected_members.iter().filter(|m| !m.is_empty()).count();
    assert_eq!(metric(&handle, "kim_room_memberships"), total as u64);
    assert_eq!(metric(&handle, "kim_rooms"), live_rooms as u64);
    // Everyone leaves by disconnecting: nothing is left.
    drop(clients);
    until("every channel gone", || handle.channel_count() == 0).await;
    assert_eq!(metric(&handle, "kim_room_memberships"), 0);
    assert_eq!(metric(&handle, "kim_rooms"), 0);
}

#[tokio::test]
async fn broadcast_echo_sends_each_message_to_every_connection() {
    const N: usize = 20;
    let handle = DefaultServer::new(kim_ws::WsUpgrader::default(), BroadcastListener)
        .with_acceptor(DefaultAcceptor)
        .with_state_listener(JoinBroadcast)
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let addr = handle.local_addr().to_string();
    let mut clients = Vec::new();
    for _ in 0..N {
        clients.push(kim_ws::connect(&addr, &no_heartbeat()).await.unwrap());
    }
    wait_size(&handle, kim_examples::BROADCAST_ROOM, N).await;
    for (i, c) in clients.iter().enumerate() {
        c.send_binary(format!("m{i}").into_bytes()).await.unwrap();
    }
    for c in &mut clients {
        let mut got = BTreeSet::new();
        for _ in 0..N {
            let f = read(c).await.unwrap();
            assert_eq!(f.op, OpCode::Binary);
            got.insert(String::from_utf8(f.payload.to_vec()).unwrap());
        }
        assert_eq!(got.len(), N, "each connection receives every message once");
    }
    assert!(matches!(
        tokio::time::timeout(Duration::from_millis(100), clients[0].read()).await,
        Err(_) | Ok(Err(ClientError::Closed(_)))
    ));
}

/// Process mode: the workers (the real `mock-server` binary) run the room commands, and the
/// master, which owns the rooms, carries them out.
async fn rooms_in_process_mode(dispatch: kim_core::Dispatch) {
    let flag = match dispatch {
        kim_core::Dispatch::Fixed => "fixed",
        kim_core::Dispatch::RoundRobin => "round-robin",
        kim_core::Dispatch::LeastBusy => "least-busy",
    };
    let args = ["--backend", "dgram", "--workers", "2", "--dispatch", flag];
    let options = ServerOptions::builder()
        .backend(kim_core::Backend::UnixDatagram {
            workers: 2,
            ipc_max_size: kim_core::Backend::DEFAULT_IPC_MAX_SIZE,
            dispatch,
        })
        .worker_command(kim_core::WorkerCommand {
            program: env!("CARGO_BIN_EXE_mock-server").into(),
            args: args.iter().map(Into::into).collect(),
        })
        .build()
        .unwrap();
    let handle = DefaultServer::new(kim_ws::WsUpgrader::default(), MockListener)
        .with_acceptor(MockAcceptor)
        .with_options(options)
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let addr = handle.local_addr().to_string();
    let mut alice = login_ws(&addr, "alice").await;
    let mut bob = login_ws(&addr, "bob").await;
    let mut carol = login_ws(&addr, "carol").await;
    for (c, who) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        c.send_text("/join r").await.unwrap();
        assert_eq!(said(c).await, "joined r", "{who}");
    }
    assert_eq!(handle.room_size("r").await.unwrap(), 2);
    for i in 0..20 {
        alice.send_text(format!("#r hi {i}")).await.unwrap();
        assert_eq!(said(&mut alice).await, format!("alice#r: hi {i}"));
        assert_eq!(said(&mut bob).await, format!("alice#r: hi {i}"));
    }
    carol.send_text("#r sneaky").await.unwrap();
    assert_eq!(said(&mut carol).await, "not in r");
    carol.send_text("/join bad name").await.unwrap();
    assert_eq!(said(&mut carol).await, "bad room");
    // The master's handle publishes to members that joined through a worker.
    let done = handle.publish("r", Frame::text("from the master")).unwrap();
    assert_eq!((done.delivered, done.forwarded), (2, false));
    assert_eq!(said(&mut alice).await, "from the master");
    assert_eq!(said(&mut bob).await, "from the master");
    bob.send_text("/leave r").await.unwrap();
    assert_eq!(said(&mut bob).await, "left r");
    assert_eq!(
        handle.room_members("r").await.unwrap(),
        vec![ChannelId::new("alice")]
    );
    assert_eq!(metric(&handle, "kim_room_publishes_total"), 21);
    alice.close().await.unwrap();
    wait_size(&handle, "r", 0).await;
    assert_eq!(metric(&handle, "kim_room_memberships"), 0);
    handle.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn rooms_work_in_process_mode_with_a_channel_on_one_worker() {
    rooms_in_process_mode(kim_core::Dispatch::Fixed).await;
}

#[tokio::test]
async fn rooms_work_in_process_mode_with_messages_spread_over_workers() {
    rooms_in_process_mode(kim_core::Dispatch::RoundRobin).await;
}
