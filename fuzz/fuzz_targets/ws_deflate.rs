//! The websocket frame reader with permessage-deflate negotiated (server role), over a stream
//! of fuzz-chosen frames, compressed (RSV1) or not, delivered in reads of fuzz-chosen sizes.
//!
//! Input: one byte of configuration (bits 0-1: the maximum message size; bit 2: context
//! takeover, with a window of 2^(9 + bits 3-5, at most 15) bytes; bits 6-7: the read size),
//! the read sizes (see `kim_fuzz::split_spec`), then the stream.
//!
//! Promises checked: no panic; every text message is valid UTF-8 and every data message at
//! most the maximum, however far its data would inflate; no single allocation exceeds twice
//! the bytes fed so far plus 128 KiB (an inflated message is at most the maximum, which stays
//! under that); and what the reader delivers is what an independent reading finds: the frames
//! parsed leniently and each compressed message inflated by miniz_oxide (flate2), in order
//! (with context takeover, up to the first message whose data stops inside a block, which
//! zlib-rs carries over as zlib does and miniz_oxide refuses; without, every message
//! miniz_oxide inflates, as libdeflate also decodes a few streams it refuses).
#![no_main]

use flate2::{Decompress, FlushDecompress, Status};
use kim_core::{FrameReader, OpCode};
use kim_fuzz::{noop_context, split_spec, watch, Chunked};
use kim_io::ReadBuffer;
use kim_ws::internals::with_deflate;
use kim_ws::{Role, WsStream};
use libfuzzer_sys::fuzz_target;
use std::task::Poll;

#[global_allocator]
static ALLOC: kim_fuzz::Watching = kim_fuzz::Watching;

/// Maximum message sizes, all under the allocation watch's slack: inflating to the maximum is
/// allowed whatever was fed.
const MAXES: [usize; 4] = [64 * 1024, 100, 1000, 100_000];

/// Frames read from one input at most.
const MAX_FRAMES: usize = 1024;

/// The sync flush's tail, which the sender strips.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// The tail and then an empty final stored block, as kim appends for libdeflate.
const FINAL_TAIL: [u8; 9] = [0, 0, 0xff, 0xff, 0x01, 0, 0, 0xff, 0xff];

/// A message of the stream as an independent reading finds it: opcode, whether it was
/// compressed, and its payload as sent.
type Message = (u8, bool, Vec<u8>);

/// The messages of `stream` (data messages reassembled, control frames skipped), parsed
/// leniently, up to the first frame that is incomplete or out of place.
fn reference(stream: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut partial: Option<Message> = None;
    for (b0, payload) in kim_fuzz::raw_frames(stream) {
        let (fin, rsv1, op) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0f);
        match (op, partial.as_mut()) {
            (8.., _) => {}
            (0, Some(p)) => {
                p.2.extend_from_slice(&payload);
                if fin {
                    out.push(partial.take().unwrap());
                }
            }
            (0, None) | (1..=7, Some(_)) => break,
            (_, None) if fin => out.push((op, rsv1, payload)),
            (_, None) => partial = Some((op, rsv1, payload)),
        }
    }
    out
}

/// Inflates one message with miniz_oxide: `None` when it is invalid or passes `max` bytes,
/// and whether the message's data ended its deflate stream (a block marked final).
fn inflate(d: &mut Decompress, data: &[u8], max: usize, tail: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut input = data.to_vec();
    input.extend_from_slice(tail);
    let mut out = Vec::with_capacity(max + 1);
    let start = d.total_in();
    loop {
        let (in0, out0) = (d.total_in(), out.len());
        let consumed = (in0 - start) as usize;
        let status = d
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .ok()?;
        if out.len() > max {
            return None;
        }
        let consumed = (d.total_in() - start) as usize;
        let stalled = d.total_in() == in0 && out.len() == out0;
        if status == Status::StreamEnd {
            return Some((out, true));
        }
        if consumed == input.len() && out.len() < out.capacity() {
            return Some((out, false));
        }
        if stalled {
            return None;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let max = MAXES[(config & 3) as usize];
    let takeover = (config & 4 != 0).then(|| (9 + (config >> 3 & 7)).min(15));
    let chunk = 64usize << (config >> 6 & 3);
    let (sizes, stream) = split_spec(rest);

    let mut frames: Vec<kim_core::Frame> = Vec::new();
    watch::start();
    let reader = WsStream::new(
        Chunked::new(stream, sizes),
        Role::Server,
        max,
        ReadBuffer::new(chunk),
    );
    let mut reader = with_deflate(reader, takeover);
    let mut cx = noop_context();
    let mut failed = false;
    for _ in 0..MAX_FRAMES {
        match reader.poll_read_frame(&mut cx) {
            Poll::Ready(Ok(Some(f))) => {
                watch::pause();
                let len = f.payload.len();
                match f.op {
                    OpCode::Text => {
                        assert!(std::str::from_utf8(&f.payload).is_ok(), "text is not UTF-8");
                        assert!(len <= max, "message of {len} bytes over the limit {max}");
                        frames.push(f);
                    }
                    OpCode::Binary => {
                        assert!(len <= max, "message of {len} bytes over the limit {max}");
                        frames.push(f);
                    }
                    OpCode::Continuation => panic!("a continuation delivered as a message"),
                    _ => {}
                }
                watch::resume();
            }
            Poll::Ready(Ok(None)) => break,
            Poll::Ready(Err(_)) => {
                failed = true;
                break;
            }
            Poll::Pending => panic!("pending on a stream that never waits"),
        }
    }
    if let Some((size, fed)) = watch::stop() {
        panic!(
            "an allocation of {size} bytes after {fed} bytes fed (max message {max}): over twice the input plus {} KiB",
            watch::SLACK / 1024
        );
    }

    // What the reader delivered is what miniz_oxide finds in the same messages.
    let expected = reference(stream);
    assert!(frames.len() <= expected.len());
    // miniz_oxide's window is 32 KiB whatever the peer's: it reads any smaller window the
    // same, and kim refuses a reach past the window it agreed (never delivered, so never
    // compared).
    let mut kept = Decompress::new(false);
    for (i, (f, (op, compressed, payload))) in frames.iter().zip(&expected).enumerate() {
        assert_eq!(f.op as u8, *op, "opcode of message {i}");
        let want = if *compressed {
            let mut fresh;
            let d = match takeover {
                Some(_) => &mut kept,
                None => {
                    fresh = Decompress::new(false);
                    &mut fresh
                }
            };
            // Data that stops inside a block reads the tail as more of that block, so what
            // it inflates to depends on the tail appended: kim's and miniz_oxide's differ.
            // Such a message is compared only for staying within the limit.
            if takeover.is_none() {
                let with_final = inflate(&mut Decompress::new(false), payload, max, &FINAL_TAIL);
                let with_sync = inflate(&mut Decompress::new(false), payload, max, &TAIL);
                if with_final.map(|(o, _)| o) != with_sync.map(|(o, _)| o) {
                    continue;
                }
            }
            match (inflate(d, payload, max, &TAIL), takeover) {
                // A final block ends the stream: the next message starts a new one, as kim
                // does.
                (Some((out, true)), Some(_)) => {
                    kept.reset(false);
                    out
                }
                (Some((out, _)), _) => out,
                // Data cut inside a block: zlib-rs, like zlib, yields what it inflated so
                // far and keeps the rest of the block for the next message, where
                // miniz_oxide stops. The streams part ways here; nothing after is compared.
                (None, Some(_)) => break,
                // libdeflate, which inflates messages compressed alone, decodes a few streams
                // zlib and miniz_oxide call invalid (reserved codes in a fixed-code block): its
                // output is still bounded by the limit, checked above.
                (None, None) => continue,
            }
        } else {
            payload.clone()
        };
        assert!(f.payload == want[..], "payload of message {i} differs");
    }
    let _ = failed;
});
