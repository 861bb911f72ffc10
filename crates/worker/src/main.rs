use anyhow::bail;
use insightflow_runtime::settings::SettingsError;
use insightflow_runtime::{shutdown, telemetry};
use insightflow_worker::metrics::WorkerMetrics;
use insightflow_worker::rebuild;
use insightflow_worker::store::mysql::MysqlStore;
use insightflow_worker::store::redis::RedisStore;
use insightflow_worker::{Application, Role, Settings};

const USAGE: &str = "usage: worker [all|consume|serve|migrate|rebuild-redis]
  all      consume events and serve the stats API (default)
  consume  consume events only (health, ready and metrics are still served)
  serve    serve the stats API only
  migrate  create the database if needed and apply migrations, then exit
  rebuild-redis
           delete every Redis aggregate under the key prefix and rebuild them all from
           MySQL, then exit (consumers pause while keys are deleted; stats answers from
           Redis say \"exact\": false until it is done)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = std::env::args().nth(1);
    let role = match command.as_deref() {
        None | Some("all") => Role::All,
        Some("consume") => Role::Consume,
        Some("serve") => Role::Serve,
        Some("migrate") => {
            let settings = Settings::load().unwrap_or_else(|e| e.exit());
            telemetry::init(&settings.log);
            MysqlStore::migrate(&settings.mysql).await?;
            tracing::info!("migrations applied");
            return Ok(());
        }
        Some("rebuild-redis") => {
            let settings = Settings::load().unwrap_or_else(|e| e.exit());
            telemetry::init(&settings.log);
            let mysql = MysqlStore::connect(&settings.mysql).await?;
            let redis = RedisStore::connect(&settings.redis, &settings.aggregates).await?;
            let metrics = WorkerMetrics::register(&prometheus::Registry::new())?;
            let rebuilt = rebuild::rebuild_now(&mysql, &redis, &metrics).await?;
            println!(
                "rebuilt Redis under prefix {:?} from MySQL: deleted {} keys, replayed {} events \
                 ({} new to Redis) in {:.1} s; marked it ready",
                redis.prefix(),
                rebuilt.deleted_keys,
                rebuilt.events_replayed,
                rebuilt.events_applied,
                rebuilt.duration.as_secs_f64()
            );
            return Ok(());
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
    };
    let settings = Settings::load().unwrap_or_else(|e| e.exit());
    insightflow_worker::startup::check_settings(&settings, role)
        .unwrap_or_else(|e| SettingsError::invalid(format!("{e:#}")).exit());
    telemetry::init(&settings.log);
    let shutdown = shutdown::on_signal();
    let app = Application::build(settings, role, prometheus::Registry::new(), shutdown).await?;
    tracing::info!(port = app.port(), ?role, "worker listening");
    app.run_until_stopped().await
}
