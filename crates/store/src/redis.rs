//! How a Redis pool is connected, with the key prefix every key of this deployment carries.
//!
//! One Redis or a Redis Cluster (`redis.cluster`): both are reached through `Pool`, whose
//! connections take the same commands, pipelines and scripts. On a cluster a pipeline or a
//! script may only touch keys of one hash slot, which the key layout (`keys`) provides: every
//! key of a project carries the project as its hash tag.

use std::ops::{Deref, DerefMut};

use anyhow::Context;
use deadpool_redis::redis::{self, aio::ConnectionLike, Cmd, Pipeline, RedisFuture, Value};
use deadpool_redis::{PoolError, Runtime};
use serde::Deserialize;

/// `[redis]` in the worker's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// One Redis (`redis://host:6379/0`), or with `cluster` the cluster's seed nodes, comma
    /// separated (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`): the client learns the
    /// other nodes and the slots from them.
    pub url: String,
    pub key_prefix: String,
    pub pool_size: usize,
    /// `url` names Redis Cluster nodes (`cluster-enabled yes`), not one Redis.
    #[serde(default)]
    pub cluster: bool,
}

impl RedisSettings {
    /// The seed nodes of a cluster (`url`, split at commas).
    fn seeds(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}

/// A pool of connections to one Redis or to a Redis Cluster.
#[derive(Clone)]
pub enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

impl Pool {
    pub async fn get(&self) -> Result<Pooled, PoolError> {
        Ok(Pooled(match self {
            Self::Single(pool) => Connection::Single(pool.get().await?),
            Self::Cluster(pool) => Connection::Cluster(pool.get().await?),
        }))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// A connection taken from the pool (returned to it when dropped). `&mut *conn` (a
/// `Connection`) and `&mut conn` both run commands.
pub struct Pooled(Connection);

/// A connection to one Redis, or to the cluster (commands routed by their keys' slot).
pub enum Connection {
    Single(deadpool_redis::Connection),
    Cluster(deadpool_redis::cluster::Connection),
}

impl Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl ConnectionLike for Pooled {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

impl Connection {
    /// The addresses (`host`, `port`) of the nodes that hold keys: the masters of a cluster
    /// (from `CLUSTER NODES`), or `None` for one Redis. A key-space walk (`SCAN`) visits each.
    pub async fn masters(&mut self) -> redis::RedisResult<Option<Vec<(String, u16)>>> {
        if matches!(self, Self::Single(_)) {
            return Ok(None);
        }
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(self).await?;
        Ok(Some(masters_of(&nodes)))
    }

    /// Runs `cmd` on one node (`masters`); on one Redis, on it.
    pub async fn on_node<T: redis::FromRedisValue>(
        &mut self,
        node: Option<&(String, u16)>,
        cmd: Cmd,
    ) -> redis::RedisResult<T> {
        match (self, node) {
            (Self::Cluster(conn), Some((host, port))) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let value = conn
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        }),
                    )
                    .await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

/// The masters' addresses in a `CLUSTER NODES` reply: `<id> <ip:port@cport[,host]> <flags> ...`.
fn masters_of(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let master = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            if !master {
                return None;
            }
            let host_port = address.split('@').next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
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
        let pool = if settings.cluster {
            let mut config = deadpool_redis::cluster::Config::from_urls(settings.seeds());
            config.pool = Some(deadpool_redis::PoolConfig::new(pool_size));
            Pool::Cluster(
                config
                    .create_pool(Some(Runtime::Tokio1))
                    .context("invalid redis settings (cluster)")?,
            )
        } else {
            let mut config = deadpool_redis::Config::from_url(settings.url.clone());
            config.pool = Some(deadpool_redis::PoolConfig::new(pool_size));
            Pool::Single(
                config
                    .create_pool(Some(Runtime::Tokio1))
                    .context("invalid redis settings")?,
            )
        };
        let what = if settings.cluster {
            "Redis Cluster"
        } else {
            "Redis"
        };
        let mut conn = pool
            .get()
            .await
            .with_context(|| format!("cannot connect to {what} at {}", settings.url))?;
        redis::cmd("PING")
            .query_async::<String>(&mut *conn)
            .await
            .with_context(|| format!("{what} at {} does not answer PING", settings.url))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7004@17004 slave b2 0 1 2 connected
d4 127.0.0.1:7003@17003,node-3 master,fail - 0 1 3 connected 10923-16383
";
        assert_eq!(
            masters_of(nodes),
            vec![("127.0.0.1".into(), 7001), ("127.0.0.1".into(), 7002)]
        );
    }

    #[test]
    fn cluster_seeds_are_split_at_commas() {
        let settings = RedisSettings {
            url: "redis://a:1, redis://b:2,".into(),
            key_prefix: "if".into(),
            pool_size: 1,
            cluster: true,
        };
        assert_eq!(settings.seeds(), vec!["redis://a:1", "redis://b:2"]);
    }
}
