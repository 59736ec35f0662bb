//! The raw TCP frame reader (`kim_tcp::TcpFramed`, `[op u8][len u32 BE][payload]`) over a
//! stream of fuzz-chosen bytes, delivered in reads of fuzz-chosen sizes.
//!
//! Input: one byte of configuration (bits 0-1: the maximum message size; bits 2-4: the read
//! size), the read sizes (see `kim_fuzz::split_spec`), then the stream.
//!
//! Promises checked: no panic; only the five opcodes come out; text is valid UTF-8; a payload
//! is at most the maximum; no single allocation exceeds twice the bytes fed so far plus
//! 128 KiB; and the frames read, written again by a `kim_tcp::TcpFramed`, are the very bytes
//! of the stream they were read from.
#![no_main]

use std::task::Poll;

use kim_core::{ConnConfig, FrameReader, FrameWriter, OpCode};
use kim_fuzz::{noop_context, split_spec, watch, Chunked, Sink};
use kim_tcp::{TcpFramed, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: kim_fuzz::Watching = kim_fuzz::Watching;

const MAXES: [usize; 4] = [64 * 1024, 4 << 20, 0, 1000];

const MAX_FRAMES: usize = 4096;

fn encode(f: &kim_core::Frame) -> Vec<u8> {
    let sink = Sink::default();
    let mut w = TcpFramed::new(sink.clone(), ConnConfig::default());
    w.start_frame(f.clone());
    match w.poll_flush(&mut noop_context()) {
        Poll::Ready(Ok(())) => {}
        other => panic!("flush into memory: {other:?}"),
    }
    let bytes = sink.0.lock().unwrap().clone();
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let max = MAXES[(config & 3) as usize];
    let chunk = 64usize << (config >> 2 & 7);
    let (sizes, stream) = split_spec(rest);
    let mut reader = TcpFramed::new(
        Chunked::new(stream, sizes),
        ConnConfig {
            max_message_size: max,
            read_buffer_size: chunk,
        },
    );
    let mut cx = noop_context();
    let mut at = 0;
    watch::start();
    for _ in 0..MAX_FRAMES {
        let f = match reader.poll_read_frame(&mut cx) {
            Poll::Ready(Ok(Some(f))) => f,
            Poll::Ready(Ok(None)) | Poll::Ready(Err(_)) => break,
            Poll::Pending => panic!("pending on a stream that never waits"),
        };
        watch::pause();
        let len = f.payload.len();
        assert!(len <= max, "payload of {len} bytes over the limit {max}");
        assert!(
            matches!(
                f.op,
                OpCode::Text | OpCode::Binary | OpCode::Close | OpCode::Ping | OpCode::Pong
            ),
            "opcode {:?}",
            f.op
        );
        if f.op == OpCode::Text {
            assert!(std::str::from_utf8(&f.payload).is_ok(), "text is not UTF-8");
        }
        let again = encode(&f);
        assert_eq!(
            &again[..],
            &stream[at..at + HEADER_LEN + len],
            "frame written again differs from the bytes read"
        );
        at += HEADER_LEN + len;
        watch::resume();
    }
    if let Some((size, fed)) = watch::stop() {
        panic!(
            "an allocation of {size} bytes after {fed} bytes fed (max message {max}, read size {chunk}): over twice the input plus {} KiB",
            watch::SLACK / 1024
        );
    }
});
