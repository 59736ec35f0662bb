//! What the channels with a session share ([`Sessions`]): the codec, the limits, and the
//! server's total of held messages, with what is done when it is over its bound: the oldest
//! held messages of the largest sessions go first.
//!
//! Every session is bounded on its own, but a million suspended sessions within their own
//! limits can still take the machine. Pushes count what they add to the total; once it is
//! within a thirty-second of the bound, the pushing thread (one at a time) finds the largest
//! sessions and drops their oldest messages until the total is a sixteenth below the bound, so
//! that the scan is paid once per thirty-second of the bound pushed, not once per push, and
//! what other threads push during a scan fits in the margin left. A push that finds the total
//! over the bound itself while another thread trims waits for that trim: the only time a push
//! waits, and only while the server holds more than it may.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::channel::held::{Freed, HeldLimits};
use crate::channel::outbox::Pushed;
use crate::metrics::SessionMetrics;
use crate::resume::SessionCodec;

/// What a server's sessions share: the codec, the limits, the server's total of held
/// messages.
pub(crate) struct Sessions {
    pub(crate) codec: Arc<dyn SessionCodec>,
    pub(crate) limits: HeldLimits,
    pub(crate) total: HeldTotal,
}

impl Sessions {
    pub(crate) fn new(options: &crate::ServerOptions, codec: Arc<dyn SessionCodec>) -> Sessions {
        Sessions {
            codec,
            limits: HeldLimits {
                messages: options.session_max_messages(),
                bytes: options.session_max_bytes(),
            },
            total: HeldTotal::new(options.session_max_total_bytes()),
        }
    }
}

/// What pushes added to the sessions' held messages, settled with the server's total once
/// (a room's publish settles once for all its members, not once per member).
#[derive(Debug, Default)]
pub(crate) struct HeldTally {
    messages: usize,
    added: usize,
    dropped: Freed,
}

impl HeldTally {
    /// Counts one push.
    pub(crate) fn add(&mut self, pushed: &Pushed) {
        if pushed.added == 0 {
            return;
        }
        self.messages += 1;
        self.added += pushed.added;
        self.dropped.messages += pushed.dropped.messages;
        self.dropped.bytes += pushed.dropped.bytes;
        self.dropped.cost += pushed.dropped.cost;
    }

    /// Adds what was counted to the server's total (which may trim the largest sessions of
    /// `channels`).
    pub(crate) fn settle(
        self,
        total: &HeldTotal,
        metrics: &SessionMetrics,
        channels: &impl TrimLargest,
    ) {
        if self.messages == 0 {
            return;
        }
        total.pushed(metrics, self.messages, self.added, self.dropped, channels);
    }
}

/// Frees at least the given bytes held, from the largest sessions first: the channel map's
/// [`trim_held`](crate::channel::map::ChannelMap::trim_held), which the total calls.
pub(crate) trait TrimLargest {
    fn trim_largest(&self, need: usize) -> Freed;
}

/// The server's bound on held bytes, and the lock of the one trim under way.
pub(crate) struct HeldTotal {
    max: usize,
    trimming: Mutex<()>,
}

impl HeldTotal {
    pub(crate) fn new(max: usize) -> HeldTotal {
        HeldTotal {
            max,
            trimming: Mutex::new(()),
        }
    }

    /// Pushes added `messages` messages costing `added`, and the sessions' own limits dropped
    /// `dropped`. Trims the largest sessions if that took the total over the bound.
    pub(crate) fn pushed(
        &self,
        m: &SessionMetrics,
        messages: usize,
        added: usize,
        dropped: Freed,
        channels: &impl TrimLargest,
    ) {
        m.held_messages
            .add(messages as i64 - dropped.messages as i64);
        m.held_bytes.add(added as i64 - dropped.cost as i64);
        if dropped.messages > 0 {
            m.dropped_session_limit.inc_by(dropped.messages as u64);
        }
        let held = m.held_bytes.get().max(0) as usize;
        if held > self.max {
            // Over the bound itself: wait for the trim under way, if any, then trim.
            let _trim = self.trimming.lock();
            self.trim_locked(m, channels);
        } else if held > self.max - self.max / 32 {
            self.trim(m, channels);
        }
    }

    /// Held messages are gone (acknowledged, or their session ended).
    pub(crate) fn released(&self, m: &SessionMetrics, freed: Freed) {
        m.held_messages.sub(freed.messages as i64);
        m.held_bytes.sub(freed.cost as i64);
    }

    /// Drops the oldest messages of the largest sessions until the total is a sixteenth
    /// below the bound. One thread trims at a time; the others go on (the sweeper, and pushes
    /// within the margin).
    pub(crate) fn trim(&self, m: &SessionMetrics, channels: &impl TrimLargest) {
        if let Some(_trim) = self.trimming.try_lock() {
            self.trim_locked(m, channels);
        }
    }

    /// [`HeldTotal::trim`], the lock held.
    fn trim_locked(&self, m: &SessionMetrics, channels: &impl TrimLargest) {
        let target = self.max - self.max / 16;
        debug_assert!(target < self.max - self.max / 32);
        // A few rounds at most: each round's level leaves out the entries' own cost.
        for _ in 0..4 {
            let total = m.held_bytes.get().max(0) as usize;
            if total <= target {
                break;
            }
            let freed = channels.trim_largest(total - target);
            m.held_messages.sub(freed.messages as i64);
            m.held_bytes.sub(freed.cost as i64);
            m.dropped_server_limit.inc_by(freed.messages as u64);
            if freed.messages == 0 {
                break;
            }
        }
    }
}
