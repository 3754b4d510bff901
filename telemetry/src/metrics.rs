//! What every metrics module of the farm registers with: one way to add a metric to a
//! registry, and one set of histogram buckets per kind of duration, so the coordinator's and
//! the workers' histograms of like things can be read side by side.

use prometheus::core::Collector;
use prometheus::Registry;

/// Adds metrics to one registry. The definitions are static, so a bad one is a bug, caught
/// by the first test that builds the metrics.
pub struct Registrar {
    registry: Registry,
}

impl Registrar {
    pub fn new() -> Self {
        Self {
            registry: Registry::new(),
        }
    }

    /// Registers `metric` and returns it (a cheap handle onto the registered one).
    pub fn add<M: Collector + Clone + 'static>(&self, metric: prometheus::Result<M>) -> M {
        let m = metric.expect("metric definitions are static and valid");
        self.registry
            .register(Box::new(m.clone()))
            .expect("each metric is registered once");
        m
    }

    /// The registry, for `/metrics`.
    pub fn into_registry(self) -> Registry {
        self.registry
    }
}

impl Default for Registrar {
    fn default() -> Self {
        Self::new()
    }
}

/// Short operations, from half a millisecond to minutes: dispatch latency, store commits,
/// one diffusion step. Sub-millisecond resolution at the bottom because a healthy scheduler
/// dispatches in well under a millisecond; the tail reaches five minutes for a starved queue.
pub const SHORT_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Units of generation work, from 10 ms to an hour: a task attempt, a whole job (a clip's
/// tasks take from tens of milliseconds on a small CPU clip to many minutes for a model job).
pub const WORK_SECONDS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_increase_strictly() {
        for buckets in [SHORT_SECONDS, WORK_SECONDS] {
            assert!(
                buckets.windows(2).all(|w| w[0] < w[1]),
                "Prometheus refuses buckets that do not increase: {buckets:?}"
            );
        }
    }

    #[test]
    fn a_metric_is_registered_once() {
        let r = Registrar::new();
        let c = r.add(prometheus::IntCounter::new("reelfarm_test_total", "test"));
        c.inc();
        let registry = r.into_registry();
        let families = registry.gather();
        assert_eq!(families.len(), 1, "the one counter is in the registry");
        assert_eq!(families[0].name(), "reelfarm_test_total");
    }
}
