//! kim's cluster over NATS: several gateway nodes act as one.
//!
//! ```no_run
//! use kim_nats::{NatsCluster, NatsOptions};
//!
//! # async fn run(transport: impl kim_core::Upgrader<tokio::net::TcpStream>,
//! #              listener: impl kim_core::MessageListener) -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = NatsCluster::connect(NatsOptions::new("nats://127.0.0.1:4222", "node-a")).await?;
//! let handle = kim_core::DefaultServer::new(transport, listener)
//!     .with_cluster(cluster)
//!     .start("0.0.0.0:8000")
//!     .await?;
//! // `push_to`, room publishes and duplicate logins now span every node.
//! # Ok(()) }
//! ```
//!
//! # How the nodes find each other's users
//!
//! Each node subscribes to one subject of its own (`kim.<cluster>.n.<node>.*.*`), whatever the
//! number of users it holds, and the claims bucket below says which node holds which id. A
//! push to a user elsewhere reads the user's key (skipped when the answer is in a bounded
//! cache of recent ones) and is then one NATS request to that node, answered once its outbox
//! took the frame. A user nobody claims is offline at once, without asking any node; a cached
//! node that no longer holds the user says so, and the key is read afresh once. A node that
//! dies takes its subscription with it the moment its connection to NATS closes: NATS answers
//! a request to it with "no responders" at once, so its users are offline at once (for a host
//! that vanishes without closing its connections, NATS notices after its ping interval: two
//! minutes by default, `ping_interval` in the server's configuration).
//!
//! # One login per id
//!
//! A login's id is claimed in a JetStream key-value bucket (`kim-<cluster>-users`, key = the
//! id, value = the node): `create` succeeds for exactly one of two racing claims. The loser
//! asks the owner (a request on the owner's subject) whether it still holds the id. An owner
//! that answers "yes" keeps it (reject policy) or is told to close its channel (kick policy,
//! after which the key changes hands by compare-and-set on its revision). An owner that
//! answers "no", or nobody (a dead node, "no responders"), or a node silent for three
//! heartbeats, loses the key by compare-and-set: a restarted node, or any other, takes its
//! users back without cleanup.
//!
//! # Rooms
//!
//! A node subscribes to a room's subject (`kim.<cluster>.r.<room>.*`) while the room has
//! members on it, so each publish reaches each interested node once and each node fans it out
//! to its own members, encoded once. Connections use NATS's `no_echo`: a node does not receive
//! its own publishes.
//!
//! # When the broker goes away
//!
//! Local traffic goes on. Calls that need the broker fail at once with
//! [`ClusterError::Disconnected`] (a push: [`PushError::Unavailable`](kim_core::PushError)),
//! logins are let in on this node alone, and the client reconnects by itself, every 250 ms at
//! most. Once back, NATS gets every subscription again, and every local login is claimed (or
//! confirmed) again: one that lost its id meanwhile to a login elsewhere is closed.

mod claims;
mod directory;
mod error;
mod metrics;
mod nodes;
mod options;
mod rooms;
mod subject;
mod users;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::{Client, ConnectOptions, Event, Subscriber};
use bytes::Bytes;
use kim_core::cluster::{Claim, Cluster, ClusterError, ClusterFuture, LocalNode};
use kim_core::{ChannelId, DuplicatePolicy, Frame, PushError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::NatsError;
pub use options::NatsOptions;

use crate::claims::Claims;
use crate::directory::Directory;
use crate::metrics::ClusterMetrics;
use crate::nodes::Nodes;
use crate::subject::Subjects;

/// A node of a kim cluster whose nodes meet in NATS: give it to
/// [`DefaultServer::with_cluster`](kim_core::DefaultServer::with_cluster).
pub struct NatsCluster {
    inner: Arc<Inner>,
}

/// What the cluster's tasks share.
pub(crate) struct Inner {
    pub(crate) node: String,
    pub(crate) client: Client,
    pub(crate) users_kv: kv::Store,
    pub(crate) subjects: Subjects,
    pub(crate) timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) metrics: ClusterMetrics,
    pub(crate) local: OnceLock<Arc<dyn LocalNode>>,
    pub(crate) claims: Claims,
    pub(crate) directory: Directory,
    pub(crate) nodes: Nodes,
    /// Rooms whose local membership may have crossed zero, for the task that subscribes.
    pub(crate) interest: mpsc::UnboundedSender<String>,
    /// Room publishes on their way to the broker, in order.
    pub(crate) outgoing: mpsc::Sender<(String, Bytes)>,
    /// The long-running tasks, and the releases in flight.
    pub(crate) tasks: TaskTracker,
    pub(crate) releases: TaskTracker,
    pub(crate) stop: CancellationToken,
    /// The receiving ends, taken by `attach`.
    receivers: parking_lot::Mutex<Option<Receivers>>,
}

struct Receivers {
    /// This node's subject: the requests about the users it holds.
    requests: Subscriber,
    interest: mpsc::UnboundedReceiver<String>,
    outgoing: mpsc::Receiver<(String, Bytes)>,
    events: mpsc::UnboundedReceiver<Event>,
}

/// Room publishes queued for the broker at most; past it a publish still reaches this node's
/// members but not the others (and is counted as `queue_full`).
const OUTGOING_QUEUE: usize = 8192;

impl NatsCluster {
    /// Connects to NATS and opens the cluster's key-value bucket (making it if needed).
    /// Fails, rather than waits, when the server cannot be reached.
    pub async fn connect(options: NatsOptions) -> Result<NatsCluster, NatsError> {
        options.check()?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let client = ConnectOptions::new()
            .name(format!("kim-{}-{}", options.cluster, options.node))
            .no_echo()
            .connection_timeout(options.request_timeout)
            .request_timeout(Some(options.request_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((50 * attempts as u64).min(250))
            })
            .event_callback(move |event| {
                let _ = events_tx.send(event);
                async {}
            })
            .connect(options.url.as_str())
            .await
            .map_err(|e| NatsError::Connect {
                url: options.url.clone(),
                reason: e.to_string(),
            })?;
        let users_kv = claims::open_bucket(&client, &options).await?;
        let subjects = Subjects::new(&options.cluster);
        // Before any claim: once a key names this node, it answers for the id.
        let requests = client
            .subscribe(subjects.node_all(&options.node))
            .await
            .map_err(|e| NatsError::Connect {
                url: options.url.clone(),
                reason: format!("subscribing to this node's subject: {e}"),
            })?;
        let (interest, interest_rx) = mpsc::unbounded_channel();
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        let inner = Arc::new(Inner {
            subjects,
            nodes: Nodes::new(&options.node, options.heartbeat),
            node: options.node,
            client,
            users_kv,
            timeout: options.request_timeout,
            heartbeat: options.heartbeat,
            metrics: ClusterMetrics::new(),
            local: OnceLock::new(),
            claims: Claims::new(),
            directory: Directory::new(),
            interest,
            outgoing,
            tasks: TaskTracker::new(),
            releases: TaskTracker::new(),
            stop: CancellationToken::new(),
            receivers: parking_lot::Mutex::new(Some(Receivers {
                requests,
                interest: interest_rx,
                outgoing: outgoing_rx,
                events,
            })),
        });
        inner.metrics.connected.set(1);
        Ok(NatsCluster { inner })
    }

    /// The NATS client, for the app's own subjects.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The nodes heard from within three heartbeats, this one included.
    pub fn nodes(&self) -> Vec<String> {
        self.inner.nodes.live()
    }
}

impl Inner {
    /// True while the broker is reachable.
    pub(crate) fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The server this node serves (set by `attach`).
    pub(crate) fn local(&self) -> Option<&dyn LocalNode> {
        self.local.get().map(|l| &**l)
    }

    /// Reacts to the client's connection events: the broker gauge, and everything claimed and
    /// subscribed again after a reconnect.
    async fn watch_events(self: Arc<Inner>, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut lost = false;
        loop {
            let event = tokio::select! {
                _ = self.stop.cancelled() => return,
                e = events.recv() => match e { Some(e) => e, None => return },
            };
            match event {
                Event::Connected => {
                    self.metrics.connected.set(1);
                    if lost {
                        lost = false;
                        tracing::info!(node = %self.node, "cluster broker reconnected; claiming local users again");
                        if let Some(local) = self.local() {
                            for room in local.rooms() {
                                let _ = self.interest.send(room);
                            }
                        }
                        claims::reclaim_all(&self).await;
                    }
                }
                Event::Disconnected => {
                    lost = true;
                    self.metrics.connected.set(0);
                    tracing::warn!(node = %self.node, "cluster broker unreachable; serving local traffic only");
                }
                other => tracing::debug!(node = %self.node, event = %other, "cluster broker event"),
            }
        }
    }
}

impl Cluster for NatsCluster {
    fn node(&self) -> &str {
        &self.inner.node
    }

    fn attach(&self, local: Arc<dyn LocalNode>) {
        let inner = &self.inner;
        inner.metrics.register(local.metrics().registry());
        let _ = inner.local.set(local);
        let Some(rx) = inner.receivers.lock().take() else {
            return;
        };
        inner.tasks.spawn(users::answer(inner.clone(), rx.requests));
        inner.tasks.spawn(rooms::follow(inner.clone(), rx.interest));
        inner.tasks.spawn(rooms::send(inner.clone(), rx.outgoing));
        inner.tasks.spawn(rooms::answer_sizes(inner.clone()));
        inner.tasks.spawn(nodes::beat(inner.clone()));
        inner.tasks.spawn(nodes::listen(inner.clone()));
        inner.tasks.spawn(inner.clone().watch_events(rx.events));
    }

    fn claim<'a>(
        &'a self,
        id: &'a ChannelId,
        policy: DuplicatePolicy,
    ) -> ClusterFuture<'a, Result<Claim, ClusterError>> {
        Box::pin(claims::claim(&self.inner, id, policy))
    }

    fn release(&self, id: &ChannelId) {
        let inner = self.inner.clone();
        let id = id.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            self.inner
                .releases
                .spawn(async move { claims::release(&inner, &id).await });
        }
    }

    fn push<'a>(&'a self, id: &'a str, frame: Frame) -> ClusterFuture<'a, Result<(), PushError>> {
        Box::pin(users::push(&self.inner, id, frame))
    }

    fn locate<'a>(
        &'a self,
        id: &'a str,
    ) -> ClusterFuture<'a, Result<Option<String>, ClusterError>> {
        Box::pin(users::locate(&self.inner, id))
    }

    fn room_created(&self, room: &str) {
        let _ = self.inner.interest.send(room.to_string());
    }

    fn room_dropped(&self, room: &str) {
        let _ = self.inner.interest.send(room.to_string());
    }

    fn publish(&self, room: &str, frame: &Frame) -> Result<(), ClusterError> {
        rooms::publish(&self.inner, room, frame)
    }

    fn room_size<'a>(&'a self, room: &'a str) -> ClusterFuture<'a, Result<usize, ClusterError>> {
        Box::pin(rooms::size(&self.inner, room))
    }

    fn is_connected(&self) -> bool {
        self.inner.connected()
    }

    fn shutdown(&self) -> ClusterFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.releases.close();
            let _ = tokio::time::timeout(inner.timeout, inner.releases.wait()).await;
            inner.stop.cancel();
            inner.tasks.close();
            let _ = tokio::time::timeout(inner.timeout, inner.tasks.wait()).await;
            if inner.connected() {
                let _ = tokio::time::timeout(inner.timeout, inner.client.flush()).await;
            }
        })
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.inner.stop.cancel();
    }
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("node", &self.inner.node)
            .field("connected", &self.inner.connected())
            .finish()
    }
}

/// A broker error as a cluster error.
pub(crate) fn broker(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Broker(e.to_string())
}
