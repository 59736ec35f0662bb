//! Counting the connections being served, for `max_connections`, the gauge, and a shutdown
//! that waits for the last one to end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The connections a server serves (logging in or logged in), and those it is refusing.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    active: AtomicUsize,
    /// Connections refused over max_connections that are being closed.
    draining: AtomicUsize,
    idle: Notify,
}

impl Connections {
    /// Connections being served.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Counts a new connection until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(self.clone())
    }

    /// Counts a refused connection being drained, unless `max` are already: then `false`.
    pub(crate) fn start_draining(&self, max: usize) -> bool {
        if self.draining.fetch_add(1, Ordering::Relaxed) >= max {
            self.draining.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A refused connection is gone.
    pub(crate) fn drained(&self) {
        self.draining.fetch_sub(1, Ordering::Relaxed);
    }

    /// Returns once no connection is being served.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a connection as active for as long as it lives.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<Connections>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
