//! What a running server's tasks and handles share ([`Core`]), and the stages of its life
//! they watch ([`Lifecycle`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::channel::map::ChannelMap;
use crate::connections::Connections;
use crate::hub::Hub;
use crate::ipc::stats::IpcStats;
use crate::ipc::workers::Workers;
use crate::metrics::hot::HandlerHistogram;
use crate::metrics::live::Live;
use crate::metrics::Metrics;
use crate::options::ServerOptions;

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

    /// A shutdown begins.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.shutdown.cancel();
    }
}

/// What a server's tasks and handles share.
pub(crate) struct Core {
    pub(crate) local_addr: SocketAddr,
    pub(crate) options: ServerOptions,
    /// The channels, the rooms and the way to them, in this server's mode.
    pub(crate) hub: Hub,
    pub(crate) lifecycle: Lifecycle,
    /// The worker processes this server supervises (none in-process).
    pub(crate) workers: Workers,
}

impl Core {
    pub(crate) fn new(
        options: ServerOptions,
        local_addr: SocketAddr,
        hub: Hub,
        lifecycle: Lifecycle,
    ) -> Arc<Core> {
        let core = Arc::new(Core {
            local_addr,
            options,
            hub,
            lifecycle,
            workers: Workers::default(),
        });
        core.hub.context().clock.tick();
        let live: std::sync::Weak<Core> = Arc::downgrade(&core);
        core.metrics().attach(live);
        core
    }

    /// The logged-in channels.
    pub(crate) fn channels(&self) -> &ChannelMap {
        self.hub.channels()
    }

    /// The server's metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.hub.context().metrics
    }

    /// The connections being served.
    pub(crate) fn connections(&self) -> &Arc<Connections> {
        &self.hub.context().connections
    }
}

impl Live for Core {
    fn connections(&self) -> usize {
        Core::connections(self).active()
    }

    fn channels(&self) -> usize {
        Core::channels(self).len()
    }

    fn workers(&self) -> Option<(IpcStats, HandlerHistogram)> {
        self.workers.stats()
    }
}
