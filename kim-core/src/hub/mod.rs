//! The hub: every channel of a server, reached by id or by room, in whichever mode the server
//! runs.
//!
//! A [`Hub`] is what a handler reaches the rest of the server through
//! ([`Channel::server`]), and what a [`ServerHandle`](crate::ServerHandle) offers for messages:
//! pushes by id, on this node or any node of a cluster; rooms (join, leave, publish, who is
//! in them); and the channels logged in. It is the same API in-process, in a worker process
//! (where the master carries it out) and on a node of a cluster (where what is not here goes
//! to the other nodes): the difference lives in the server's courier, chosen at start
//! (`local`, `cluster`, and in `ipc` the worker's).

pub(crate) mod cluster;
pub(crate) mod local;

use std::sync::Arc;

use bytes::Bytes;

use crate::channel::courier::{Context, Courier};
use crate::channel::id::ChannelId;
use crate::channel::map::ChannelMap;
use crate::channel::{log_push_failed, Channel};
use crate::cluster::{Cluster, Location};
use crate::error::PushError;
use crate::frame::Frame;
use crate::room::name::check_room_name;
use crate::room::policy::Published;
use crate::room::query::Query;

/// Every channel of a server: push to any of them by id, publish to rooms, look channels up.
/// Cheap to clone (one pointer); usable from any task or thread.
///
/// Pushes and room operations never wait; what may ask another process or node (a push to a
/// user on another node, a room's members asked of the master) is `async` and bounded in
/// time.
#[derive(Clone)]
pub struct Hub {
    context: Arc<Context>,
}

impl Channel {
    /// The hub of the server this channel belongs to: to push to other channels, publish to
    /// rooms, and look channels up.
    pub fn server(&self) -> Hub {
        Hub::new(self.context().clone())
    }
}

impl Hub {
    pub(crate) fn new(context: Arc<Context>) -> Hub {
        Hub { context }
    }

    /// The context this hub's channels share.
    pub(crate) fn context(&self) -> &Arc<Context> {
        &self.context
    }

    fn courier(&self) -> &dyn Courier {
        &*self.context.courier
    }

    /// The logged-in channels of this process (in a worker process: mirrored from the
    /// master).
    pub fn channels(&self) -> &ChannelMap {
        self.courier().channels()
    }

    /// The channel with this id, if it is connected.
    pub fn channel(&self, id: &str) -> Option<Channel> {
        self.channels().get(id)
    }

    /// Number of logged-in channels.
    pub fn channel_count(&self) -> usize {
        self.channels().len()
    }

    /// Pushes a text message to the channel with this id. Never waits; fails at once with
    /// [`PushError::NotFound`] when nobody with this id is connected.
    pub fn push_text(&self, id: &str, text: impl Into<String>) -> Result<(), PushError> {
        self.push_frame(id, Frame::text(text.into()))
    }

    /// Pushes a binary message to the channel with this id. Never waits.
    pub fn push_binary(&self, id: &str, payload: impl Into<Bytes>) -> Result<(), PushError> {
        self.push_frame(id, Frame::binary(payload))
    }

    /// Pushes a text or binary frame to the channel with this id. Never waits.
    pub fn push_frame(&self, id: &str, frame: Frame) -> Result<(), PushError> {
        match self.channel(id) {
            Some(c) => c.push_frame(frame),
            None => Err(self.failed(id, PushError::NotFound(ChannelId::new(id)))),
        }
    }

    /// Counts and logs a failed push.
    fn failed(&self, id: &str, e: PushError) -> PushError {
        self.context.metrics.push_failed(&e);
        log_push_failed(id, &e);
        e
    }

    /// Pushes `frame` to the channel with id `id` on whichever node holds it.
    ///
    /// A channel of this node is pushed to at once, as [`Hub::push_frame`] does. Otherwise
    /// the cluster is asked, which takes one round trip through the broker and is bounded by
    /// the cluster's request timeout: [`PushError::NotFound`] when no node holds `id`,
    /// [`PushError::Unavailable`] when the broker cannot be reached or the owner did not
    /// answer in time. On a single node this is `push_frame`.
    ///
    /// In a worker process (process mode), only the channels of its own server are reached.
    pub async fn push_to(&self, id: &str, frame: Frame) -> Result<(), PushError> {
        if let Some(chan) = self.channel(id) {
            return chan.push_frame(frame);
        }
        let result = self.courier().push_elsewhere(id, frame).await;
        result.map_err(|e| self.failed(id, e))
    }

    /// Pushes a text message to `id` on whichever node holds it (see [`Hub::push_to`]).
    pub async fn push_text_to(&self, id: &str, text: impl Into<String>) -> Result<(), PushError> {
        self.push_to(id, Frame::text(text.into())).await
    }

    /// Where the user with id `id` is logged in: here, on another node of the cluster, or
    /// nowhere (`None`). Asking the cluster is bounded by its request timeout.
    pub async fn locate(&self, id: &str) -> Result<Option<Location>, PushError> {
        if self.channels().contains(id) {
            return Ok(Some(Location::Here));
        }
        match self.courier().locate_elsewhere(id).await {
            Ok(node) => Ok(node.map(Location::Node)),
            Err(e) => Err(PushError::Unavailable(e)),
        }
    }

    /// The cluster this server is a node of, if any.
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.courier().cluster()
    }

    fn find(&self, id: &str) -> Result<Channel, PushError> {
        self.channel(id)
            .ok_or_else(|| PushError::NotFound(ChannelId::new(id)))
    }

    /// Puts the channel with id `id` in room `room` (see [`Channel::join`]).
    pub fn join(&self, id: &str, room: &str) -> Result<(), PushError> {
        self.find(id)?.join(room)
    }

    /// Takes the channel with id `id` out of room `room` (see [`Channel::leave`]).
    pub fn leave(&self, id: &str, room: &str) -> Result<(), PushError> {
        self.find(id)?.leave(room)
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
    pub fn publish(&self, room: &str, frame: Frame) -> Result<Published, PushError> {
        self.courier().publish(room, frame, None)
    }

    /// Publishes `frame` to every member of room `room` but the channel with id `except`
    /// (usually the sender).
    pub fn publish_except(
        &self,
        room: &str,
        frame: Frame,
        except: &str,
    ) -> Result<Published, PushError> {
        let serial = self.channel(except).map(|c| c.serial());
        self.courier().publish(room, frame, serial)
    }

    /// How many channels of this node are in room `room` (0 if nobody is). In a worker process
    /// the master is asked. [`Hub::cluster_room_size`] counts every node's.
    pub async fn room_size(&self, room: &str) -> Result<usize, PushError> {
        check_room_name(room)?;
        let n = self.courier().ask(Query::Size(room.to_string())).await?;
        Ok(n.count()? as usize)
    }

    /// The ids of room `room`'s members, in no particular order.
    pub async fn room_members(&self, room: &str) -> Result<Vec<ChannelId>, PushError> {
        check_room_name(room)?;
        let names = self.courier().ask(Query::Members(room.to_string())).await?;
        Ok(names.names()?.into_iter().map(ChannelId::from).collect())
    }

    /// The rooms of the channel with id `id`.
    pub async fn rooms_of(&self, id: &str) -> Result<Vec<String>, PushError> {
        self.find(id)?.rooms().await
    }

    /// How many channels are in room `room` on every node of the cluster (this node's count
    /// on a single node). [`PushError::Unavailable`] when the other nodes cannot be asked.
    pub async fn cluster_room_size(&self, room: &str) -> Result<usize, PushError> {
        let here = self.room_size(room).await?;
        let elsewhere = self.courier().room_size_elsewhere(room).await?;
        Ok(here + elsewhere)
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("channels", &self.channel_count())
            .finish()
    }
}
