//! Per-client token buckets (rate limiting), keyed by a hash of the client's key.
//!
//! The caller passes the time in seconds (any monotonic origin), which keeps this pure and testable.
//! Buckets live in 16 mutex-guarded shards; a shard that grows past 4096 clients forgets the ones
//! whose bucket has refilled (idle clients), and one that still holds over 16384 (a flood of distinct
//! keys) starts afresh, so memory stays bounded whatever clients send.

use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 16;
const SHARD_SOFT_MAX: usize = 4096;
const SHARD_HARD_MAX: usize = 16384;

/// A token-bucket rate limiter per client key.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    shards: Vec<Mutex<Shard>>,
}

struct Shard {
    buckets: HashMap<u64, (f64, f64)>,
    /// Size at which the next sweep runs (doubles with the live set, so sweeps cost O(1) amortised).
    sweep_at: usize,
}

impl RateLimiter {
    /// `rate` requests per second on average, bursts of up to `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate: rate.max(1e-9),
            burst: burst.max(1.0),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        sweep_at: SHARD_SOFT_MAX,
                    })
                })
                .collect(),
        }
    }

    /// Takes a token for `key` at time `now_s`: `Ok`, or `Err(seconds until one is available)`.
    pub fn check(&self, key: u64, now_s: f64) -> Result<(), f64> {
        let Ok(mut shard) = self.shards[(key as usize) % SHARDS].lock() else {
            return Ok(());
        };
        if shard.buckets.len() > shard.sweep_at {
            let (rate, burst) = (self.rate, self.burst);
            shard
                .buckets
                .retain(|_, (tokens, last)| *tokens + (now_s - *last) * rate < burst);
            if shard.buckets.len() > SHARD_HARD_MAX {
                shard.buckets.clear();
            }
            shard.sweep_at = (2 * shard.buckets.len()).max(SHARD_SOFT_MAX);
        }
        let (tokens, last) = shard.buckets.entry(key).or_insert((self.burst, now_s));
        *tokens = (*tokens + (now_s - *last).max(0.0) * self.rate).min(self.burst);
        *last = now_s;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *tokens) / self.rate)
        }
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.buckets.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate_per_client() {
        let l = RateLimiter::new(2.0, 3.0);
        for _ in 0..3 {
            assert!(l.check(1, 0.0).is_ok());
        }
        let wait = l.check(1, 0.0).unwrap_err();
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        // Another client is not affected.
        assert!(l.check(2, 0.0).is_ok());
        // Half a second later: one token.
        assert!(l.check(1, 0.5).is_ok());
        assert!(l.check(1, 0.5).is_err());
        // Long idle: back to the burst, never more.
        for _ in 0..3 {
            assert!(l.check(1, 100.0).is_ok());
        }
        assert!(l.check(1, 100.0).is_err());
    }

    #[test]
    fn memory_stays_bounded_and_idle_clients_are_forgotten() {
        let l = RateLimiter::new(10.0, 1.0);
        // A flood of distinct keys at one instant: bounded, and quick (sweeps are amortised).
        for k in 0..(SHARDS * SHARD_HARD_MAX * 3 / 2) as u64 {
            let _ = l.check(k, 0.0);
        }
        assert!(
            l.clients() <= SHARDS * (SHARD_HARD_MAX + 1),
            "{}",
            l.clients()
        );

        // One shard: 5000 clients at t = 0, then 3200 new ones a second later. The sweep that the
        // growth triggers drops the first 5000, idle (refilled) by then.
        let l = RateLimiter::new(10.0, 1.0);
        let key = |i: u64| i * SHARDS as u64;
        for i in 0..5000 {
            let _ = l.check(key(i), 0.0);
        }
        for i in 5000..8200 {
            let _ = l.check(key(i), 1.0);
        }
        assert!(l.clients() < 5000, "{}", l.clients());
    }
}
