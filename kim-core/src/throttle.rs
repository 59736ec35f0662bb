//! Log lines that could repeat once per message or per push, limited to one per interval.
//!
//! A client that floods a full outbox, or a script that opens connections past the limit, can
//! cause the same event hundreds of thousands of times a second. Logged each time, it fills
//! the disk and costs more CPU than the traffic itself. A [`LogThrottle`] lets the first event
//! of each interval through and counts the rest, so the line that is written says how many it
//! stands for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lets one event through per interval and counts the others. Cheap enough for a hot error
/// path (two atomic operations), and usable as a `static`.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    interval_ms: u64,
    /// When the next event may be let through, in milliseconds on [`clock_ms`].
    next: AtomicU64,
    /// Events held back since the last one let through.
    suppressed: AtomicU64,
}

impl LogThrottle {
    /// A throttle that lets one event through per `interval`.
    pub(crate) const fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            interval_ms: interval.as_millis() as u64,
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event should be logged, `n` being how many were held back since
    /// the last one that was; `None` when it should not.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = clock_ms();
        let next = self.next.load(Ordering::Relaxed);
        if now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + self.interval_ms.max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Milliseconds since the first throttled event of the process.
fn clock_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_and_the_rest_are_counted() {
        let t = LogThrottle::new(Duration::from_millis(200));
        assert_eq!(t.allow(), Some(0), "the first event is let through");
        let held = (0..10_000).filter(|_| t.allow().is_none()).count();
        assert_eq!(held, 10_000, "the rest of the interval is held back");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            t.allow(),
            Some(10_000),
            "the next line counts what was held back"
        );
        assert_eq!(t.allow(), None);
    }
}
