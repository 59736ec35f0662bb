//! The cluster's figures, registered in the server's registry so `/metrics` serves them with
//! kim's own.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kim_cluster_pushes_total` | counter: pushes to users on other nodes | `direction`: `sent`, `received` |
//! | `kim_cluster_publishes_total` | counter: room publishes between nodes | `direction`: `sent`, `received` |
//! | `kim_cluster_failures_total` | counter: calls to other nodes that failed | `reason`: `offline`, `full`, `disconnected`, `timeout`, `broker`, `queue_full` |
//! | `kim_cluster_claims_total` | counter: logins' claims on their id | `outcome`: `granted`, `taken_over`, `refused`, `failed` |
//! | `kim_cluster_broker_connected` | gauge: 1 while the broker is reachable | |
//! | `kim_cluster_nodes` | gauge: nodes heard from within three heartbeats, this one included | |
//! | `kim_cluster_room_subscriptions` | gauge: rooms this node receives publishes for | |

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Why a call to another node failed, as counted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Failure {
    Offline = 0,
    Full = 1,
    Disconnected = 2,
    Timeout = 3,
    Broker = 4,
    QueueFull = 5,
}

const FAILURES: [&str; 6] = [
    "offline",
    "full",
    "disconnected",
    "timeout",
    "broker",
    "queue_full",
];

/// What a claim came to, as counted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClaimOutcome {
    Granted = 0,
    TakenOver = 1,
    Refused = 2,
    Failed = 3,
}

const OUTCOMES: [&str; 4] = ["granted", "taken_over", "refused", "failed"];

/// The cluster's counters and gauges.
pub(crate) struct ClusterMetrics {
    pub(crate) pushes_sent: IntCounter,
    pub(crate) pushes_received: IntCounter,
    pub(crate) publishes_sent: IntCounter,
    pub(crate) publishes_received: IntCounter,
    failures: [IntCounter; 6],
    claims: [IntCounter; 4],
    pub(crate) connected: IntGauge,
    pub(crate) nodes: IntGauge,
    pub(crate) room_subscriptions: IntGauge,
    /// The counter families, as registered.
    families: [IntCounterVec; 4],
}

impl ClusterMetrics {
    /// Made apart from any registry; [`ClusterMetrics::register`] adds them to one.
    pub(crate) fn new() -> ClusterMetrics {
        // Names and labels are fixed and distinct, so creating them cannot fail.
        let vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        let pushes = vec(
            "kim_cluster_pushes_total",
            "Pushes to users on other nodes.",
            "direction",
        );
        let publishes = vec(
            "kim_cluster_publishes_total",
            "Room publishes between nodes.",
            "direction",
        );
        let failures = vec(
            "kim_cluster_failures_total",
            "Calls to other nodes that failed, by reason.",
            "reason",
        );
        let claims = vec(
            "kim_cluster_claims_total",
            "Claims of logged-in ids across the cluster, by outcome.",
            "outcome",
        );
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let connected = gauge(
            "kim_cluster_broker_connected",
            "1 while the cluster's broker is reachable.",
        );
        let nodes = gauge(
            "kim_cluster_nodes",
            "Nodes heard from within three heartbeats, this one included.",
        );
        let room_subscriptions = gauge(
            "kim_cluster_room_subscriptions",
            "Rooms this node receives other nodes' publishes for.",
        );
        ClusterMetrics {
            pushes_sent: pushes.with_label_values(&["sent"]),
            pushes_received: pushes.with_label_values(&["received"]),
            publishes_sent: publishes.with_label_values(&["sent"]),
            publishes_received: publishes.with_label_values(&["received"]),
            failures: FAILURES.map(|r| failures.with_label_values(&[r])),
            claims: OUTCOMES.map(|o| claims.with_label_values(&[o])),
            families: [pushes, publishes, failures, claims],
            connected,
            nodes,
            room_subscriptions,
        }
    }

    /// Adds the figures to `registry` (a second registration is ignored).
    pub(crate) fn register(&self, registry: &Registry) {
        for f in &self.families {
            let _ = registry.register(Box::new(f.clone()));
        }
        for g in [&self.connected, &self.nodes, &self.room_subscriptions] {
            let _ = registry.register(Box::new(g.clone()));
        }
    }

    pub(crate) fn failed(&self, why: Failure) {
        self.failures[why as usize].inc();
    }

    pub(crate) fn claimed(&self, outcome: ClaimOutcome) {
        self.claims[outcome as usize].inc();
    }
}
