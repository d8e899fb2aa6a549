//! `paas-server`: loads the configuration, sets up logging and runs the controller, or with
//! `paas-server router` only the router (following a controller's route table).

use paas_server::config::Settings;
use paas_server::startup::Application;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let settings = Settings::load()?;
    if std::env::args().nth(1).as_deref() == Some("router") {
        if let Err(e) = paas_server::router::standalone::run(settings).await {
            tracing::error!(error = ?e, "paas router stopped");
            return Err(e);
        }
        return Ok(());
    }
    let app = Application::build(settings).await?;
    if let Err(e) = app.run_until_stopped().await {
        tracing::error!(error = ?e, "paas-server stopped");
        return Err(e);
    }
    Ok(())
}
