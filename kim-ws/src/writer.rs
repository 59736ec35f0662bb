//! Writing websocket frames (RFC 6455 section 5), for both ends of a connection.
//!
//! The server's writer sends frames unmasked through kim-core's `WriteBuffer`: small payloads
//! are copied beside their headers and go out with one `send`, payloads over
//! [`COPY_THRESHOLD`](kim_io::COPY_THRESHOLD) by reference with a vectored write. The
//! client's writer must mask, which means writing a masked copy. With permessage-deflate, data
//! messages of at least the threshold go out compressed with RSV1, and a room's publish is
//! compressed once for every writer with the same settings.

use std::io;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use kim_core::{CloseReason, Frame, FrameWriter, OpCode, SharedFrame};
use tokio::io::AsyncWrite;

use crate::codec::{apply_mask, is_valid_close_code, MAX_CONTROL_PAYLOAD, RSV1};
use crate::deflate::Deflater;
use crate::stream::{Role, WsStream};

impl<IO> WsStream<IO> {
    /// Queues one whole frame whose header starts with `first` (FIN, RSV bits, opcode).
    fn queue(&mut self, first: u8, payload: Bytes) {
        let len = payload.len();
        match self.role {
            Role::Server => {
                let n = put_raw_header(self.wbuf.staging(), first, len, None);
                self.wbuf.staged(n);
                self.wbuf.push_payload(payload);
            }
            Role::Client => {
                let mask = next_mask();
                let staging = self.wbuf.staging();
                let n = put_raw_header(staging, first, len, Some(mask));
                let start = staging.len();
                staging.extend_from_slice(&payload);
                apply_mask(&mut staging[start..], mask, 0);
                self.wbuf.staged(n + len);
            }
        }
    }
}

/// The next client mask, from a generator per thread: kept in the writer, its state would
/// take 8 bytes of every server-side writer too.
fn next_mask() -> [u8; 4] {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0x006b_696d_u64) | 1
        });
    }
    // xorshift64*: fast, and unpredictable enough for masking, whose purpose is to stop
    // intermediaries from interpreting client data, not secrecy.
    let x = STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x
    });
    ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32).to_ne_bytes()
}

/// A whole unmasked frame, header and payload, in one buffer.
fn server_frame(first: u8, payload: &[u8]) -> Bytes {
    let mut wire = BytesMut::with_capacity(10 + payload.len());
    put_raw_header(&mut wire, first, payload.len(), None);
    wire.extend_from_slice(payload);
    wire.freeze()
}

/// Encodes a header whose first byte (FIN, RSV bits, opcode) is given as it is.
fn put_raw_header(dst: &mut BytesMut, first: u8, len: usize, mask: Option<[u8; 4]>) -> usize {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    dst.put_u8(first);
    let mut n = 2;
    if len < 126 {
        dst.put_u8(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        dst.put_u8(mask_bit | 126);
        dst.put_u16(len as u16);
        n += 2;
    } else {
        dst.put_u8(mask_bit | 127);
        dst.put_u64(len as u64);
        n += 8;
    }
    if let Some(m) = mask {
        dst.put_slice(&m);
        n += 4;
    }
    n
}

/// Encodes one whole frame with `first` as its first byte (FIN, RSV bits and opcode, taken as
/// they are, valid or not) and the payload masked with `mask` if one is given. For load
/// generators that send the same bytes again and again, and for tests that must send frames a
/// correct peer never would.
pub fn encode_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(14 + payload.len());
    let n = put_raw_header(&mut out, first, payload.len(), mask);
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[n..], m, 0);
    }
    out.to_vec()
}

impl<IO: AsyncWrite + Send + Unpin + 'static> FrameWriter for WsStream<IO> {
    fn start_frame(&mut self, frame: Frame) {
        let first = 0x80 | frame.op as u8;
        if let (Some(d), OpCode::Text | OpCode::Binary) = (self.deflater.as_mut(), frame.op) {
            if let Some(packed) = Deflater::deflate(d, &frame.payload) {
                return self.queue(first | RSV1, packed);
            }
        }
        self.queue(first, frame.payload);
    }

    fn start_prefixed(&mut self, prefix: &[u8], frame: &Frame) {
        let data = matches!(frame.op, OpCode::Text | OpCode::Binary);
        if self.role == Role::Client || (self.deflater.is_some() && data) {
            // Masked or compressed: the prefix and the payload are one input.
            let mut payload = BytesMut::with_capacity(prefix.len() + frame.payload.len());
            payload.extend_from_slice(prefix);
            payload.extend_from_slice(&frame.payload);
            return self.start_frame(Frame::new(frame.op, payload.freeze()));
        }
        let len = prefix.len() + frame.payload.len();
        let staging = self.wbuf.staging();
        let n = put_raw_header(staging, 0x80 | frame.op as u8, len, None);
        staging.extend_from_slice(prefix);
        self.wbuf.staged(n + prefix.len());
        self.wbuf.push_shared(&frame.payload);
    }

    fn encode_shared(frame: &Frame) -> Option<Bytes> {
        Some(server_frame(0x80 | frame.op as u8, &frame.payload))
    }

    fn start_shared(&mut self, shared: &SharedFrame) {
        let (Role::Server, Some(wire)) = (self.role, shared.wire()) else {
            return self.start_frame(shared.frame().clone());
        };
        let frame = shared.frame();
        let data = matches!(frame.op, OpCode::Text | OpCode::Binary);
        match self.deflater.as_mut() {
            // A server's frames are not masked: the shared bytes are this writer's own.
            None => self.wbuf.push_shared(wire),
            Some(_) if !data => self.wbuf.push_shared(wire),
            Some(d) => match d.shared_key() {
                // Compressed once for every member with the same settings: the first
                // writer to need it compresses, the others reuse its bytes.
                Some(key) => {
                    let made = shared.variant(key, || match Deflater::deflate(d, &frame.payload) {
                        Some(packed) => server_frame(0x80 | RSV1 | frame.op as u8, &packed),
                        None => wire.clone(),
                    });
                    match made {
                        Some(bytes) => self.wbuf.push_shared(bytes),
                        None => self.start_frame(frame.clone()),
                    }
                }
                None => self.start_frame(frame.clone()),
            },
        }
    }

    fn close_frame(&self, reason: &CloseReason) -> Frame {
        if reason.code == CloseReason::NO_STATUS || !is_valid_close_code(reason.code) {
            return Frame::new(OpCode::Close, Bytes::new());
        }
        let mut text = reason.reason.as_ref();
        if text.len() > MAX_CONTROL_PAYLOAD - 2 {
            let mut end = MAX_CONTROL_PAYLOAD - 2;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text = &text[..end];
        }
        let mut p = BytesMut::with_capacity(2 + text.len());
        p.put_u16(reason.code);
        p.put_slice(text.as_bytes());
        Frame::new(OpCode::Close, p.freeze())
    }

    fn pending(&self) -> usize {
        self.wbuf.pending()
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.answer_pending = false;
        self.wbuf.poll_flush(&mut self.io, cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wbuf.poll_shutdown(&mut self.io, cx)
    }
}
