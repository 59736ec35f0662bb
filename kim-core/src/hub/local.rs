//! The courier of a process that holds the sockets: a push goes into the channel's outbox,
//! the rooms are this process's, and nothing lies beyond it.

use std::future::ready;

use crate::channel::courier::{BoxFuture, Courier};
use crate::channel::map::ChannelMap;
use crate::channel::Channel;
use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::error::PushError;
use crate::frame::Frame;
use crate::room::policy::Published;
use crate::room::query::{Answer, Query};
use crate::room::registry::Rooms;

/// This process's channels and rooms.
pub(crate) struct LocalCourier {
    channels: ChannelMap,
    rooms: Rooms,
}

impl LocalCourier {
    pub(crate) fn new(rooms: Rooms) -> LocalCourier {
        LocalCourier {
            channels: ChannelMap::new(),
            rooms,
        }
    }

    /// This process's rooms.
    pub(crate) fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// `chan` leaves its rooms, then the channel map; true if the map still held this very
    /// login (not a newer one with the same id).
    pub(crate) fn remove(&self, chan: &Channel) -> bool {
        // Out of its rooms first (joins are refused once the outbox has ended), so that a
        // channel gone from the map is in no room, and the disconnect callback sees it so.
        self.rooms.leave_all(chan.serial());
        self.channels.remove_channel(chan)
    }

    /// Answers `query` from this process's rooms.
    pub(crate) fn answer(&self, query: &Query) -> Answer {
        let rooms = &self.rooms;
        match query {
            Query::RoomsOf(serial) => Answer::Names(rooms.rooms_of(*serial)),
            Query::InRoom(serial, room) => Answer::Count(u64::from(rooms.is_member(*serial, room))),
            Query::Size(room) => Answer::Count(rooms.size(room) as u64),
            Query::Members(room) => Answer::Names(
                rooms
                    .members(room)
                    .into_iter()
                    .map(|id| id.as_str().to_string())
                    .collect(),
            ),
        }
    }
}

impl Courier for LocalCourier {
    fn channels(&self) -> &ChannelMap {
        &self.channels
    }

    fn push(&self, chan: &Channel, frame: Frame) -> Result<(), PushError> {
        chan.push_local(frame)
    }

    fn close(&self, chan: &Channel, reason: CloseReason) {
        chan.request_close(reason, CloseMode::Graceful, CloseCause::Server);
    }

    fn join(&self, chan: &Channel, room: &str) -> Result<(), PushError> {
        self.rooms.join(chan, room)
    }

    fn leave(&self, chan: &Channel, room: &str) -> Result<(), PushError> {
        self.rooms.leave(chan, room)
    }

    fn publish(
        &self,
        room: &str,
        frame: Frame,
        except: Option<u64>,
    ) -> Result<Published, PushError> {
        self.rooms.publish(room, frame, except)
    }

    fn ask(&self, query: Query) -> BoxFuture<'_, Result<Answer, PushError>> {
        Box::pin(ready(Ok(self.answer(&query))))
    }

    fn ended(&self, chan: &Channel) {
        self.remove(chan);
    }
}

/// A context for channels made by unit tests, of a server that never started.
#[cfg(test)]
pub(crate) fn test_context() -> std::sync::Arc<crate::channel::Context> {
    use std::sync::Arc;
    let options = crate::ServerOptions::default();
    let metrics = Arc::new(crate::metrics::Metrics::new(options.metrics()));
    let rooms = Rooms::new(&options, metrics.clone(), |_| None, None);
    Arc::new(crate::channel::Context {
        limits: crate::channel::Limits::new(&options),
        clock: Arc::new(crate::clock::Clock::new()),
        metrics,
        connections: Arc::default(),
        courier: Arc::new(LocalCourier::new(rooms)),
        sessions: crate::channel::sessions::Sessions::new(
            &options,
            Arc::new(crate::resume::DefaultCodec),
        ),
    })
}
