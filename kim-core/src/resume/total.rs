//! The server's total of held messages, and what is done when it is over its bound: the
//! oldest held messages of the largest sessions go first.
//!
//! Every session is bounded on its own, but a million suspended sessions within their own
//! limits can still take the machine. Pushes count what they add to the total; once it is
//! over the bound, the pushing thread (one at a time) finds the largest sessions and drops
//! their oldest messages until the total is a sixteenth below the bound, so that the scan is
//! paid once per sixteenth of the bound pushed, not once per push.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::channel::map::ChannelMap;
use crate::channel::Channel;
use crate::metrics::SessionMetrics;
use crate::resume::held::{Freed, ENTRY_COST};

/// The server's bound on held bytes, and whether a trim is under way.
pub(crate) struct HeldTotal {
    max: usize,
    trimming: AtomicBool,
}

impl HeldTotal {
    pub(crate) fn new(max: usize) -> HeldTotal {
        HeldTotal {
            max,
            trimming: AtomicBool::new(false),
        }
    }

    /// A push added a message of cost `added`, and the session's own limits dropped
    /// `dropped`. Trims the largest sessions if that took the total over the bound.
    pub(crate) fn pushed(
        &self,
        m: &SessionMetrics,
        added: usize,
        dropped: Freed,
        channels: &ChannelMap,
    ) {
        m.held_messages.add(1 - dropped.messages as i64);
        m.held_bytes.add(added as i64 - dropped.cost as i64);
        if dropped.messages > 0 {
            m.dropped_session_limit.inc_by(dropped.messages as u64);
        }
        if m.held_bytes.get() as usize > self.max {
            self.trim(m, channels);
        }
    }

    /// Held messages are gone (acknowledged, or their session ended).
    pub(crate) fn released(&self, m: &SessionMetrics, freed: Freed) {
        m.held_messages.sub(freed.messages as i64);
        m.held_bytes.sub(freed.cost as i64);
    }

    /// Drops the oldest messages of the largest sessions until the total is a sixteenth
    /// below the bound. One thread trims at a time; the others go on.
    pub(crate) fn trim(&self, m: &SessionMetrics, channels: &ChannelMap) {
        if self.trimming.swap(true, Ordering::Acquire) {
            return;
        }
        let target = self.max - self.max / 16;
        // A few rounds at most: each round's level leaves out the entries' own cost.
        for _ in 0..4 {
            let total = m.held_bytes.get().max(0) as usize;
            if total <= target {
                break;
            }
            let freed = trim_largest(channels, total - target);
            m.held_messages.sub(freed.messages as i64);
            m.held_bytes.sub(freed.cost as i64);
            m.dropped_server_limit.inc_by(freed.messages as u64);
            if freed.messages == 0 {
                break;
            }
        }
        self.trimming.store(false, Ordering::Release);
    }
}

/// Frees at least `need` bytes, if the sessions hold that much, from the largest ones: each
/// session above a level is cut down to it, oldest messages first, the level the highest
/// that frees enough.
fn trim_largest(channels: &ChannelMap, need: usize) -> Freed {
    let mut sizes: Vec<(usize, Channel)> = Vec::new();
    channels.for_each(|c| {
        if let Some((_, n, bytes)) = c.outbox().held() {
            if n > 0 {
                sizes.push((bytes + n * ENTRY_COST, c.clone()));
            }
        }
    });
    sizes.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
    let level = level_freeing(&sizes.iter().map(|s| s.0).collect::<Vec<_>>(), need);
    let mut freed = Freed::default();
    for (size, chan) in &sizes {
        if *size <= level {
            break;
        }
        let f = chan.outbox().trim_to(level);
        freed.messages += f.messages;
        freed.bytes += f.bytes;
        freed.cost += f.cost;
    }
    freed
}

/// The highest level such that cutting every size in `sorted` (largest first) down to it
/// frees at least `need` (0 if even that does not).
fn level_freeing(sorted: &[usize], need: usize) -> usize {
    let mut above = 0usize;
    for (i, &size) in sorted.iter().enumerate() {
        above += size;
        let next = sorted.get(i + 1).copied().unwrap_or(0);
        let count = i + 1;
        // Cutting the first `count` down to `next` frees this much.
        if above - count * next >= need {
            return (above - need) / count;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::level_freeing;

    #[test]
    fn the_level_cuts_the_largest_first() {
        // Cutting 100 to 80 frees 20.
        assert_eq!(level_freeing(&[100, 50, 10], 20), 80);
        // 100 and 50 down to 40 frees 70.
        assert_eq!(level_freeing(&[100, 50, 10], 70), 40);
        // Everything.
        assert_eq!(level_freeing(&[100, 50, 10], 1000), 0);
        assert_eq!(level_freeing(&[], 5), 0);
    }
}
