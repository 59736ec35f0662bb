//! The figures read from the server when scraped: the gauges, the per-message counts, and
//! in process mode the workers'. The server is seen through [`Live`], so the metrics know
//! nothing of how it is built.

use std::collections::HashMap;
use std::sync::Weak;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::ipc::stats::IpcStats;
use crate::metrics::hot::{HandlerHistogram, Hot, HANDLER_BOUNDS_NS};

/// What a running server tells its metrics at scrape time.
pub(crate) trait Live: Send + Sync + 'static {
    /// Connections being served (logging in or logged in).
    fn connections(&self) -> usize;
    /// Logged-in channels.
    fn channels(&self) -> usize;
    /// In process mode (in the master): what the workers did, and their handler times.
    fn workers(&self) -> Option<(IpcStats, HandlerHistogram)>;
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
pub(crate) struct LiveCollector {
    live: Weak<dyn Live>,
    hot: std::sync::Arc<Hot>,
    descs: Vec<Desc>,
}

impl LiveCollector {
    pub(crate) fn new(live: Weak<dyn Live>, hot: std::sync::Arc<Hot>) -> LiveCollector {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                let labels = f.label.map(|l| vec![l.to_string()]).unwrap_or_default();
                Desc::new(f.name.into(), f.help.into(), labels, HashMap::new())
                    .expect("valid metric description")
            })
            .collect();
        LiveCollector { live, hot, descs }
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

pub(crate) fn histogram(h: &HandlerHistogram) -> proto::Metric {
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

impl Collector for LiveCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(live) = self.live.upgrade() else {
            return Vec::new();
        };
        let hot = &self.hot;
        let [mi, bi, mo, bo] = hot.traffic();
        let mut handler = hot.handler_histogram();
        let mut out = vec![
            family("kim_connections", vec![gauge(live.connections() as f64)]),
            family("kim_channels", vec![gauge(live.channels() as f64)]),
            family("kim_messages_received_total", vec![counter(mi, None)]),
            family("kim_received_bytes_total", vec![counter(bi, None)]),
            family("kim_messages_sent_total", vec![counter(mo, None)]),
            family("kim_sent_bytes_total", vec![counter(bo, None)]),
        ];
        if let Some((st, workers_handler)) = live.workers() {
            handler.add(&workers_handler);
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
    use crate::metrics::hot::HANDLER_BUCKETS;
    use std::time::Duration;

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
}
