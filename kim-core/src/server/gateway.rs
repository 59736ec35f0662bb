//! What every connection task of one server shares: the transport, the login, and where
//! messages go.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::channel::courier::Context;
use crate::server::core::Core;

/// The parts of a server that its connection tasks use, generic so that every call into the
/// transport, the acceptor and the route is statically dispatched.
pub(crate) struct Gateway<U, A, T> {
    pub(crate) core: Arc<Core>,
    pub(crate) upgrader: U,
    pub(crate) acceptor: A,
    pub(crate) route: Arc<T>,
    /// The next login's serial.
    serial: AtomicU64,
}

impl<U, A, T> Gateway<U, A, T> {
    pub(crate) fn new(
        core: Arc<Core>,
        upgrader: U,
        acceptor: A,
        route: Arc<T>,
    ) -> Gateway<U, A, T> {
        Gateway {
            core,
            upgrader,
            acceptor,
            route,
            serial: AtomicU64::new(1),
        }
    }

    /// The context of every channel this server logs in.
    pub(crate) fn context(&self) -> &Arc<Context> {
        self.core.hub.context()
    }

    /// A serial for a new login, never given before by this server.
    pub(crate) fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }
}
