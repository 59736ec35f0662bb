//! Why a room operation failed.

use crate::channel::id::ChannelId;
use crate::frame::OpCode;

/// Why a room operation failed. Like pushes, room operations never wait, so these come back at
/// once (a worker's queries to its master excepted: they wait a bounded time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The name is empty, too long, or has whitespace or control characters.
    #[error("bad room name: must be 1 to 64 bytes of UTF-8 without spaces")]
    BadName,
    /// The channel is closed or closing.
    #[error("channel closed")]
    Closed,
    /// No channel with this id is connected.
    #[error("channel {0} not found")]
    NotFound(ChannelId),
    /// The channel is in as many rooms as the server allows.
    #[error("channel is already in {max} rooms, the most allowed")]
    TooManyRooms {
        /// The configured maximum.
        max: usize,
    },
    /// Only text and binary frames can be published.
    #[error("cannot publish a {0:?} frame; only text and binary are published")]
    NotData(OpCode),
    /// The payload is larger than the maximum message size.
    #[error("payload of {len} bytes exceeds the maximum message size of {max} bytes")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A query could not be answered: in a worker process, the master did not answer in
    /// time; with a cluster, the other nodes could not be asked.
    #[error("the master process or the cluster did not answer")]
    Unavailable,
}
