//! The rooms of one server: who is in which room, kept from both sides.
//!
//! A room maps its members' serials to their channels, for publishing; a channel's rooms are
//! kept beside them, by serial, for listing and for leaving them all when the channel ends.
//! Both live here, so a channel that never joins a room costs nothing, and a channel handle
//! does not grow by a field.
//!
//! Locks are taken in one order: a channel's shard, then the name index, then a room's
//! members (publishes take only the last two, for reading). A room is created under the name
//! index's write lock and removed under it once empty, so a join never lands in a room that
//! is no longer indexed.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::channel::id::ChannelId;
use crate::channel::{check_push, Channel, HeldTally};
use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::error::PushError;
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::options::ServerOptions;
use crate::room::name::check_room_name;
use crate::room::policy::{Published, RoomPolicy, SlowMember};
use crate::room::watcher::RoomWatcher;
use crate::shared_frame::SharedFrame;

/// How the server's transport encodes a frame that many connections share: the same bytes
/// for all of them, or `None` when each connection must encode it itself.
pub(crate) type Encoder = fn(&Frame) -> Option<Bytes>;

/// Shards of the channel side, by serial; a power of two.
const SHARDS: usize = 64;

/// Hashes serials, which are distinct integers already: one multiplication spreads them.
#[derive(Default)]
pub(crate) struct SerialHasher(u64);

impl Hasher for SerialHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type BySerial<V> = HashMap<u64, V, BuildHasherDefault<SerialHasher>>;

/// One shard of the channel side: the rooms of each channel in it.
type JoinedShard = Mutex<BySerial<Vec<Arc<Room>>>>;

/// One room: its name, its policy for full outboxes, its members by serial.
pub(crate) struct Room {
    name: Arc<str>,
    policy: SlowMember,
    members: RwLock<BySerial<Channel>>,
}

/// Every room of a server, and every channel's rooms.
pub(crate) struct Rooms {
    by_name: RwLock<HashMap<Arc<str>, Arc<Room>>>,
    /// A channel's rooms, by its serial (only channels in at least one room).
    joined: Box<[JoinedShard]>,
    policy: RoomPolicy,
    max_per_channel: usize,
    max_message_size: usize,
    /// The server's transport's.
    encoder: Encoder,
    metrics: Arc<Metrics>,
    /// Told when a room gets its first member and loses its last (a cluster, so that this
    /// node receives the other nodes' publishes to exactly the rooms it has members in).
    watcher: Option<Arc<dyn RoomWatcher>>,
}

/// Checks what a publish to room `name` may carry: what a push may (a text or binary frame
/// within `max` bytes), to a well-named room.
pub(crate) fn check_publish(name: &str, frame: &Frame, max: usize) -> Result<(), PushError> {
    check_room_name(name)?;
    check_push(frame, max)
}

/// Why a slow member is closed.
fn slow_consumer() -> CloseReason {
    CloseReason::policy("slow consumer")
}

impl Rooms {
    pub(crate) fn new(
        options: &ServerOptions,
        metrics: Arc<Metrics>,
        encoder: Encoder,
        watcher: Option<Arc<dyn RoomWatcher>>,
    ) -> Rooms {
        Rooms {
            by_name: RwLock::default(),
            joined: (0..SHARDS).map(|_| Mutex::default()).collect(),
            policy: options.room_policy().clone(),
            max_per_channel: options.max_rooms_per_channel(),
            max_message_size: options.max_message_size(),
            encoder,
            metrics,
            watcher,
        }
    }

    fn shard(&self, serial: u64) -> &JoinedShard {
        &self.joined[(serial as usize) & (SHARDS - 1)]
    }

    /// Puts `chan` in room `name` (nothing changes if it is in already).
    pub(crate) fn join(&self, chan: &Channel, name: &str) -> Result<(), PushError> {
        check_room_name(name)?;
        let serial = chan.serial();
        let mut shard = self.shard(serial).lock();
        // Checked under the shard's lock, which `leave_all` takes after the channel began
        // closing: a join either comes before it (and is undone by it) or is refused.
        if chan.outbox().is_closing() {
            return Err(PushError::Closed);
        }
        let mine = shard.entry(serial).or_default();
        if mine.iter().any(|r| &*r.name == name) {
            return Ok(());
        }
        if mine.len() >= self.max_per_channel {
            return Err(PushError::TooManyRooms {
                max: self.max_per_channel,
            });
        }
        let room = {
            let mut by_name = self.by_name.write();
            let room = match by_name.get(name) {
                Some(r) => r.clone(),
                None => {
                    let name: Arc<str> = name.into();
                    let room = Arc::new(Room {
                        policy: self.policy.of(&name),
                        name: name.clone(),
                        members: RwLock::default(),
                    });
                    by_name.insert(name, room.clone());
                    self.metrics.rooms.rooms.inc();
                    if let Some(w) = &self.watcher {
                        w.created(&room.name);
                    }
                    room
                }
            };
            room.members.write().insert(serial, chan.clone());
            room
        };
        mine.push(room);
        self.metrics.rooms.memberships.inc();
        Ok(())
    }

    /// Takes `chan` out of room `name` (nothing changes if it is not in it).
    pub(crate) fn leave(&self, chan: &Channel, name: &str) -> Result<(), PushError> {
        check_room_name(name)?;
        let serial = chan.serial();
        let mut shard = self.shard(serial).lock();
        let Some(mine) = shard.get_mut(&serial) else {
            return Ok(());
        };
        let Some(i) = mine.iter().position(|r| &*r.name == name) else {
            return Ok(());
        };
        let room = mine.swap_remove(i);
        if mine.is_empty() {
            shard.remove(&serial);
        }
        self.remove_member(&room, serial);
        Ok(())
    }

    /// Takes the channel with `serial` out of every room (it has ended).
    pub(crate) fn leave_all(&self, serial: u64) {
        let mine = self.shard(serial).lock().remove(&serial);
        for room in mine.into_iter().flatten() {
            self.remove_member(&room, serial);
        }
    }

    /// Removes a member, and the room from the index if that left it empty.
    fn remove_member(&self, room: &Arc<Room>, serial: u64) {
        let now_empty = {
            let mut members = room.members.write();
            if members.remove(&serial).is_none() {
                return;
            }
            members.is_empty()
        };
        self.metrics.rooms.memberships.dec();
        if now_empty {
            // Joins add members under the index's write lock: checked again under it, the
            // room is still empty only if nobody joined since.
            let mut by_name = self.by_name.write();
            let indexed = by_name
                .get(&room.name)
                .is_some_and(|r| Arc::ptr_eq(r, room));
            if indexed && room.members.read().is_empty() {
                by_name.remove(&room.name);
                self.metrics.rooms.rooms.dec();
                if let Some(w) = &self.watcher {
                    w.dropped(&room.name);
                }
            }
        }
    }

    /// The names of the rooms the channel with `serial` is in.
    pub(crate) fn rooms_of(&self, serial: u64) -> Vec<String> {
        let shard = self.shard(serial).lock();
        shard
            .get(&serial)
            .map(|mine| mine.iter().map(|r| r.name.to_string()).collect())
            .unwrap_or_default()
    }

    /// True if the channel with `serial` is in room `name`.
    pub(crate) fn is_member(&self, serial: u64, name: &str) -> bool {
        let shard = self.shard(serial).lock();
        shard
            .get(&serial)
            .is_some_and(|mine| mine.iter().any(|r| &*r.name == name))
    }

    /// The names of the rooms with members.
    pub(crate) fn names(&self) -> Vec<String> {
        self.by_name.read().keys().map(|n| n.to_string()).collect()
    }

    /// Members of room `name` (0 for a room that does not exist).
    pub(crate) fn size(&self, name: &str) -> usize {
        let room = self.by_name.read().get(name).cloned();
        room.map_or(0, |r| r.members.read().len())
    }

    /// The ids of room `name`'s members.
    pub(crate) fn members(&self, name: &str) -> Vec<ChannelId> {
        let room = self.by_name.read().get(name).cloned();
        room.map(|r| r.members.read().values().map(|c| c.id().clone()).collect())
            .unwrap_or_default()
    }

    /// Checks what a publish may carry.
    pub(crate) fn check_publish(&self, name: &str, frame: &Frame) -> Result<(), PushError> {
        check_publish(name, frame, self.max_message_size)
    }

    /// Queues `frame` in the outbox of every member of room `name` but `except` (a serial),
    /// encoded once for all of them.
    pub(crate) fn publish(
        &self,
        name: &str,
        frame: Frame,
        except: Option<u64>,
    ) -> Result<Published, PushError> {
        self.check_publish(name, &frame)?;
        let metrics = &self.metrics.rooms;
        metrics.publishes.inc();
        let mut done = Published::default();
        let Some(room) = self.by_name.read().get(name).cloned() else {
            return Ok(done);
        };
        let wire = (self.encoder)(&frame);
        let shared = Arc::new(SharedFrame::new(frame, wire));
        let members = room.members.read();
        let mut held = HeldTally::default();
        for (serial, chan) in members.iter() {
            if Some(*serial) == except {
                continue;
            }
            match chan.push_shared(&shared, &mut held) {
                Ok(()) => done.delivered += 1,
                Err(PushError::Full) => match room.policy {
                    SlowMember::Skip => done.skipped += 1,
                    SlowMember::Close => {
                        done.closed += 1;
                        chan.request_close(
                            slow_consumer(),
                            CloseMode::Abort,
                            CloseCause::SlowConsumer,
                        );
                    }
                },
                // Closing: it is about to leave the room.
                Err(_) => {}
            }
        }
        let context = members.values().next().map(|c| c.context().clone());
        drop(members);
        if let Some(context) = context {
            context.settle(held);
        }
        metrics.deliveries.inc_by(done.delivered as u64);
        metrics.skipped.inc_by(done.skipped as u64);
        metrics.slow_closed.inc_by(done.closed as u64);
        Ok(done)
    }
}

#[cfg(test)]
mod tests;
