//! The per-message figures (messages, bytes, handler time), counted on the thread that handled
//! the message in a cache-line-aligned cell that only this thread writes (plain stores, no
//! locked instructions; threads past the first 16 share one more cell, atomically), and summed
//! when scraped: one shared counter written by every thread for every message costs a visible
//! share of an echo server's throughput on two cores.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds of the handler histogram's buckets, in nanoseconds (the last bucket is +Inf).
pub(crate) const HANDLER_BOUNDS_NS: [u64; 14] = [
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// Buckets of the handler histogram, +Inf included.
pub(crate) const HANDLER_BUCKETS: usize = HANDLER_BOUNDS_NS.len() + 1;

/// The clock of the handler histogram: the CPU's time-stamp counter where it is invariant,
/// calibrated against the system clock once per process (about 0.1 s, on a thread of its
/// own started with the first server), the system clock elsewhere. Two reads per message
/// cost about half of what `std::time::Instant` does.
#[inline]
pub(crate) fn stopwatch() -> quanta::Instant {
    quanta::Instant::now()
}

/// Calibrates [`stopwatch`] in the background, once per process.
pub(crate) fn warm_stopwatch() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("kim-clock".into())
            .spawn(|| {
                let _ = stopwatch();
            });
    });
}

/// Handler timings: a count, a sum and a count per bucket (not cumulative; the last is +Inf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HandlerHistogram {
    pub(crate) count: u64,
    pub(crate) sum_ns: u64,
    pub(crate) buckets: [u64; HANDLER_BUCKETS],
}

impl Default for HandlerHistogram {
    fn default() -> Self {
        HandlerHistogram {
            count: 0,
            sum_ns: 0,
            buckets: [0; HANDLER_BUCKETS],
        }
    }
}

impl HandlerHistogram {
    pub(crate) fn add(&mut self, other: &HandlerHistogram) {
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
    }
}

/// Counts of one thread (or of the threads that share its slot), in a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct ThreadCounts {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    handled: AtomicU64,
    handler_ns: AtomicU64,
    buckets: [AtomicU64; HANDLER_BUCKETS],
}

/// Threads that get a slot of their own (the first to count, usually the runtime's workers);
/// later threads share one more slot.
const OWN_SLOTS: usize = 16;

thread_local! {
    /// This thread's slot index, assigned on first use.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's slot: `(index, owned)`. An owned slot is written by this thread alone, so it
/// is updated with a plain load and store instead of a locked read-modify-write.
#[inline]
fn slot_index() -> (usize, bool) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SLOT.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed).min(OWN_SLOTS);
            s.set(i);
        }
        (i, i < OWN_SLOTS)
    })
}

#[inline]
fn bump(a: &AtomicU64, n: u64, owned: bool) {
    if owned {
        a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    } else {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

/// The per-message counts, one slot per thread.
pub(crate) struct Hot {
    slots: Box<[ThreadCounts]>,
}

impl Hot {
    pub(crate) fn new() -> Hot {
        Hot {
            slots: (0..=OWN_SLOTS).map(|_| ThreadCounts::default()).collect(),
        }
    }

    #[inline]
    fn slot(&self) -> (&ThreadCounts, bool) {
        let (i, owned) = slot_index();
        (&self.slots[i], owned)
    }

    /// A message of `bytes` bytes was read.
    #[inline]
    pub(crate) fn received(&self, bytes: usize) {
        let (s, owned) = self.slot();
        bump(&s.messages_in, 1, owned);
        bump(&s.bytes_in, bytes as u64, owned);
    }

    /// `messages` messages of `bytes` bytes in all were handed to the writer.
    #[inline]
    pub(crate) fn sent(&self, messages: u64, bytes: u64) {
        let (s, owned) = self.slot();
        bump(&s.messages_out, messages, owned);
        bump(&s.bytes_out, bytes, owned);
    }

    /// A handler ran for `took`.
    #[inline]
    pub(crate) fn handled(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = HANDLER_BOUNDS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(HANDLER_BOUNDS_NS.len());
        let (s, owned) = self.slot();
        bump(&s.handled, 1, owned);
        bump(&s.handler_ns, ns, owned);
        bump(&s.buckets[bucket], 1, owned);
    }

    /// Sums of the slots: messages in, bytes in, messages out, bytes out.
    pub(crate) fn traffic(&self) -> [u64; 4] {
        let mut t = [0u64; 4];
        for s in self.slots.iter() {
            t[0] += s.messages_in.load(Ordering::Relaxed);
            t[1] += s.bytes_in.load(Ordering::Relaxed);
            t[2] += s.messages_out.load(Ordering::Relaxed);
            t[3] += s.bytes_out.load(Ordering::Relaxed);
        }
        t
    }

    /// The handler histogram, summed over the slots.
    pub(crate) fn handler_histogram(&self) -> HandlerHistogram {
        let mut h = HandlerHistogram::default();
        for s in self.slots.iter() {
            h.count += s.handled.load(Ordering::Relaxed);
            h.sum_ns += s.handler_ns.load(Ordering::Relaxed);
            for (a, b) in h.buckets.iter_mut().zip(s.buckets.iter()) {
                *a += b.load(Ordering::Relaxed);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let hot = std::sync::Arc::new(Hot::new());
        let threads: Vec<_> = (0..40)
            .map(|_| {
                let hot = hot.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        hot.received(3);
                        hot.sent(2, 10);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(hot.traffic(), [40_000, 120_000, 80_000, 400_000]);
    }
}
