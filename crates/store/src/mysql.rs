//! How a MySQL pool is connected: the consumer's (`mysql.max_connections`) and the stats API's
//! own, whose statements the server stops after `stats.query_timeout_ms`.

use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::MySqlPool;

/// `[mysql]` in the worker's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct MysqlSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

/// A pool of `max_connections`; with `statement_timeout`, the server stops every statement
/// after that long (MariaDB `max_statement_time`; MySQL `max_execution_time`, which bounds
/// SELECTs). Fails with the address (password hidden) when MySQL cannot be reached.
pub async fn connect(
    settings: &MysqlSettings,
    max_connections: u32,
    statement_timeout: Option<Duration>,
) -> anyhow::Result<MySqlPool> {
    let options: MySqlConnectOptions = settings
        .url
        .parse()
        .context("mysql.url is not a valid MySQL URL")?;
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if let Some(limit) = statement_timeout {
                    limit_statement_time(conn, limit).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to MySQL at {}", redact(&settings.url)))
}

/// Whether MySQL answers a trivial query through the pool.
pub async fn ping(pool: &MySqlPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// Sets the connection's statement time limit: MariaDB's `max_statement_time` (seconds), or
/// where that variable does not exist, MySQL's `max_execution_time` (milliseconds).
async fn limit_statement_time(
    conn: &mut sqlx::MySqlConnection,
    limit: Duration,
) -> Result<(), sqlx::Error> {
    let mariadb = format!(
        "SET SESSION max_statement_time = {:.3}",
        limit.as_secs_f64()
    );
    if sqlx::query(&mariadb).execute(&mut *conn).await.is_ok() {
        return Ok(());
    }
    let mysql = format!("SET SESSION max_execution_time = {}", limit.as_millis());
    sqlx::query(&mysql).execute(&mut *conn).await.map(|_| ())
}

/// The URL with its credentials hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
