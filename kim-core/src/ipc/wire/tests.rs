//! The wire's sender and receiver on real socketpairs.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

fn pair() -> (UnixDatagram, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    raise_buffers(a.as_fd(), 4 << 20);
    raise_buffers(b.as_fd(), 4 << 20);
    (a, b)
}

fn payload(n: usize, seed: u8) -> Bytes {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// Sends `msgs` and receives them, alternating whenever the socket fills.
fn roundtrip(chunk: usize, msgs: Vec<Outgoing>) -> (Vec<Received>, Reassembler) {
    let (a, b) = pair();
    let mut tx = ChunkSender::new(chunk);
    let mut rx = Reassembler::new(64 << 20, chunk, Duration::from_secs(5));
    let mut out = Vec::new();
    for mut m in msgs {
        loop {
            match tx.send(a.as_fd(), &mut m) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    while let Ok(r) = rx.recv(b.as_fd()) {
                        out.push(r);
                    }
                }
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    loop {
        match rx.recv(b.as_fd()) {
            Ok(r) => out.push(r),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
    (out, rx)
}

#[test]
fn small_messages_go_out_in_batches_and_arrive_in_order() {
    let (a, b) = pair();
    let mut tx = ChunkSender::new(4096);
    let mut rx = Reassembler::new(1 << 20, 4096, Duration::from_secs(5));
    // Small ones, then one that needs chunks (the batch stops before it), then small.
    let mut msgs: Vec<Outgoing> = (0..70u64)
        .map(|i| {
            let n = if i == 40 { 10_000 } else { i as usize };
            Outgoing::new(Kind::Push, i, 1, payload(n, i as u8))
        })
        .collect();
    let mut at = 0;
    let mut calls = 0;
    while at < msgs.len() {
        calls += 1;
        let n = tx.send_batch(a.as_fd(), &mut msgs[at..]).unwrap();
        if n == 0 {
            tx.send(a.as_fd(), &mut msgs[at]).unwrap();
            at += 1;
        } else {
            assert!(n <= BATCH);
            at += n;
        }
    }
    assert!(calls <= 5, "{calls} calls for 70 messages");
    for i in 0..70u64 {
        let r = rx.recv(b.as_fd()).unwrap();
        assert_eq!(r.key, i);
        let n = if i == 40 { 10_000 } else { i as usize };
        assert_eq!(r.payload, payload(n, i as u8));
    }
    assert!(rx.recv(b.as_fd()).is_err());
}

#[test]
fn header_round_trips_and_rejects_garbage() {
    let h = Header {
        msg_id: 7,
        total: 1 << 20,
        key: u64::MAX - 3,
        offset: 65536,
        kind: Kind::Push,
        flags: CHUNK,
        aux: 2,
    };
    assert_eq!(Header::decode(&h.encode()), Some(h));
    let mut bad = h.encode();
    bad[23] = 9;
    assert_eq!(Header::decode(&bad), None);
    let mut bad = h.encode();
    bad[20] = 0;
    assert_eq!(Header::decode(&bad), None);
    let mut bad = h.encode();
    bad[21] = 0x10;
    assert_eq!(Header::decode(&bad), None);
}

#[test]
fn boundaries_arrive_whole() {
    let chunk = 64 * 1024;
    let sizes = [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 10 << 20];
    let msgs = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Outgoing::new(Kind::Message, i as u64, 2, payload(n, i as u8)))
        .collect();
    let (got, rx) = roundtrip(chunk, msgs);
    assert_eq!(got.len(), sizes.len());
    for (i, (r, &n)) in got.iter().zip(&sizes).enumerate() {
        assert_eq!(r.key, i as u64);
        assert_eq!(r.kind, Kind::Message);
        assert_eq!(r.aux, 2);
        assert_eq!(r.payload, payload(n, i as u8), "message of {n} bytes");
    }
    let s = rx.stats();
    assert_eq!(s.messages, sizes.len() as u64);
    assert_eq!((s.orphan_chunks, s.malformed, s.refused), (0, 0, 0));
}

#[test]
fn interleaved_messages_reassemble_into_their_own_buffers() {
    // Two senders on one socket stand for chunks of many messages arriving interleaved:
    // datagram by datagram, alternating between 100 messages.
    let (a, b) = pair();
    let chunk = 4096;
    let mut senders: Vec<(ChunkSender, Outgoing)> = (0..100u64)
        .map(|i| {
            let mut s = ChunkSender::new(chunk);
            s.next_id = i as u32 * 1000 + 1;
            let len = 10_000 + i as usize * 97;
            (s, Outgoing::new(Kind::Message, i, 1, payload(len, i as u8)))
        })
        .collect();
    let mut rx = Reassembler::new(1 << 20, chunk, Duration::from_secs(5));
    let mut got = Vec::new();
    let mut done = vec![false; senders.len()];
    while done.iter().any(|d| !d) {
        for (i, (s, m)) in senders.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            // One datagram per turn: cut the message short by sending with a chunk
            // limit and stopping after one datagram.
            let before = s.stats().datagrams;
            let r = s.send_limited(a.as_fd(), m, 1);
            assert!(r.is_ok(), "{r:?}");
            assert_eq!(s.stats().datagrams, before + 1);
            done[i] = m.sent == m.payload.len() && m.started();
            while let Ok(r) = rx.recv(b.as_fd()) {
                got.push(r);
            }
        }
        assert!(rx.partial_count() <= 100);
    }
    assert_eq!(got.len(), 100);
    got.sort_by_key(|r| r.key);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.payload, payload(10_000 + i * 97, i as u8));
    }
}

#[test]
fn the_payload_is_the_buffer_the_chunks_were_read_into() {
    let (a, b) = pair();
    let chunk = 8192;
    let mut tx = ChunkSender::new(chunk);
    let mut rx = Reassembler::new(1 << 20, chunk, Duration::from_secs(5));
    let data = payload(100_000, 5);
    let mut m = Outgoing::new(Kind::Message, 9, 1, data.clone());
    // BEGIN and two chunks.
    tx.send_limited(a.as_fd(), &mut m, 3).unwrap();
    for _ in 0..3 {
        assert_eq!(rx.recv_one(b.as_fd()).unwrap(), None);
    }
    let id = m.id.unwrap();
    let buf = rx.partial_buffer(id).expect("allocated at BEGIN");
    tx.send(a.as_fd(), &mut m).unwrap();
    let r = rx.recv(b.as_fd()).unwrap();
    assert_eq!(r.payload, data);
    assert_eq!(
        r.payload.as_ptr(),
        buf,
        "delivered from the buffer chunks were read into"
    );
}

#[test]
fn orphans_expired_refused_and_malformed_are_counted_and_consumed() {
    let (a, b) = pair();
    let chunk = 4096;
    let mut rx = Reassembler::new(50_000, chunk, Duration::from_millis(50));
    // An orphan chunk (no BEGIN), read once and dropped.
    let h = Header {
        msg_id: 77,
        total: 10_000,
        key: 1,
        offset: 4096,
        kind: Kind::Message,
        flags: CHUNK,
        aux: 1,
    };
    a.send(&[&h.encode()[..], &[0u8; 100]].concat()).unwrap();
    // Garbage shorter than a header.
    a.send(b"xy").unwrap();
    // A message over the maximum: refused, its chunks discarded.
    let mut tx = ChunkSender::new(chunk);
    let mut big = Outgoing::new(Kind::Message, 2, 1, payload(60_000, 1));
    tx.send(a.as_fd(), &mut big).unwrap();
    // A message left incomplete: expires.
    let mut part = Outgoing::new(Kind::Message, 3, 1, payload(20_000, 2));
    tx.send_limited(a.as_fd(), &mut part, 2).unwrap();
    // Then a good one.
    let mut good = Outgoing::new(Kind::Message, 4, 1, payload(30, 3));
    tx.send(a.as_fd(), &mut good).unwrap();
    let r = rx.recv(b.as_fd()).unwrap();
    assert_eq!(r.key, 4);
    assert_eq!(r.payload, payload(30, 3));
    assert!(rx.recv(b.as_fd()).is_err(), "nothing left to read");
    std::thread::sleep(Duration::from_millis(60));
    rx.expire(Instant::now());
    let s = rx.stats();
    assert_eq!(s.orphan_chunks, 1);
    assert_eq!(s.malformed, 1);
    assert_eq!(s.refused, 1);
    assert_eq!(s.expired, 1);
    assert_eq!(s.messages, 1);
    assert_eq!(rx.partial_count(), 0);
}
