//! A suspended session: its connection is gone, and a small task waits for what comes first,
//! a resume (which takes the session over) or a close (the window passed, a fresh login, the
//! app, shutdown), which ends the session.

use std::future::poll_fn;
use std::sync::Arc;

use crate::channel::Channel;
use crate::close::CloseCause;
use crate::route::{self, Route};

/// Suspends the session of `chan`, whose connection `generation` was lost: runs the suspend
/// event, then waits.
pub(crate) fn spawn<T: Route>(chan: Channel, route: Arc<T>, generation: u16) {
    chan.context().metrics.sessions.suspended.inc();
    tracing::debug!(id = %chan.id(), "session suspended");
    tokio::spawn(async move {
        if let Some(event) = route.suspended(&chan) {
            event.await;
        }
        let outbox = chan.outbox();
        let close = poll_fn(|cx| outbox.poll_suspended(generation, cx.waker())).await;
        let metrics = &chan.context().metrics.sessions;
        metrics.suspended.dec();
        let Some(cause) = close else {
            // Resumed: the new connection's task has the channel.
            return;
        };
        if cause == CloseCause::SessionExpired {
            metrics.expired.inc();
        }
        tracing::debug!(id = %chan.id(), cause = cause.label(), "suspended session ended");
        if let Some(disconnect) = route::end(&chan, &route, cause) {
            disconnect.await;
        }
    });
}
