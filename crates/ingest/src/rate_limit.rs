//! Token buckets per client IP and per write key, in memory (the gateway keeps no shared
//! state on the request path). Idle buckets are forgotten periodically so the maps stay bounded
//! by the number of recently active clients.
//!
//! An IPv6 client is limited per /64 (it can usually choose any address in its /64), an
//! IPv4-mapped address as its IPv4 address ([`rate_limit_key`]).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::{bail, Context};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use insightflow_runtime::net::rate_limit_key;
use tokio_util::sync::CancellationToken;

use crate::auth::KeyBucket;
use crate::error::IngestError;
use crate::settings::RateLimitSettings;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

pub struct RateLimits {
    per_ip: Option<Keyed<IpAddr>>,
    per_write_key: Option<Keyed<KeyBucket>>,
    clock: DefaultClock,
}

fn quota(per_second: f64, burst: u32, name: &str) -> anyhow::Result<Option<Quota>> {
    if per_second == 0.0 {
        return Ok(None);
    }
    if !(per_second.is_finite() && per_second > 0.0) {
        bail!("rate_limit.{name}_per_second must be a positive number or 0 (off)");
    }
    let burst = NonZeroU32::new(burst)
        .with_context(|| format!("rate_limit.{name}_burst must be at least 1"))?;
    let period = Duration::from_secs_f64(1.0 / per_second);
    let quota = Quota::with_period(period)
        .with_context(|| format!("rate_limit.{name}_per_second is too high"))?;
    Ok(Some(quota.allow_burst(burst)))
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> anyhow::Result<Self> {
        let clock = DefaultClock::default();
        Ok(Self {
            per_ip: quota(settings.per_ip_per_second, settings.per_ip_burst, "per_ip")?
                .map(|q| RateLimiter::dashmap_with_clock(q, clock.clone())),
            per_write_key: quota(
                settings.per_write_key_per_second,
                settings.per_write_key_burst,
                "per_write_key",
            )?
            .map(|q| RateLimiter::dashmap_with_clock(q, clock.clone())),
            clock,
        })
    }

    /// Takes a token from the bucket of `ip`'s network ([`rate_limit_key`]).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), IngestError> {
        self.check(self.per_ip.as_ref(), &rate_limit_key(ip), "ip")
    }

    pub fn check_write_key(&self, key: &KeyBucket) -> Result<(), IngestError> {
        self.check(self.per_write_key.as_ref(), key, "write_key")
    }

    fn check<K: Hash + Eq + Clone>(
        &self,
        limiter: Option<&Keyed<K>>,
        key: &K,
        name: &'static str,
    ) -> Result<(), IngestError> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            IngestError::RateLimited {
                limiter: name,
                // Whole seconds, rounded up: a client must not retry before a token exists.
                retry_after_seconds: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            }
        })
    }

    /// Drops buckets that are full again (their clients have been idle long enough).
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_write_key {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Runs [`Self::forget_idle`] every `interval` until `shutdown`.
    pub async fn housekeeping(
        self: std::sync::Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => self.forget_idle(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use insightflow_runtime::secret::KeyId;

    use super::*;

    fn key(name: &str) -> KeyBucket {
        KeyBucket::Unverified(name.to_owned())
    }

    fn settings(ip_burst: u32, key_burst: u32) -> RateLimitSettings {
        RateLimitSettings {
            // One token per ~17 minutes: nothing refills while the test runs.
            per_ip_per_second: 0.001,
            per_ip_burst: ip_burst,
            per_write_key_per_second: 0.001,
            per_write_key_burst: key_burst,
        }
    }

    #[test]
    fn each_ip_and_each_key_has_its_own_bucket() {
        let limits = RateLimits::new(&settings(2, 1)).unwrap();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        assert!(limits.check_ip(a).is_ok());
        assert!(limits.check_ip(a).is_ok());
        match limits.check_ip(a) {
            Err(IngestError::RateLimited {
                limiter,
                retry_after_seconds,
            }) => {
                assert_eq!(limiter, "ip");
                assert!(retry_after_seconds >= 1);
            }
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limits.check_ip(b).is_ok(), "another client is unaffected");
        assert!(limits.check_write_key(&key("k1")).is_ok());
        assert!(matches!(
            limits.check_write_key(&key("k1")),
            Err(IngestError::RateLimited {
                limiter: "write_key",
                ..
            })
        ));
        assert!(limits.check_write_key(&key("k2")).is_ok());
        let configured = KeyBucket::Configured(KeyId(0));
        assert!(limits.check_write_key(&configured).is_ok());
        assert!(limits.check_write_key(&configured).is_err());
        assert!(limits
            .check_write_key(&KeyBucket::Configured(KeyId(1)))
            .is_ok());
        limits.forget_idle();
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let limits = RateLimits::new(&settings(1, 1)).unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(limits.check_ip(ip("2001:db8:1:2::1")).is_ok());
        // Another address of the same /64: the same client, and its bucket is empty.
        assert!(limits
            .check_ip(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
            .is_err());
        assert!(limits.check_ip(ip("2001:db8:1:2:abcd::7")).is_err());
        // The neighbouring /64s are other clients.
        assert!(limits.check_ip(ip("2001:db8:1:3::1")).is_ok());
        assert!(limits
            .check_ip(ip("2001:db8:1:1:ffff:ffff:ffff:ffff"))
            .is_ok());
        // An IPv4-mapped address is its IPv4 address; IPv4 clients are not grouped.
        assert!(limits.check_ip(ip("203.0.113.7")).is_ok());
        assert!(limits.check_ip(ip("::ffff:203.0.113.7")).is_err());
        assert!(limits.check_ip(ip("203.0.113.8")).is_ok());
    }

    #[test]
    fn a_zero_rate_turns_a_limiter_off_and_nonsense_is_refused() {
        let mut off = settings(1, 1);
        off.per_ip_per_second = 0.0;
        let limits = RateLimits::new(&off).unwrap();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..10 {
            assert!(limits.check_ip(ip).is_ok());
        }
        let mut bad = settings(0, 1);
        assert!(RateLimits::new(&bad).is_err(), "burst 0");
        bad.per_ip_burst = 1;
        bad.per_ip_per_second = -1.0;
        assert!(RateLimits::new(&bad).is_err(), "negative rate");
    }
}
