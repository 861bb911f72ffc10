//! One pass of the retention job (`insightflow_worker::retention::run_once`) against the
//! database and Redis the worker's settings name (`WORKER__*`), timed. What
//! `scripts/bench-retention.sh` runs before partitioning (a table without partitions: the job
//! deletes rows in chunks, as it did) and after (it drops whole days): the same code both times.
//! Prints `{"deleted": rows, "seconds": wall time of the pass}`.
//!
//! With `apply-partitioning` it applies migration 20261129150000 alone (to a database holding
//! the schema before it, without sqlx's bookkeeping) and prints `{"seconds": ...}` instead:
//! the migration defines procedures, which the `mysql` client cannot send as written.

use std::time::{Duration, Instant};

use insightflow_runtime::telemetry;
use insightflow_worker::metrics::WorkerMetrics;
use insightflow_worker::retention;
use insightflow_worker::store::mysql::{MysqlStore, MIGRATOR};
use insightflow_worker::store::redis::RedisStore;
use insightflow_worker::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().unwrap_or_else(|e| e.exit());
    telemetry::init(&settings.log);
    let mysql = MysqlStore::connect(&settings.mysql).await?;
    if std::env::args().nth(1).as_deref() == Some("apply-partitioning") {
        let migration = MIGRATOR
            .iter()
            .find(|m| m.version == 20261129150000)
            .ok_or_else(|| anyhow::anyhow!("migration 20261129150000 is not built in"))?;
        let started = Instant::now();
        sqlx::raw_sql(&migration.sql).execute(mysql.pool()).await?;
        println!("{{\"seconds\":{:.3}}}", started.elapsed().as_secs_f64());
        return Ok(());
    }
    let redis = RedisStore::connect(&settings.redis, &settings.aggregates).await?;
    let metrics = WorkerMetrics::register(&prometheus::Registry::new())?;
    let started = Instant::now();
    let ran = retention::run_once(
        &settings.retention,
        &mysql,
        &redis,
        &metrics,
        Duration::from_secs(1),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(ran, "another instance holds the retention lock");
    println!(
        "{{\"deleted\":{},\"seconds\":{seconds:.3}}}",
        metrics.retention_deleted.get()
    );
    Ok(())
}
