//! The server as its cluster sees it: what other nodes' requests may do here.

use std::sync::{Arc, Weak};

use crate::channel::ChannelId;
use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::cluster::LocalNode;
use crate::error::PushError;
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::room::{Published, RoomError};
use crate::server::handle::Core;

/// A server seen from its cluster; holds the server weakly, so it does not keep it alive.
pub(crate) struct ServerNode {
    core: Weak<Core>,
    metrics: Arc<Metrics>,
}

impl ServerNode {
    pub(crate) fn new(core: &Arc<Core>) -> ServerNode {
        ServerNode {
            core: Arc::downgrade(core),
            metrics: core.metrics.clone(),
        }
    }
}

impl LocalNode for ServerNode {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn push(&self, id: &str, frame: Frame) -> Result<(), PushError> {
        let chan = self.core.upgrade().and_then(|core| core.channels.get(id));
        match chan {
            Some(c) => c.push_frame(frame),
            None => Err(PushError::NotFound(ChannelId::new(id))),
        }
    }

    fn publish(&self, room: &str, frame: Frame) -> Result<Published, RoomError> {
        match self.core.upgrade() {
            Some(core) => core.rooms.publish(room, frame, None),
            None => Ok(Published::default()),
        }
    }

    fn holds(&self, id: &str) -> bool {
        self.core
            .upgrade()
            .is_some_and(|core| core.channels.contains(id))
    }

    fn kick(&self, id: &str) -> bool {
        let Some(chan) = self.core.upgrade().and_then(|core| core.channels.get(id)) else {
            return false;
        };
        chan.request_close(
            CloseReason::policy("kicked by a new login"),
            CloseMode::Graceful,
            CloseCause::Kicked,
        );
        true
    }

    fn ids(&self) -> Vec<ChannelId> {
        let Some(core) = self.core.upgrade() else {
            return Vec::new();
        };
        let mut ids = Vec::with_capacity(core.channels.len());
        core.channels.for_each(|c| ids.push(c.id().clone()));
        ids
    }

    fn rooms(&self) -> Vec<String> {
        self.core
            .upgrade()
            .map(|core| core.rooms.names())
            .unwrap_or_default()
    }

    fn room_size(&self, room: &str) -> usize {
        self.core.upgrade().map_or(0, |core| core.rooms.size(room))
    }
}

impl std::fmt::Debug for ServerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerNode")
            .field("running", &(self.core.strong_count() > 0))
            .finish()
    }
}
