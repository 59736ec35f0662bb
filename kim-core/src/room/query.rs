//! Questions about rooms, as a courier answers them: at once from this process's rooms, or,
//! in a worker, by asking the master, which owns every room.

use crate::error::PushError;

/// A question about rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// The rooms of the channel with this serial.
    RoomsOf(u64),
    /// Whether the channel with this serial is in this room.
    InRoom(u64, String),
    /// How many members this room has.
    Size(String),
    /// The ids of this room's members.
    Members(String),
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A number (a count, or 0/1 for a yes/no question).
    Count(u64),
    /// Names (rooms, or channel ids).
    Names(Vec<String>),
}

impl Answer {
    /// The count answered, or `Unavailable` for an answer of the wrong shape.
    pub(crate) fn count(self) -> Result<u64, PushError> {
        match self {
            Answer::Count(n) => Ok(n),
            Answer::Names(_) => Err(PushError::NoAnswer),
        }
    }

    /// The names answered, or `Unavailable` for an answer of the wrong shape.
    pub(crate) fn names(self) -> Result<Vec<String>, PushError> {
        match self {
            Answer::Names(v) => Ok(v),
            Answer::Count(_) => Err(PushError::NoAnswer),
        }
    }
}
