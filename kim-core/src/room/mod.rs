//! Rooms: named groups of channels, and publishing one message to all of a room's members.
//!
//! An IM gateway spends most of its writes on groups, so a publish costs as little per member
//! as kim can make it: the frame is encoded once for the server's transport, and every
//! member's outbox gets a reference to the same bytes (a pointer and a reference count, no copy
//! and no encoding per member). A publish never waits: a member whose outbox is full is skipped
//! or closed as a slow consumer, as its room's [`SlowMember`] policy says, and the publish
//! returns at once with what happened ([`Published`]).
//!
//! Membership lives in the process that holds the sockets: in process mode, a worker's joins,
//! leaves and publishes travel to the master, which owns every room. A channel leaves all its
//! rooms when it ends, before [`StateListener::disconnect`](crate::StateListener::disconnect)
//! runs, and a room with no members is dropped: an empty room costs nothing.

pub(crate) mod name;
pub(crate) mod policy;
pub(crate) mod query;
pub(crate) mod registry;
pub(crate) mod watcher;

pub use name::{check_room_name, MAX_ROOM_NAME};
pub use policy::{Published, RoomPolicy, SlowMember};
