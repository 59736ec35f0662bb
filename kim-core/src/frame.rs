//! Frames: the unit every transport reads and writes.
//!
//! A frame is an [`OpCode`] and a [`Bytes`] payload. The opcode values are the websocket ones
//! (RFC 6455), and the raw TCP transport reuses them, so an application sees the same message
//! kinds whichever transport carries them. Payloads are reference-counted slices of the buffer
//! they were read into: a frame moves from the socket to the listener without being copied.

use std::fmt;

use bytes::Bytes;

/// The kind of a frame, with the websocket values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// A continuation of a fragmented message (websocket only).
    Continuation = 0,
    /// A UTF-8 text message.
    Text = 1,
    /// A binary message.
    Binary = 2,
    /// Closes the channel; the payload carries the reason.
    Close = 8,
    /// A heartbeat; answered with a [`OpCode::Pong`] carrying the same payload.
    Ping = 9,
    /// The answer to a ping.
    Pong = 10,
}

impl OpCode {
    /// Parses a wire value; `None` for values that no transport defines.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        Some(match value {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            _ => return None,
        })
    }

    /// True for close, ping and pong.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }

    /// True for text and binary: the frames that reach a [`MessageListener`](crate::MessageListener).
    pub fn is_data(self) -> bool {
        matches!(self, OpCode::Text | OpCode::Binary)
    }
}

/// One frame: an opcode and its payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is.
    pub op: OpCode,
    /// The payload, shared with the buffer it was read into.
    pub payload: Bytes,
}

impl Frame {
    /// A frame of any kind.
    pub fn new(op: OpCode, payload: impl Into<Bytes>) -> Frame {
        Frame {
            op,
            payload: payload.into(),
        }
    }

    /// A binary frame.
    pub fn binary(payload: impl Into<Bytes>) -> Frame {
        Frame::new(OpCode::Binary, payload)
    }

    /// A text frame. The caller vouches that the payload is UTF-8 (a `&str` or `String` always is).
    pub fn text(payload: impl Into<Bytes>) -> Frame {
        Frame::new(OpCode::Text, payload)
    }

    /// A ping frame.
    pub fn ping(payload: impl Into<Bytes>) -> Frame {
        Frame::new(OpCode::Ping, payload)
    }

    /// A pong frame.
    pub fn pong(payload: impl Into<Bytes>) -> Frame {
        Frame::new(OpCode::Pong, payload)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Payloads can be megabytes: show the length and a short prefix only.
        const SHOWN: usize = 32;
        let prefix = &self.payload[..self.payload.len().min(SHOWN)];
        f.debug_struct("Frame")
            .field("op", &self.op)
            .field("len", &self.payload.len())
            .field("payload", &String::from_utf8_lossy(prefix))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip_and_classify() {
        for v in 0u8..=255 {
            if let Some(op) = OpCode::from_u8(v) {
                assert_eq!(op as u8, v);
            }
        }
        assert_eq!(OpCode::from_u8(3), None);
        assert_eq!(OpCode::from_u8(11), None);
        assert!(OpCode::Ping.is_control() && OpCode::Close.is_control());
        assert!(!OpCode::Binary.is_control() && !OpCode::Continuation.is_control());
        assert!(OpCode::Text.is_data() && !OpCode::Pong.is_data());
    }

    #[test]
    fn debug_output_is_bounded() {
        let f = Frame::binary(vec![b'a'; 1 << 20]);
        assert!(format!("{f:?}").len() < 200);
    }
}
