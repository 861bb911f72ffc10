use anyhow::bail;
use insightflow_runtime::{shutdown, telemetry};
use insightflow_worker::store::mysql::MysqlStore;
use insightflow_worker::{Application, Role, Settings};

const USAGE: &str = "usage: worker [all|consume|serve|migrate]
  all      consume events and serve the stats API (default)
  consume  consume events only (health, ready and metrics are still served)
  serve    serve the stats API only
  migrate  create the database if needed and apply migrations, then exit";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = std::env::args().nth(1);
    let role = match command.as_deref() {
        None | Some("all") => Role::All,
        Some("consume") => Role::Consume,
        Some("serve") => Role::Serve,
        Some("migrate") => {
            let settings = Settings::load()?;
            telemetry::init(&settings.log);
            MysqlStore::migrate(&settings.mysql).await?;
            tracing::info!("migrations applied");
            return Ok(());
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
    };
    let settings = Settings::load()?;
    telemetry::init(&settings.log);
    let shutdown = shutdown::on_signal();
    let app = Application::build(settings, role, prometheus::Registry::new(), shutdown).await?;
    tracing::info!(port = app.port(), ?role, "worker listening");
    app.run_until_stopped().await
}
