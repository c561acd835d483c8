//! The `inventory` binary: configuration from the environment, then serve until SIGTERM, then flush the spans
//! not yet exported (when OTLP export is on).

use std::process::ExitCode;

use inventory::app::Application;
use inventory::config::{Config, KeySource};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("inventory: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match inventory::telemetry::init(&config) {
        Ok(telemetry) => telemetry,
        // Such as OTEL_EXPORTER_OTLP_COMPRESSION=gzip, which this build does not support.
        Err(err) => {
            eprintln!("inventory: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    if let KeySource::Generated(path) = &config.key_source {
        tracing::warn!(
            path = %path.display(),
            "APP_KEY is not set: using a development key stored in DATA_DIR. Production must set APP_KEY, the same on every replica"
        );
    }
    let (host, instance) = (config.host, config.instance_name.clone());
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            eprintln!("inventory: cannot start: {err}");
            telemetry.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(url = %format!("http://{host}:{}/", app.port()), %instance, "inventory is serving");
    let served = app.run_until_stopped().await;
    telemetry.shutdown().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "server failed");
            ExitCode::FAILURE
        }
    }
}
