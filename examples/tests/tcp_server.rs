//! The DefaultServer over raw TCP, driven by real clients on 127.0.0.1 with the mock protocol.

mod common;

use std::time::Duration;

use common::*;
use kim_client::ClientError;
use kim_core::{CloseReason, DuplicatePolicy, Frame, OpCode, PushError};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn login_then_echo_keeps_the_opcode() {
    let mut s = start(options().build().unwrap()).await;
    let mut c = login(&s.addr, "alice").await;
    s.wait_channels(1).await;
    assert!(s.handle.channel("alice").is_some());

    c.send_text("hello").await.unwrap();
    let f = read(&mut c).await.unwrap();
    assert_eq!((f.op, &f.payload[..]), (OpCode::Text, &b"hello"[..]));
    c.send_binary(vec![0u8, 159, 146, 150]).await.unwrap();
    let f = read(&mut c).await.unwrap();
    assert_eq!(
        (f.op, &f.payload[..]),
        (OpCode::Binary, &[0u8, 159, 146, 150][..])
    );

    assert_eq!(
        c.close().await.unwrap(),
        Some(CloseReason::new(CloseReason::NO_STATUS, ""))
    );
    assert_eq!(s.next_disconnect().await.as_str(), "alice");
    assert_eq!(s.handle.channel_count(), 0);
    assert_eq!(s.disconnects_of("alice"), 1);
    assert_eq!(s.reported_while_in_map(), 0);
}

#[tokio::test]
async fn login_and_first_message_in_one_packet() {
    let s = start(options().build().unwrap()).await;
    let mut bytes = raw_frame(1, b"pipelined");
    bytes.extend(raw_frame(1, b"right away"));
    bytes.extend(raw_frame(8, b"bye"));
    let mut sock = raw(&s.addr, &bytes).await;
    let frames = read_raw_until_eof(&mut sock).await;
    let ops: Vec<u8> = frames.iter().map(|f| f.0).collect();
    assert_eq!(
        ops,
        vec![2, 1, 8],
        "ok, the echo, the close answer: {frames:?}"
    );
    assert_eq!(&frames[0].1[..], b"ok");
    assert_eq!(&frames[1].1[..], b"right away");
    assert_eq!(
        &frames[2].1[..],
        b"bye",
        "tcp echoes the peer's close reason"
    );
}

#[tokio::test]
async fn bad_ids_are_rejected_with_a_reason() {
    let s = start(options().build().unwrap()).await;
    let too_long = "x".repeat(65);
    for (payload, op, why) in [
        (&b""[..], 1u8, "invalid user id"),
        (too_long.as_bytes(), 1, "invalid user id"),
        (&[0xffu8, 0xfe][..], 2, "not UTF-8"),
        (&[0xffu8, 0xfe][..], 1, "not valid UTF-8"),
    ] {
        let mut sock = raw(&s.addr, &raw_frame(op, payload)).await;
        let frames = read_raw_until_eof(&mut sock).await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].0, 8, "a close frame");
        let reason = String::from_utf8(frames[0].1.to_vec()).unwrap();
        assert!(reason.contains(why), "{reason:?} lacks {why:?}");
    }
    // A 64-byte id is fine.
    let _c = login(&s.addr, &"y".repeat(64)).await;
    assert_eq!(s.handle.stats().rejected, 4);
    assert_eq!(s.handle.stats().logins, 1);
}

#[tokio::test]
async fn silence_during_login_is_rejected_at_login_wait() {
    let s = start(
        options()
            .login_wait(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .await;
    let started = std::time::Instant::now();
    let mut sock = raw(&s.addr, b"").await;
    // Meanwhile another client logs in and is served.
    let mut other = login(&s.addr, "busy").await;
    other.send_text("still here").await.unwrap();
    assert_eq!(&read(&mut other).await.unwrap().payload[..], b"still here");

    let frames = read_raw_until_eof(&mut sock).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].0, &frames[0].1[..]), (8, &b"login timeout"[..]));
    assert_eq!(s.handle.channel_count(), 1);
}

#[tokio::test]
async fn duplicate_id_is_refused_by_default() {
    let mut s = start(options().build().unwrap()).await;
    let mut first = login(&s.addr, "dup").await;
    let mut second = kim_tcp::connect(&s.addr, &no_heartbeat()).await.unwrap();
    match second.login("dup").await {
        Err(ClientError::Closed(r)) => assert_eq!(r.reason, "channel id is repeated"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The first login is untouched.
    first.send_text("mine").await.unwrap();
    assert_eq!(&read(&mut first).await.unwrap().payload[..], b"mine");
    assert_eq!(s.handle.channel_count(), 1);
    first.close().await.unwrap();
    assert_eq!(s.next_disconnect().await.as_str(), "dup");
    assert_eq!(
        s.disconnects_of("dup"),
        1,
        "the refused login never logged in"
    );
}

#[tokio::test]
async fn duplicate_id_kicks_the_old_channel_by_policy() {
    let mut s = start(
        options()
            .duplicate_policy(DuplicatePolicy::Kick)
            .build()
            .unwrap(),
    )
    .await;
    let mut old = login(&s.addr, "kick").await;
    let mut new = login(&s.addr, "kick").await;
    expect_close(&mut old, "kicked by a new login").await;
    assert_eq!(s.next_disconnect().await.as_str(), "kick");
    // The map still holds the new channel: pushes reach it.
    s.handle.push_binary("kick", "to the new one").unwrap();
    assert_eq!(
        &read(&mut new).await.unwrap().payload[..],
        b"to the new one"
    );
    assert_eq!(s.handle.channel_count(), 1);
    new.close().await.unwrap();
    assert_eq!(s.next_disconnect().await.as_str(), "kick");
    assert_eq!(s.disconnects_of("kick"), 2, "one disconnect per login");
    assert_eq!(s.handle.channel_count(), 0);
}

#[tokio::test]
async fn push_to_another_channel_and_to_an_offline_id() {
    let s = start(options().build().unwrap()).await;
    let mut alice = login(&s.addr, "alice").await;
    let mut bob = login(&s.addr, "bob").await;
    alice.send_text("@bob hi bob").await.unwrap();
    let f = read(&mut bob).await.unwrap();
    assert_eq!(
        (f.op, &f.payload[..]),
        (OpCode::Text, &b"alice: hi bob"[..])
    );
    alice.send_binary(&b"@carol anyone?"[..]).await.unwrap();
    let f = read(&mut alice).await.unwrap();
    assert_eq!(
        (f.op, &f.payload[..]),
        (OpCode::Binary, &b"offline carol"[..])
    );

    // The same through the handle, from outside any channel.
    s.handle.push_binary("bob", "from the server").unwrap();
    assert_eq!(
        &read(&mut bob).await.unwrap().payload[..],
        b"from the server"
    );
    assert_eq!(
        s.handle.push_binary("carol", "x"),
        Err(PushError::NotFound("carol".into()))
    );
    assert_eq!(
        s.handle.push_frame("bob", Frame::ping("")),
        Err(PushError::NotData(OpCode::Ping))
    );
    let too_big = vec![0u8; s.handle.options().max_message_size() + 1];
    assert!(matches!(
        s.handle.push_binary("bob", too_big),
        Err(PushError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn read_wait_closes_the_idle_while_pings_keep_another_alive() {
    let read_wait = Duration::from_millis(400);
    let mut s = start(options().read_wait(read_wait).build().unwrap()).await;
    let pinging = kim_client::ClientOptions {
        heartbeat: Some(Duration::from_millis(80)),
        ..no_heartbeat()
    };
    let mut alive = login_with(&s.addr, "pinger", &pinging).await;
    let born = std::time::Instant::now();
    let mut idle = login(&s.addr, "idle").await;
    expect_close(&mut idle, "read timeout").await;
    assert!(born.elapsed() >= read_wait);
    assert_eq!(s.next_disconnect().await.as_str(), "idle");

    // The pinging client has lived longer than read_wait and is still served.
    alive.send_text("still alive").await.unwrap();
    assert_eq!(&read(&mut alive).await.unwrap().payload[..], b"still alive");
    assert!(alive.pongs() >= 3, "pongs: {}", alive.pongs());
    assert!(s.handle.channel("pinger").is_some());
    assert_eq!(s.disconnects_of("pinger"), 0);
}

#[tokio::test]
async fn oversized_length_prefix_closes_before_allocating() {
    let s = start(options().max_message_size(1024).build().unwrap()).await;
    let mut c = login(&s.addr, "victim-neighbour").await;

    // Before login: a 4 GiB length prefix.
    let mut sock = raw(&s.addr, &[2, 0xff, 0xff, 0xff, 0xff]).await;
    let frames = read_raw_until_eof(&mut sock).await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, 8);
    let reason = String::from_utf8(frames[0].1.to_vec()).unwrap();
    assert!(reason.contains("exceeds the limit of 1024"), "{reason}");

    // After login: one byte over the limit.
    let mut bytes = raw_frame(1, b"big");
    bytes.extend_from_slice(&[2, 0, 0, 4, 1]);
    let mut sock = raw(&s.addr, &bytes).await;
    let frames = read_raw_until_eof(&mut sock).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(&frames[0].1[..], b"ok");
    assert_eq!(frames[1].0, 8);
    assert!(std::str::from_utf8(&frames[1].1)
        .unwrap()
        .contains("1025 bytes"));

    // Exactly the limit is accepted, and the neighbour never noticed.
    c.send_binary(vec![3u8; 1024]).await.unwrap();
    assert_eq!(read(&mut c).await.unwrap().payload.len(), 1024);
}

#[tokio::test]
async fn garbage_bytes_get_a_clear_close() {
    let mut s = start(options().build().unwrap()).await;
    let mut neighbour = login(&s.addr, "neighbour").await;

    let mut sock = raw(&s.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let frames = read_raw_until_eof(&mut sock).await;
    assert_eq!(frames.len(), 1);
    assert_eq!(&frames[0].1[..], b"invalid opcode 71");

    let mut bytes = raw_frame(1, b"garbler");
    bytes.extend_from_slice(b"\x07\x00garbage");
    let mut sock = raw(&s.addr, &bytes).await;
    let frames = read_raw_until_eof(&mut sock).await;
    assert_eq!(frames.len(), 2);
    assert_eq!(&frames[1].1[..], b"invalid opcode 7");
    assert_eq!(s.next_disconnect().await.as_str(), "garbler");

    neighbour.send_text("fine").await.unwrap();
    assert_eq!(&read(&mut neighbour).await.unwrap().payload[..], b"fine");
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_after_write_wait() {
    let write_wait = Duration::from_millis(500);
    let queue = 64;
    let mut s = start(
        options()
            .write_wait(write_wait)
            .outbound_queue(queue)
            .build()
            .unwrap(),
    )
    .await;
    let mut other = login(&s.addr, "reader").await;

    // The stalled client logs in over a raw socket and then never reads again.
    let mut stalled = raw(&s.addr, &raw_frame(1, b"stalled")).await;
    s.wait_channels(2).await;

    // Push 64 KiB messages until the outbox is full: the kernel buffers absorb a few, then
    // pushes fail at once. The count of accepted pushes is bounded.
    let payload = bytes::Bytes::from(vec![b'z'; 64 * 1024]);
    let mut accepted = 0usize;
    let full = loop {
        match s.handle.push_binary("stalled", payload.clone()) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(
            accepted < 10_000,
            "pushes never failed: memory is not bounded"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(full, PushError::Full);
    let chan = s
        .handle
        .channel("stalled")
        .expect("still connected for now");
    assert!(chan.queued() <= queue);

    // Everyone else is served meanwhile.
    other.send_text("unaffected").await.unwrap();
    assert_eq!(&read(&mut other).await.unwrap().payload[..], b"unaffected");

    // write_wait later the stalled channel is gone, and reported once.
    let since = std::time::Instant::now();
    assert_eq!(s.next_disconnect().await.as_str(), "stalled");
    assert!(since.elapsed() < write_wait * 4);
    assert!(chan.is_closed());
    assert_eq!(
        s.handle.push_binary("stalled", "x"),
        Err(PushError::NotFound("stalled".into()))
    );
    assert_eq!(s.disconnects_of("stalled"), 1);
    other.send_text("still fine").await.unwrap();
    assert_eq!(&read(&mut other).await.unwrap().payload[..], b"still fine");
    let _ = stalled.shutdown().await;
}

#[tokio::test]
async fn max_connections_closes_extra_connections_at_once() {
    let s = start(options().max_connections(2).build().unwrap()).await;
    let _a = login(&s.addr, "a").await;
    let _b = login(&s.addr, "b").await;
    let mut extra = raw(&s.addr, &raw_frame(1, b"c")).await;
    let frames = read_raw_until_eof(&mut extra).await;
    assert!(frames.is_empty(), "closed without a word: {frames:?}");
    assert_eq!(s.handle.stats().refused_over_limit, 1);
    assert_eq!(s.handle.channel_count(), 2);
}

#[tokio::test]
async fn client_heartbeat_and_disconnect_on_drop() {
    let mut s = start(options().build().unwrap()).await;
    let c = login(&s.addr, "dropper").await;
    c.ping().await.unwrap();
    drop(c);
    assert_eq!(s.next_disconnect().await.as_str(), "dropper");
    assert_eq!(s.handle.channel_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_every_channel_and_reports_each_once() {
    const N: usize = 1000;
    let mut s = start(options().build().unwrap()).await;
    let addr = s.addr.clone();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(N);
    for i in 0..N {
        let addr = addr.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = login(&addr, &format!("user-{i}")).await;
            ready.send(()).await.unwrap();
            match tokio::time::timeout(EVENT * 3, c.read()).await {
                Ok(Err(ClientError::Closed(r))) => r,
                other => panic!("expected the shutdown close, got {other:?}"),
            }
        }));
    }
    for _ in 0..N {
        ready_rx.recv().await.unwrap();
    }
    s.wait_channels(N).await;

    let report = s.handle.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.channels, N);
    assert_eq!(report.forced, 0);
    assert_eq!(report.remaining, 0);
    for t in tasks {
        let reason = t.await.unwrap();
        assert_eq!(reason.reason, "server shutting down");
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..N {
        assert!(seen.insert(s.next_disconnect().await));
    }
    assert!(s.disconnects.try_recv().is_err(), "no extra disconnects");
    for i in 0..N {
        assert_eq!(s.disconnects_of(&format!("user-{i}")), 1);
    }
    assert_eq!(s.handle.channel_count(), 0);
    assert_eq!(s.reported_while_in_map(), 0);
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

#[tokio::test]
async fn shutdown_deadline_drops_a_peer_that_never_answers_the_close() {
    let mut s = start(
        options()
            .close_wait(Duration::from_secs(30))
            .build()
            .unwrap(),
    )
    .await;
    // A raw client that logs in and then never reads nor answers.
    let _mute = raw(&s.addr, &raw_frame(1, b"mute")).await;
    s.wait_channels(1).await;
    let started = std::time::Instant::now();
    let report = s.handle.shutdown(Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.channels, 1);
    assert_eq!(report.forced, 1);
    assert_eq!(report.remaining, 0);
    assert_eq!(s.next_disconnect().await.as_str(), "mute");
    assert_eq!(s.disconnects_of("mute"), 1);
    assert_eq!(s.reported_while_in_map(), 0);
}

#[tokio::test]
async fn push_from_a_plain_thread() {
    let s = start(options().build().unwrap()).await;
    let mut c = login(&s.addr, "threaded").await;
    let handle = s.handle.clone();
    let pushed = std::thread::spawn(move || {
        (0..100)
            .map(|i| handle.push_binary("threaded", format!("n{i}")))
            .collect::<Result<Vec<_>, _>>()
    })
    .join()
    .unwrap();
    assert!(pushed.is_ok(), "{pushed:?}");
    for i in 0..100 {
        let f = read(&mut c).await.unwrap();
        assert_eq!(f.payload, format!("n{i}").as_bytes(), "in order");
    }
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    match kim_tcp::connect(&addr, &no_heartbeat()).await {
        Err(e @ ClientError::Connect { .. }) => {
            assert!(e.to_string().contains(&addr), "{e}");
        }
        Err(other) => panic!("expected a connect error, got {other}"),
        Ok(_) => panic!("expected a connect error, got a connection"),
    }
}

#[tokio::test]
async fn many_messages_keep_their_order_while_channels_run_concurrently() {
    let s = start(options().build().unwrap()).await;
    let mut tasks = Vec::new();
    for c in 0..20 {
        let addr = s.addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = login(&addr, &format!("order-{c}")).await;
            let sender = client.sender();
            let writer = tokio::spawn(async move {
                for i in 0..500 {
                    sender.send(Frame::text(format!("{c}:{i}"))).await.unwrap();
                }
            });
            for i in 0..500 {
                let f = read(&mut client).await.unwrap();
                assert_eq!(f.payload, format!("{c}:{i}").as_bytes());
            }
            writer.await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_sender_is_slowed_by_backpressure_not_answered_with_drops() {
    // A small outbox: were reading not paused while replies wait, echoes would be refused.
    let s = start(
        options()
            .outbound_queue_bytes(512 * 1024)
            .max_message_size(1 << 20)
            .build()
            .unwrap(),
    )
    .await;
    let mut c = login(&s.addr, "firehose").await;
    let sender = c.sender();
    const N: usize = 60;
    let writer = tokio::spawn(async move {
        for i in 0..N {
            // High bytes: a leading `#` or `/` would be a room command, not echoed.
            let payload = vec![0x80 | i as u8; 256 * 1024];
            sender.send(Frame::binary(payload)).await.unwrap();
        }
    });
    for i in 0..N {
        let f = read(&mut c).await.expect("every echo arrives");
        assert_eq!(f.payload.len(), 256 * 1024);
        assert!(
            f.payload.iter().all(|&b| b == 0x80 | i as u8),
            "echo {i} in order"
        );
    }
    writer.await.unwrap();
}
