use insightflow_ingest::{Application, Settings};
use insightflow_runtime::settings::SettingsError;
use insightflow_runtime::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().unwrap_or_else(|e| e.exit());
    if let Err(e) = settings.validate() {
        // Like a setting that does not parse: one line, exit status 2.
        SettingsError::invalid(format!("{e:#}")).exit();
    }
    telemetry::init(&settings.log);
    let shutdown = shutdown::on_signal();
    let app = Application::build(settings, prometheus::Registry::new(), shutdown).await?;
    tracing::info!(
        port = app.port(),
        metrics_port = app.metrics_port(),
        "ingest gateway listening"
    );
    app.run_until_stopped().await
}
