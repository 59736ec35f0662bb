//! Typed errors: every failure says what happened and to which channel, and none panics.

use std::io;

use crate::channel::id::ChannelId;
use crate::close::CloseReason;
use crate::cluster::error::ClusterError;
use crate::frame::OpCode;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    UnexpectedEof,
    /// The peer broke the protocol; the channel is closed with this reason.
    #[error("protocol error: {0}")]
    Protocol(CloseReason),
}

/// Why an upgrade failed. The upgrader has already answered the client (with an HTTP status,
/// for websocket) where the protocol allows it.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The socket failed.
    #[error("i/o error during upgrade: {0}")]
    Io(#[from] io::Error),
    /// The request was refused with this status and reason.
    #[error("upgrade refused: {status} {reason}")]
    Refused {
        /// The status sent to the client (an HTTP status for websocket).
        status: u16,
        /// A short reason, also sent to the client.
        reason: String,
    },
}

/// Why a push, a publish or a room operation was refused. None of them waits, so these come
/// back at once (but for questions asked of another process or node, which wait a bounded
/// time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// No channel with this id is connected.
    #[error("channel {0} not found")]
    NotFound(ChannelId),
    /// The channel is closed or closing.
    #[error("channel closed")]
    Closed,
    /// The channel's outbox is full: its client is not reading fast enough.
    #[error("channel outbox full")]
    Full,
    /// Only text and binary frames can be pushed.
    #[error("cannot push a {0:?} frame; only text and binary are pushed")]
    NotData(OpCode),
    /// The payload is larger than the maximum message size.
    #[error("payload of {len} bytes exceeds the maximum message size of {max} bytes")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The user may be on another node, and the cluster could not be asked (see
    /// [`crate::cluster`]).
    #[error("cannot reach the other nodes: {0}")]
    Unavailable(ClusterError),
    /// The room name is empty, too long, or has whitespace or control characters (see
    /// [`check_room_name`](crate::room::check_room_name)).
    #[error("bad room name: must be 1 to 64 bytes of UTF-8 without spaces")]
    BadRoomName,
    /// The channel is in as many rooms as the server allows.
    #[error("channel is already in {max} rooms, the most allowed")]
    TooManyRooms {
        /// The configured maximum.
        max: usize,
    },
    /// In a worker process, the master did not answer a question about rooms in time.
    #[error("the master process did not answer in time")]
    NoAnswer,
}

/// Why reading a frame during login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Reading or writing failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The client closed the connection before logging in.
    #[error("connection closed before login")]
    Closed,
}

impl From<io::Error> for LoginError {
    fn from(e: io::Error) -> Self {
        LoginError::Read(ReadError::Io(e))
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// What the system said.
        source: io::Error,
    },
    /// Another socket operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A step given to [`DefaultServer::before_serving`](crate::DefaultServer::before_serving)
    /// or [`DefaultServer::with_cluster_connect`](crate::DefaultServer::with_cluster_connect)
    /// failed.
    #[error("setting up the server failed: {0}")]
    Setup(Box<dyn std::error::Error + Send + Sync>),
    /// This process was a worker of process mode: it served its master until the master
    /// stopped it (returned by [`DefaultServer::start`](crate::DefaultServer::start) in a
    /// worker; [`DefaultServer::run`](crate::DefaultServer::run) returns `Ok` instead).
    #[error("this worker process has served its master and stopped")]
    WorkerStopped,
}

/// An option with a value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid option {name}: {reason}")]
pub struct OptionsError {
    /// The option's name.
    pub name: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}
