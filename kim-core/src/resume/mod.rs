//! Sessions that outlive their connection: every message numbered, held until acknowledged,
//! kept while the client is away, replayed when it comes back.
//!
//! A session begins at login when the [`Acceptor`](crate::Acceptor) asks for one
//! ([`Accepted::with_session`](crate::Accepted::with_session)). From then on every message
//! kim delivers to the channel (pushes by id, room messages, the app's replies) carries the
//! next number, 1, 2, 3, and is held until the client acknowledges it. When the transport is
//! lost without a clean close, the channel is *suspended* for a window: it stays in the
//! channel map and in its rooms, and what is pushed to it is held. A login that resumes (the
//! token and the last number received) takes the channel over: the held messages after that
//! number are replayed in order, exactly once, and the numbering goes on. Where that cannot
//! be done exactly, the client is told the session is new; there is never a partial replay.
//!
//! kim owns these rules; the bytes on the wire are the app's choice, through a
//! [`SessionCodec`]. [`DefaultCodec`] is the encoding `PROTOCOL.md` specifies, for client
//! libraries to implement.

mod codec;
pub(crate) mod suspended;
pub(crate) mod token;

use crate::conn::Handshake;
use crate::frame::Frame;

pub use codec::DefaultCodec;
pub use token::SessionToken;

/// The bytes a [`SessionCodec`] puts before a message's payload to number it: at most 32.
#[derive(Clone, Copy)]
pub struct Prefix {
    bytes: [u8; 32],
    len: u8,
}

impl Prefix {
    /// `bytes` as a prefix; `None` past 32 bytes.
    pub fn new(bytes: &[u8]) -> Option<Prefix> {
        let mut p = Prefix {
            bytes: [0; 32],
            len: u8::try_from(bytes.len()).ok().filter(|&n| n <= 32)?,
        };
        p.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(p)
    }

    /// `<seq> `: the number in decimal and a space, the default encoding's.
    ///
    /// Two digits a step from a table: every message a session delivers is numbered, and
    /// a division per digit was 3% of a room's fan-out to sessions.
    pub fn number(seq: u64) -> Prefix {
        const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
                                    2021222324252627282930313233343536373839\
                                    4041424344454647484950515253545556575859\
                                    6061626364656667686970717273747576777879\
                                    8081828384858687888990919293949596979899";
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = seq;
        while n >= 100 {
            let pair = (n % 100) as usize * 2;
            n /= 100;
            i -= 2;
            digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        }
        if n >= 10 {
            let pair = n as usize * 2;
            i -= 2;
            digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        } else {
            i -= 1;
            digits[i] = b'0' + n as u8;
        }
        let len = digits.len() - i;
        let mut p = Prefix {
            bytes: [0; 32],
            len: (len + 1) as u8,
        };
        p.bytes[..len].copy_from_slice(&digits[i..]);
        p.bytes[len] = b' ';
        p
    }

    /// The prefix's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prefix({:?})", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// What a login asks of sessions (see [`Accepted::with_session`](crate::Accepted::with_session)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionLogin {
    /// Begin a session.
    Start,
    /// Resume a session: its token (`None` when what the client sent is not a token, which
    /// can match no session) and the last number the client received (0 for none).
    Resume {
        /// The session's token.
        token: Option<SessionToken>,
        /// The last number received.
        last: u64,
    },
}

impl SessionLogin {
    /// A resume with the token as the client wrote it: text that is not a token is kept as
    /// one that matches nothing, so the client is told its session is new.
    pub fn resume(token: &str, last: u64) -> SessionLogin {
        SessionLogin::Resume {
            token: SessionToken::parse(token),
            last,
        }
    }

    /// `PROTOCOL.md`'s login in a websocket URL's query: `session=1` begins a session;
    /// `resume=<token>&last=<seq>` resumes one. `None` when the query asks for neither, or
    /// `last` is not a number.
    pub fn from_query(handshake: &Handshake) -> Option<SessionLogin> {
        if let Some(token) = handshake.query("resume") {
            let last = handshake.query("last").unwrap_or("0").parse().ok()?;
            return Some(SessionLogin::resume(token, last));
        }
        matches!(handshake.query("session"), Some("1" | "true")).then_some(SessionLogin::Start)
    }

    /// `PROTOCOL.md`'s login as a frame's text (raw TCP frames have no URL): `#session`
    /// begins a session, `#resume <token> <seq>` resumes one.
    pub fn parse(text: &str) -> Option<SessionLogin> {
        if text == "#session" {
            return Some(SessionLogin::Start);
        }
        let rest = text.strip_prefix("#resume ")?;
        let (token, last) = rest.split_once(' ')?;
        Some(SessionLogin::resume(token, last.parse().ok()?))
    }
}

/// How a session login turned out, as the client is told in the login's answer.
#[derive(Debug, Clone, Copy)]
pub enum Opened<'a> {
    /// A session began: the first message will be number 1.
    Started {
        /// Its token.
        token: &'a SessionToken,
    },
    /// The session was resumed: `replay` held messages follow, numbered on from the last
    /// one the client received.
    Resumed {
        /// Its token (the same as before).
        token: &'a SessionToken,
        /// Held messages replayed next.
        replay: u64,
    },
    /// The resume could not be done exactly (the window or a limit passed, the token unknown
    /// or another user's, a number never sent): a new session began, numbered from 1, with no
    /// rooms.
    New {
        /// The new session's token.
        token: &'a SessionToken,
    },
}

/// A frame the client sent in a session, as the codec reads it.
#[derive(Debug)]
pub enum Upstream {
    /// The client has every message up to this number.
    Ack(u64),
    /// A message for the app, with the client's own number if it gave one: kim acknowledges
    /// a numbered message once the listener took it, and hands a number already taken in
    /// this session to the listener only once.
    Message {
        /// The client's number.
        number: Option<u32>,
        /// The message, without the session's framing.
        frame: Frame,
    },
    /// A frame of the encoding's own that kim answers with this frame, unnumbered and not
    /// held, and that reaches no listener: a keep-alive (the default encoding's `#ping`,
    /// answered `#pong`), which a browser's client needs because it cannot send websocket
    /// pings, and which tells it its connection is alive.
    Answer(Frame),
    /// Not a frame of the encoding: the channel is closed with this reason (1002).
    Invalid(&'static str),
}

/// The bytes of sessions on the wire: the login's answer, a delivered message's number, and
/// what the client sends. kim calls it; the rules (what is numbered, held, replayed) are
/// kim's. [`DefaultCodec`] is `PROTOCOL.md`'s encoding.
pub trait SessionCodec: Send + Sync + 'static {
    /// The login's answer: sent first, unnumbered.
    fn opened(&self, opened: &Opened<'_>) -> Frame;

    /// Message `frame` as delivered with number `seq`.
    fn numbered(&self, seq: u64, frame: &Frame) -> Frame;

    /// When message `frame` numbered `seq` is a prefix followed by the message's own payload,
    /// with its opcode (as in the default encoding), that prefix: kim then writes the payload
    /// by reference, without a copy. `None` (the default) has every message go through
    /// [`SessionCodec::numbered`].
    fn prefix(&self, seq: u64) -> Option<Prefix> {
        let _ = seq;
        None
    }

    /// Reads a text or binary frame the client sent.
    fn read(&self, frame: Frame) -> Upstream;

    /// Acknowledges the client's message `number` (sent unnumbered).
    fn ack(&self, number: u32) -> Frame;
}
