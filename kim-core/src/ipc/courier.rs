//! The courier of a worker process: the sockets and the rooms are the master's, so every push,
//! close and room operation travels to it over the worker's link, in the order the worker's
//! handlers made them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::channel::courier::{BoxFuture, Courier};
use crate::channel::map::ChannelMap;
use crate::channel::Channel;
use crate::close::CloseReason;
use crate::error::PushError;
use crate::frame::Frame;
use crate::ipc::in_transit::InTransit;
use crate::ipc::link::Link;
use crate::ipc::protocol::{Body, CloseBody};
use crate::ipc::rooms::RoomClient;
use crate::ipc::wire::{Kind, Outgoing};
use crate::room::name::check_room_name;
use crate::room::policy::Published;
use crate::room::query::{Answer, Query};
use crate::room::registry::check_publish;

/// A worker's way to its master, and the channels mirrored from it.
pub(crate) struct WorkerCourier {
    pub(crate) link: Arc<Link>,
    /// The master's channels, as it announced them: pushing to an id nobody holds fails at
    /// once, as it does in the master.
    channels: ChannelMap,
    /// Room operations and questions, sent to the master.
    pub(crate) rooms: RoomClient,
    /// Pushes refused here (their channel's pushes on the way were at the outbox bound).
    pub(crate) push_failed: AtomicU64,
    max_message_size: usize,
}

impl WorkerCourier {
    pub(crate) fn new(link: Arc<Link>, max_message_size: usize) -> WorkerCourier {
        WorkerCourier {
            rooms: RoomClient::new(link.clone()),
            link,
            channels: ChannelMap::new(),
            push_failed: AtomicU64::new(0),
            max_message_size,
        }
    }
}

impl Courier for WorkerCourier {
    fn channels(&self) -> &ChannelMap {
        &self.channels
    }

    /// Sends a push to the master. It fails only as a push fails in-process: the channel is
    /// closed, or its own pushes on the way to the master (this worker's view of its outbox)
    /// reach the outbox bound. The queue towards the master is shared by every channel and
    /// never refuses a push; it is kept bounded by this worker's intake, which pauses while
    /// the queue is over `ipc_queue_bytes`.
    fn push(&self, chan: &Channel, frame: Frame) -> Result<(), PushError> {
        if chan.outbox().is_closing() {
            return Err(PushError::Closed);
        }
        let limit = chan.context().limits.outbound_bytes;
        let Some(in_transit) = InTransit::reserve(chan, frame.payload.len(), limit) else {
            self.push_failed.fetch_add(1, Ordering::Relaxed);
            return Err(PushError::Full);
        };
        let msg = Outgoing::new(Kind::Push, chan.serial(), frame.op as u8, frame.payload);
        self.link.enqueue_attached(msg.attach(Some(in_transit)));
        Ok(())
    }

    fn close(&self, chan: &Channel, reason: CloseReason) {
        let body = CloseBody { reason }.encode();
        self.link
            .enqueue(Outgoing::new(Kind::Close, chan.serial(), 0, body));
    }

    fn join(&self, chan: &Channel, room: &str) -> Result<(), PushError> {
        check_room_name(room)?;
        if chan.is_closed() {
            return Err(PushError::Closed);
        }
        self.rooms.join(chan.serial(), room);
        Ok(())
    }

    fn leave(&self, chan: &Channel, room: &str) -> Result<(), PushError> {
        check_room_name(room)?;
        self.rooms.leave(chan.serial(), room);
        Ok(())
    }

    fn publish(
        &self,
        room: &str,
        frame: Frame,
        except: Option<u64>,
    ) -> Result<Published, PushError> {
        check_publish(room, &frame, self.max_message_size)?;
        self.rooms.publish(room, frame, except);
        Ok(Published {
            forwarded: true,
            ..Published::default()
        })
    }

    fn ask(&self, query: Query) -> BoxFuture<'_, Result<Answer, PushError>> {
        Box::pin(self.rooms.query(query))
    }

    fn ended(&self, chan: &Channel) {
        self.channels.remove_channel(chan);
    }
}
