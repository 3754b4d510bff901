//! `reelfarm_worker_engine_busy_ratio{engine}`: the fraction of the last
//! [`BUSY_WINDOW`] during which the worker's engine (cpu or cuda) was running at least one
//! task's diffusion — for a CUDA engine, how busy the worker kept its GPU.
//!
//! It is measured, not sampled: [`EngineBusy::enter`] marks the start of engine work and its
//! guard the end; each scrape computes the ratio over the window ending now (a custom
//! Prometheus collector), counting overlapping tasks once. While the process is younger
//! than the window, the ratio is over its life so far.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};

/// The window of the ratio. One minute spans two scrapes at the chart's 30 s interval, so
/// no busy period falls between scrapes unseen, and it is short enough to show a worker
/// going idle within a minute.
pub const BUSY_WINDOW: Duration = Duration::from_secs(60);

/// See the module docs. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct EngineBusy {
    engine: String,
    gauge: GaugeVec,
    state: Arc<Mutex<State>>,
}

struct State {
    /// When measuring began (the process start, near enough).
    since: Instant,
    /// Tasks running on the engine now.
    running: u32,
    /// Start of the current busy period, while `running > 0`.
    busy_since: Option<Instant>,
    /// Finished busy periods that may still overlap the window, oldest first.
    periods: VecDeque<(Instant, Instant)>,
}

/// Marks engine work in progress until dropped.
pub struct BusyGuard {
    state: Arc<Mutex<State>>,
}

impl EngineBusy {
    /// The collector for `engine` (e.g. "cpu"); register it in the worker's registry.
    pub fn new(engine: &str) -> prometheus::Result<Self> {
        let gauge = GaugeVec::new(
            Opts::new(
                "reelfarm_worker_engine_busy_ratio",
                "Fraction of the last 60 s the engine (cpu or cuda) was running at least one task's diffusion (0..1).",
            ),
            &["engine"],
        )?;
        let busy = Self {
            engine: engine.to_string(),
            gauge,
            state: Arc::new(Mutex::new(State {
                since: Instant::now(),
                running: 0,
                busy_since: None,
                periods: VecDeque::new(),
            })),
        };
        busy.gauge.with_label_values(&[engine]).set(0.0);
        Ok(busy)
    }

    /// Engine work starts now and lasts until the guard is dropped.
    pub fn enter(&self) -> BusyGuard {
        let mut state = lock(&self.state);
        state.start(Instant::now());
        BusyGuard {
            state: self.state.clone(),
        }
    }

    /// The ratio over the window ending `now`.
    pub fn ratio(&self, now: Instant) -> f64 {
        lock(&self.state).ratio(now)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        lock(&self.state).stop(Instant::now());
    }
}

impl Collector for EngineBusy {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge
            .with_label_values(&[&self.engine])
            .set(self.ratio(Instant::now()));
        self.gauge.collect()
    }
}

impl State {
    fn start(&mut self, now: Instant) {
        if self.running == 0 {
            self.busy_since = Some(now);
        }
        self.running += 1;
    }

    fn stop(&mut self, now: Instant) {
        self.running = self.running.saturating_sub(1);
        if self.running == 0 {
            if let Some(start) = self.busy_since.take() {
                self.periods.push_back((start, now));
            }
        }
    }

    fn ratio(&mut self, now: Instant) -> f64 {
        let window_start = now
            .checked_sub(BUSY_WINDOW)
            .map_or(self.since, |s| s.max(self.since));
        while self
            .periods
            .front()
            .is_some_and(|(_, end)| *end <= window_start)
        {
            self.periods.pop_front();
        }
        let span = now.saturating_duration_since(window_start);
        if span.is_zero() {
            return 0.0;
        }
        let overlap = |start: Instant, end: Instant| {
            end.min(now)
                .saturating_duration_since(start.max(window_start))
        };
        let mut busy: Duration = self.periods.iter().map(|(s, e)| overlap(*s, *e)).sum();
        if let Some(start) = self.busy_since {
            busy += overlap(start, now);
        }
        (busy.as_secs_f64() / span.as_secs_f64()).clamp(0.0, 1.0)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state stays consistent whatever panicked while holding it: keep measuring.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(since: Instant) -> State {
        State {
            since,
            running: 0,
            busy_since: None,
            periods: VecDeque::new(),
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ratio_is_the_busy_share_of_the_window() {
        let t0 = Instant::now();
        let mut s = state(t0);
        assert_eq!(s.ratio(t0 + 10 * S), 0.0, "idle since start");
        s.start(t0 + 10 * S);
        s.stop(t0 + 40 * S);
        // Younger than the window: 30 s busy of 50 s lived.
        assert!((s.ratio(t0 + 50 * S) - 0.6).abs() < 1e-9);
        // Window [40, 100]: the period ended at 40, nothing left.
        assert_eq!(s.ratio(t0 + 100 * S), 0.0);
        assert!(
            s.periods.is_empty(),
            "periods older than the window are dropped"
        );
    }

    #[test]
    fn overlapping_tasks_count_once_and_running_work_counts_until_now() {
        let t0 = Instant::now();
        let mut s = state(t0);
        s.start(t0 + 100 * S);
        s.start(t0 + 110 * S); // a second slot starts while the first runs
        s.stop(t0 + 120 * S);
        // Window [70, 130]: busy from 100 to now, one task still running.
        assert!((s.ratio(t0 + 130 * S) - 0.5).abs() < 1e-9);
        s.stop(t0 + 160 * S);
        // Window [100, 160]: busy all of it.
        assert!((s.ratio(t0 + 160 * S) - 1.0).abs() < 1e-9);
        // Window [130, 190]: busy [130, 160].
        assert!((s.ratio(t0 + 190 * S) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn the_collector_exports_the_gauge_with_the_engine_label() {
        let busy = EngineBusy::new("cpu").expect("valid metric");
        {
            let _guard = busy.enter();
            std::thread::sleep(Duration::from_millis(20));
        }
        let families = busy.collect();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].name(), "reelfarm_worker_engine_busy_ratio");
        let metric = &families[0].get_metric()[0];
        assert_eq!(metric.get_label()[0].value(), "cpu");
        let value = metric.get_gauge().get_value();
        assert!(
            value > 0.0 && value <= 1.0,
            "busy for part of its life, got {value}"
        );
    }
}
