//! The server's metrics, in a [`prometheus`] registry of its own, rendered in Prometheus'
//! text format by [`ServerHandle::metrics_text`](crate::ServerHandle::metrics_text) and served
//! on `/metrics` by the debug listener.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kim_connections` | gauge: connections being served (logging in or logged in) | |
//! | `kim_channels` | gauge: logged-in channels | |
//! | `kim_connections_accepted_total` | counter | |
//! | `kim_connections_refused_total` | counter: closed at once over `max_connections` | |
//! | `kim_accept_errors_total` | counter | |
//! | `kim_logins_total` | counter: successful logins | |
//! | `kim_login_rejections_total` | counter | `reason`: `acceptor`, `timeout`, `duplicate`, `handshake` |
//! | `kim_messages_received_total`, `kim_received_bytes_total` | counter: text and binary messages read after login, and their payload bytes | |
//! | `kim_messages_sent_total`, `kim_sent_bytes_total` | counter: text and binary messages written, and their payload bytes | |
//! | `kim_push_failures_total` | counter | `reason`: `not_found`, `closed`, `full`, `not_data`, `too_large` |
//! | `kim_channels_closed_total` | counter | `cause`: see below |
//! | `kim_handler_duration_seconds` | histogram: time in [`MessageListener::receive`](crate::MessageListener::receive) | |
//! | `kim_heap_bytes` | gauge: the process's heap, where the C allocator reports it (glibc) | `state`: `in_use`, `free` (kept by the allocator) |
//! | `kim_heap_trims_total` | counter: free heap returned to the system after a burst | |
//!
//! Close causes: `peer` (the client closed), `peer_gone` (the stream ended without a close),
//! `io_error`, `read_timeout`, `write_timeout`, `close_timeout` (our close was not answered),
//! `protocol_error`, `kicked` (a newer login with the same id), `server` (the app closed it)
//! and `shutdown`. A full outbox does not close a channel: the push fails (`full`) and the
//! client, once it reads, gets what was queued.
//!
//! In process mode the master adds the workers' figures: `kim_ipc_workers`,
//! `kim_ipc_worker_respawns_total`, `kim_ipc_worker_reloads_total`,
//! `kim_ipc_messages_total` and `kim_ipc_datagrams_total` (`direction`: `to_workers`,
//! `from_workers`), `kim_ipc_orphan_chunks_total`, `kim_ipc_expired_partials_total`,
//! `kim_ipc_refused_total` and `kim_ipc_malformed_total` (`receiver`: `master`, `workers`),
//! `kim_ipc_handled_total`, and the handler histogram measured in the workers (reported every
//! 50 ms).
//!
//! The per-message figures (messages, bytes, handler time) are counted on the thread that
//! handled the message, in a cache-line-aligned cell that only this thread writes (plain
//! stores, no locked instructions; threads past the first 16 share one more cell, atomically),
//! and summed when scraped: one shared counter written by every thread for every message
//! costs a visible share of an echo server's throughput on two cores. [`ServerOptions::metrics`](crate::OptionsBuilder::metrics)
//! turns them off; the per-connection figures are always kept.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Weak;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::error::PushError;
use crate::server::Core;

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
pub(crate) fn clock() -> quanta::Instant {
    quanta::Instant::now()
}

/// Calibrates [`clock`] in the background, once per process.
fn warm_clock() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("kim-clock".into())
            .spawn(|| {
                let _ = clock();
            });
    });
}

/// Why a login failed, a label of `kim_login_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The acceptor refused it.
    Acceptor,
    /// Upgrade and login did not finish within login_wait.
    Timeout,
    /// The id is already connected (duplicate policy `Reject`).
    Duplicate,
    /// The transport's handshake failed.
    Handshake,
}

impl Rejection {
    const ALL: [Rejection; 4] = [
        Rejection::Acceptor,
        Rejection::Timeout,
        Rejection::Duplicate,
        Rejection::Handshake,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Rejection::Acceptor => "acceptor",
            Rejection::Timeout => "timeout",
            Rejection::Duplicate => "duplicate",
            Rejection::Handshake => "handshake",
        }
    }
}

/// Why a channel ended, a label of `kim_channels_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// The client sent a close.
    Peer,
    /// The stream ended without a close.
    PeerGone,
    /// Reading or writing failed.
    IoError,
    /// Nothing was read within read_wait.
    ReadTimeout,
    /// A write batch did not complete within write_wait.
    WriteTimeout,
    /// Our close frame was not answered within close_wait.
    CloseTimeout,
    /// The client broke the protocol.
    ProtocolError,
    /// A newer login with the same id replaced the channel.
    Kicked,
    /// The app closed it.
    Server,
    /// The server shut down.
    Shutdown,
}

impl CloseCause {
    const ALL: [CloseCause; 10] = [
        CloseCause::Peer,
        CloseCause::PeerGone,
        CloseCause::IoError,
        CloseCause::ReadTimeout,
        CloseCause::WriteTimeout,
        CloseCause::CloseTimeout,
        CloseCause::ProtocolError,
        CloseCause::Kicked,
        CloseCause::Server,
        CloseCause::Shutdown,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseCause::Peer => "peer",
            CloseCause::PeerGone => "peer_gone",
            CloseCause::IoError => "io_error",
            CloseCause::ReadTimeout => "read_timeout",
            CloseCause::WriteTimeout => "write_timeout",
            CloseCause::CloseTimeout => "close_timeout",
            CloseCause::ProtocolError => "protocol_error",
            CloseCause::Kicked => "kicked",
            CloseCause::Server => "server",
            CloseCause::Shutdown => "shutdown",
        }
    }
}

const PUSH_REASONS: [&str; 5] = ["not_found", "closed", "full", "not_data", "too_large"];

fn push_reason(e: &PushError) -> usize {
    match e {
        PushError::NotFound(_) => 0,
        PushError::Closed => 1,
        PushError::Full => 2,
        PushError::NotData(_) => 3,
        PushError::TooLarge { .. } => 4,
    }
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
struct Slot {
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
    slots: Box<[Slot]>,
}

impl Hot {
    fn new() -> Hot {
        Hot {
            slots: (0..=OWN_SLOTS).map(|_| Slot::default()).collect(),
        }
    }

    #[inline]
    fn slot(&self) -> (&Slot, bool) {
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
    fn traffic(&self) -> [u64; 4] {
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

/// A server's metrics. Get them from
/// [`ServerHandle::metrics`](crate::ServerHandle::metrics); register the app's own metrics in
/// [`Metrics::registry`] to have them served with kim's.
pub struct Metrics {
    registry: Registry,
    pub(crate) accepted: IntCounter,
    pub(crate) refused_over_limit: IntCounter,
    pub(crate) accept_errors: IntCounter,
    pub(crate) logins: IntCounter,
    pub(crate) heap_trims: IntCounter,
    rejections: [IntCounter; 4],
    push_failures: [IntCounter; 5],
    closed: [IntCounter; 10],
    pub(crate) hot: Hot,
    /// Whether per-message figures are kept.
    pub(crate) per_message: bool,
}

impl Metrics {
    pub(crate) fn new(per_message: bool) -> Metrics {
        if per_message {
            warm_clock();
        }
        let registry = Registry::new();
        // Names and labels are fixed and distinct, so registering cannot fail.
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric name");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let vec = |name: &str, help: &str, label: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(v.clone()))
                .expect("metric registered once");
            v
        };
        let rejections = vec(
            "kim_login_rejections_total",
            "Connections that did not log in, by reason.",
            "reason",
        );
        let pushes = vec(
            "kim_push_failures_total",
            "Pushes refused, by reason.",
            "reason",
        );
        let closed = vec(
            "kim_channels_closed_total",
            "Logged-in channels that ended, by cause.",
            "cause",
        );
        Metrics {
            accepted: counter(
                "kim_connections_accepted_total",
                "Connections accepted from the listening socket.",
            ),
            refused_over_limit: counter(
                "kim_connections_refused_total",
                "Connections closed at once because max_connections were being served.",
            ),
            accept_errors: counter("kim_accept_errors_total", "Failed accepts."),
            logins: counter("kim_logins_total", "Successful logins."),
            heap_trims: counter(
                "kim_heap_trims_total",
                "Times the allocator was asked to return free memory to the system.",
            ),
            rejections: Rejection::ALL.map(|r| rejections.with_label_values(&[r.label()])),
            push_failures: PUSH_REASONS.map(|r| pushes.with_label_values(&[r])),
            closed: CloseCause::ALL.map(|c| closed.with_label_values(&[c.label()])),
            hot: Hot::new(),
            per_message,
            registry,
        }
    }

    /// Attaches the figures read from the server when scraped (gauges, per-message counts,
    /// the worker backend's).
    pub(crate) fn attach(&self, core: Weak<Core>) {
        let _ = self.registry.register(Box::new(CoreCollector::new(core)));
    }

    /// The registry holding kim's metrics; the app may register its own in it.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the registry, in Prometheus' text format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# error encoding metrics: {e}\n"))
    }

    pub(crate) fn rejected(&self, r: Rejection) {
        self.rejections[r as usize].inc();
    }

    pub(crate) fn rejected_total(&self) -> u64 {
        self.rejections.iter().map(|c| c.get()).sum()
    }

    pub(crate) fn push_failed(&self, e: &PushError) {
        self.push_failures[push_reason(e)].inc();
    }

    pub(crate) fn closed(&self, cause: CloseCause) {
        self.closed[cause as usize].inc();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("per_message", &self.per_message)
            .finish_non_exhaustive()
    }
}

/// One family the collector reports: its name, help, type and label name (if any).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    label: Option<&'static str>,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "kim_connections",
        help: "Connections being served (logging in or logged in).",
        kind: MetricType::GAUGE,
        label: None,
    },
    Family {
        name: "kim_channels",
        help: "Logged-in channels.",
        kind: MetricType::GAUGE,
        label: None,
    },
    Family {
        name: "kim_messages_received_total",
        help: "Text and binary messages read from logged-in channels.",
        kind: MetricType::COUNTER,
        label: None,
    },
    Family {
        name: "kim_received_bytes_total",
        help: "Payload bytes of the messages read.",
        kind: MetricType::COUNTER,
        label: None,
    },
    Family {
        name: "kim_messages_sent_total",
        help: "Text and binary messages written to channels.",
        kind: MetricType::COUNTER,
        label: None,
    },
    Family {
        name: "kim_sent_bytes_total",
        help: "Payload bytes of the messages written.",
        kind: MetricType::COUNTER,
        label: None,
    },
    Family {
        name: "kim_handler_duration_seconds",
        help: "Time spent in the message listener per message.",
        kind: MetricType::HISTOGRAM,
        label: None,
    },
    Family {
        name: "kim_heap_bytes",
        help: "The process's heap as the C allocator counts it (glibc): bytes in use, and bytes \
               in its free lists (resident, or already returned to the system by a trim).",
        kind: MetricType::GAUGE,
        label: Some("state"),
    },
    Family {
        name: "kim_ipc_workers",
        help: "Worker processes configured (process mode).",
        kind: MetricType::GAUGE,
        label: None,
    },
    Family {
        name: "kim_ipc_worker_respawns_total",
        help: "Workers started again after dying.",
        kind: MetricType::COUNTER,
        label: None,
    },
    Family {
        name: "kim_ipc_worker_reloads_total",
        help: "Workers replaced by reloads.",
        kind: MetricType::COUNTER,
        label: None,
    },
    Family {
        name: "kim_ipc_messages_total",
        help: "Messages between the master and its workers.",
        kind: MetricType::COUNTER,
        label: Some("direction"),
    },
    Family {
        name: "kim_ipc_datagrams_total",
        help: "Datagrams (chunks) between the master and its workers.",
        kind: MetricType::COUNTER,
        label: Some("direction"),
    },
    Family {
        name: "kim_ipc_handled_total",
        help: "Client messages handled by the workers' listeners.",
        kind: MetricType::COUNTER,
        label: None,
    },
    Family {
        name: "kim_ipc_orphan_chunks_total",
        help: "Chunks received with no message in progress for them.",
        kind: MetricType::COUNTER,
        label: Some("receiver"),
    },
    Family {
        name: "kim_ipc_expired_partials_total",
        help: "Partly received messages dropped after their time to live.",
        kind: MetricType::COUNTER,
        label: Some("receiver"),
    },
    Family {
        name: "kim_ipc_refused_total",
        help: "Messages refused for exceeding the maximum size.",
        kind: MetricType::COUNTER,
        label: Some("receiver"),
    },
    Family {
        name: "kim_ipc_malformed_total",
        help: "Datagrams with a malformed header.",
        kind: MetricType::COUNTER,
        label: Some("receiver"),
    },
];

/// Reads the figures that live in the server (gauges, per-message counts, workers) at
/// scrape time.
struct CoreCollector {
    core: Weak<Core>,
    descs: Vec<Desc>,
}

impl CoreCollector {
    fn new(core: Weak<Core>) -> CoreCollector {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                let labels = f.label.map(|l| vec![l.to_string()]).unwrap_or_default();
                Desc::new(f.name.into(), f.help.into(), labels, HashMap::new())
                    .expect("valid metric description")
            })
            .collect();
        CoreCollector { core, descs }
    }
}

fn family(name: &str, metrics: Vec<proto::Metric>) -> MetricFamily {
    let f = FAMILIES
        .iter()
        .find(|f| f.name == name)
        .expect("family declared in FAMILIES");
    let mut mf = MetricFamily::default();
    mf.set_name(f.name.into());
    mf.set_help(f.help.into());
    mf.set_field_type(f.kind);
    mf.set_metric(metrics);
    mf
}

fn labels(label: Option<(&str, &str)>) -> Vec<proto::LabelPair> {
    label
        .map(|(k, v)| {
            let mut p = proto::LabelPair::default();
            p.set_name(k.into());
            p.set_value(v.into());
            vec![p]
        })
        .unwrap_or_default()
}

fn gauge(v: f64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(v);
    let mut m = proto::Metric::default();
    m.set_gauge(g);
    m
}

fn counter(v: u64, label: Option<(&str, &str)>) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(v as f64);
    let mut m = proto::Metric::default();
    m.set_counter(c);
    m.set_label(labels(label));
    m
}

fn histogram(h: &HandlerHistogram) -> proto::Metric {
    let mut cumulative = 0;
    let buckets = HANDLER_BOUNDS_NS
        .iter()
        .zip(h.buckets.iter())
        .map(|(&bound, &n)| {
            cumulative += n;
            let mut b = proto::Bucket::default();
            b.set_upper_bound(bound as f64 / 1e9);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut p = proto::Histogram::default();
    p.set_sample_count(h.count);
    p.set_sample_sum(h.sum_ns as f64 / 1e9);
    p.set_bucket(buckets);
    let mut m = proto::Metric::default();
    m.set_histogram(p);
    m
}

impl Collector for CoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(core) = self.core.upgrade() else {
            return Vec::new();
        };
        let hot = &core.metrics.hot;
        let [mi, bi, mo, bo] = hot.traffic();
        let mut handler = hot.handler_histogram();
        let mut out = vec![
            family("kim_connections", vec![gauge(core.active() as f64)]),
            family("kim_channels", vec![gauge(core.channels.len() as f64)]),
            family("kim_messages_received_total", vec![counter(mi, None)]),
            family("kim_received_bytes_total", vec![counter(bi, None)]),
            family("kim_messages_sent_total", vec![counter(mo, None)]),
            family("kim_sent_bytes_total", vec![counter(bo, None)]),
        ];
        if let Some(crate::heap::HeapStats { in_use, free }) = crate::heap::stats() {
            let state = |s, v: u64| {
                let mut m = gauge(v as f64);
                m.set_label(labels(Some(("state", s))));
                m
            };
            out.push(family(
                "kim_heap_bytes",
                vec![state("in_use", in_use), state("free", free)],
            ));
        }
        if let Some(master) = core.master.get() {
            let st = master.stats();
            handler.add(&master.handler_histogram());
            let both = |name: &'static str, to: u64, from: u64| {
                family(
                    name,
                    vec![
                        counter(to, Some(("direction", "to_workers"))),
                        counter(from, Some(("direction", "from_workers"))),
                    ],
                )
            };
            let sides = |name: &'static str, master: u64, workers: u64| {
                family(
                    name,
                    vec![
                        counter(master, Some(("receiver", "master"))),
                        counter(workers, Some(("receiver", "workers"))),
                    ],
                )
            };
            let (m, w) = (&st.master_recv, &st.worker_recv);
            out.extend([
                family("kim_ipc_workers", vec![gauge(st.workers as f64)]),
                family(
                    "kim_ipc_worker_respawns_total",
                    vec![counter(st.respawns, None)],
                ),
                family(
                    "kim_ipc_worker_reloads_total",
                    vec![counter(st.reloads, None)],
                ),
                both("kim_ipc_messages_total", st.messages_sent, m.messages),
                both("kim_ipc_datagrams_total", st.datagrams_sent, m.datagrams),
                family("kim_ipc_handled_total", vec![counter(st.handled, None)]),
                sides(
                    "kim_ipc_orphan_chunks_total",
                    m.orphan_chunks,
                    w.orphan_chunks,
                ),
                sides("kim_ipc_expired_partials_total", m.expired, w.expired),
                sides("kim_ipc_refused_total", m.refused, w.refused),
                sides("kim_ipc_malformed_total", m.malformed, w.malformed),
            ]);
        }
        out.push(family(
            "kim_handler_duration_seconds",
            vec![histogram(&handler)],
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_buckets() {
        let hot = Hot::new();
        hot.handled(Duration::from_nanos(999));
        hot.handled(Duration::from_micros(1));
        hot.handled(Duration::from_micros(7));
        hot.handled(Duration::from_secs(60));
        let h = hot.handler_histogram();
        assert_eq!(h.count, 4);
        assert_eq!(h.sum_ns, 999 + 1_000 + 7_000 + 60_000_000_000);
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[2], 1);
        assert_eq!(h.buckets[HANDLER_BUCKETS - 1], 1);
        let m = histogram(&h);
        let b = m.get_histogram().get_bucket();
        assert_eq!(b.len(), HANDLER_BOUNDS_NS.len());
        assert_eq!(b[0].cumulative_count(), 2);
        assert_eq!(b[2].cumulative_count(), 3);
        assert_eq!(b[b.len() - 1].cumulative_count(), 3);
    }

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
