//! The room operations of [`ServerHandle`]: done here on the server's [`Rooms`] when this
//! process holds the sockets, sent to the master from a worker process.

use crate::channel::{Channel, ChannelId};
use crate::frame::Frame;
use crate::room::remote::{Answer, Query, RemoteRooms};
use crate::room::{check_room_name, Published, RoomError};
use crate::server::ServerHandle;

impl ServerHandle {
    /// The master's rooms, in a worker process.
    fn remote_rooms(&self) -> Option<&dyn RemoteRooms> {
        self.core().process().remote_rooms()
    }

    fn find(&self, id: &str) -> Result<Channel, RoomError> {
        self.channel(id)
            .ok_or_else(|| RoomError::NotFound(ChannelId::new(id)))
    }

    /// Puts the channel with id `id` in room `room` (see [`Channel::join`]).
    pub fn join(&self, id: &str, room: &str) -> Result<(), RoomError> {
        self.join_channel(&self.find(id)?, room)
    }

    /// Takes the channel with id `id` out of room `room` (see [`Channel::leave`]).
    pub fn leave(&self, id: &str, room: &str) -> Result<(), RoomError> {
        self.leave_channel(&self.find(id)?, room)
    }

    /// Publishes `frame` to every member of room `room`.
    ///
    /// The frame is encoded once and shared by every member's outbox. Nothing waits: a
    /// member whose outbox is full is skipped or closed, as the room's
    /// [`SlowMember`](crate::room::SlowMember) policy says, and the result counts what
    /// happened. A room nobody is in is not an error: nobody is reached. In a worker process
    /// the publish is sent to the master and the result says so
    /// ([`Published::forwarded`]). With a [cluster](crate::cluster), the publish is also sent
    /// once to the other nodes, each of which reaches its own members
    /// ([`Published::forwarded`] says it was sent; the counts are this node's).
    pub fn publish(&self, room: &str, frame: Frame) -> Result<Published, RoomError> {
        self.publish_from(room, frame, None)
    }

    /// Publishes `frame` to every member of room `room` but the channel with id `except`
    /// (usually the sender).
    pub fn publish_except(
        &self,
        room: &str,
        frame: Frame,
        except: &str,
    ) -> Result<Published, RoomError> {
        let serial = self.channel(except).map(|c| c.serial());
        self.publish_from(room, frame, serial)
    }

    /// How many channels of this node are in room `room` (0 if nobody is). In a worker process
    /// the master is asked. [`ServerHandle::cluster_room_size`] counts every node's.
    pub async fn room_size(&self, room: &str) -> Result<usize, RoomError> {
        check_room_name(room)?;
        match self.remote_rooms() {
            Some(r) => count(r.query(Query::Size(room.to_string())).await?).map(|n| n as usize),
            None => Ok(self.core().rooms.size(room)),
        }
    }

    /// The ids of room `room`'s members, in no particular order.
    pub async fn room_members(&self, room: &str) -> Result<Vec<ChannelId>, RoomError> {
        check_room_name(room)?;
        match self.remote_rooms() {
            Some(r) => Ok(names(r.query(Query::Members(room.to_string())).await?)?
                .into_iter()
                .map(ChannelId::from)
                .collect()),
            None => Ok(self.core().rooms.members(room)),
        }
    }

    /// The rooms of the channel with id `id`.
    pub async fn rooms_of(&self, id: &str) -> Result<Vec<String>, RoomError> {
        self.rooms_of_channel(&self.find(id)?).await
    }

    pub(crate) fn join_channel(&self, chan: &Channel, room: &str) -> Result<(), RoomError> {
        match self.remote_rooms() {
            Some(r) => {
                check_room_name(room)?;
                if chan.is_closed() {
                    return Err(RoomError::Closed);
                }
                r.join(chan.serial(), room);
                Ok(())
            }
            None => self.core().rooms.join(chan, room),
        }
    }

    pub(crate) fn leave_channel(&self, chan: &Channel, room: &str) -> Result<(), RoomError> {
        match self.remote_rooms() {
            Some(r) => {
                check_room_name(room)?;
                r.leave(chan.serial(), room);
                Ok(())
            }
            None => self.core().rooms.leave(chan, room),
        }
    }

    pub(crate) fn publish_from(
        &self,
        room: &str,
        frame: Frame,
        except: Option<u64>,
    ) -> Result<Published, RoomError> {
        let rooms = &self.core().rooms;
        match self.remote_rooms() {
            Some(r) => {
                rooms.check_publish(room, &frame)?;
                r.publish(room, frame, except);
                Ok(Published {
                    forwarded: true,
                    ..Published::default()
                })
            }
            None => match &self.core().cluster {
                Some(cluster) => {
                    // Checked before anything is sent, so the other nodes get only what
                    // this one would deliver.
                    rooms.check_publish(room, &frame)?;
                    let forwarded = cluster.publish(room, &frame).is_ok();
                    let done = rooms.publish(room, frame, except)?;
                    Ok(Published { forwarded, ..done })
                }
                None => rooms.publish(room, frame, except),
            },
        }
    }

    pub(crate) async fn rooms_of_channel(&self, chan: &Channel) -> Result<Vec<String>, RoomError> {
        match self.remote_rooms() {
            Some(r) => names(r.query(Query::RoomsOf(chan.serial())).await?),
            None => Ok(self.core().rooms.rooms_of(chan.serial())),
        }
    }

    pub(crate) async fn channel_in_room(
        &self,
        chan: &Channel,
        room: &str,
    ) -> Result<bool, RoomError> {
        check_room_name(room)?;
        match self.remote_rooms() {
            Some(r) => {
                let q = Query::InRoom(chan.serial(), room.to_string());
                count(r.query(q).await?).map(|n| n != 0)
            }
            None => Ok(self.core().rooms.is_member(chan.serial(), room)),
        }
    }
}

/// The count a query answered, or `Unavailable` for an answer of the wrong shape.
fn count(a: Answer) -> Result<u64, RoomError> {
    match a {
        Answer::Count(n) => Ok(n),
        Answer::Names(_) => Err(RoomError::Unavailable),
    }
}

/// The names a query answered.
fn names(a: Answer) -> Result<Vec<String>, RoomError> {
    match a {
        Answer::Names(v) => Ok(v),
        Answer::Count(_) => Err(RoomError::Unavailable),
    }
}
