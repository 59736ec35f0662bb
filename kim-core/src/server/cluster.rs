//! The cluster-wide operations of [`ServerHandle`]: a push to a user on any node, where a user
//! is, and a room's size over every node. On a single node they answer for this node alone.

use std::sync::Arc;

use crate::channel::{check_push, log_push_failed};
use crate::cluster::{Cluster, Location};
use crate::error::PushError;
use crate::frame::Frame;
use crate::room::{check_room_name, RoomError};
use crate::server::ServerHandle;

impl ServerHandle {
    /// The cluster this server is a node of, if any.
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.core().cluster.as_ref()
    }

    /// Pushes `frame` to the channel with id `id` on whichever node holds it.
    ///
    /// A channel of this node is pushed to at once, as [`ServerHandle::push_frame`] does.
    /// Otherwise the cluster is asked, which takes one round trip through the broker and is
    /// bounded by the cluster's request timeout: [`PushError::NotFound`] when no node holds
    /// `id`, [`PushError::Unavailable`] when the broker cannot be reached or the owner did not
    /// answer in time. On a single node this is `push_frame`.
    ///
    /// In a worker process (process mode), only the channels of its own server are reached.
    pub async fn push_to(&self, id: &str, frame: Frame) -> Result<(), PushError> {
        let core = self.core();
        if let Some(chan) = core.channels.get(id) {
            return chan.push_frame(frame);
        }
        let Some(cluster) = &core.cluster else {
            return self.push_frame(id, frame);
        };
        let result = match check_push(&frame, core.options.max_message_size()) {
            Ok(()) => cluster.push(id, frame).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            core.metrics.push_failed(e);
            log_push_failed(id, e);
        }
        result
    }

    /// Pushes a text message to `id` on whichever node holds it (see
    /// [`ServerHandle::push_to`]).
    pub async fn push_text_to(&self, id: &str, text: impl Into<String>) -> Result<(), PushError> {
        self.push_to(id, Frame::text(text.into())).await
    }

    /// Where the user with id `id` is logged in: here, on another node of the cluster, or
    /// nowhere (`None`). Asking the cluster is bounded by its request timeout.
    pub async fn locate(&self, id: &str) -> Result<Option<Location>, PushError> {
        let core = self.core();
        if core.channels.contains(id) {
            return Ok(Some(Location::Here));
        }
        match &core.cluster {
            None => Ok(None),
            Some(cluster) => match cluster.locate(id).await {
                Ok(node) => Ok(node.map(Location::Node)),
                Err(e) => Err(PushError::Unavailable(e)),
            },
        }
    }

    /// How many channels are in room `room` on every node of the cluster (this node's count
    /// on a single node). [`RoomError::Unavailable`] when the other nodes cannot be asked.
    pub async fn cluster_room_size(&self, room: &str) -> Result<usize, RoomError> {
        check_room_name(room)?;
        let here = self.room_size(room).await?;
        match &self.core().cluster {
            None => Ok(here),
            Some(cluster) => match cluster.room_size(room).await {
                Ok(elsewhere) => Ok(here + elsewhere),
                Err(_) => Err(RoomError::Unavailable),
            },
        }
    }
}
