//! One websocket connection's codec over its stream: what it reads, what it writes, and the
//! state of both.
//!
//! A server's connection is one [`WsStream`] over the whole socket, driven by the channel's
//! one task: no halves, so no allocation shared between them. A client, which reads in one
//! task while others write, has one over the read half and one over the write half; each uses
//! its side of the state. One type for both keeps the fields in one struct, which packs them
//! tighter than a reader and a writer nested side by side would: a server's stream over TCP
//! is 104 bytes of every idle connection's task.
//!
//! Reading is in `codec.rs`, writing in `writer.rs`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kim_core::OpCode;
use kim_io::{ReadBuffer, WriteBuffer};

use crate::deflate::{Deflater, Inflater};

/// Which end of the connection a codec serves: the server expects masked frames and sends
/// unmasked ones; the client the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The accepting end.
    Server,
    /// The connecting end.
    Client,
}

/// A message being reassembled from fragments.
#[derive(Debug)]
pub(crate) struct FragmentedMessage {
    pub(crate) op: OpCode,
    /// Compressed: the fragments are inflated together once the last one arrives.
    pub(crate) compressed: bool,
    pub(crate) data: BytesMut,
    /// For text: how much of `data` is known to be valid UTF-8.
    pub(crate) valid: usize,
}

/// A message size limit as a reader keeps it.
pub(crate) fn limit(max: usize) -> u32 {
    max.min(u32::MAX as usize) as u32
}

/// A websocket connection over `IO`: reads frames when `IO` reads ([`FrameReader`]), writes
/// them when it writes ([`FrameWriter`]).
///
/// [`FrameReader`]: kim_core::FrameReader
/// [`FrameWriter`]: kim_core::FrameWriter
#[derive(Debug)]
pub struct WsStream<IO> {
    pub(crate) io: IO,
    /// What was read and not yet decoded.
    pub(crate) rbuf: ReadBuffer,
    /// What is queued to be written.
    pub(crate) wbuf: WriteBuffer,
    /// Boxed: idle connections carry a pointer, not the reassembly state.
    pub(crate) partial: Option<Box<FragmentedMessage>>,
    /// Set when permessage-deflate was negotiated.
    pub(crate) inflater: Option<Arc<Inflater>>,
    pub(crate) deflater: Option<Arc<Deflater>>,
    /// The largest message accepted. (`u32`, like the counts below, to keep the stream small:
    /// each lives in an idle connection's task. Larger limits are taken as 4 GiB.)
    pub(crate) max: u32,
    /// Of the text frame being received: payload bytes already unmasked in the buffer, and
    /// how many of them are known to be valid UTF-8 (so a bad byte fails before the frame
    /// is complete).
    pub(crate) unmasked: u32,
    pub(crate) valid: u32,
    pub(crate) role: Role,
    /// Set while the handshake's answer is queued and nothing was written yet: the upgrade
    /// can still be refused with an HTTP status instead.
    pub(crate) answer_pending: bool,
}

impl<IO> WsStream<IO> {
    /// A stream for `role` over `io` accepting messages of up to `max` bytes, starting with
    /// the bytes in `buf`, already read from `io` (those that followed the handshake). A
    /// stream that only writes takes `ReadBuffer::new(0)`, which allocates nothing.
    pub fn new(io: IO, role: Role, max: usize, buf: ReadBuffer) -> WsStream<IO> {
        WsStream {
            io,
            rbuf: buf,
            wbuf: WriteBuffer::new(),
            partial: None,
            inflater: None,
            deflater: None,
            max: limit(max),
            unmasked: 0,
            valid: 0,
            role,
            answer_pending: false,
        }
    }

    /// Reads permessage-deflate messages (RSV1) with `inflater`.
    pub(crate) fn with_inflater(mut self, inflater: Option<Arc<Inflater>>) -> WsStream<IO> {
        self.inflater = inflater;
        self
    }

    /// Sends data messages of at least the deflater's threshold compressed (RSV1).
    pub(crate) fn with_deflater(mut self, deflater: Option<Arc<Deflater>>) -> WsStream<IO> {
        self.deflater = deflater;
        self
    }

    /// Queues the handshake's `answer` ahead of every frame: it goes out with the first
    /// flush, so that until then the upgrade can still be refused.
    pub(crate) fn with_answer(mut self, answer: Bytes) -> WsStream<IO> {
        self.wbuf.push_payload(answer);
        self.answer_pending = true;
        self
    }

    /// Drops the queued handshake answer (and anything queued after it) if nothing was written
    /// yet, and hands over the stream to answer otherwise. `None` once it is too late.
    pub(crate) fn withdraw_answer(&mut self) -> Option<&mut IO> {
        if !self.answer_pending {
            return None;
        }
        self.answer_pending = false;
        self.wbuf.clear();
        Some(&mut self.io)
    }
}
