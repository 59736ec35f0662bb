//! What a channel shares with the rest of its server ([`Context`]), and the one seam through
//! which everything a channel, a handler or the server's handle sends leaves: the
//! [`Courier`].
//!
//! kim runs in three modes, and the courier is what differs between them:
//! - in-process (`hub::local::LocalCourier`): the sockets are in this process; a push goes
//!   into the channel's outbox, and the rooms are this process's;
//! - a node of a cluster (`hub::cluster::ClusterCourier`): the local courier, and what it
//!   cannot reach (a user on another node, a room's members elsewhere) goes to the cluster;
//! - a worker process (`ipc::courier::WorkerCourier`): the sockets and the rooms are the
//!   master's, and everything travels to it over the worker's link.
//!
//! The mode is chosen once, when the server starts. Nothing else in kim asks which one it is:
//! what a channel sends goes to its context's courier, whatever that courier is.

use std::future::{ready, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::channel::id::ChannelId;
use crate::channel::map::ChannelMap;
use crate::channel::sessions::{HeldTally, Sessions};
use crate::channel::{Channel, Limits};
use crate::clock::Clock;
use crate::close::CloseReason;
use crate::cluster::error::ClusterError;
use crate::cluster::{Claim, Cluster};
use crate::connections::Connections;
use crate::error::PushError;
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::options::DuplicatePolicy;
use crate::room::policy::Published;
use crate::room::query::{Answer, Query};

/// A future a [`Courier`] returns.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a channel needs from its server, shared by all of the server's channels.
pub(crate) struct Context {
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<Clock>,
    pub(crate) metrics: Arc<Metrics>,
    /// The connections being served: a channel's session leaves them when it ends.
    pub(crate) connections: Arc<Connections>,
    /// Where what the channels send goes.
    pub(crate) courier: Arc<dyn Courier>,
    /// What the channels with a session share.
    pub(crate) sessions: Sessions,
}

impl Context {
    /// Settles what pushes added to the sessions' held messages with the server's total.
    pub(crate) fn settle(&self, held: HeldTally) {
        let channels = self.courier.channels();
        held.settle(&self.sessions.total, &self.metrics.sessions, channels);
    }
}

/// Where pushes, room operations and closes go in this server's mode.
///
/// Methods that return nothing, or a result at once, never wait; those that may ask another
/// process or node return a future bounded in time by the courier. The methods about what
/// lies beyond this process (another node) answer by default as a single node does: nobody
/// is there; the cluster's courier says otherwise.
pub(crate) trait Courier: Send + Sync + 'static {
    /// The channels this process knows by id: its own, or in a worker, those mirrored from
    /// the master.
    fn channels(&self) -> &ChannelMap;

    /// Delivers a data frame, already checked against the limits, to `chan`.
    fn push(&self, chan: &Channel, frame: Frame) -> Result<(), PushError>;

    /// Closes `chan` with `reason`, after what is queued for it.
    fn close(&self, chan: &Channel, reason: CloseReason);

    /// Pushes to `id`, which no channel of this process has: a user on another node.
    /// [`PushError::NotFound`] where nothing lies beyond this process.
    fn push_elsewhere<'a>(
        &'a self,
        id: &'a str,
        frame: Frame,
    ) -> BoxFuture<'a, Result<(), PushError>> {
        let _ = frame;
        Box::pin(ready(Err(PushError::NotFound(ChannelId::new(id)))))
    }

    /// The node that holds `id`, which no channel of this process has.
    fn locate_elsewhere<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ClusterError>> {
        let _ = id;
        Box::pin(ready(Ok(None)))
    }

    /// Puts `chan` in room `room`.
    fn join(&self, chan: &Channel, room: &str) -> Result<(), PushError>;

    /// Takes `chan` out of room `room`.
    fn leave(&self, chan: &Channel, room: &str) -> Result<(), PushError>;

    /// Publishes `frame` to every member of room `room` but the channel with serial `except`.
    fn publish(
        &self,
        room: &str,
        frame: Frame,
        except: Option<u64>,
    ) -> Result<Published, PushError>;

    /// Answers a question about the rooms of this process (in a worker: of its master).
    fn ask(&self, query: Query) -> BoxFuture<'_, Result<Answer, PushError>>;

    /// Members of room `room` beyond this process: on the other nodes.
    fn room_size_elsewhere<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<usize, PushError>> {
        let _ = room;
        Box::pin(ready(Ok(0)))
    }

    /// Claims `chan`'s id beyond this process as part of its login (it is in the channel map
    /// already): granted where nothing lies beyond.
    fn claim<'a>(
        &'a self,
        chan: &'a Channel,
        policy: DuplicatePolicy,
    ) -> BoxFuture<'a, Result<Claim, ClusterError>> {
        let _ = (chan, policy);
        Box::pin(ready(Ok(Claim::Granted)))
    }

    /// `chan` ended: it leaves its rooms, then the channel map, and its id is given up.
    fn ended(&self, chan: &Channel);

    /// The cluster this server is a node of, if it is one.
    fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        None
    }

    /// The end of a shutdown, once the channels are gone: leaves what lies beyond this
    /// process, within `wait`.
    fn stop(&self, wait: Duration) -> BoxFuture<'_, ()> {
        let _ = wait;
        Box::pin(ready(()))
    }
}
