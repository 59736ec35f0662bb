//! The running server as the app holds it: [`ServerHandle`], and the state it is a handle
//! to ([`Core`]), which the server's own tasks share too.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::channel::{log_push_failed, Channel, ChannelId, ChannelMap, Context, Delivery, Limits};
use crate::clock::Clock;
use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::cluster::Cluster;
use crate::error::PushError;
use crate::frame::Frame;
use crate::ipc::stats::IpcStats;
use crate::metrics::{HandlerHistogram, Live, Metrics};
use crate::options::ServerOptions;
use crate::room::remote::RemoteRooms;
use crate::room::Rooms;
use crate::server::connections::Connections;
use crate::server::log::TARGET;

/// A future a [`ProcessMode`] returns.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How this process takes part in process mode, as the server's handle needs to know: the
/// master supervises workers; a worker hands shutdowns to its master. A server that runs its
/// handlers in-process has none.
pub(crate) trait ProcessMode: Send + Sync + 'static {
    /// In a worker: asks the master to shut down and returns `true`.
    fn forward_shutdown(&self, _deadline: Duration) -> bool {
        false
    }
    /// Replaces the worker processes one at a time; returns how many were replaced.
    fn reload(&self) -> BoxFuture<'_, usize> {
        Box::pin(async { 0 })
    }
    /// Stops the worker processes, each after handling what it was sent, within `wait`.
    fn stop(&self, _wait: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// What the workers have done, and the time they spent in the message listener.
    fn stats(&self) -> Option<(IpcStats, HandlerHistogram)> {
        None
    }
    /// The worker processes' ids.
    fn pids(&self) -> Vec<u32> {
        Vec::new()
    }
    /// In a worker: the master's rooms.
    fn remote_rooms(&self) -> Option<&dyn RemoteRooms> {
        None
    }
}

/// A server that runs its handlers in-process: it has no workers.
struct NoWorkers;

impl ProcessMode for NoWorkers {}

/// The stages of a server's life that its tasks watch.
#[derive(Default)]
pub(crate) struct Lifecycle {
    /// Cancelled when a shutdown begins: the accept loop and logins in progress stop.
    pub(crate) shutdown: CancellationToken,
    /// Set when a shutdown begins, before the channels are told (a login that finishes
    /// after that closes its own channel).
    shutting_down: AtomicBool,
    /// The accept loop, awaited by the shutdown.
    pub(crate) accept_loop: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// The debug listener's address, once bound.
    pub(crate) debug_addr: OnceLock<SocketAddr>,
    /// Cancelled to stop the debug listener (at the end of a shutdown).
    pub(crate) debug_stop: CancellationToken,
}

impl Lifecycle {
    /// True once a shutdown has begun.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// What a server's tasks and handles share.
pub(crate) struct Core {
    pub(crate) local_addr: SocketAddr,
    pub(crate) options: ServerOptions,
    pub(crate) channels: ChannelMap,
    pub(crate) clock: Arc<Clock>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) connections: Arc<Connections>,
    /// The rooms of this server's channels (unused in a worker: its master has them).
    pub(crate) rooms: Rooms,
    pub(crate) lifecycle: Lifecycle,
    /// Set at start in process mode: the master's workers, or a worker's way to its master.
    process: OnceLock<Arc<dyn ProcessMode>>,
    /// The other nodes, if this server is one of several.
    pub(crate) cluster: Option<Arc<dyn Cluster>>,
}

impl Core {
    pub(crate) fn new(
        options: ServerOptions,
        local_addr: SocketAddr,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Arc<Core> {
        let metrics = Arc::new(Metrics::new(options.metrics()));
        let watcher = cluster.clone().map(|c| {
            Arc::new(crate::cluster::ClusterRooms(c)) as Arc<dyn crate::room::RoomWatcher>
        });
        let rooms = Rooms::new(&options, metrics.clone(), watcher);
        let core = Arc::new(Core {
            local_addr,
            options,
            channels: ChannelMap::new(),
            clock: Arc::new(Clock::new()),
            metrics,
            connections: Arc::default(),
            rooms,
            lifecycle: Lifecycle::default(),
            process: OnceLock::new(),
            cluster,
        });
        core.clock.tick();
        let live: std::sync::Weak<Core> = Arc::downgrade(&core);
        core.metrics.attach(live);
        core
    }

    /// The context of the channels this server logs in (or, in a worker, mirrors), whose
    /// pushes go by `delivery`.
    pub(crate) fn channel_context(self: &Arc<Core>, delivery: Delivery) -> Arc<Context> {
        Arc::new(Context {
            limits: Limits::new(&self.options),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            delivery,
            server: ServerHandle::new(self.clone()),
        })
    }

    /// Makes this server's process a master or a worker of process mode.
    pub(crate) fn set_process_mode(&self, mode: Arc<dyn ProcessMode>) {
        let _ = self.process.set(mode);
    }

    /// How this process takes part in process mode ([`NoWorkers`] in-process).
    pub(crate) fn process(&self) -> &dyn ProcessMode {
        match self.process.get() {
            Some(p) => &**p,
            None => &NoWorkers,
        }
    }
}

impl Live for Core {
    fn connections(&self) -> usize {
        self.connections.active()
    }

    fn channels(&self) -> usize {
        self.channels.len()
    }

    fn workers(&self) -> Option<(IpcStats, HandlerHistogram)> {
        self.process().stats()
    }
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Channels that were logged in when the shutdown began and were sent a close.
    pub channels: usize,
    /// Of those, channels still open at the deadline and dropped without waiting further.
    pub forced: usize,
    /// Connections still alive when the shutdown returned (0 unless a handler hangs).
    pub remaining: usize,
}

/// A handle to a running server: push to any channel, count channels, shut down. Cheap to
/// clone; usable from any task or thread. The server runs until [`ServerHandle::shutdown`]
/// (or the end of its runtime); dropping handles does not stop it.
#[derive(Clone)]
pub struct ServerHandle {
    core: Arc<Core>,
}

impl ServerHandle {
    pub(crate) fn new(core: Arc<Core>) -> ServerHandle {
        ServerHandle { core }
    }

    /// What the handle is a handle to.
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.local_addr
    }

    /// The server's options.
    pub fn options(&self) -> &ServerOptions {
        &self.core.options
    }

    /// The logged-in channels.
    pub fn channels(&self) -> &ChannelMap {
        &self.core.channels
    }

    /// The channel with this id, if it is connected.
    pub fn channel(&self, id: &str) -> Option<Channel> {
        self.core.channels.get(id)
    }

    /// Number of logged-in channels.
    pub fn channel_count(&self) -> usize {
        self.core.channels.len()
    }

    /// Number of connections being served, logging in or logged in.
    pub fn connection_count(&self) -> usize {
        self.core.connections.active()
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
        match self.core.channels.get(id) {
            Some(c) => c.push_frame(frame),
            None => {
                let e = PushError::NotFound(ChannelId::new(id));
                self.core.metrics.push_failed(&e);
                log_push_failed(id, &e);
                Err(e)
            }
        }
    }

    /// Counters since start: connections accepted, refused over the limit, logins, rejected
    /// logins, accept errors.
    pub fn stats(&self) -> ServerStats {
        let m = &self.core.metrics;
        ServerStats {
            accepted: m.accepted.get(),
            refused_over_limit: m.refused_over_limit.get(),
            logins: m.logins.get(),
            rejected: m.rejected_total(),
            accept_errors: m.accept_errors.get(),
        }
    }

    /// The server's metrics ([`crate::metrics`] lists them).
    pub fn metrics(&self) -> &Metrics {
        &self.core.metrics
    }

    /// The server's metrics in Prometheus' text format, as the debug listener serves them on
    /// `/metrics`.
    pub fn metrics_text(&self) -> String {
        self.core.metrics.render()
    }

    /// The debug listener's address, if one was configured
    /// ([`OptionsBuilder::debug_listen`](crate::OptionsBuilder::debug_listen)).
    pub fn debug_addr(&self) -> Option<SocketAddr> {
        self.core.lifecycle.debug_addr.get().copied()
    }

    /// In process mode, replaces the worker processes one at a time (each first handles what
    /// it was sent; no client connection is closed) and returns how many were replaced. The
    /// same happens on SIGUSR1 to the master. 0 in-process or in a worker.
    pub async fn reload_workers(&self) -> usize {
        self.core.process().reload().await
    }

    /// In process mode (in the master), what the IPC backend has done; `None` otherwise.
    pub fn ipc_stats(&self) -> Option<IpcStats> {
        Some(self.core.process().stats()?.0)
    }

    /// In process mode (in the master), the worker processes' ids (0 for one being started).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.core.process().pids()
    }

    /// True once a shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.core.lifecycle.shutting_down()
    }

    /// Shuts the server down: stops accepting, sends every channel a close (1001, after what is
    /// already queued), and waits for the connections to end, at most `deadline`; channels
    /// still open then are dropped. Every channel's disconnect is reported, once.
    ///
    /// In process mode the workers are stopped last, each after handling everything sent to
    /// it (disconnects included). Called in a worker, it asks the master to shut down and
    /// returns at once with an empty report.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let core = &self.core;
        if core.process().forward_shutdown(deadline) {
            return ShutdownReport {
                channels: 0,
                forced: 0,
                remaining: 0,
            };
        }
        let started = tokio::time::Instant::now();
        let life = &core.lifecycle;
        life.shutting_down.store(true, Ordering::SeqCst);
        life.shutdown.cancel();
        let accept = life.accept_loop.lock().take();
        if let Some(task) = accept {
            let _ = task.await;
        }
        let reason = CloseReason::new(CloseReason::GOING_AWAY, "server shutting down");
        let mut channels = 0;
        core.channels.for_each(|c| {
            channels += 1;
            c.request_close(reason.clone(), CloseMode::Graceful, CloseCause::Shutdown);
        });
        info!(target: TARGET, channels, "shutting down");
        let mut forced = 0;
        if tokio::time::timeout(deadline, core.connections.idle())
            .await
            .is_err()
        {
            core.channels.for_each(|c| {
                forced += 1;
                c.request_close(reason.clone(), CloseMode::Abort, CloseCause::Shutdown);
            });
            let _ = tokio::time::timeout(Duration::from_secs(1), core.connections.idle()).await;
        }
        let remaining = core.connections.active();
        let left = deadline.saturating_sub(started.elapsed());
        core.process().stop(left.max(Duration::from_secs(2))).await;
        if let Some(cluster) = &core.cluster {
            let _ = tokio::time::timeout(Duration::from_secs(2), cluster.shutdown()).await;
        }
        life.debug_stop.cancel();
        info!(target: TARGET, channels, forced, remaining, "shutdown complete");
        ShutdownReport {
            channels,
            forced,
            remaining,
        }
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.core.local_addr)
            .field("channels", &self.core.channels.len())
            .finish()
    }
}

/// Counters kept by the server since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted from the listening socket.
    pub accepted: u64,
    /// Connections closed at once because max_connections were being served.
    pub refused_over_limit: u64,
    /// Successful logins.
    pub logins: u64,
    /// Refused logins (acceptor rejections, timeouts, duplicates).
    pub rejected: u64,
    /// Failed accepts (the accept loop backs off on resource errors and goes on).
    pub accept_errors: u64,
}
