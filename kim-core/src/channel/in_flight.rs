//! Process mode's count of a channel's bytes on their way between master and worker.
//!
//! In the master they are the channel's messages not yet handled by a worker: its task stops
//! reading while they are high, as it does while replies wait in its outbox. In a worker they
//! are the channel's pushes not yet sent to the master: a push fails past the bound, as it
//! does in-process.
//!
//! A `u32` beside the channel's read stamp, so that the two share one word of every channel;
//! the count saturates, and bounds past 4 GiB act as 4 GiB.

use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes of one channel in flight between master and worker.
#[derive(Debug, Default)]
pub(crate) struct InFlight(AtomicU32);

/// `n` as the count keeps it.
fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl InFlight {
    /// Bytes in flight.
    #[inline]
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Acquire) as usize
    }

    /// Counts `n` more bytes.
    pub(crate) fn add(&self, n: usize) {
        let n = clamp(n);
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_add(n))
            });
    }

    /// Counts `n` more bytes, unless `limit` or more are in flight already.
    pub(crate) fn reserve(&self, n: usize, limit: usize) -> bool {
        let (n, limit) = (clamp(n), clamp(limit));
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v < limit).then(|| v.saturating_add(n))
            })
            .is_ok()
    }

    /// `n` bytes are no longer in flight (at most all of them).
    pub(crate) fn release(&self, n: usize) {
        let n = clamp(n);
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_up_to_a_limit_and_released_to_zero() {
        let f = InFlight::default();
        assert!(f.reserve(60, 100));
        assert!(f.reserve(60, 100));
        assert!(!f.reserve(1, 100), "120 of 100 in flight");
        assert_eq!(f.get(), 120);
        f.release(usize::MAX);
        assert_eq!(f.get(), 0);
        f.add(5);
        assert_eq!(f.get(), 5);
        f.release(2);
        assert_eq!(f.get(), 3);
    }

    #[test]
    fn counts_past_4_gib_saturate() {
        let f = InFlight::default();
        f.add(usize::MAX);
        f.add(10);
        assert_eq!(f.get(), u32::MAX as usize);
        assert!(
            !f.reserve(1, usize::MAX),
            "a bound past 4 GiB acts as 4 GiB"
        );
        f.release(u32::MAX as usize);
        assert!(f.reserve(usize::MAX, usize::MAX));
        assert_eq!(f.get(), u32::MAX as usize);
    }
}
