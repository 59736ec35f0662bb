//! Closing: the reason sent to a client, how a close treats what is still queued, why a
//! channel ended (a metric's label), and how its connection ended. Every part of kim that
//! closes a channel speaks these words, so they live apart from all of those parts.

use std::borrow::Cow;
use std::fmt;

/// Why a channel is being closed: a websocket close code and a short human-readable reason.
///
/// The websocket transport sends both; the raw TCP transport sends the reason only (an
/// [`OpCode::Close`](crate::OpCode::Close) frame whose payload is the reason text).
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

/// How a close request treats what is still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseMode {
    /// Write what is queued, then a close frame, then wait briefly for the peer's close.
    Graceful,
    /// Drop the connection now: the socket cannot be written (write deadline), or the shutdown
    /// deadline passed.
    Abort,
    /// Drop the connection now and suspend its session (the read deadline passed: the
    /// transport is presumed lost). For a channel without a session, an abort.
    Suspend,
}

/// Why a channel ended, a label of `kim_channels_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// The client sent a close.
    Peer,
    /// The stream ended without a close.
    PeerGone,
    /// Reading or writing failed.
    IoError,
    /// Nothing was read within read_wait.
    ReadTimeout,
    /// A write batch did not complete within write_wait.
    WriteTimeout,
    /// Our close frame was not answered within close_wait.
    CloseTimeout,
    /// The client broke the protocol.
    ProtocolError,
    /// A newer login with the same id replaced the channel.
    Kicked,
    /// The app closed it.
    Server,
    /// The server shut down.
    Shutdown,
    /// Its outbox was full when a room it is in published to it (policy
    /// [`SlowMember::Close`](crate::room::SlowMember::Close)), or its session had to drop a
    /// message it had not yet been sent.
    SlowConsumer,
    /// Its session stayed suspended past the window.
    SessionExpired,
}

impl CloseCause {
    pub(crate) const ALL: [CloseCause; 12] = [
        CloseCause::Peer,
        CloseCause::PeerGone,
        CloseCause::IoError,
        CloseCause::ReadTimeout,
        CloseCause::WriteTimeout,
        CloseCause::CloseTimeout,
        CloseCause::ProtocolError,
        CloseCause::Kicked,
        CloseCause::Server,
        CloseCause::Shutdown,
        CloseCause::SlowConsumer,
        CloseCause::SessionExpired,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseCause::Peer => "peer",
            CloseCause::PeerGone => "peer_gone",
            CloseCause::IoError => "io_error",
            CloseCause::ReadTimeout => "read_timeout",
            CloseCause::WriteTimeout => "write_timeout",
            CloseCause::CloseTimeout => "close_timeout",
            CloseCause::ProtocolError => "protocol_error",
            CloseCause::Kicked => "kicked",
            CloseCause::Server => "server",
            CloseCause::Shutdown => "shutdown",
            CloseCause::SlowConsumer => "slow_consumer",
            CloseCause::SessionExpired => "session_expired",
        }
    }

    /// True if a channel ending this way only lost its transport: its session, if it has
    /// one, is suspended rather than ended.
    pub(crate) fn suspends(self) -> bool {
        matches!(
            self,
            CloseCause::PeerGone
                | CloseCause::IoError
                | CloseCause::ReadTimeout
                | CloseCause::WriteTimeout
        )
    }
}

/// Why a channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer sent a close (or the close handshake we started completed).
    Closed,
    /// The stream ended without a close frame.
    Eof,
    /// Reading or writing failed.
    Io(std::io::ErrorKind),
    /// A write batch did not complete within write_wait.
    WriteTimeout,
    /// The channel was aborted (shutdown deadline).
    Aborted,
    /// We sent a close and the peer did not answer within close_wait.
    CloseTimeout,
    /// A resume took the channel's session over to another connection.
    HandedOver,
}

impl End {
    /// The cause to report when nothing was begun on purpose before the connection ended.
    pub(crate) fn cause(self) -> CloseCause {
        match self {
            End::Closed => CloseCause::Peer,
            End::Eof => CloseCause::PeerGone,
            End::Io(_) => CloseCause::IoError,
            End::WriteTimeout => CloseCause::WriteTimeout,
            End::Aborted => CloseCause::Shutdown,
            End::CloseTimeout => CloseCause::CloseTimeout,
            // Never counted: the session goes on.
            End::HandedOver => CloseCause::PeerGone,
        }
    }
}
