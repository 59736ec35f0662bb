//! Frames: the unit every transport reads and writes.
//!
//! A frame is an [`OpCode`] and a [`Bytes`] payload. The opcode values are the websocket ones
//! (RFC 6455), and the raw TCP transport reuses them, so an application sees the same message
//! kinds whichever transport carries them. Payloads are reference-counted slices of the buffer
//! they were read into: a frame moves from the socket to the listener without being copied.

use std::borrow::Cow;
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

/// Why a channel is being closed: a websocket close code and a short human-readable reason.
///
/// The websocket transport sends both; the raw TCP transport sends the reason only (an
/// [`OpCode::Close`] frame whose payload is the reason text).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CloseReason {
    /// A websocket close status code (see the associated constants).
    pub code: u16,
    /// A short reason; at most 123 bytes go on the wire for websocket.
    pub reason: Cow<'static, str>,
}

impl CloseReason {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: u16 = 1000;
    /// 1001: the server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL: u16 = 1002;
    /// 1005: no status code was present (never sent; what a close without a code decodes to,
    /// and what raw TCP close frames, which carry only a reason, decode to).
    pub const NO_STATUS: u16 = 1005;
    /// 1003: a kind of data that cannot be accepted.
    pub const UNSUPPORTED: u16 = 1003;
    /// 1007: a text payload that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1008: a message that violates the server's policy (a rejected login, say).
    pub const POLICY: u16 = 1008;
    /// 1009: a frame or message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// 1011: the server failed while handling the connection.
    pub const INTERNAL: u16 = 1011;

    /// A reason with any code.
    pub fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> CloseReason {
        CloseReason {
            code,
            reason: reason.into(),
        }
    }

    /// A normal close (1000).
    pub fn normal(reason: impl Into<Cow<'static, str>>) -> CloseReason {
        CloseReason::new(Self::NORMAL, reason)
    }

    /// A policy violation (1008), used for rejected logins.
    pub fn policy(reason: impl Into<Cow<'static, str>>) -> CloseReason {
        CloseReason::new(Self::POLICY, reason)
    }

    /// A protocol error (1002).
    pub fn protocol(reason: impl Into<Cow<'static, str>>) -> CloseReason {
        CloseReason::new(Self::PROTOCOL, reason)
    }

    /// A frame or message over the limit (1009).
    pub fn too_big(reason: impl Into<Cow<'static, str>>) -> CloseReason {
        CloseReason::new(Self::TOO_BIG, reason)
    }
}

impl fmt::Debug for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.code, self.reason)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code == Self::NO_STATUS {
            f.write_str(&self.reason)
        } else {
            write!(f, "{} ({})", self.reason, self.code)
        }
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
