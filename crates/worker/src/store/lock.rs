//! A lock in Redis held by one worker of the group at a time: `SET key token NX PX ttl`; only
//! its holder (the token) renews or releases it, and a holder that dies lets it expire. The
//! retention job and the Redis rebuild take theirs here.

use std::time::Duration;

use deadpool_redis::redis;

use super::redis::RedisStore;

const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

pub struct RedisLock<'a> {
    redis: &'a RedisStore,
    key: String,
    token: String,
    ttl: Duration,
}

impl<'a> RedisLock<'a> {
    /// Takes `key` for `ttl`, or `None` when another holder has it.
    pub async fn acquire(
        redis: &'a RedisStore,
        key: String,
        ttl: Duration,
    ) -> anyhow::Result<Option<Self>> {
        let token = format!("{}-{}", std::process::id(), rand::random::<u64>());
        let mut conn = redis.pool().get().await?;
        let acquired: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut *conn)
            .await?;
        Ok(acquired.map(|_| Self {
            redis,
            key,
            token,
            ttl,
        }))
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// What proves holding it, for scripts that act only for the holder.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn redis(&self) -> &'a RedisStore {
        self.redis
    }

    /// Extends the lock by its ttl; fails when it is no longer ours (expired, Redis restarted).
    pub async fn renew(&self) -> anyhow::Result<()> {
        let mut conn = self.redis.pool().get().await?;
        let renewed: i64 = redis::Script::new(RENEW)
            .key(&self.key)
            .arg(&self.token)
            .arg(millis(self.ttl))
            .invoke_async(&mut *conn)
            .await?;
        anyhow::ensure!(
            renewed == 1,
            "lost the lock {} (it expired, or Redis restarted)",
            self.key
        );
        Ok(())
    }

    /// Releases the lock if still ours; on failure it expires by itself.
    pub async fn release(self) {
        let released = async {
            let mut conn = self.redis.pool().get().await?;
            redis::Script::new(RELEASE)
                .key(&self.key)
                .arg(&self.token)
                .invoke_async::<i64>(&mut *conn)
                .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = released {
            tracing::warn!(lock = %self.key, error = %format!("{e:#}"), "cannot release the lock; it expires by itself");
        }
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
