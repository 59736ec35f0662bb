//! Creating kim's metrics and registering them in a server's registry, for every file of
//! `metrics` that keeps some.

use prometheus::{IntCounter, IntGauge, Registry};

/// `metric`, registered in `registry`. kim's metric names and labels are fixed and distinct,
/// so registering cannot fail.
pub(crate) fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

/// A counter named `name`, registered in `registry`.
pub(crate) fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(
        registry,
        IntCounter::new(name, help).expect("valid metric name"),
    )
}

/// A gauge named `name`, registered in `registry`.
pub(crate) fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(
        registry,
        IntGauge::new(name, help).expect("valid metric name"),
    )
}
