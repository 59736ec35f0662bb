//! The deflate crates kim could compress permessage-deflate messages with, side by side on
//! chat-like JSON: zlib-rs (what kim-ws uses, directly), miniz_oxide (flate2's default
//! backend, through flate2) and libdeflate (whole-buffer only, through libdeflater). Each
//! message is compressed and inflated on its own, as kim does without context takeover: the
//! bytes it becomes, the time each way, and the memory one compressor or decompressor holds.

use std::time::Instant;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress};
use libdeflater::{CompressionLvl, Compressor, Decompressor};
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Method};

/// The sync flush's tail, stripped by the sender and appended by the receiver.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A deflate implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Codec {
    /// zlib-rs, the crate kim-ws uses.
    ZlibRs,
    /// miniz_oxide through flate2 (flate2's default backend).
    Miniz,
    /// libdeflate through libdeflater: whole buffers only, a final block per message.
    Libdeflate,
}

impl Codec {
    /// Every codec, in report order.
    pub const ALL: [Codec; 3] = [Codec::ZlibRs, Codec::Miniz, Codec::Libdeflate];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Codec::ZlibRs => "zlib-rs",
            Codec::Miniz => "miniz_oxide",
            Codec::Libdeflate => "libdeflate",
        }
    }
}

/// What compressing and inflating a set of messages one by one cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CodecRun {
    /// Mean bytes of a message before compression.
    pub message_bytes: f64,
    /// Mean bytes of its compressed payload.
    pub compressed_bytes: f64,
    /// Nanoseconds to compress one message (a reset context each time).
    pub compress_ns: f64,
    /// Nanoseconds to inflate one.
    pub inflate_ns: f64,
}

/// A small deterministic generator, so that every run sees the same messages.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

const NAMES: [&str; 12] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "oscar",
];
const ROOMS: [&str; 5] = ["general", "random", "dev-backend", "design", "support"];
const WORDS: [&str; 48] = [
    "the", "a", "we", "I", "you", "it", "is", "are", "was", "will", "can", "to", "of", "and", "in",
    "on", "for", "with", "at", "this", "that", "meeting", "release", "build", "deploy", "review",
    "today", "tomorrow", "later", "thanks", "sure", "ok", "lunch", "ticket", "bug", "fix",
    "server", "client", "please", "check", "done", "merged", "branch", "test", "notes", "call",
    "soon", "again",
];

/// One chat message as JSON, its text about `text_len` bytes.
fn chat_message(rng: &mut Rng, seq: u64, text_len: usize) -> String {
    let mut text = String::new();
    while text.len() < text_len {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(rng.pick(&WORDS));
    }
    format!(
        r#"{{"type":"message","id":"m-{seq}","room":"{}","from":"{}","text":"{text}","ts":{},"client":"web/2.4.1"}}"#,
        rng.pick(&ROOMS),
        rng.pick(&NAMES),
        1_764_720_000_000 + seq * 7_919,
    )
}

/// `count` different chat-like JSON messages of about `len` bytes each: one message, or from
/// 1 KiB on a page of history (a room's last messages), as an IM server sends them.
pub fn chat_messages(len: usize, count: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..count as u64)
        .map(|i| {
            if len < 1024 {
                // The envelope is about 130 bytes; the text makes up the rest.
                return chat_message(&mut rng, i, len.saturating_sub(130)).into_bytes();
            }
            let mut page = String::from(r#"{"type":"history","room":"general","messages":["#);
            let mut n = 0;
            while page.len() + 2 < len {
                if n > 0 {
                    page.push(',');
                }
                let text = 20 + (rng.next() % 100) as usize;
                page.push_str(&chat_message(&mut rng, i * 1000 + n, text));
                n += 1;
            }
            page.push_str("]}");
            page.into_bytes()
        })
        .collect()
}

/// One codec's compressor and decompressor at one level.
enum Pair {
    ZlibRs(Box<Deflate>, Box<Inflate>),
    Miniz(Box<Compress>, Box<Decompress>),
    Libdeflate(Box<Compressor>, Box<Decompressor>),
}

impl Pair {
    fn new(codec: Codec, level: u8) -> Pair {
        match codec {
            Codec::ZlibRs => Pair::ZlibRs(
                Box::new(zlib_deflate(level, 15, 8)),
                Box::new(Inflate::new(false, 15)),
            ),
            Codec::Miniz => Pair::Miniz(
                Box::new(Compress::new(flate2::Compression::new(level.into()), false)),
                Box::new(Decompress::new(false)),
            ),
            Codec::Libdeflate => Pair::Libdeflate(
                Box::new(Compressor::new(
                    CompressionLvl::new(level.into()).expect("levels 1 to 12"),
                )),
                Box::new(Decompressor::new()),
            ),
        }
    }

    /// Compresses `input` alone into `out` (cleared first): what goes on the wire.
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match self {
            Pair::ZlibRs(d, _) => {
                d.reset();
                out.resize(zlib_rs::compress_bound(input.len()) + 16, 0);
                d.compress(input, out, DeflateFlush::SyncFlush)
                    .expect("zlib-rs compresses");
                out.truncate(d.total_out() as usize - TAIL.len());
            }
            Pair::Miniz(c, _) => {
                c.reset();
                out.reserve(input.len() + input.len() / 8 + 64);
                c.compress_vec(input, out, FlushCompress::Sync)
                    .expect("miniz_oxide compresses");
                out.truncate(out.len() - TAIL.len());
            }
            Pair::Libdeflate(c, _) => {
                out.resize(c.deflate_compress_bound(input.len()), 0);
                let n = c
                    .deflate_compress(input, out)
                    .expect("libdeflate compresses");
                out.truncate(n);
            }
        }
    }

    /// Inflates what [`Pair::compress`] made (with the tail appended where the codec flushed)
    /// into `out`, whose length is the message's.
    fn inflate(&mut self, wire: &[u8], out: &mut [u8]) -> usize {
        match self {
            Pair::ZlibRs(_, i) => {
                i.reset(false);
                i.decompress(wire, out, InflateFlush::SyncFlush)
                    .expect("zlib-rs inflates");
                i.total_out() as usize
            }
            Pair::Miniz(_, d) => {
                d.reset(false);
                d.decompress(wire, out, FlushDecompress::Sync)
                    .expect("miniz_oxide inflates");
                d.total_out() as usize
            }
            Pair::Libdeflate(_, d) => d
                .deflate_decompress(wire, out)
                .expect("libdeflate inflates"),
        }
    }
}

fn zlib_deflate(level: u8, window_bits: u8, mem_level: u8) -> Deflate {
    Deflate::new_with_config(DeflateConfig {
        level: level.into(),
        method: Method::Deflated,
        window_bits: -i32::from(window_bits),
        mem_level: mem_level.into(),
        strategy: Default::default(),
    })
}

/// Compresses and inflates every message `rounds` times with `codec` at `level`, checking each
/// round trip.
pub fn run(codec: Codec, level: u8, messages: &[Vec<u8>], rounds: usize) -> CodecRun {
    let mut pair = Pair::new(codec, level);
    let mut out = Vec::new();
    let mut wires: Vec<Vec<u8>> = Vec::with_capacity(messages.len());
    let started = Instant::now();
    for round in 0..rounds {
        for m in messages {
            pair.compress(m, &mut out);
            if round == 0 {
                let mut wire = out.clone();
                if codec != Codec::Libdeflate {
                    wire.extend_from_slice(&TAIL);
                }
                wires.push(wire);
            }
        }
    }
    let compress = started.elapsed();
    let mut plain = vec![0u8; messages.iter().map(Vec::len).max().unwrap_or(0) + 1];
    let started = Instant::now();
    for _ in 0..rounds {
        for (m, w) in messages.iter().zip(&wires) {
            let n = pair.inflate(w, &mut plain[..m.len()]);
            assert_eq!(&plain[..n], &m[..], "{} round trip", codec.name());
        }
    }
    let inflate = started.elapsed();
    let count = (messages.len() * rounds) as f64;
    let tail = if codec == Codec::Libdeflate { 0 } else { 4 };
    CodecRun {
        message_bytes: messages.iter().map(Vec::len).sum::<usize>() as f64 / messages.len() as f64,
        compressed_bytes: wires.iter().map(|w| w.len() - tail).sum::<usize>() as f64
            / wires.len() as f64,
        compress_ns: compress.as_nanos() as f64 / count,
        inflate_ns: inflate.as_nanos() as f64 / count,
    }
}

/// A compressor or decompressor whose memory is measured.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub enum State {
    /// A zlib-rs compressor with this window (bits) and memory level.
    ZlibRsDeflate(u8, u8),
    /// A zlib-rs decompressor with a 32 KiB window.
    ZlibRsInflate,
    /// A miniz_oxide compressor at level 6.
    MinizDeflate,
    /// A miniz_oxide decompressor.
    MinizInflate,
    /// A libdeflate compressor at level 6.
    LibdeflateDeflate,
    /// A libdeflate decompressor.
    LibdeflateInflate,
}

impl State {
    /// The states measured, in report order.
    pub const ALL: [State; 9] = [
        State::ZlibRsDeflate(15, 8),
        State::ZlibRsDeflate(15, 1),
        State::ZlibRsDeflate(11, 2),
        State::ZlibRsDeflate(9, 1),
        State::ZlibRsInflate,
        State::MinizDeflate,
        State::MinizInflate,
        State::LibdeflateDeflate,
        State::LibdeflateInflate,
    ];

    /// The name in reports.
    pub fn name(self) -> String {
        match self {
            State::ZlibRsDeflate(w, m) => format!("zlib-rs compressor, window {w}, mem level {m}"),
            State::ZlibRsInflate => "zlib-rs decompressor".into(),
            State::MinizDeflate => "miniz_oxide compressor".into(),
            State::MinizInflate => "miniz_oxide decompressor".into(),
            State::LibdeflateDeflate => "libdeflate compressor".into(),
            State::LibdeflateInflate => "libdeflate decompressor".into(),
        }
    }
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The resident memory one `state` holds once it has handled one message (`sample`):
/// the growth of this process's resident memory over `count` of them, divided by `count`.
pub fn state_bytes(state: State, sample: &[u8], count: usize) -> f64 {
    let mut out = vec![0u8; sample.len() * 2 + 1024];
    let mut wire = Vec::new();
    Pair::new(Codec::ZlibRs, 6).compress(sample, &mut wire);
    wire.extend_from_slice(&TAIL);
    let mut lib_wire = vec![0u8; 2 * sample.len() + 1024];
    let n = Compressor::new(CompressionLvl::default()).deflate_compress(sample, &mut lib_wire);
    lib_wire.truncate(n.expect("libdeflate compresses"));
    // Memory freed by earlier measurements goes back to the system first, so that it is not
    // reused here unseen.
    // SAFETY: malloc_trim only hands free memory of the allocator's own back to the system.
    unsafe { libc::malloc_trim(0) };
    let before = rss();
    let mut kept: Vec<Box<dyn std::any::Any>> = Vec::with_capacity(count);
    for _ in 0..count {
        match state {
            State::ZlibRsDeflate(w, m) => {
                let mut d = Box::new(zlib_deflate(6, w, m));
                d.compress(sample, &mut out, DeflateFlush::SyncFlush)
                    .expect("compresses");
                kept.push(d);
            }
            State::ZlibRsInflate => {
                let mut i = Box::new(Inflate::new(false, 15));
                i.decompress(&wire, &mut out, InflateFlush::SyncFlush)
                    .expect("inflates");
                kept.push(i);
            }
            State::MinizDeflate => {
                let mut c = Box::new(Compress::new(flate2::Compression::new(6), false));
                c.compress(sample, &mut out, FlushCompress::Sync)
                    .expect("compresses");
                kept.push(c);
            }
            State::MinizInflate => {
                let mut d = Box::new(Decompress::new(false));
                d.decompress(&wire, &mut out, FlushDecompress::Sync)
                    .expect("inflates");
                kept.push(d);
            }
            State::LibdeflateDeflate => {
                let mut c = Box::new(Compressor::new(CompressionLvl::default()));
                c.deflate_compress(sample, &mut out).expect("compresses");
                kept.push(c);
            }
            State::LibdeflateInflate => {
                let mut d = Box::new(Decompressor::new());
                d.deflate_decompress(&lib_wire, &mut out[..sample.len()])
                    .expect("inflates");
                kept.push(d);
            }
        }
    }
    let after = rss();
    drop(kept);
    after.saturating_sub(before) as f64 / count as f64
}
