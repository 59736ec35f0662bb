//! The process's heap as the C allocator sees it, and giving its free memory back.
//!
//! A burst (slow consumers whose outboxes fill, large messages) raises the heap to its peak;
//! when the burst is over kim frees all of it, but glibc's allocator keeps most freed memory
//! in its arenas instead of returning it to the system, so resident memory stays at the peak.
//! kim-debug's metrics tell the two apart (`kim_heap_bytes{state="in_use"|"free"}`), and once
//! a second it asks the allocator to return free pages when resident memory is far above the
//! heap in use ([`care`]). An allocator the binary installed ([`crate::set_allocator`]) is asked
//! instead of glibc; elsewhere (another allocator, another libc) both are no-ops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{IntCounter, Registry};
use tokio_util::sync::CancellationToken;

/// The heap in use and the free heap the allocator keeps, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeapStats {
    pub(crate) in_use: u64,
    pub(crate) free: u64,
}

/// Where the allocator says (glibc's `mallinfo2`, summed over its arenas; large blocks it
/// maps directly count as in use). It walks the allocator's free lists: for a scrape or a
/// once-a-second check, not for a hot path.
pub(crate) fn stats() -> Option<HeapStats> {
    if let Some(control) = crate::allocator::installed() {
        let (in_use, free) = control.stats()?;
        return Some(HeapStats { in_use, free });
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let m = unsafe { libc::mallinfo2() };
        Some(HeapStats {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// This process's resident memory, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Asks the allocator to return the free pages it holds to the system.
pub(crate) fn trim() {
    if let Some(control) = crate::allocator::installed() {
        return control.trim();
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Free memory the allocator keeps below this is left alone: trimming costs a walk of its
/// free pages, and memory it keeps is reused by the next allocations anyway.
const TRIM_ABOVE: u64 = 8 << 20;
/// At most one trim per this many milliseconds, process-wide.
const TRIM_EVERY_MS: u64 = 10_000;

/// Trims when the allocator keeps more than [`TRIM_ABOVE`] bytes free and resident, and more
/// than half the heap in use (a busy server's free pages are its next allocations; an idle
/// one's, after a burst, are its peak kept for nothing), at most once every
/// [`TRIM_EVERY_MS`] in the process. What is free and resident is the smaller of the
/// allocator's free figure and the resident memory beyond the heap in use (glibc's free
/// figure counts pages a trim already returned). Returns whether it trimmed.
pub(crate) fn trim_if_bloated() -> bool {
    static BASE: OnceLock<Instant> = OnceLock::new();
    /// When the last trim was, in milliseconds since `BASE`; `u64::MAX` before the first.
    static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
    let now = BASE.get_or_init(Instant::now).elapsed().as_millis() as u64;
    let last = LAST.load(Ordering::Relaxed);
    if last != u64::MAX && now < last.saturating_add(TRIM_EVERY_MS) {
        return false;
    }
    let Some(rss) = resident_bytes() else {
        return false;
    };
    let Some(s) = stats() else {
        return false;
    };
    let kept = s.free.min(rss.saturating_sub(s.in_use));
    if kept <= TRIM_ABOVE || kept <= s.in_use / 2 {
        return false;
    }
    if LAST
        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    trim();
    true
}

/// Reports `kim_heap_bytes` and counts `kim_heap_trims_total` in `registry`, and once a second
/// until `stop` gives free memory back when the process holds much more than it uses.
pub(crate) fn care(registry: &Registry, stop: CancellationToken) {
    let trims = IntCounter::new(
        "kim_heap_trims_total",
        "Times the allocator was asked to return free memory to the system.",
    )
    .expect("a valid metric");
    // Registered once per registry: a second service on the same server adds nothing.
    let _ = registry.register(Box::new(trims.clone()));
    let _ = registry.register(Box::new(HeapCollector::new()));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            if trim_if_bloated() {
                trims.inc();
            }
        }
    });
}

/// `kim_heap_bytes{state}`, read from the allocator when scraped.
struct HeapCollector {
    desc: Desc,
}

const HEAP_BYTES: &str = "kim_heap_bytes";
const HEAP_HELP: &str = "The process's heap as its allocator counts it (glibc's, or the one \
                         installed with kim_debug::set_allocator): bytes in use, and bytes it \
                         keeps free (resident, or already returned to the system by a trim).";

impl HeapCollector {
    fn new() -> HeapCollector {
        let desc = Desc::new(
            HEAP_BYTES.into(),
            HEAP_HELP.into(),
            vec!["state".into()],
            Default::default(),
        )
        .expect("a valid metric");
        HeapCollector { desc }
    }
}

impl Collector for HeapCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(HeapStats { in_use, free }) = stats() else {
            return Vec::new();
        };
        let state = |s: &str, v: u64| {
            let mut label = LabelPair::default();
            label.set_name("state".into());
            label.set_value(s.into());
            let mut gauge = Gauge::default();
            gauge.set_value(v as f64);
            let mut m = Metric::default();
            m.set_label(vec![label]);
            m.set_gauge(gauge);
            m
        };
        let mut family = MetricFamily::default();
        family.set_name(HEAP_BYTES.into());
        family.set_help(HEAP_HELP.into());
        family.set_field_type(MetricType::GAUGE);
        family.set_metric(vec![state("in_use", in_use), state("free", free)]);
        vec![family]
    }
}
