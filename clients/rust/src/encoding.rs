//! The bytes of sessions as a client reads and writes them: [`DefaultEncoding`] is
//! `PROTOCOL.md`'s; an app whose server uses its own `SessionCodec` gives the
//! [`SessionClient`](crate::SessionClient) its own [`Encoding`].

use bytes::{BufMut, Bytes, BytesMut};
use kim_core::{Frame, OpCode};

/// How a login's session turned out, as the server said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// A session began (the first login, or one after the server ended the previous).
    Started,
    /// The session was resumed: exactly the missed messages follow.
    Resumed,
    /// A resume could not be done exactly: a new session began, and the app resyncs.
    New,
}

/// A frame from the server in a session, as an [`Encoding`] reads it.
#[derive(Debug)]
pub enum ServerFrame {
    /// The login's answer: how, the session's token, and the messages replayed next.
    Opened {
        /// Started, resumed or new.
        how: How,
        /// The token to resume with.
        token: String,
        /// Held messages replayed next (resumed only).
        replay: u64,
    },
    /// A message numbered `seq`, without its number.
    Message {
        /// Its number in the session.
        seq: u64,
        /// The message.
        frame: Frame,
    },
    /// The server's app took the client's messages up to this number.
    Ack(u32),
    /// The answer to the encoding's keep-alive.
    Pong,
    /// Anything else (the app's login reply, say).
    Other(Frame),
}

impl ServerFrame {
    /// The login's answer.
    pub fn opened(how: How, token: &str, replay: u64) -> ServerFrame {
        ServerFrame::Opened {
            how,
            token: token.to_string(),
            replay,
        }
    }

    /// A numbered message `<seq> <payload>` (`seq` from 1, in decimal) as
    /// [`ServerFrame::Message`] without its number, with `frame`'s opcode; anything else as
    /// [`ServerFrame::Other`]. The default encoding numbers messages this way, and so may
    /// another.
    pub fn numbered(frame: Frame) -> ServerFrame {
        match split_number(&frame.payload) {
            Some((seq, payload)) if seq > 0 => ServerFrame::Message {
                seq,
                frame: Frame::new(frame.op, payload),
            },
            _ => ServerFrame::Other(frame),
        }
    }
}

/// The bytes of sessions on the wire, the client's side.
pub trait Encoding: Send + Sync + 'static {
    /// Reads a text or binary frame the server sent.
    fn read(&self, frame: Frame) -> ServerFrame;
    /// The acknowledgement of every message up to `seq`.
    fn ack(&self, seq: u64) -> Frame;
    /// A message of the client's: numbered `n`, or unnumbered for `None`. An encoding whose
    /// clients do not number their messages sends `frame` as it is.
    fn message(&self, n: Option<u32>, frame: &Frame) -> Frame;
    /// Whether the client numbers its messages (and so keeps them until acknowledged).
    fn numbers_upstream(&self) -> bool;
    /// The encoding's keep-alive, if it has one (answered by [`ServerFrame::Pong`]). Without
    /// one, the client sends protocol pings, which a websocket server answers with pongs.
    fn ping(&self) -> Option<Frame>;
}

/// `PROTOCOL.md`'s default encoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultEncoding;

/// A decimal number without sign or leading zeros.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Splits `<seq> <rest>`.
fn split_number(payload: &Bytes) -> Option<(u64, Bytes)> {
    let space = payload.iter().position(|&b| b == b' ')?;
    let seq = decimal(&payload[..space])?;
    Some((seq, payload.slice(space + 1..)))
}

impl Encoding for DefaultEncoding {
    fn read(&self, frame: Frame) -> ServerFrame {
        let p = &frame.payload;
        if frame.op == OpCode::Text && p.first() == Some(&b'#') {
            let text = String::from_utf8_lossy(p);
            let parts: Vec<&str> = text.split(' ').collect();
            let opened = ServerFrame::opened;
            match parts[..] {
                ["#ok", token] if !token.is_empty() => return opened(How::Started, token, 0),
                ["#new", token] if !token.is_empty() => return opened(How::New, token, 0),
                ["#resumed", token, n] if !token.is_empty() => {
                    if let Some(n) = decimal(n.as_bytes()) {
                        return opened(How::Resumed, token, n);
                    }
                }
                ["#ack", n] => {
                    if let Some(n) = decimal(n.as_bytes()).and_then(|n| u32::try_from(n).ok()) {
                        return ServerFrame::Ack(n);
                    }
                }
                ["#pong"] => return ServerFrame::Pong,
                _ => {}
            }
            return ServerFrame::Other(frame);
        }
        ServerFrame::numbered(frame)
    }

    fn ack(&self, seq: u64) -> Frame {
        Frame::text(format!("#ack {seq}"))
    }

    fn message(&self, n: Option<u32>, frame: &Frame) -> Frame {
        let head = format!("{} ", n.unwrap_or(0));
        let mut out = BytesMut::with_capacity(head.len() + frame.payload.len());
        out.put_slice(head.as_bytes());
        out.put_slice(&frame.payload);
        Frame::new(frame.op, out.freeze())
    }

    fn numbers_upstream(&self) -> bool {
        true
    }

    fn ping(&self) -> Option<Frame> {
        Some(Frame::text("#ping"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_default_encoding() {
        let e = DefaultEncoding;
        let token = "00112233445566778899aabbccddeeff";
        match e.read(Frame::text(format!("#resumed {token} 3"))) {
            ServerFrame::Opened {
                how,
                token: t,
                replay,
            } => {
                assert_eq!((how, t.as_str(), replay), (How::Resumed, token, 3))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            e.read(Frame::text(format!("#ok {token}"))),
            ServerFrame::Opened {
                how: How::Started,
                ..
            }
        ));
        assert!(matches!(e.read(Frame::text("#ack 7")), ServerFrame::Ack(7)));
        assert!(matches!(e.read(Frame::text("#pong")), ServerFrame::Pong));
        match e.read(Frame::binary(&b"12 \x00\xff"[..])) {
            ServerFrame::Message { seq, frame } => {
                assert_eq!((seq, &frame.payload[..]), (12, &b"\x00\xff"[..]));
                assert_eq!(frame.op, OpCode::Binary);
            }
            other => panic!("{other:?}"),
        }
        for other in [
            "0 zero",
            "012 leading",
            "x 1",
            "#ack x",
            "#resumed t",
            "hello",
        ] {
            assert!(
                matches!(e.read(Frame::text(other)), ServerFrame::Other(_)),
                "{other}"
            );
        }
        let m = e.message(Some(5), &Frame::text("hi"));
        assert_eq!(m.payload, "5 hi");
        assert_eq!(e.message(None, &Frame::text("hi")).payload, "0 hi");
        assert_eq!(e.ack(9).payload, "#ack 9");
    }
}
