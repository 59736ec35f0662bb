//! The websocket frame reader (`kim_ws::WsStream`) over a stream of fuzz-chosen bytes,
//! delivered in reads of fuzz-chosen sizes, in either role.
//!
//! Input: one byte of configuration (bit 0: the role, client or server; bits 1-2: the maximum
//! message size; bits 3-5: the read size), the read sizes (see `kim_fuzz::split_spec`), then
//! the stream.
//!
//! Promises checked: no panic; every text message is valid UTF-8; a data message is at most
//! the maximum, a control frame at most 125 bytes, a close payload empty or a valid code and
//! UTF-8; no single allocation exceeds twice the bytes fed so far plus 128 KiB (a declared
//! length is not memory); every frame re-encoded with `kim_ws::internals::encode_frame` decodes back to
//! itself; and a first frame sent whole with a minimal length re-encodes to its very bytes.
#![no_main]

use kim_core::{FrameReader, OpCode};
use kim_fuzz::{noop_context, split_spec, watch, Chunked};
use kim_io::ReadBuffer;
use kim_ws::internals::encode_frame;
use kim_ws::{Role, WsStream};
use libfuzzer_sys::fuzz_target;
use std::task::Poll;

#[global_allocator]
static ALLOC: kim_fuzz::Watching = kim_fuzz::Watching;

/// Maximum message sizes: the small one the fuzzer can fill, the default one whose declared
/// lengths must not turn into allocations, one tinier than a control frame, one odd.
const MAXES: [usize; 4] = [64 * 1024, 4 << 20, 100, 1000];

/// Frames read from one input at most (a stream of empty frames can be long).
const MAX_FRAMES: usize = 4096;

const MASK: [u8; 4] = [0xa5, 0x01, 0x7e, 0x33];

/// Reads every frame of `stream` (in reads of `sizes`) with a fresh reader.
fn read_all(
    stream: &[u8],
    sizes: Vec<usize>,
    role: Role,
    max: usize,
    chunk: usize,
    mut each: impl FnMut(&kim_core::Frame),
) -> Result<Option<()>, kim_core::ReadError> {
    let mut reader = WsStream::new(
        Chunked::new(stream, sizes),
        role,
        max,
        ReadBuffer::new(chunk),
    );
    let mut cx = noop_context();
    for _ in 0..MAX_FRAMES {
        match reader.poll_read_frame(&mut cx) {
            Poll::Ready(Ok(Some(f))) => each(&f),
            Poll::Ready(Ok(None)) => return Ok(Some(())),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => panic!("pending on a stream that never waits"),
        }
    }
    Ok(None)
}

fn check_frame(f: &kim_core::Frame, max: usize) {
    let len = f.payload.len();
    match f.op {
        OpCode::Text => {
            assert!(std::str::from_utf8(&f.payload).is_ok(), "text is not UTF-8");
            assert!(len <= max, "message of {len} bytes over the limit {max}");
        }
        OpCode::Binary => assert!(len <= max, "message of {len} bytes over the limit {max}"),
        OpCode::Ping | OpCode::Pong => assert!(len <= 125, "control frame of {len} bytes"),
        OpCode::Close => {
            assert!(len <= 125, "control frame of {len} bytes");
            assert_ne!(len, 1, "close frame with one byte");
            if len >= 2 {
                let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                assert!(kim_ws::is_valid_close_code(code), "close code {code}");
                assert!(std::str::from_utf8(&f.payload[2..]).is_ok());
            }
        }
        OpCode::Continuation => panic!("a continuation frame delivered as a message"),
    }
}

/// Re-encodes a frame as one whole frame and reads it back.
fn round_trip(f: &kim_core::Frame, role: Role, max: usize) {
    let mask = (role == Role::Server).then_some(MASK);
    let bytes = encode_frame(0x80 | f.op as u8, &f.payload, mask);
    let mut back = Vec::new();
    let r = read_all(&bytes, Vec::new(), role, max, 4096, |g| {
        back.push(g.clone())
    });
    assert!(matches!(r, Ok(Some(()))), "re-encoded frame fails: {r:?}");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].op, f.op);
    assert_eq!(back[0].payload, f.payload);
}

/// The first frame's header, if the stream starts with a whole frame (FIN, not a
/// continuation) whose length is minimally encoded: (first byte, mask, header length,
/// payload length).
fn first_whole_frame(stream: &[u8]) -> Option<(u8, Option<[u8; 4]>, usize, usize)> {
    let (&b0, rest) = stream.split_first()?;
    let &b1 = rest.first()?;
    if b0 & 0x80 == 0 || b0 & 0x0f == 0 {
        return None;
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            let l = u16::from_be_bytes(stream.get(2..4)?.try_into().ok()?) as usize;
            (l, 4)
        }
        127 => {
            let l = u64::from_be_bytes(stream.get(2..10)?.try_into().ok()?);
            (usize::try_from(l).ok()?, 10)
        }
        n => (n as usize, 2),
    };
    let minimal = match at {
        2 => true,
        4 => len >= 126,
        _ => len > 0xffff,
    };
    if !minimal {
        return None;
    }
    let mask = if b1 & 0x80 != 0 {
        let m = stream.get(at..at + 4)?;
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Some((b0, mask, at, len))
}

/// A reading of the stream of our own, lenient (no check but the structure): the messages
/// and control frames in order, up to the first frame that is incomplete or out of place.
fn reference(stream: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut partial: Option<(u8, Vec<u8>)> = None;
    for (b0, payload) in kim_fuzz::raw_frames(stream) {
        let (fin, op) = (b0 & 0x80 != 0, b0 & 0x0f);
        match (op, partial.as_mut()) {
            (8.., _) => out.push((op, payload)),
            (0, Some(p)) => {
                p.1.extend_from_slice(&payload);
                if fin {
                    out.push(partial.take().unwrap());
                }
            }
            (0, None) | (1..=7, Some(_)) => break,
            (_, None) if fin => out.push((op, payload)),
            (_, None) => partial = Some((op, payload)),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let role = if config & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let max = MAXES[(config >> 1 & 3) as usize];
    let chunk = 64usize << (config >> 3 & 7);
    let (sizes, stream) = split_spec(rest);

    let mut frames: Vec<kim_core::Frame> = Vec::new();
    watch::start();
    let _ = read_all(stream, sizes, role, max, chunk, |f| {
        watch::pause();
        check_frame(f, max);
        round_trip(f, role, max);
        frames.push(f.clone());
        watch::resume();
    });
    if let Some((size, fed)) = watch::stop() {
        panic!(
            "an allocation of {size} bytes after {fed} bytes fed (max message {max}, read size {chunk}): over twice the input plus {} KiB",
            watch::SLACK / 1024
        );
    }

    // What the reader delivered is what our own reading of the stream finds, in order.
    let expected = reference(stream);
    assert!(
        frames.len() <= expected.len(),
        "{} messages read, {} in the stream",
        frames.len(),
        expected.len()
    );
    for (i, (f, (op, payload))) in frames.iter().zip(&expected).enumerate() {
        assert_eq!(f.op as u8, *op, "opcode of message {i}");
        assert!(f.payload == payload[..], "payload of message {i} differs");
    }

    // A first frame sent whole re-encodes to its very bytes.
    if let (Some(first), Some((b0, mask, header, len))) =
        (frames.first(), first_whole_frame(stream))
    {
        if first.op as u8 == b0 & 0x0f && first.payload.len() == len {
            let again = encode_frame(b0, &first.payload, mask);
            assert_eq!(&again[..], &stream[..header + len], "re-encoding differs");
        }
    }
});
