//! The sweeper: one task per server that advances the coarse clock and closes the channels
//! past their read deadline.

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::close::{CloseCause, CloseMode, CloseReason};
use crate::server::core::Core;
use crate::server::log::TARGET;

/// The sweeper: advances the coarse clock, closes channels past their read deadline, ends
/// suspended sessions past their window, and brings the sessions' total back under its bound
/// if pushes left it over.
pub(crate) async fn sweep(core: Arc<Core>) {
    let read_wait = core.options.read_wait().as_millis() as u64;
    let window = core.options.session_window().as_millis() as u64;
    let tick = Duration::from_millis((read_wait.min(window) / 8).clamp(5, 1000));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expired = Vec::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = core.lifecycle.shutdown.cancelled() => {
                // Keep the clock running while shutdown drains the channels.
                core.connections().idle().await;
                break;
            }
        }
        let now = core.hub.context().clock.tick();
        core.channels().for_each(|c| {
            // Both stamps wrap at 32 bits; the difference is exact while under 49 days. A
            // suspended session's stamp is the moment it was suspended.
            let idle = u64::from((now as u32).wrapping_sub(c.last_read()));
            if idle > read_wait.min(window) {
                let suspended = c.outbox().is_suspended();
                if idle > if suspended { window } else { read_wait } {
                    expired.push((c.clone(), suspended));
                }
            }
        });
        for (c, suspended) in expired.drain(..) {
            if suspended {
                debug!(target: TARGET, id = %c.id(), "session window passed");
                c.request_close(
                    CloseReason::normal("session expired"),
                    CloseMode::Graceful,
                    CloseCause::SessionExpired,
                );
            } else if c.outbox().has_session() {
                // The transport is presumed lost: the session is suspended.
                debug!(target: TARGET, id = %c.id(), "read deadline passed; suspending");
                c.request_close(
                    CloseReason::normal("read timeout"),
                    CloseMode::Suspend,
                    CloseCause::ReadTimeout,
                );
            } else {
                debug!(target: TARGET, id = %c.id(), "read deadline passed");
                c.request_close(
                    CloseReason::normal("read timeout"),
                    CloseMode::Graceful,
                    CloseCause::ReadTimeout,
                );
            }
        }
        // A burst of expiries does not keep its peak's list.
        if expired.capacity() > 1024 {
            expired = Vec::new();
        }
        let context = core.hub.context();
        let sessions = &context.metrics.sessions;
        context.sessions.total.trim(sessions, core.channels());
    }
}
