//! The IPC wire's receiver (`kim_core::internals::wire::Reassembler`) on a real `AF_UNIX
//! SOCK_DGRAM` socket pair, fed datagrams built from the fuzz input: headers with fuzz-chosen
//! fields (chunks in any order, orphans, duplicates, overlapping offsets, totals beyond the
//! maximum, unknown kinds and flags, truncated headers), raw garbage, and whole messages sent
//! by `ChunkSender`, interleaved with them datagram by datagram.
//!
//! Promises checked: no panic; a message built from crafted headers is delivered only with
//! the length its BEGIN declared (carried in its key) and with every byte where its offset
//! put it; nothing over the maximum is delivered; every message sent by `ChunkSender` within
//! the maximum arrives once and intact, and one over it never does; the counters agree with
//! what was sent (every datagram counted once, every invalid one as malformed, no more
//! orphans or refusals than datagrams that could be one); expiry empties what is left.
#![no_main]

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kim_core::internals::wire::{
    ChunkSender, Header, Kind, Outgoing, Reassembler, Received, BEGIN, CHUNK, END, HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

/// Datagrams sent for one input at most.
const MAX_DATAGRAMS: usize = 160;
/// Crafted message ids carry this bit; `ChunkSender`'s ids (counting up from 1) never do.
const CRAFTED: u32 = 0x8000_0000;
/// Keys of `ChunkSender` messages carry this bit, their index and their length.
const SENT: u64 = 1 << 63;

/// Bytes that messages are cut from: crafted messages from the start (the byte at position
/// `j` of any of them is `PATTERN[j]`), messages sent whole from an offset of their own.
/// Compared as slices, not byte by byte.
static PATTERN: LazyLock<Vec<u8>> = LazyLock::new(|| {
    (0..PATTERN_LEN as u32)
        .map(|j| (j.wrapping_mul(0x9e37_79b1) >> 24) as u8 ^ (j >> 16) as u8)
        .collect()
});
const PATTERN_LEN: usize = 160 * 1024;

/// The payload of the `i`th message sent whole.
fn sent_payload(i: usize, len: usize) -> Bytes {
    let at = 1 + i * 1031 % 8192;
    Bytes::copy_from_slice(&PATTERN[at..at + len])
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

struct Test {
    tx: UnixDatagram,
    rx: UnixDatagram,
    receiver: Reassembler,
    max_message: usize,
    delivered: Vec<Received>,
    /// Datagrams sent, by any means.
    datagrams: u64,
    /// Datagrams sent that no receiver can take (short, bad version, kind or flags, too long).
    invalid: u64,
    /// Valid crafted datagrams without BEGIN (each may be an orphan).
    no_begin: u64,
    /// Valid crafted BEGINs over the maximum (each may be refused).
    begin_over: u64,
}

impl Test {
    fn drain(&mut self) {
        loop {
            match self.receiver.recv(self.rx.as_fd()) {
                Ok(m) => self.delivered.push(m),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Sends one datagram, draining the receiver whenever the socket is full.
    fn send(&mut self, dgram: &[u8]) {
        loop {
            match self.tx.send(dgram) {
                Ok(_) => {
                    self.datagrams += 1;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drain(),
                Err(e) => panic!("send of {} bytes: {e}", dgram.len()),
            }
        }
    }

    /// Sends up to `budget` datagrams of `m` (all when 0); true once it is all out.
    fn send_message(&mut self, sender: &mut ChunkSender, m: &mut Outgoing, budget: usize) -> bool {
        let budget = if budget == 0 { usize::MAX } else { budget };
        loop {
            match sender.send_limited(self.tx.as_fd(), m, budget) {
                Ok(done) => return done,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drain(),
                Err(e) => panic!("ChunkSender: {e}"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(config) = input.u8() else {
        return;
    };
    // Maximum message sizes: above a chunk, between one and a few, below one, nothing.
    let max_message = match config & 5 {
        0 => 64 * 1024,
        1 => 5000,
        4 => 700,
        _ => 0,
    };
    let chunk = if config & 2 == 0 { 1024 } else { 4096 };
    let (tx, rx) = UnixDatagram::pair().expect("socketpair");
    tx.set_nonblocking(true).unwrap();
    rx.set_nonblocking(true).unwrap();
    let mut t = Test {
        tx,
        rx,
        receiver: Reassembler::new(max_message, chunk, Duration::from_secs(3600)),
        max_message,
        delivered: Vec::new(),
        datagrams: 0,
        invalid: 0,
        no_begin: 0,
        begin_over: 0,
    };
    let mut sender = ChunkSender::new(chunk);
    // Messages sent with ChunkSender: (payload, all sent), and those still going out.
    let mut sent: Vec<(Bytes, bool)> = Vec::new();
    let mut going: Vec<(usize, Outgoing)> = Vec::new();
    // Where the next chunk of each crafted id would go, had everything been taken.
    let mut next_offset: HashMap<u32, usize> = HashMap::new();

    while (t.datagrams as usize) < MAX_DATAGRAMS {
        let Some(op) = input.u8() else { break };
        match op % 5 {
            0 => {
                // Garbage: never a valid header (a version byte of 1 is changed).
                let n = input.u8().unwrap_or(0) as usize;
                let mut g = input.bytes(n).to_vec();
                if g.len() >= HEADER_LEN && g[HEADER_LEN - 1] == 1 {
                    g[HEADER_LEN - 1] = 0xee;
                }
                t.invalid += 1;
                t.send(&g);
            }
            1 => {
                let (Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)) = (
                    input.u8(),
                    input.u8(),
                    input.u8(),
                    input.u8(),
                    input.u8(),
                    input.u8(),
                ) else {
                    break;
                };
                let id = CRAFTED | (a & 7) as u32;
                let flags = b & 0x0f;
                let kind = if c & 0x80 != 0 { c & 0x7f } else { 1 + c % 6 };
                let total: u32 = match d & 3 {
                    0 => input.u16().unwrap_or(0) as u32,
                    1 => max_message as u32,
                    2 => max_message as u32 + 1 + input.u8().unwrap_or(0) as u32,
                    _ => input.u32().unwrap_or(u32::MAX),
                };
                let expected = next_offset.get(&id).copied().unwrap_or(0);
                let offset: u32 = match (d >> 2) & 3 {
                    0 => 0,
                    1 => input.u16().unwrap_or(0) as u32,
                    2 => (chunk * (input.u8().unwrap_or(0) % 8) as usize) as u32,
                    _ => expected as u32,
                };
                let body_len = match (d >> 4) & 3 {
                    0 => 0,
                    1 => chunk,
                    2 => input.u16().unwrap_or(0) as usize % (chunk + 64),
                    _ => (total as usize).saturating_sub(offset as usize).min(chunk),
                };
                let header = Header {
                    msg_id: id,
                    total,
                    key: total as u64,
                    offset,
                    kind: Kind::Message, // replaced below
                    flags: 0,
                    aux: e,
                };
                let mut bytes = header.encode().to_vec();
                bytes[20] = kind;
                bytes[21] = flags;
                let truncated = f & 0x80 != 0;
                if truncated {
                    bytes.truncate((f % HEADER_LEN as u8) as usize);
                } else {
                    // (Past the pattern, where no message that can be delivered reaches.)
                    let at = (offset as usize).min(PATTERN_LEN - body_len);
                    bytes.extend_from_slice(&PATTERN[at..at + body_len]);
                }
                let valid = !truncated
                    && flags != 0
                    && flags & !(BEGIN | CHUNK | END) == 0
                    && (1..=6).contains(&kind)
                    && body_len <= chunk;
                if !valid {
                    t.invalid += 1;
                } else {
                    if flags & BEGIN == 0 {
                        t.no_begin += 1;
                    } else if total as usize > max_message {
                        t.begin_over += 1;
                    }
                    next_offset.insert(id, offset as usize + body_len);
                }
                t.send(&bytes);
            }
            2 => {
                // A message through ChunkSender, up to `budget` datagrams of it for now.
                let (Some(len), Some(budget)) = (input.u16(), input.u8()) else {
                    break;
                };
                // Mostly up to a few chunks; sometimes up to past the maximum.
                let len = if len & 0x8000 == 0 {
                    len as usize % (3 * chunk + 1)
                } else {
                    (len & 0x7fff) as usize * 3 % (max_message + 2000)
                };
                let i = sent.len();
                let payload = sent_payload(i, len);
                let key = SENT | (i as u64) << 32 | len as u64;
                let mut m = Outgoing::new(Kind::Push, key, 1, payload.clone());
                let done = t.send_message(&mut sender, &mut m, (budget % 4) as usize);
                sent.push((payload, done));
                if !done {
                    going.push((i, m));
                }
            }
            3 => {
                // More of the oldest message still going out.
                let budget = input.u8().unwrap_or(1) % 4;
                if !going.is_empty() {
                    let (i, mut m) = going.remove(0);
                    if t.send_message(&mut sender, &mut m, budget as usize) {
                        sent[i].1 = true;
                    } else {
                        going.push((i, m));
                    }
                }
            }
            _ => t.drain(),
        }
    }
    for (i, mut m) in std::mem::take(&mut going) {
        assert!(t.send_message(&mut sender, &mut m, 0));
        sent[i].1 = true;
    }
    t.datagrams += sender.stats().datagrams;
    t.drain();

    // What was delivered.
    let mut seen = vec![0u32; sent.len()];
    for m in &t.delivered {
        let len = m.payload.len();
        assert!(
            len <= t.max_message,
            "delivered {len} bytes over {}",
            t.max_message
        );
        if m.key & SENT != 0 {
            let i = ((m.key >> 32) & 0x7fff_ffff) as usize;
            assert_eq!(
                m.payload, sent[i].0,
                "message {i} of {len} bytes arrived changed"
            );
            assert_eq!((m.kind, m.aux), (Kind::Push, 1));
            seen[i] += 1;
        } else {
            assert_eq!(
                len as u64, m.key,
                "delivered length differs from the declared total"
            );
            assert!(
                m.payload == PATTERN[..len],
                "bytes of a crafted message out of place"
            );
        }
    }
    let mut over = 0;
    for (i, (p, _)) in sent.iter().enumerate() {
        if p.len() <= t.max_message {
            assert_eq!(
                seen[i],
                1,
                "message {i} of {} bytes arrived {} times",
                p.len(),
                seen[i]
            );
        } else {
            assert_eq!(seen[i], 0);
            over += 1;
        }
    }

    // The counters.
    let s = t.receiver.stats();
    assert_eq!(s.datagrams, t.datagrams, "datagrams counted: {s:?}");
    assert_eq!(s.messages, t.delivered.len() as u64, "{s:?}");
    assert!(
        s.malformed >= t.invalid,
        "{} invalid datagrams sent: {s:?}",
        t.invalid
    );
    assert!(
        s.orphan_chunks <= t.no_begin,
        "{} chunks without BEGIN: {s:?}",
        t.no_begin
    );
    assert!(s.refused <= t.begin_over + over, "{s:?}");
    assert!(
        s.refused >= over,
        "{over} messages over the maximum sent: {s:?}"
    );
    assert_eq!(s.expired, 0);
    // Whatever is still in progress goes at the TTL, and nothing else is lost.
    let left = t.receiver.partial_count() as u64;
    t.receiver
        .expire(Instant::now() + Duration::from_secs(7200));
    assert_eq!(t.receiver.partial_count(), 0);
    assert_eq!(t.receiver.stats().expired, left);
});
