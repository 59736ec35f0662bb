//! Process mode end to end: a master in this test process (so its counters can be read) whose
//! workers are the real `mock-server` binary, re-executed as the master would re-execute
//! itself; clients on 127.0.0.1 over tcp and websocket.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{no_heartbeat, read, EVENT};
use kim_client::{Client, ClientOptions};
use kim_core::{
    Backend, DefaultServer, Dispatch, Frame, FrameReader, FrameWriter, ServerHandle, ServerOptions,
    WorkerCommand,
};
use kim_examples::{LogState, MockAcceptor, MockListener};

const CHUNK: usize = 64 * 1024;
const MAX: usize = 80 << 20;

fn dispatch_flag(d: Dispatch) -> &'static str {
    match d {
        Dispatch::Fixed => "fixed",
        Dispatch::RoundRobin => "round-robin",
        Dispatch::LeastBusy => "least-busy",
    }
}

/// The options of a master whose workers are `mock-server` with matching flags.
fn dgram_options(workers: usize, dispatch: Dispatch) -> ServerOptions {
    dgram_options_with(workers, dispatch, 16 << 20)
}

/// The same, with `ipc_queue_bytes` set in the master and the workers.
fn dgram_options_with(workers: usize, dispatch: Dispatch, ipc_queue: usize) -> ServerOptions {
    let args = [
        "--backend".to_string(),
        "dgram".into(),
        "--workers".into(),
        workers.to_string(),
        "--max-message-size".into(),
        MAX.to_string(),
        "--ipc-max-size".into(),
        CHUNK.to_string(),
        "--dispatch".into(),
        dispatch_flag(dispatch).into(),
        "--ipc-queue-bytes".into(),
        ipc_queue.to_string(),
    ];
    ServerOptions::builder()
        .max_message_size(MAX)
        .ipc_queue_bytes(ipc_queue)
        .outbound_queue_bytes(128 << 20)
        .backend(Backend::UnixDatagram {
            workers,
            ipc_max_size: CHUNK,
            dispatch,
        })
        .worker_command(WorkerCommand {
            program: env!("CARGO_BIN_EXE_mock-server").into(),
            args: args.iter().map(Into::into).collect(),
        })
        .build()
        .expect("valid options")
}

async fn start_tcp(workers: usize, dispatch: Dispatch) -> (ServerHandle, String) {
    start_tcp_with(dgram_options(workers, dispatch)).await
}

async fn start_tcp_with(options: ServerOptions) -> (ServerHandle, String) {
    let h = DefaultServer::new(kim_tcp::TcpUpgrader, MockListener)
        .with_acceptor(MockAcceptor)
        .with_state_listener(LogState)
        .with_options(options)
        .start("127.0.0.1:0")
        .await
        .expect("starts");
    let addr = h.local_addr().to_string();
    (h, addr)
}

async fn start_ws(workers: usize, dispatch: Dispatch) -> (ServerHandle, String) {
    let h = DefaultServer::new(kim_ws::WsUpgrader::new(), MockListener)
        .with_acceptor(MockAcceptor)
        .with_state_listener(LogState)
        .with_options(dgram_options(workers, dispatch))
        .start("127.0.0.1:0")
        .await
        .expect("starts");
    let addr = format!("ws://{}/", h.local_addr());
    (h, addr)
}

fn big_client() -> ClientOptions {
    ClientOptions {
        max_message_size: MAX,
        ..no_heartbeat()
    }
}

async fn tcp(addr: &str, id: &str) -> kim_tcp::TcpClient {
    let mut c = kim_tcp::connect(addr, &big_client())
        .await
        .expect("connects");
    let ok = tokio::time::timeout(EVENT, c.login(id.to_string()))
        .await
        .expect("in time")
        .expect("login");
    assert_eq!(&ok.payload[..], b"ok");
    c
}

async fn ws(addr: &str, id: &str) -> kim_ws::WsClient {
    let mut c = kim_ws::connect(addr, &big_client())
        .await
        .expect("connects");
    let ok = tokio::time::timeout(EVENT, c.login(id.to_string()))
        .await
        .expect("in time")
        .expect("login");
    assert_eq!(&ok.payload[..], b"ok");
    c
}

/// `n` bytes that differ with `seed`, never starting with `#` or `/` (which the mock protocol
/// reads as room commands), so that they are echoed.
fn pattern(n: usize, seed: u8) -> Bytes {
    let seed = if matches!(seed, b'#' | b'/') {
        !seed
    } else {
        seed
    };
    (0..n)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// Sends `payload` and expects it echoed whole.
async fn echo<R: FrameReader, W: FrameWriter>(c: &mut Client<R, W>, payload: Bytes) {
    c.send_binary(payload.clone()).await.expect("sends");
    let f = read(c).await.expect("an echo");
    assert_eq!(f.payload.len(), payload.len());
    assert!(
        f.payload == payload,
        "echo of {} bytes differs",
        payload.len()
    );
}

async fn stop(h: ServerHandle) {
    let r = h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(r.remaining, 0);
}

/// Waits until `f` holds for the master's IPC counters.
async fn until_stats(h: &ServerHandle, what: &str, f: impl Fn(&kim_core::ipc::IpcStats) -> bool) {
    let deadline = Instant::now() + EVENT;
    loop {
        let s = h.ipc_stats().expect("process mode");
        if f(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_boundaries_cross_the_workers_whole_over_tcp_and_ws() {
    let sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 10 << 20];
    let (h, addr) = start_tcp(2, Dispatch::Fixed).await;
    let mut c = tcp(&addr, "alice").await;
    for (i, &n) in sizes.iter().enumerate() {
        echo(&mut c, pattern(n, i as u8)).await;
    }
    stop(h).await;

    let (h, addr) = start_ws(2, Dispatch::Fixed).await;
    let mut c = ws(&addr, "alice").await;
    for (i, &n) in sizes.iter().enumerate() {
        echo(&mut c, pattern(n, i as u8)).await;
    }
    let s = h.ipc_stats().unwrap();
    assert_eq!(s.dispatched, sizes.len() as u64);
    assert_eq!(s.pushes, sizes.len() as u64);
    assert_eq!(s.push_failed, 0);
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_messages_cross_the_workers_whole() {
    // Every message compressed (threshold 0), inflated by the master before a worker sees it
    // and compressed again on its way back.
    let upgrader =
        kim_ws::WsUpgrader::new().with_compression(kim_ws::Compression::new().with_threshold(0));
    let h = DefaultServer::new(upgrader, MockListener)
        .with_acceptor(MockAcceptor)
        .with_state_listener(LogState)
        .with_options(dgram_options(2, Dispatch::Fixed))
        .start("127.0.0.1:0")
        .await
        .expect("starts");
    let addr = h.local_addr().to_string();
    // The server answers the offer.
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let offer = "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut raw, offer.as_bytes())
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(EVENT, tokio::io::AsyncReadExt::read(&mut raw, &mut head))
        .await
        .expect("in time")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate;"),
        "{head}"
    );
    drop(raw);
    let url = format!("ws://{addr}/");
    let login = |id: &'static str| {
        let url = url.clone();
        async move {
            let c = kim_ws::Compression::new().with_threshold(0);
            let mut client = kim_ws::connect_compressed(&url, &[], &c, &big_client())
                .await
                .expect("connects");
            let ok = tokio::time::timeout(EVENT, client.login(id))
                .await
                .expect("in time");
            assert_eq!(&ok.expect("login").payload[..], b"ok");
            client
        }
    };
    let mut alice = login("alice").await;
    let mut bob = login("bob").await;
    for (i, &n) in [0, 1, 2000, CHUNK + 1, 1 << 20].iter().enumerate() {
        echo(&mut alice, pattern(n, i as u8)).await;
    }
    alice.send_text("@bob hi bob").await.unwrap();
    assert_eq!(&read(&mut bob).await.unwrap().payload[..], b"alice: hi bob");
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_protocol_works_in_process_mode_over_tcp_and_ws() {
    for transport in ["tcp", "ws"] {
        let (h, addr) = if transport == "tcp" {
            start_tcp(2, Dispatch::Fixed).await
        } else {
            start_ws(2, Dispatch::Fixed).await
        };
        // Logins in sequence land on alternating workers.
        macro_rules! run {
            ($login:ident) => {{
                let mut alice = $login(&addr, "alice").await;
                let mut bob = $login(&addr, "bob").await;
                alice.send_text("hello").await.unwrap();
                assert_eq!(&read(&mut alice).await.unwrap().payload[..], b"hello");
                // A push from alice's worker to bob's channel.
                alice.send_text("@bob hi bob").await.unwrap();
                let f = read(&mut bob).await.unwrap();
                assert_eq!(&f.payload[..], b"alice: hi bob");
                // The worker's mirror of the directory answers for missing ids at once.
                alice.send_text("@carol hi").await.unwrap();
                assert_eq!(
                    &read(&mut alice).await.unwrap().payload[..],
                    b"offline carol"
                );
                // Bob leaves: his owner worker runs the disconnect callback, and alice's
                // worker forgets him.
                bob.close().await.unwrap();
                until_stats(&h, "bob's disconnect", |s| s.disconnects == 1).await;
                let deadline = Instant::now() + EVENT;
                loop {
                    alice.send_text("@bob still there?").await.unwrap();
                    let f = read(&mut alice).await.unwrap();
                    if &f.payload[..] == b"offline bob" {
                        break;
                    }
                    assert!(Instant::now() < deadline, "bob never went offline: {f:?}");
                }
            }};
        }
        if transport == "tcp" {
            run!(tcp);
            // Duplicate login refused.
            let mut c = kim_tcp::connect(&addr, &no_heartbeat()).await.unwrap();
            let _alice = tcp(&addr, "carl").await;
            let r = c.login("carl".to_string()).await;
            assert!(r.is_err(), "duplicate refused: {r:?}");
        } else {
            run!(ws);
        }
        stop(h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_channels_interleave_large_messages_into_one_worker() {
    let (h, addr) = start_tcp(1, Dispatch::Fixed).await;
    let mut tasks = Vec::new();
    for i in 0..100usize {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = tcp(&addr, &format!("u{i}")).await;
            let big = pattern(300_000 + i * 1013, i as u8);
            c.send_binary(big.clone()).await.unwrap();
            c.send_text(format!("after {i}")).await.unwrap();
            let f = read(&mut c).await.unwrap();
            assert!(f.payload == big, "channel {i}: large echo differs");
            let f = read(&mut c).await.unwrap();
            assert_eq!(f.payload, format!("after {i}").as_bytes());
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let s = h.ipc_stats().unwrap();
    assert_eq!(s.dispatched, 200);
    assert_eq!(s.worker_recv.orphan_chunks, 0);
    assert_eq!(s.master_recv.orphan_chunks, 0);
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_channels_do_not_make_a_workers_replies_fail_for_anyone() {
    // One worker, a queue towards the master far smaller than what the heavy channels have
    // in flight: replies wait for room instead of being refused, for the light channel too.
    const HEAVY: usize = 8;
    const ROUNDS: usize = 12;
    const SIZE: usize = 256 * 1024;
    const LIGHT: usize = 300;
    let (h, addr) = start_tcp_with(dgram_options_with(1, Dispatch::Fixed, 256 * 1024)).await;
    let mut tasks = Vec::new();
    for i in 0..HEAVY {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = tcp(&addr, &format!("heavy{i}")).await;
            let tx = c.sender();
            let send = tokio::spawn(async move {
                for k in 0..ROUNDS {
                    tx.send(Frame::binary(pattern(SIZE, (i * ROUNDS + k) as u8)))
                        .await
                        .unwrap();
                }
            });
            for k in 0..ROUNDS {
                let f = read(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("heavy{i}: echo {k} of {ROUNDS} lost: {e:?}"));
                assert!(
                    f.payload == pattern(SIZE, (i * ROUNDS + k) as u8),
                    "heavy{i}: echo {k} differs"
                );
            }
            send.await.unwrap();
        }));
    }
    let mut light = tcp(&addr, "light").await;
    let tx = light.sender();
    let send = tokio::spawn(async move {
        for k in 0..LIGHT {
            tx.send(Frame::text(format!("light {k}"))).await.unwrap();
        }
    });
    for k in 0..LIGHT {
        let f = read(&mut light)
            .await
            .unwrap_or_else(|e| panic!("light: echo {k} of {LIGHT} lost: {e:?}"));
        assert_eq!(f.payload, format!("light {k}").as_bytes());
    }
    send.await.unwrap();
    for t in tasks {
        t.await.expect("heavy client");
    }
    let s = h.ipc_stats().unwrap();
    assert_eq!(s.dispatched, (HEAVY * ROUNDS + LIGHT) as u64);
    assert_eq!(s.pushes, s.dispatched, "every message echoed once: {s:?}");
    assert_eq!(s.push_failed, 0, "{s:?}");
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_dispatch_keeps_every_channels_order_and_other_modes_deliver_everything() {
    for dispatch in [Dispatch::Fixed, Dispatch::RoundRobin, Dispatch::LeastBusy] {
        let (h, addr) = start_tcp(3, dispatch).await;
        let mut tasks = Vec::new();
        for i in 0..10usize {
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = tcp(&addr, &format!("o{i}")).await;
                let tx = c.sender();
                let send = tokio::spawn(async move {
                    for k in 0..500 {
                        tx.send(Frame::text(format!("{i}:{k}"))).await.unwrap();
                    }
                });
                let mut got = Vec::new();
                for _ in 0..500 {
                    let f = read(&mut c).await.unwrap();
                    got.push(String::from_utf8(f.payload.to_vec()).unwrap());
                }
                send.await.unwrap();
                got
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let got = t.await.unwrap();
            let want: Vec<String> = (0..500).map(|k| format!("{i}:{k}")).collect();
            if dispatch == Dispatch::Fixed {
                assert_eq!(got, want, "channel {i} out of order under fixed dispatch");
            } else {
                let mut sorted = got.clone();
                sorted.sort_by_key(|s| s.split(':').nth(1).unwrap().parse::<u32>().unwrap());
                assert_eq!(sorted, want, "channel {i} lost messages under {dispatch:?}");
            }
        }
        let s = h.ipc_stats().unwrap();
        assert_eq!(s.dispatched, 5000);
        stop(h).await;
    }
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

async fn worker_pids(h: &ServerHandle, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + EVENT;
    loop {
        let pids = h.worker_pids();
        if pids.len() == n && pids.iter().all(|&p| p != 0 && rss_bytes(p).is_some()) {
            return pids;
        }
        assert!(Instant::now() < deadline, "workers did not start: {pids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_message_is_respawned_and_nothing_else_is_lost() {
    let (h, addr) = start_tcp(2, Dispatch::Fixed).await;
    let mut others = Vec::new();
    for i in 0..6 {
        let mut c = tcp(&addr, &format!("other{i}")).await;
        echo(&mut c, pattern(1000, i)).await;
        others.push(c);
    }
    let mut big = tcp(&addr, "big").await;
    echo(&mut big, pattern(10, 1)).await;
    let pids = worker_pids(&h, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base: Vec<u64> = pids.iter().map(|&p| rss_bytes(p).unwrap()).collect();

    // Send 64 MiB and kill whichever worker is reassembling it, once its final buffer is
    // partly filled (its resident memory has grown by 8 to 40 MiB).
    let mut killed = None;
    for attempt in 0..3 {
        big.send_binary(pattern(64 << 20, attempt)).await.unwrap();
        let deadline = Instant::now() + EVENT;
        'watch: while Instant::now() < deadline {
            for (k, &pid) in pids.iter().enumerate() {
                let grown = rss_bytes(pid).unwrap_or(0).saturating_sub(base[k]);
                if grown > 40 << 20 {
                    break 'watch; // missed the window; the echo will come
                }
                if grown > 8 << 20 {
                    // SAFETY: kill(2) on a child process id.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    killed = Some(k);
                    break 'watch;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        if killed.is_some() {
            break;
        }
        // Missed: take the echo and try again.
        let f = read(&mut big).await.unwrap();
        assert_eq!(f.payload.len(), 64 << 20);
    }
    let k = killed.expect("caught a worker in the middle of a 64 MiB message");
    until_stats(&h, "the respawn and the orphaned chunks", |s| {
        s.respawns == 1 && s.worker_recv.orphan_chunks > 0
    })
    .await;
    let new_pids = worker_pids(&h, 2).await;
    assert_ne!(new_pids[k], pids[k], "worker {k} replaced");
    assert_eq!(new_pids[1 - k], pids[1 - k], "the other worker untouched");
    assert!(!alive(pids[k]));

    // Every client is still connected and served, on both workers; the big sender too.
    for (i, c) in others.iter_mut().enumerate() {
        echo(c, pattern(70_000, i as u8 + 50)).await;
    }
    echo(&mut big, pattern(5, 9)).await;
    assert_eq!(h.channel_count(), 7);
    let s = h.ipc_stats().unwrap();
    assert_eq!(s.unknown_channel, 0);
    let text = h.metrics_text();
    for line in [
        format!("kim_ipc_worker_respawns_total {}", s.respawns),
        format!(
            "kim_ipc_orphan_chunks_total{{receiver=\"workers\"}} {}",
            s.worker_recv.orphan_chunks
        ),
        format!(
            "kim_ipc_datagrams_total{{direction=\"to_workers\"}} {}",
            s.datagrams_sent
        ),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_traffic_replaces_every_worker_and_closes_no_client() {
    let (h, addr) = start_ws(2, Dispatch::Fixed).await;
    let before = worker_pids(&h, 2).await;
    let mut tasks = Vec::new();
    for i in 0..20usize {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = ws(&addr, &format!("r{i}")).await;
            for k in 0..300usize {
                let msg = format!("{i}:{k}");
                c.send_text(msg.clone()).await.unwrap();
                let f = read(&mut c).await.expect("connection stays up");
                assert_eq!(f.payload, msg.as_bytes());
                if k % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            c
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.reload_workers().await, 2);
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("client task"));
    }
    let after = worker_pids(&h, 2).await;
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "{before:?} -> {after:?}"
    );
    let s = h.ipc_stats().unwrap();
    assert_eq!((s.reloads, s.respawns), (2, 0));
    assert_eq!(s.dispatched, 20 * 300);
    assert_eq!(h.channel_count(), 20);
    // Every handled message counts once, those of the replaced workers included.
    until_stats(&h, "6,000 handled", |s| s.handled == 20 * 300).await;
    let text = h.metrics_text();
    for line in [
        "kim_ipc_handled_total 6000",
        "kim_handler_duration_seconds_count 6000",
        "kim_ipc_worker_reloads_total 2",
        "kim_ipc_workers 2",
        "kim_messages_received_total 6000",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // The new workers know every channel: a push between two of them arrives.
    clients[0].send_text("@r1 after reload").await.unwrap();
    let f = read(&mut clients[1]).await.unwrap();
    assert_eq!(&f.payload[..], b"r0: after reload");
    drop(clients);
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_master_stops_the_workers_after_their_disconnects() {
    let (h, addr) = start_tcp(2, Dispatch::Fixed).await;
    let mut clients = Vec::new();
    for i in 0..10 {
        clients.push(tcp(&addr, &format!("s{i}")).await);
    }
    let pids = worker_pids(&h, 2).await;
    let handle = h.clone();
    let r = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(r.channels, 10);
    // Every disconnect ran in a worker, and the workers exited.
    until_stats(&h, "10 disconnects", |s| s.disconnects == 10).await;
    for p in pids {
        let deadline = Instant::now() + EVENT;
        while alive(p) {
            assert!(Instant::now() < deadline, "worker {p} still running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
