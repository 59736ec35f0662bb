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
        ActiveGuard(Some(self.clone()))
    }

    /// A connection counted by [`Connections::enter`] ended: the other end of a guard's
    /// [`ActiveGuard::transfer`].
    pub(crate) fn leave(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
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
pub(crate) struct ActiveGuard(Option<Arc<Connections>>);

impl ActiveGuard {
    /// Stops counting here: the caller now owes [`Connections::leave`] to these connections,
    /// once. (A session does, through its channel, and saves the guard's 8 bytes in every
    /// connection's task.)
    pub(crate) fn transfer(mut self) -> Arc<Connections> {
        self.0.take().expect("a guard is transferred once")
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if let Some(connections) = self.0.take() {
            connections.leave();
        }
    }
}
