//! Per-key request rates: one token bucket per API key and class of RPC (submissions,
//! reads), refilled continuously at the configured rate and holding at most
//! [`BURST_SECONDS`] of it. An empty bucket answers how long until the next token, which
//! becomes RESOURCE_EXHAUSTED's retry-after hint.
//!
//! Beside the admission caps (`--max-queued-jobs`, per tenant), which bound the queue,
//! these bound how fast one key can call at all, so a runaway script cannot starve the
//! other keys of the coordinator's attention.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A bucket holds this many seconds of its rate (the burst a quiet key may spend at once).
pub const BURST_SECONDS: f64 = 10.0;

/// The class of an RPC, each with its own bucket per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateClass {
    /// SubmitJob, SubmitBatch, CancelJob.
    Submit,
    /// Everything else.
    Read,
}

impl RateClass {
    pub fn flag(self) -> &'static str {
        match self {
            RateClass::Submit => "--key-submit-rate",
            RateClass::Read => "--key-read-rate",
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// See the module docs.
pub struct RateLimiter {
    submit_per_s: f64,
    read_per_s: f64,
    buckets: Mutex<HashMap<(String, RateClass), Bucket>>,
}

impl RateLimiter {
    /// Rates in requests per second; 0 leaves that class unlimited.
    pub fn new(submit_per_s: f64, read_per_s: f64) -> Self {
        Self {
            submit_per_s,
            read_per_s,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `key_id`'s `class` bucket, or answers how long until one is there.
    pub fn take(&self, key_id: &str, class: RateClass) -> Result<(), Duration> {
        self.take_at(key_id, class, Instant::now())
    }

    /// Requests per second `class` allows each key (0: unlimited).
    pub fn rate(&self, class: RateClass) -> f64 {
        match class {
            RateClass::Submit => self.submit_per_s,
            RateClass::Read => self.read_per_s,
        }
    }

    fn take_at(&self, key_id: &str, class: RateClass, now: Instant) -> Result<(), Duration> {
        let rate = self.rate(class);
        if rate <= 0.0 {
            return Ok(());
        }
        let capacity = (rate * BURST_SECONDS).max(1.0);
        let mut buckets = self.buckets.lock();
        let bucket = buckets
            .entry((key_id.to_string(), class))
            .or_insert(Bucket {
                tokens: capacity,
                at: now,
            });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_spends_its_burst_then_waits_for_the_rate_and_keys_do_not_share() {
        let limiter = RateLimiter::new(2.0, 0.0);
        let t0 = Instant::now();
        for _ in 0..20 {
            limiter.take_at("a", RateClass::Submit, t0).unwrap();
        }
        let wait = limiter.take_at("a", RateClass::Submit, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(
            limiter.take_at("b", RateClass::Submit, t0).is_ok(),
            "another key has its own bucket"
        );
        assert!(
            limiter
                .take_at("a", RateClass::Submit, t0 + Duration::from_millis(500))
                .is_ok(),
            "a token is back after 1/rate"
        );
        for _ in 0..1000 {
            limiter.take_at("a", RateClass::Read, t0).unwrap();
        }
    }
}
