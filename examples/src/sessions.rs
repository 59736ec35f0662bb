//! The mock protocol's sessions: its own text encoding of what `PROTOCOL.md` encodes for
//! kim's client libraries.
//!
//! - Login `<id> session`: answered `ok <token>`; from then on every frame the server sends
//!   is `<seq> <text>`, `<text>` what the mock protocol sends without sessions.
//! - `/ack <seq>` from the client acknowledges everything up to `<seq>` (no reply).
//! - Login `<id> resume <token> <seq>` (`<seq>` the last number received, 0 for none):
//!   answered `resumed <token> <n>` and the `n` held messages after `<seq>`, or `new <token>`.
//!
//! The answers are binary frames, like the mock protocol's `ok`.
//!
//! mock-server `--encoding default` speaks `PROTOCOL.md`'s default encoding instead (what
//! kim's client libraries speak), with the login of [`ProtocolAcceptor`].

use bytes::Bytes;
use kim_core::{
    Accepted, Acceptor, DefaultCodec, Frame, LoginConn, Opened, Prefix, Reject, SessionCodec,
    SessionLogin, Upstream,
};

/// The mock protocol's login for `PROTOCOL.md`'s default encoding of sessions. Over websocket
/// with a `token` query parameter, that parameter is the user id (the mock's credential) and
/// the session is asked for in the query as `PROTOCOL.md` says (`session=1`, or
/// `resume=<token>&last=<seq>`); otherwise (over TCP frames, say) the first frame is `<id>`,
/// `<id> #session` or `<id> #resume <token> <seq>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProtocolAcceptor;

impl Acceptor for ProtocolAcceptor {
    async fn accept(&self, login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
        let query = login
            .handshake()
            .and_then(|h| Some((h.query("token")?.to_string(), SessionLogin::from_query(h))));
        let (id, session) = match query {
            Some(login) => login,
            None => {
                let frame = login.read_frame().await?;
                let text = std::str::from_utf8(&frame.payload)
                    .map_err(|_| Reject::new("invalid user id: not UTF-8"))?;
                match text.split_once(' ') {
                    Some((id, rest)) => match SessionLogin::parse(rest) {
                        Some(session) => (id.to_string(), Some(session)),
                        None => (text.to_string(), None),
                    },
                    None => (text.to_string(), None),
                }
            }
        };
        if id.is_empty() || id.len() > crate::MAX_ID_LEN {
            return Err(Reject::new(format!(
                "invalid user id: must be 1 to {} bytes",
                crate::MAX_ID_LEN
            )));
        }
        Ok(match session {
            // `#ok <token>`, `#resumed ...` or `#new ...`: DefaultCodec's.
            Some(session) => Accepted::new(id).with_session(session),
            None => Accepted::new(id).with_reply(Frame::binary(Bytes::from_static(b"ok"))),
        })
    }
}

/// A mock login: the id, and the session it begins or resumes, if any. Ids used with sessions
/// contain no spaces; a frame of another form is an id as it is.
pub fn parse_login(text: &str) -> (&str, Option<SessionLogin>) {
    let parts: Vec<&str> = text.split(' ').collect();
    match parts[..] {
        [id, "session"] if !id.is_empty() => (id, Some(SessionLogin::Start)),
        [id, "resume", token, seq] if !id.is_empty() => match seq.parse() {
            Ok(last) => (id, Some(SessionLogin::resume(token, last))),
            Err(_) => (text, None),
        },
        _ => (text, None),
    }
}

/// The mock protocol's encoding of sessions.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockCodec;

impl SessionCodec for MockCodec {
    fn opened(&self, opened: &Opened<'_>) -> Frame {
        let text = match opened {
            Opened::Started { token } => format!("ok {token}"),
            Opened::Resumed { token, replay } => format!("resumed {token} {replay}"),
            Opened::New { token } => format!("new {token}"),
        };
        Frame::binary(text)
    }

    fn numbered(&self, seq: u64, frame: &Frame) -> Frame {
        // `<seq> <text>`: the same bytes as PROTOCOL.md's numbered messages.
        DefaultCodec.numbered(seq, frame)
    }

    fn prefix(&self, seq: u64) -> Option<Prefix> {
        Some(Prefix::number(seq))
    }

    fn read(&self, frame: Frame) -> Upstream {
        let ack = frame
            .payload
            .strip_prefix(b"/ack ")
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse().ok());
        match ack {
            Some(seq) => Upstream::Ack(seq),
            None => Upstream::Message {
                number: None,
                frame,
            },
        }
    }

    fn ack(&self, number: u32) -> Frame {
        // The mock protocol does not number what clients send; never called.
        Frame::binary(Bytes::from(format!("/ack {number}")))
    }
}

/// The mock protocol's sessions as a client speaks them (mock-client `--session`, through
/// kim-client's `SessionClient`): the answers `ok <token>`, `resumed <token> <n>` and
/// `new <token>`, messages `<seq> <text>`, `/ack <seq>`; the client does not number its own
/// messages, and keeps the connection alive with protocol pings.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockClientEncoding;

impl kim_client::Encoding for MockClientEncoding {
    fn read(&self, frame: Frame) -> kim_client::ServerFrame {
        use kim_client::{How, ServerFrame};
        let text = String::from_utf8_lossy(&frame.payload);
        let parts: Vec<&str> = text.split(' ').collect();
        let opened = ServerFrame::opened;
        match parts[..] {
            ["ok", token] => return opened(How::Started, token, 0),
            ["new", token] => return opened(How::New, token, 0),
            ["resumed", token, n] => {
                if let Ok(n) = n.parse() {
                    return opened(How::Resumed, token, n);
                }
            }
            _ => {}
        }
        ServerFrame::numbered(frame)
    }

    fn ack(&self, seq: u64) -> Frame {
        Frame::text(format!("/ack {seq}"))
    }

    fn message(&self, _: Option<u32>, frame: &Frame) -> Frame {
        frame.clone()
    }

    fn numbers_upstream(&self) -> bool {
        false
    }

    fn ping(&self) -> Option<Frame> {
        None
    }
}

/// Splits a numbered frame `<seq> <text>` into its number and text.
pub fn parse_numbered(payload: &[u8]) -> Option<(u64, &[u8])> {
    let space = payload.iter().position(|&b| b == b' ')?;
    let seq = std::str::from_utf8(&payload[..space]).ok()?.parse().ok()?;
    Some((seq, &payload[space + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_and_frames() {
        assert_eq!(parse_login("alice"), ("alice", None));
        assert_eq!(
            parse_login("alice session"),
            ("alice", Some(SessionLogin::Start))
        );
        assert_eq!(
            parse_login("al ice"),
            ("al ice", None),
            "other forms are ids as today"
        );
        let (id, s) = parse_login("bob resume 00112233445566778899aabbccddeeff 7");
        assert_eq!(id, "bob");
        assert!(matches!(
            s,
            Some(SessionLogin::Resume {
                token: Some(_),
                last: 7
            })
        ));
        let (_, s) = parse_login("bob resume forged 7");
        assert!(matches!(
            s,
            Some(SessionLogin::Resume {
                token: None,
                last: 7
            })
        ));
        assert_eq!(parse_login("bob resume t x").1, None);
        let n = MockCodec.numbered(12, &Frame::text("alice: hi"));
        assert_eq!(n.payload, "12 alice: hi");
        assert_eq!(parse_numbered(&n.payload), Some((12, &b"alice: hi"[..])));
        assert!(matches!(
            MockCodec.read(Frame::text("/ack 5")),
            Upstream::Ack(5)
        ));
        assert!(matches!(
            MockCodec.read(Frame::text("/ack x")),
            Upstream::Message { .. }
        ));
    }
}
