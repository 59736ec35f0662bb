//! A cluster told of rooms' first and last local members.

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::room::RoomWatcher;

/// Tells the cluster when a room gets its first local member and loses its last.
pub(crate) struct ClusterRooms(pub(crate) Arc<dyn Cluster>);

impl RoomWatcher for ClusterRooms {
    fn created(&self, room: &str) {
        self.0.room_created(room);
    }

    fn dropped(&self, room: &str) {
        self.0.room_dropped(room);
    }
}
