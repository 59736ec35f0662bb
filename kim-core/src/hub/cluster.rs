//! The courier of a node of a cluster: the local courier for what this node holds, and the
//! cluster for the rest. The cluster reaches back into this node through [`ServerNode`], which
//! stays on this node.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::channel::courier::{BoxFuture, Courier};
use crate::channel::id::ChannelId;
use crate::channel::map::ChannelMap;
use crate::channel::{check_push, Channel};
use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::cluster::error::ClusterError;
use crate::cluster::{Claim, Cluster, LocalNode};
use crate::error::PushError;
use crate::frame::Frame;
use crate::hub::local::LocalCourier;
use crate::metrics::Metrics;
use crate::options::DuplicatePolicy;
use crate::room::policy::Published;
use crate::room::query::{Answer, Query};
use crate::room::watcher::RoomWatcher;

/// A node of a cluster: this node's channels and rooms, and the other nodes.
pub(crate) struct ClusterCourier {
    local: Arc<LocalCourier>,
    cluster: Arc<dyn Cluster>,
    max_message_size: usize,
}

impl ClusterCourier {
    /// Joins `cluster` with `local` as this node (made with [`ClusterCourier::watcher`] as its
    /// rooms' watcher): the cluster serves the other nodes' requests from now on.
    pub(crate) fn start(
        local: LocalCourier,
        cluster: Arc<dyn Cluster>,
        metrics: Arc<Metrics>,
        max_message_size: usize,
    ) -> ClusterCourier {
        let local = Arc::new(local);
        cluster.attach(Arc::new(ServerNode {
            local: Arc::downgrade(&local),
            metrics,
        }));
        ClusterCourier {
            local,
            cluster,
            max_message_size,
        }
    }

    /// What tells `cluster` of rooms' first and last local members, so that this node
    /// receives the other nodes' publishes to exactly the rooms it has members in.
    pub(crate) fn watcher(cluster: &Arc<dyn Cluster>) -> Arc<dyn RoomWatcher> {
        Arc::new(ClusterRooms(cluster.clone()))
    }
}

impl Courier for ClusterCourier {
    fn channels(&self) -> &ChannelMap {
        self.local.channels()
    }

    fn push(&self, chan: &Channel, frame: Frame) -> Result<(), PushError> {
        self.local.push(chan, frame)
    }

    fn close(&self, chan: &Channel, reason: CloseReason) {
        self.local.close(chan, reason)
    }

    fn push_elsewhere<'a>(
        &'a self,
        id: &'a str,
        frame: Frame,
    ) -> BoxFuture<'a, Result<(), PushError>> {
        Box::pin(async move {
            check_push(&frame, self.max_message_size)?;
            self.cluster.push(id, frame).await
        })
    }

    fn locate_elsewhere<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ClusterError>> {
        self.cluster.locate(id)
    }

    fn join(&self, chan: &Channel, room: &str) -> Result<(), PushError> {
        self.local.join(chan, room)
    }

    fn leave(&self, chan: &Channel, room: &str) -> Result<(), PushError> {
        self.local.leave(chan, room)
    }

    fn publish(
        &self,
        room: &str,
        frame: Frame,
        except: Option<u64>,
    ) -> Result<Published, PushError> {
        // Checked before anything is sent, so the other nodes get only what this one would
        // deliver.
        self.local.rooms().check_publish(room, &frame)?;
        let forwarded = self.cluster.publish(room, &frame).is_ok();
        let done = self.local.publish(room, frame, except)?;
        Ok(Published { forwarded, ..done })
    }

    fn ask(&self, query: Query) -> BoxFuture<'_, Result<Answer, PushError>> {
        self.local.ask(query)
    }

    fn room_size_elsewhere<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<usize, PushError>> {
        Box::pin(async move {
            self.cluster
                .room_size(room)
                .await
                .map_err(PushError::Unavailable)
        })
    }

    fn claim<'a>(
        &'a self,
        chan: &'a Channel,
        policy: DuplicatePolicy,
    ) -> BoxFuture<'a, Result<Claim, ClusterError>> {
        self.cluster.claim(chan.id(), policy)
    }

    fn ended(&self, chan: &Channel) {
        if self.local.remove(chan) {
            self.cluster.release(chan.id());
        }
    }

    fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        Some(&self.cluster)
    }

    fn stop(&self, wait: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(wait, self.cluster.shutdown()).await;
        })
    }
}

/// Tells the cluster when a room gets its first local member and loses its last.
struct ClusterRooms(Arc<dyn Cluster>);

impl RoomWatcher for ClusterRooms {
    fn created(&self, room: &str) {
        self.0.room_created(room);
    }

    fn dropped(&self, room: &str) {
        self.0.room_dropped(room);
    }
}

/// This node seen from its cluster; holds the node's courier weakly, so it does not keep the
/// server alive. Everything it does stays on this node.
struct ServerNode {
    local: Weak<LocalCourier>,
    metrics: Arc<Metrics>,
}

impl LocalNode for ServerNode {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn push(&self, id: &str, frame: Frame) -> Result<(), PushError> {
        let chan = self.local.upgrade().and_then(|l| l.channels().get(id));
        match chan {
            Some(c) => c.push_frame(frame),
            None => Err(PushError::NotFound(ChannelId::new(id))),
        }
    }

    fn publish(&self, room: &str, frame: Frame) -> Result<Published, PushError> {
        match self.local.upgrade() {
            Some(local) => local.publish(room, frame, None),
            None => Ok(Published::default()),
        }
    }

    fn holds(&self, id: &str) -> bool {
        self.local
            .upgrade()
            .is_some_and(|l| l.channels().contains(id))
    }

    fn kick(&self, id: &str) -> bool {
        let Some(chan) = self.local.upgrade().and_then(|l| l.channels().get(id)) else {
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
        let Some(local) = self.local.upgrade() else {
            return Vec::new();
        };
        let mut ids = Vec::with_capacity(local.channels().len());
        local.channels().for_each(|c| ids.push(c.id().clone()));
        ids
    }

    fn rooms(&self) -> Vec<String> {
        self.local
            .upgrade()
            .map(|l| l.rooms().names())
            .unwrap_or_default()
    }

    fn room_size(&self, room: &str) -> usize {
        self.local.upgrade().map_or(0, |l| l.rooms().size(room))
    }
}

impl std::fmt::Debug for ServerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerNode")
            .field("running", &(self.local.strong_count() > 0))
            .finish()
    }
}
