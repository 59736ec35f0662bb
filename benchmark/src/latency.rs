//! Latency histograms of one-microsecond buckets: cheap enough to record every message of a
//! run in the load generator's hot loop, exact enough for medians and 99th percentiles.

use std::time::Duration;

/// Latencies are counted in microsecond buckets up to this; longer ones share the last.
const MAX_US: usize = 1_000_000;

/// Counts of latencies by whole microsecond.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            buckets: vec![0; MAX_US + 1],
        }
    }

    /// Counts one latency of `us` microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.buckets[(us as usize).min(MAX_US)] += 1;
    }

    /// Counts one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_us(latency.as_micros().try_into().unwrap_or(u64::MAX));
    }

    /// Forgets every latency counted (at the end of a warm-up).
    pub fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = 0);
    }

    /// The `q` quantile in microseconds (0 when empty).
    pub fn percentile(&self, q: f64) -> f64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (us, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return us as f64;
            }
        }
        MAX_US as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_histogram() {
        let mut h = Histogram::new();
        for _ in 0..50 {
            h.record_us(1);
        }
        for _ in 0..49 {
            h.record(Duration::from_micros(3));
        }
        h.record_us(9);
        assert_eq!(h.percentile(0.5), 1.0);
        assert_eq!(h.percentile(0.99), 3.0);
        assert_eq!(h.percentile(1.0), 9.0);
        h.record(Duration::from_secs(5));
        assert_eq!(h.percentile(1.0), MAX_US as f64);
        h.clear();
        assert_eq!(h.percentile(0.5), 0.0);
    }
}
