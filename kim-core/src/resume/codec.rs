//! The default encoding of sessions on the wire, as `PROTOCOL.md` specifies it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::Frame;
use crate::resume::{Opened, Prefix, SessionCodec, Upstream};

/// `PROTOCOL.md`'s encoding, for client libraries to implement:
/// - the login's answer is a text frame `#ok <token>`, `#resumed <token> <n>` or
///   `#new <token>`;
/// - every message kim delivers is `<seq> <payload>`, with the message's opcode;
/// - the client acknowledges with `#ack <seq>`;
/// - the client's messages are `<n> <payload>`: `n` its own number (1 to 4294967295), which
///   kim acknowledges with `#ack <n>` once its listener took the message, or 0 for a
///   message it does not number.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultCodec;

/// `<number> <payload>`, with the frame's opcode.
pub(crate) fn prefixed(number: u64, frame: &Frame) -> Frame {
    let prefix = Prefix::number(number);
    let prefix = prefix.as_bytes();
    let mut out = BytesMut::with_capacity(prefix.len() + frame.payload.len());
    out.put_slice(prefix);
    out.put_slice(&frame.payload);
    Frame::new(frame.op, out.freeze())
}

/// Splits `<digits> <rest>`: the number and the rest, or `None`.
pub(crate) fn split_number(payload: &Bytes) -> Option<(u64, Bytes)> {
    let space = payload.iter().position(|&b| b == b' ')?;
    let digits = std::str::from_utf8(&payload[..space]).ok()?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = digits.parse().ok()?;
    Some((n, payload.slice(space + 1..)))
}

impl SessionCodec for DefaultCodec {
    fn opened(&self, opened: &Opened<'_>) -> Frame {
        Frame::text(match opened {
            Opened::Started { token } => format!("#ok {token}"),
            Opened::Resumed { token, replay } => format!("#resumed {token} {replay}"),
            Opened::New { token } => format!("#new {token}"),
        })
    }

    fn numbered(&self, seq: u64, frame: &Frame) -> Frame {
        prefixed(seq, frame)
    }

    fn prefix(&self, seq: u64) -> Option<Prefix> {
        Some(Prefix::number(seq))
    }

    fn read(&self, frame: Frame) -> Upstream {
        if frame.payload == b"#ping"[..] {
            return Upstream::Answer(Frame::text("#pong"));
        }
        if let Some(rest) = frame.payload.strip_prefix(b"#ack ") {
            return match std::str::from_utf8(rest).ok().and_then(|s| s.parse().ok()) {
                Some(seq) => Upstream::Ack(seq),
                None => Upstream::Invalid("an ack's number is not a number"),
            };
        }
        match split_number(&frame.payload) {
            Some((0, payload)) => Upstream::Message {
                number: None,
                frame: Frame::new(frame.op, payload),
            },
            Some((n, payload)) => match u32::try_from(n) {
                Ok(n) => Upstream::Message {
                    number: Some(n),
                    frame: Frame::new(frame.op, payload),
                },
                Err(_) => Upstream::Invalid("a message's number is over 4294967295"),
            },
            None => Upstream::Invalid("a message in a session is not '<n> <payload>'"),
        }
    }

    fn ack(&self, number: u32) -> Frame {
        Frame::text(format!("#ack {number}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;
    use crate::resume::token::SessionToken;

    #[test]
    fn numbers_are_written_in_decimal_with_a_space() {
        let mut samples: Vec<u64> = (0..=1000).collect();
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            samples.extend([p - 1, p, p + 1, next - 1]);
            p = next;
        }
        samples.extend([u64::MAX - 1, u64::MAX, 4_294_967_295, 4_294_967_296]);
        for n in samples {
            assert_eq!(Prefix::number(n).as_bytes(), format!("{n} ").as_bytes());
        }
    }

    #[test]
    fn the_default_encoding() {
        let c = DefaultCodec;
        let token = SessionToken::parse("00112233445566778899aabbccddeeff").unwrap();
        let opened = c.opened(&Opened::Resumed {
            token: &token,
            replay: 3,
        });
        assert_eq!(
            opened.payload,
            "#resumed 00112233445566778899aabbccddeeff 3"
        );
        let n = c.numbered(42, &Frame::binary(&b"\x00hi"[..]));
        assert_eq!((n.op, &n.payload[..]), (OpCode::Binary, &b"42 \x00hi"[..]));
        assert!(matches!(c.read(Frame::text("#ack 7")), Upstream::Ack(7)));
        match c.read(Frame::text("#ping")) {
            Upstream::Answer(pong) => assert_eq!(pong.payload, "#pong"),
            other => panic!("#ping read as {other:?}"),
        }
        assert!(matches!(
            c.read(Frame::text("#ping now")),
            Upstream::Invalid(_)
        ));
        assert!(matches!(
            c.read(Frame::text("#ack x")),
            Upstream::Invalid(_)
        ));
        match c.read(Frame::text("5 hello world")) {
            Upstream::Message { number, frame } => {
                assert_eq!((number, &frame.payload[..]), (Some(5), &b"hello world"[..]))
            }
            _ => panic!("a numbered message"),
        }
        match c.read(Frame::text("0 x")) {
            Upstream::Message { number, .. } => assert_eq!(number, None),
            _ => panic!("an unnumbered message"),
        }
        assert!(matches!(c.read(Frame::text("hello")), Upstream::Invalid(_)));
        assert!(matches!(
            c.read(Frame::text("99999999999 x")),
            Upstream::Invalid(_)
        ));
        assert_eq!(c.ack(9).payload, "#ack 9");
        assert_eq!(prefixed(0, &Frame::text("")).payload, "0 ");
        assert_eq!(
            prefixed(u64::MAX, &Frame::text("")).payload,
            "18446744073709551615 "
        );
    }
}
