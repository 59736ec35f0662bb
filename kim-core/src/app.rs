//! The three traits an IM app implements: [`Acceptor`] (login), [`MessageListener`] (each
//! message from a client) and [`StateListener`] (a channel is gone).
//!
//! kim calls them; it never asks them to enforce deadlines or manage sockets. The acceptor runs
//! under the server's login deadline, the listener is called once per message in each
//! channel's order (channels are handled concurrently), and the state listener hears of every
//! channel that logged in exactly once, after it has left the channel map.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::channel::id::{ChannelId, Meta};
use crate::channel::Channel;
use crate::close::CloseReason;
use crate::conn::{Framed, Handshake};
use crate::error::{LoginError, ReadError};
use crate::frame::{Frame, OpCode};
use crate::hub::Hub;
use crate::resume::SessionLogin;

/// Decides who a new connection is: reads login frames, checks credentials, and returns the
/// channel id (or a rejection).
pub trait Acceptor: Send + Sync + 'static {
    /// Logs a connection in. The server enforces its login deadline around this call and
    /// closes the connection with the rejection's reason on `Err`.
    fn accept(
        &self,
        login: &mut LoginConn<'_>,
    ) -> impl Future<Output = Result<Accepted, Reject>> + Send;
}

/// Handles each message a client sends after login.
pub trait MessageListener: Send + Sync + 'static {
    /// Called once per text or binary message, in the channel's order; the channel reads its
    /// next message only when this returns. `agent` pushes replies to the sender; its
    /// [`server`](crate::Channel::server) pushes to anyone.
    ///
    /// If the connection ends while the returned future is pending (the peer is gone, a
    /// deadline passed, or the shutdown deadline), the future is dropped at its next await.
    fn receive(&self, agent: &Channel, message: Frame) -> impl Future<Output = ()> + Send;
}

/// Hears that a channel logged in and that it is gone: the place for presence ("alice is
/// online"), join and leave notices, and per-user state.
///
/// Both are called with the channel's [`Channel`], so they reach the server as every callback
/// does ([`Channel::server`](crate::Channel::server)), in-process and in a worker process alike.
pub trait StateListener: Send + Sync + 'static {
    /// Called once for every channel that logged in: it is in the channel map and pushes reach
    /// it, and none of its messages has reached the [`MessageListener`] yet (they wait for this
    /// to return). A refused login (rejected, timed out, a refused duplicate) is never
    /// announced.
    fn login(&self, agent: &Channel) -> impl Future<Output = ()> + Send {
        let _ = agent;
        async {}
    }

    /// Called exactly once for every channel whose [`login`](StateListener::login) was called,
    /// after it left the channel map (pushes to it fail from then on). With a session, that
    /// is when the session ends (a clean close, a close the server decided, or the window
    /// passed), not when its connection is lost.
    fn disconnect(&self, agent: &Channel) -> impl Future<Output = ()> + Send;

    /// A channel with a session lost its connection without a clean close: the session is
    /// suspended, pushes to it are held, and it stays in its rooms, until a resume
    /// ([`resume`](StateListener::resume)) or the window's end
    /// ([`disconnect`](StateListener::disconnect)). A resume that comes while this runs may
    /// start its own event before this one returns.
    fn suspend(&self, agent: &Channel) -> impl Future<Output = ()> + Send {
        let _ = agent;
        async {}
    }

    /// A suspended session (or one whose old connection still looked open) was resumed by a
    /// new connection: held messages are replayed to it. Like
    /// [`login`](StateListener::login), its messages wait for this to return.
    fn resume(&self, agent: &Channel) -> impl Future<Output = ()> + Send {
        let _ = agent;
        async {}
    }
}

/// A state listener that ignores logins and disconnects.
impl StateListener for () {
    async fn disconnect(&self, _: &Channel) {}
}

/// A successful login: the channel's id, its metadata, an optional first frame for the
/// client (sent only once the channel is registered, so a login that turns out to be a
/// duplicate is never told "ok"), and whether it begins or resumes a session.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The channel id; must be unique among connected channels.
    pub id: ChannelId,
    /// Metadata kept with the channel.
    pub meta: Meta,
    /// A frame sent to the client once it is registered, before anything pushed to it (with
    /// a session: after the session's answer, unnumbered).
    pub reply: Option<Frame>,
    /// A session begun or resumed by this login (see [`crate::resume`]).
    pub session: Option<SessionLogin>,
}

impl Accepted {
    /// A login as `id`, with no metadata and no reply.
    pub fn new(id: impl Into<ChannelId>) -> Accepted {
        Accepted {
            id: id.into(),
            meta: Meta::new(),
            reply: None,
            session: None,
        }
    }

    /// Attaches metadata.
    pub fn with_meta(mut self, meta: Meta) -> Accepted {
        self.meta = meta;
        self
    }

    /// Sends `frame` to the client once the channel is registered.
    pub fn with_reply(mut self, frame: Frame) -> Accepted {
        self.reply = Some(frame);
        self
    }

    /// Begins a session ([`SessionLogin::Start`]) or resumes one ([`SessionLogin::Resume`]):
    /// the client is answered by the server's [`SessionCodec`](crate::resume::SessionCodec)
    /// with the session's token and how the login turned out, and every message delivered to
    /// the channel is numbered and held until acknowledged. A resume replaces a fresh login:
    /// the acceptor authenticates the client as for any login, and kim checks that the
    /// session is this id's and its token.
    pub fn with_session(mut self, session: SessionLogin) -> Accepted {
        self.session = Some(session);
        self
    }
}

/// A refused login: the connection is closed with this reason (websocket code 1008 unless
/// another is set), or, where the transport has one and it is not too late, refused with a
/// status of its own (see [`Reject::with_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Sent to the client in the close frame.
    pub reason: CloseReason,
    /// The transport's own refusal, if the transport has one: for websocket, the HTTP status
    /// sent instead of the `101`.
    pub status: Option<u16>,
}

impl Reject {
    /// A rejection with a policy-violation close (1008).
    pub fn new(reason: impl Into<std::borrow::Cow<'static, str>>) -> Reject {
        Reject {
            reason: CloseReason::policy(reason),
            status: None,
        }
    }

    /// A rejection answered with `status` (say 401) where the transport can still answer that
    /// way: websocket, as long as the acceptor has read or sent no frame (the `101` goes out
    /// with the first). Otherwise, and over raw TCP, the connection is closed with `reason`
    /// as by [`Reject::new`].
    pub fn with_status(status: u16, reason: impl Into<std::borrow::Cow<'static, str>>) -> Reject {
        Reject {
            reason: CloseReason::policy(reason),
            status: Some(status),
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.reason, f)
    }
}

impl From<LoginError> for Reject {
    fn from(e: LoginError) -> Reject {
        match e {
            LoginError::Read(ReadError::Protocol(reason)) => Reject {
                reason,
                status: None,
            },
            other => Reject::new(other.to_string()),
        }
    }
}

/// The connection as an [`Acceptor`] sees it during login: read the client's login frames,
/// answer them, and look at what the transport's handshake carried.
pub struct LoginConn<'a> {
    framed: &'a mut dyn Framed,
    peer: SocketAddr,
    transport: &'static str,
    handshake: Option<&'a Handshake>,
    server: &'a Hub,
}

impl<'a> LoginConn<'a> {
    /// Wraps a connection for an acceptor.
    pub(crate) fn new(
        framed: &'a mut dyn Framed,
        peer: SocketAddr,
        transport: &'static str,
        handshake: Option<&'a Handshake>,
        server: &'a Hub,
    ) -> LoginConn<'a> {
        LoginConn {
            framed,
            peer,
            transport,
            handshake,
            server,
        }
    }

    /// The server this connection is logging in to: to count channels or look one up before
    /// accepting (the channel itself is not in the map until the login succeeds).
    pub fn server(&self) -> &Hub {
        self.server
    }

    /// Reads the next text or binary frame. Pings are answered, pongs skipped; a close or the
    /// end of the stream is [`LoginError::Closed`]. What the transport still has to send
    /// first (websocket: the handshake's answer) goes out before the read.
    pub async fn read_frame(&mut self) -> Result<Frame, LoginError> {
        if self.framed.pending() > 0 {
            poll_fn(|cx| self.framed.poll_flush(cx)).await?;
        }
        loop {
            let frame = poll_fn(|cx| self.framed.poll_read_frame(cx)).await?;
            match frame {
                None => return Err(LoginError::Closed),
                Some(f) => match f.op {
                    OpCode::Text | OpCode::Binary => return Ok(f),
                    OpCode::Ping => self.send(Frame::pong(f.payload)).await?,
                    OpCode::Close => return Err(LoginError::Closed),
                    _ => {}
                },
            }
        }
    }

    /// Writes a frame to the client now (for a multi-step login) and flushes it.
    pub async fn send(&mut self, frame: Frame) -> std::io::Result<()> {
        self.framed.start_frame(frame);
        poll_fn(|cx| self.framed.poll_flush(cx)).await
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The transport's name ("tcp", "ws").
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// What the transport's handshake carried (websocket: path, query and headers).
    pub fn handshake(&self) -> Option<&Handshake> {
        self.handshake
    }
}

/// The acceptor KIM uses when an app sets none: reads nothing and gives every connection a
/// fresh unique id. Good for echo servers and load tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultAcceptor;

impl Acceptor for DefaultAcceptor {
    async fn accept(&self, _login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
        Ok(Accepted::new(unique_id()))
    }
}

/// A process-unique id: a per-process random prefix and a counter, as 24 hex digits.
fn unique_id() -> String {
    use std::hash::BuildHasher;
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix =
        *PREFIX.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u64));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}{:016x}", prefix as u32, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_differ() {
        let a = unique_id();
        let b = unique_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
    }

    #[test]
    fn reject_keeps_protocol_reason() {
        let r: Reject = LoginError::Read(ReadError::Protocol(CloseReason::too_big("big"))).into();
        assert_eq!(r.reason.code, CloseReason::TOO_BIG);
        let r: Reject = LoginError::Closed.into();
        assert_eq!(r.reason.code, CloseReason::POLICY);
    }
}
