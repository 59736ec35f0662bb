//! The coarse clock that read deadlines are measured with.
//!
//! Every frame read stamps its channel with the time, so the clock must cost next to nothing
//! to read: it is a number of milliseconds in an atomic, advanced by the server's sweeper a
//! few times per read deadline, not a system call per frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Milliseconds since the clock was made, as of its last tick.
#[derive(Debug)]
pub(crate) struct Clock {
    epoch: Instant,
    now: AtomicU64,
}

impl Clock {
    /// A clock at zero.
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
            now: AtomicU64::new(0),
        }
    }

    /// The time of the last tick, in milliseconds since the clock was made.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    /// Advances the clock to the present and returns it.
    pub(crate) fn tick(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.now.store(now, Ordering::Relaxed);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_only_on_a_tick() {
        let c = Clock::new();
        assert_eq!(c.now(), 0);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(c.now(), 0);
        let t = c.tick();
        assert!(t >= 5 && c.now() == t);
    }
}
