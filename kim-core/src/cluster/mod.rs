//! Several gateway nodes acting as one: the seam between a server and a distributed engine.
//!
//! One node is the default and needs nothing: without a [`Cluster`], pushes and rooms reach
//! the channels of this process, and a duplicate login is a duplicate in this process. With
//! one ([`DefaultServer::with_cluster`](crate::DefaultServer::with_cluster); the `kim-nats`
//! crate implements it over NATS), the same calls span every node:
//!
//! - [`Hub::push_to`](crate::Hub::push_to) reaches a user on whichever node
//!   holds the channel, and says at once when nobody does;
//! - a room publish reaches the members on every node, each node receiving it once and
//!   fanning it out to its own members (a node asks for a room's traffic while it has local
//!   members: [`Cluster::room_created`] and [`Cluster::room_dropped`]);
//! - a login claims its id cluster-wide before it is reported ([`Cluster::claim`]), so the
//!   [`DuplicatePolicy`] holds across nodes;
//! - [`Hub::locate`](crate::Hub::locate) and
//!   [`Hub::cluster_room_size`](crate::Hub::cluster_room_size) answer for
//!   the whole cluster.
//!
//! The server calls the cluster; the cluster reaches back into the server only through the
//! [`LocalNode`] it is given when the server starts. Nothing in kim-core depends on a broker.
//!
//! Local traffic never waits on the cluster: a push to a local channel, a local fan-out and a
//! login whose claim cannot be made (the broker is away) go on as on a single node. Calls that
//! need the broker are bounded in time and fail with a [`ClusterError`].

pub(crate) mod error;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use error::ClusterError;

use crate::channel::id::ChannelId;
use crate::error::PushError;
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::options::DuplicatePolicy;
use crate::room::policy::Published;

/// A future returned by a [`Cluster`].
pub type ClusterFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The outcome of a claim on an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node holds the id now (any older holder elsewhere was kicked, under
    /// [`DuplicatePolicy::Kick`]).
    Granted,
    /// Another node holds the id and keeps it ([`DuplicatePolicy::Reject`]).
    Refused {
        /// The node that holds it.
        owner: String,
    },
}

/// Where a user id is logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// On this node.
    Here,
    /// On the node with this name.
    Node(String),
}

/// How a server reaches the other nodes of its cluster.
///
/// Methods that return nothing are called from the server's hot paths, some under its locks:
/// they must not block and must not call back into the server; they hand their work to the
/// cluster's own tasks, which apply it in the order it was given.
pub trait Cluster: Send + Sync + 'static {
    /// This node's name, unique in the cluster.
    fn node(&self) -> &str;

    /// Called once when the server starts, with the way back into it. The cluster starts
    /// serving the other nodes' requests from then on.
    fn attach(&self, local: Arc<dyn LocalNode>);

    /// Claims `id` for this node, as part of a login (the channel is already in this node's
    /// map, so requests about `id` are answered from then on). Under
    /// [`DuplicatePolicy::Kick`] an older holder elsewhere is closed; under
    /// [`DuplicatePolicy::Reject`] it keeps the id and the claim is refused. Two claims racing
    /// on two nodes: exactly one is granted.
    fn claim<'a>(
        &'a self,
        id: &'a ChannelId,
        policy: DuplicatePolicy,
    ) -> ClusterFuture<'a, Result<Claim, ClusterError>>;

    /// Gives up `id`: its channel has left this node's map. Done in the background; a newer
    /// login of the same id on this node (the map holds it again) keeps the claim.
    fn release(&self, id: &ChannelId);

    /// Pushes a data frame to `id` on another node. `Ok` once the owner's outbox took it;
    /// [`PushError::NotFound`] when no node holds `id`.
    fn push<'a>(&'a self, id: &'a str, frame: Frame) -> ClusterFuture<'a, Result<(), PushError>>;

    /// The node that holds `id`, if another node does.
    fn locate<'a>(&'a self, id: &'a str)
        -> ClusterFuture<'a, Result<Option<String>, ClusterError>>;

    /// Room `room` got its first local member: from now on this node receives the room's
    /// publishes from other nodes.
    fn room_created(&self, room: &str);

    /// Room `room` lost its last local member.
    fn room_dropped(&self, room: &str);

    /// Sends a publish to room `room` to the other nodes (this node's members are reached
    /// already). Never waits.
    fn publish(&self, room: &str, frame: &Frame) -> Result<(), ClusterError>;

    /// Members of room `room` on the other nodes.
    fn room_size<'a>(&'a self, room: &'a str) -> ClusterFuture<'a, Result<usize, ClusterError>>;

    /// True while the broker is reachable.
    fn is_connected(&self) -> bool;

    /// Called at the end of the server's shutdown, after its channels are gone: finishes the
    /// releases in flight and leaves the cluster.
    fn shutdown(&self) -> ClusterFuture<'_, ()>;
}

/// The way back from a [`Cluster`] into its server: deliveries that came from other nodes, and
/// what this node holds. Everything here stays on this node (nothing is sent to the cluster
/// again). Once the server is gone, deliveries fail as if nobody were here.
pub trait LocalNode: Send + Sync + 'static {
    /// The server's metrics: a cluster registers its own in [`Metrics::registry`].
    fn metrics(&self) -> &Metrics;
    /// Pushes `frame` to the local channel with id `id`.
    fn push(&self, id: &str, frame: Frame) -> Result<(), PushError>;
    /// Publishes `frame` to the local members of room `room`.
    fn publish(&self, room: &str, frame: Frame) -> Result<Published, PushError>;
    /// True if a channel with id `id` is logged in here.
    fn holds(&self, id: &str) -> bool;
    /// Closes the local channel with id `id`, as a newer login elsewhere takes its place.
    /// Returns whether there was one.
    fn kick(&self, id: &str) -> bool;
    /// The ids of the channels logged in here.
    fn ids(&self) -> Vec<ChannelId>;
    /// The rooms with local members.
    fn rooms(&self) -> Vec<String>;
    /// Members of room `room` here.
    fn room_size(&self, room: &str) -> usize;
}
