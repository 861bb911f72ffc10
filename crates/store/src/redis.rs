//! How a Redis pool is connected, with the key prefix every key of this deployment carries.

use anyhow::Context;
use deadpool_redis::redis;
use deadpool_redis::{Pool, Runtime};
use serde::Deserialize;

/// `[redis]` in the worker's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    pub pool_size: usize,
}

/// A Redis pool and the key prefix (`redis.key_prefix`) its keys are built with (`keys`).
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool,
    prefix: String,
}

impl RedisPool {
    /// A pool of `pool_size` connections, checked with a PING; fails naming the address.
    pub async fn connect(settings: &RedisSettings, pool_size: usize) -> anyhow::Result<Self> {
        let mut config = deadpool_redis::Config::from_url(settings.url.clone());
        config.pool = Some(deadpool_redis::PoolConfig::new(pool_size));
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .context("invalid redis settings")?;
        let mut conn = pool
            .get()
            .await
            .with_context(|| format!("cannot connect to Redis at {}", settings.url))?;
        redis::cmd("PING")
            .query_async::<String>(&mut *conn)
            .await
            .with_context(|| format!("Redis at {} does not answer PING", settings.url))?;
        Ok(Self {
            pool,
            prefix: settings.key_prefix.clone(),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub async fn ping(&self) -> bool {
        match self.pool.get().await {
            Ok(mut conn) => redis::cmd("PING")
                .query_async::<String>(&mut *conn)
                .await
                .is_ok(),
            Err(_) => false,
        }
    }
}
