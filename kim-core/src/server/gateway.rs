//! What every connection task of one server shares: the transport, the login, where
//! messages go, and the context its channels are made with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::channel::Context;
use crate::server::handle::Core;

/// The parts of a server that its connection tasks use, generic so that every call into the
/// transport, the acceptor and the route is statically dispatched.
pub(crate) struct Gateway<U, A, T> {
    pub(crate) core: Arc<Core>,
    /// Shared by every channel this server logs in.
    pub(crate) context: Arc<Context>,
    pub(crate) upgrader: U,
    pub(crate) acceptor: A,
    pub(crate) route: Arc<T>,
    /// The next login's serial.
    serial: AtomicU64,
}

impl<U, A, T> Gateway<U, A, T> {
    pub(crate) fn new(
        core: Arc<Core>,
        context: Arc<Context>,
        upgrader: U,
        acceptor: A,
        route: Arc<T>,
    ) -> Gateway<U, A, T> {
        Gateway {
            core,
            context,
            upgrader,
            acceptor,
            route,
            serial: AtomicU64::new(1),
        }
    }

    /// A serial for a new login, never given before by this server.
    pub(crate) fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }
}
