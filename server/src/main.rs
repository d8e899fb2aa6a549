//! `paas-server`: loads the configuration, sets up logging and runs the controller.

use paas_server::config::Settings;
use paas_server::startup::Application;
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let settings = Settings::load()?;
    let app = Application::build(settings).await?;
    if let Err(e) = app.run_until_stopped().await {
        tracing::error!(error = ?e, "paas-server stopped");
        return Err(e);
    }
    Ok(())
}
