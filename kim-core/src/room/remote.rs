//! Rooms seen from a worker process: the master owns every room, so a worker sends it its
//! joins, leaves and publishes (in order with its pushes, on the same link) and asks it what
//! it wants to know. The worker keeps no copy of any membership.

use std::future::Future;
use std::pin::Pin;

use crate::frame::Frame;
use crate::room::RoomError;

/// A question about rooms, asked of the master.
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

/// The master's answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A number (a count, or 0/1 for a yes/no question).
    Count(u64),
    /// Names (rooms, or channel ids).
    Names(Vec<String>),
}

/// A future that answers a query.
pub(crate) type Asked<'a> = Pin<Box<dyn Future<Output = Result<Answer, RoomError>> + Send + 'a>>;

/// How a worker reaches the rooms its master owns.
pub(crate) trait RemoteRooms: Send + Sync + 'static {
    /// Sends a join of the channel with `serial` to room `room`.
    fn join(&self, serial: u64, room: &str);
    /// Sends a leave.
    fn leave(&self, serial: u64, room: &str);
    /// Sends a publish, to every member but `except`.
    fn publish(&self, room: &str, frame: Frame, except: Option<u64>);
    /// Asks the master, waiting a bounded time.
    fn query(&self, query: Query) -> Asked<'_>;
}
