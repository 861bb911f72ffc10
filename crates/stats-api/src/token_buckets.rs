//! Token buckets by key, in memory: the per-key rate limit and the failed-authentication
//! limit per client (`auth.rs`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// Keys (clients) tracked at once; past it, fully recovered buckets are forgotten first.
const TRACKED_CLIENTS: usize = 100_000;

/// Token buckets by key, in memory. Bounded: past `TRACKED_CLIENTS` entries, buckets that
/// have refilled are forgotten (a full bucket is the same as no bucket).
pub struct TokenBuckets<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Copy> TokenBuckets<K> {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, (tokens, last): (f64, Instant), now: Instant) -> f64 {
        (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.burst)
    }

    fn retry_after(&self, tokens: f64) -> u64 {
        // Whole seconds, rounded up, at least 1: a client must not retry before a token exists.
        ((1.0 - tokens) / self.per_second).ceil().max(1.0) as u64
    }

    /// Whether a token is there, without spending it; `Err(retry after seconds)` if not.
    pub fn peek(&self, key: &K) -> Result<(), u64> {
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match buckets.get(key) {
            None => Ok(()),
            Some(&bucket) => {
                let tokens = self.refilled(bucket, Instant::now());
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(self.retry_after(tokens))
                }
            }
        }
    }

    /// Spends a token; `Err(retry after seconds)` when there is none.
    pub fn take(&self, key: K) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= TRACKED_CLIENTS && !buckets.contains_key(&key) {
            buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.burst);
        }
        let bucket = buckets.entry(key).or_insert((self.burst, now));
        let tokens = self.refilled(*bucket, now);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            Ok(())
        } else {
            *bucket = (tokens, now);
            Err(self.retry_after(tokens))
        }
    }
}
