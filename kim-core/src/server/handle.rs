//! The running server as the app holds it: [`ServerHandle`]. Its messages (pushes, rooms,
//! lookups) are its [`Hub`]'s, which it dereferences to; what is its own is the server's
//! life: its address and options, its counters and metrics, its workers, its shutdown.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::hub::Hub;
use crate::ipc::stats::IpcStats;
use crate::metrics::Metrics;
use crate::options::ServerOptions;
use crate::server::core::Core;
use crate::server::log::TARGET;

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

/// A handle to a running server: everything its [`Hub`] does (push to any channel, rooms,
/// lookups: the handle dereferences to it), and the server's life (counters, metrics,
/// workers, shutdown). Cheap to clone; usable from any task or thread. The server runs until
/// [`ServerHandle::shutdown`] (or the end of its runtime); dropping handles does not stop it.
#[derive(Clone)]
pub struct ServerHandle {
    core: Arc<Core>,
}

impl Deref for ServerHandle {
    type Target = Hub;

    fn deref(&self) -> &Hub {
        &self.core.hub
    }
}

impl ServerHandle {
    pub(crate) fn new(core: Arc<Core>) -> ServerHandle {
        ServerHandle { core }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.local_addr
    }

    /// The server's options.
    pub fn options(&self) -> &ServerOptions {
        &self.core.options
    }

    /// Number of connections being served, logging in or logged in.
    pub fn connection_count(&self) -> usize {
        self.core.connections().active()
    }

    /// Counters since start: connections accepted, refused over the limit, logins, rejected
    /// logins, accept errors.
    pub fn stats(&self) -> ServerStats {
        let m = self.core.metrics();
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
        self.core.metrics()
    }

    /// The server's metrics in Prometheus' text format, as the debug listener serves them on
    /// `/metrics`.
    pub fn metrics_text(&self) -> String {
        self.core.metrics().render()
    }

    /// The debug listener's address, if one was configured
    /// ([`OptionsBuilder::debug_listen`](crate::OptionsBuilder::debug_listen)).
    pub fn debug_addr(&self) -> Option<SocketAddr> {
        self.core.lifecycle.debug_addr.get().copied()
    }

    /// In process mode, replaces the worker processes one at a time (each first handles what
    /// it was sent; no client connection is closed) and returns how many were replaced. The
    /// same happens on SIGUSR1 to the master. 0 in-process.
    pub async fn reload_workers(&self) -> usize {
        self.core.workers.reload().await
    }

    /// In process mode (in the master), what the IPC backend has done; `None` otherwise.
    pub fn ipc_stats(&self) -> Option<IpcStats> {
        Some(self.core.workers.stats()?.0)
    }

    /// In process mode (in the master), the worker processes' ids (0 for one being started).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.core.workers.pids()
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
    /// it (disconnects included).
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let core = &self.core;
        let started = tokio::time::Instant::now();
        let life = &core.lifecycle;
        life.begin_shutdown();
        let accept = life.accept_loop.lock().take();
        if let Some(task) = accept {
            let _ = task.await;
        }
        let reason = CloseReason::new(CloseReason::GOING_AWAY, "server shutting down");
        let mut channels = 0;
        core.channels().for_each(|c| {
            channels += 1;
            c.request_close(reason.clone(), CloseMode::Graceful, CloseCause::Shutdown);
        });
        info!(target: TARGET, channels, "shutting down");
        let mut forced = 0;
        if tokio::time::timeout(deadline, core.connections().idle())
            .await
            .is_err()
        {
            core.channels().for_each(|c| {
                forced += 1;
                c.request_close(reason.clone(), CloseMode::Abort, CloseCause::Shutdown);
            });
            let _ = tokio::time::timeout(Duration::from_secs(1), core.connections().idle()).await;
        }
        let remaining = core.connections().active();
        let left = deadline.saturating_sub(started.elapsed());
        core.workers.stop(left.max(Duration::from_secs(2))).await;
        core.hub
            .context()
            .courier
            .stop(Duration::from_secs(2))
            .await;
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
            .field("channels", &self.core.channels().len())
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
