//! Building and running the controller: open the store and blobstore, bootstrap the admin user
//! and secrets, bind the listener (port 0 allowed, see [`Application::port`]), then serve the API,
//! dashboard and router side by side with the convergence loop.

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use chrono::Utc;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{self, Keys};
use crate::blobstore::Blobstore;
use crate::config::Settings;
use crate::loghub::{HubSettings, LogHub};
use crate::metrics::Metrics;
use crate::router::{self, RouteTable};
use crate::state::AppCtx;
use crate::store::{Store, User};

pub struct Application {
    listener: TcpListener,
    port: u16,
    ctx: Arc<AppCtx>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
        let store = crate::store::open(&settings.database_url())
            .await
            .context("opening the database")?;
        bootstrap_admin(store.as_ref(), &settings).await?;
        bootstrap_tenancy(store.as_ref()).await?;

        let listener = TcpListener::bind(&settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let port = addr.port();
        // Tell scripts and tests which port was bound (PAAS_LISTEN may say port 0).
        let tmp = settings.data_dir.join("listen-addr.tmp");
        std::fs::write(&tmp, format!("{addr}\n"))?;
        std::fs::rename(&tmp, settings.data_dir.join("listen-addr"))?;
        let public_port = settings.public_port.unwrap_or(port);
        let mut settings = settings;
        // Where nodes dial this controller back (ssh): a specific bound address is one they
        // reach as it is; a wildcard one needs PAAS_ADVERTISE_URL.
        if settings.advertise_url.is_none() && !addr.ip().is_unspecified() {
            settings.advertise_url = Some(format!("http://{addr}"));
        }
        let ctx = context(settings, store, public_port).await?;
        Ok(Self {
            listener,
            port,
            ctx,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn context(&self) -> Arc<AppCtx> {
        self.ctx.clone()
    }

    /// Serves until the HTTP server stops (Ctrl-C / SIGTERM) or the convergence loop dies.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let data = web::Data::from(self.ctx.clone());
        let (api_listener, api_socket, _api_dir) =
            router::server::bind_api_socket(&self.ctx.settings.data_dir)?;
        // The API and dashboard, behind the public listener (router::server), which passes them
        // every request that no route names.
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap(actix_web::middleware::from_fn(
                    crate::metrics::track_requests,
                ))
                .wrap(
                    actix_web::middleware::Logger::new("%{x-paas-peer}i \"%r\" %s %b %Dms")
                        .log_target("paas::http"),
                )
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(crate::metrics::serve))
                .configure(crate::api::configure)
                .configure(crate::services::builtin::http::configure)
                .configure(crate::web::configure)
                .default_service(web::to(crate::web::not_found))
        })
        // The only client is the public listener's pool, whose idle connections close after
        // 30 s (router::server): the server must not close first, or a request sent on a
        // connection it is closing fails as a 502 (actix's default keep-alive is 5 s).
        .keep_alive(std::time::Duration::from_secs(75))
        // Signals are this function's: the public listener must stop first (see below).
        .disable_signals()
        .shutdown_timeout(self.ctx.settings.router_drain_secs)
        .listen_uds(api_listener)?
        .run();
        let api = server.handle();
        let tls = router::tls::bind(&self.ctx.settings, self.ctx.routes.clone())?;
        if let Some((_, certs)) = &tls {
            tokio::spawn(certs.clone().watch());
        }
        let front = Arc::new(router::server::Front {
            router: Arc::new(
                router::Router::new(self.ctx.routes.clone(), &self.ctx.settings).with_https_port(
                    tls.as_ref()
                        .and_then(|(l, _)| l.local_addr().ok())
                        .map(|a| a.port()),
                ),
            ),
            api: Some(router::server::Api {
                socket: api_socket,
                domain: self.ctx.settings.apps_domain.clone(),
            }),
            settings: self.ctx.settings.clone(),
        });
        let mut front = router::server::start(front, self.listener, tls)?;
        tracing::info!(port = self.port, "paas-server listening");
        tokio::spawn(crate::control::lease::run(self.ctx.clone()));
        let converge = tokio::spawn(crate::control::convergence::run(self.ctx.clone()));
        tokio::spawn(crate::control::convergence::drain_watch(self.ctx.clone()));
        let access_log = tokio::spawn(router::access_log::run(
            self.ctx.routes.clone(),
            router::access_log::HubSink(self.ctx.logs.clone()),
        ));
        tokio::spawn(crate::drains::run(self.ctx.clone()));
        tokio::spawn(crate::timeseries::run(self.ctx.clone()));
        tokio::spawn(crate::control::autoscale::run(self.ctx.clone()));
        tokio::spawn(crate::control::acme::run(self.ctx.clone()));
        tokio::spawn(crate::auth::prune_loop(self.ctx.clone()));
        // Asynchronous service creates and deletes: the brokers' last_operation (issue 22).
        tokio::spawn(crate::deploy::services::run_poller(self.ctx.clone()));
        let mut server = tokio::spawn(server);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let why = tokio::select! {
            r = &mut server => return Err(anyhow::anyhow!("the API server stopped: {r:?}")),
            why = front.died() => return Err(anyhow::anyhow!("public listener stopped: {why:?}")),
            r = converge => return Err(anyhow::anyhow!("convergence loop stopped: {r:?}")),
            _ = tokio::signal::ctrl_c() => "interrupted",
            _ = term.recv() => "terminated",
        };
        // A graceful stop, outside in: the public listener refuses new connections and lets
        // requests in flight finish (app traffic and API calls alike, since the API is reached
        // through it); then the API server, which has nothing left to serve; then the access-log
        // lines of those last requests and every log line already accepted reach the store.
        let grace = Duration::from_secs(self.ctx.settings.router_drain_secs);
        tracing::info!(
            ?grace,
            "{why}; stopping: no new connections, finishing requests in flight"
        );
        second_signal_exits(term);
        self.ctx.stopping.cancel();
        front.shutdown(grace).await;
        api.stop(true).await;
        let _ = server.await;
        self.ctx.routes.access_log.close();
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, access_log).await;
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, self.ctx.logs.flush()).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The shared state of a controller on `store`: blobstore, keys, secrets, log hub, route table.
/// No listener and no admin bootstrap, so tests can build many cheaply (the model test does).
pub async fn context(
    settings: Settings,
    store: Arc<dyn Store>,
    public_port: u16,
) -> anyhow::Result<Arc<AppCtx>> {
    let blobs = Blobstore::connect(&settings.data_dir, &settings.blobstore())
        .context("opening the blobstore")?;
    tracing::info!(kind = blobs.kind(), "blobstore ready");
    let jwt_secret = auth::load_or_create_secret(&settings.data_dir.join("jwt-secret"), || {
        auth::random_token(64)
    })?;
    let join_token = auth::load_or_create_secret(&settings.data_dir.join("join-token"), || {
        auth::random_token(40)
    })?;

    let start_version = Utc::now().timestamp_millis() as u64;
    let (assignments, _) = tokio::sync::watch::channel(start_version);
    let logs = LogHub::start(
        store.clone(),
        HubSettings {
            memory_lines: settings.log_memory_lines,
            retention_lines: settings.log_retention_lines,
            retention_secs: settings.log_retention_secs,
        },
    )
    .await
    .context("starting the log hub")?;
    let metrics = Arc::new(Metrics::new(logs.counters.clone()));
    let secrets = crate::secrets::SecretBox::load_or_create(&settings.data_dir.join("secret-key"))
        .context("loading the secret-env key")?;
    let keys = Keys::new(
        jwt_secret.as_bytes(),
        settings.token_ttl_secs,
        settings.access_token_ttl_secs,
    );
    auth::load_keys(store.as_ref(), &secrets, &keys, jwt_secret.as_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("loading the signing keys: {e}"))?;
    let identity = crate::identity::PlatformCa::load_or_create(store.as_ref(), &secrets)
        .await
        .context("loading the platform CA of instance identity")?;
    let leadership = crate::control::lease::Leadership::new(store.shared());
    let ctx = Arc::new(AppCtx {
        identity: Arc::new(identity),
        keys,
        settings,
        store,
        blobs,
        join_token,
        routes: Arc::new(RouteTable::default()),
        assignments,
        reported: tokio::sync::watch::Sender::new(0),
        converge: tokio::sync::Notify::new(),
        public_port,
        login_failures: Default::default(),
        logs,
        metrics,
        builds: Default::default(),
        secrets,
        retired: Default::default(),
        stopping: Default::default(),
        leadership,
        ssh: Default::default(),
        acme: tokio::sync::Notify::new(),
        services: Default::default(),
        start_slot_wanted: Default::default(),
        usage: Default::default(),
        snapshots: Default::default(),
        network: Default::default(),
        refresher: Default::default(),
    });
    // The platform's own PostgreSQL and Redis broker is in every space's marketplace (issue 22).
    // It holds the context for as long as the process lives, as the registry in it does.
    ctx.services.register_builtin(
        crate::services::builtin::BROKER_NAME,
        Arc::new(crate::services::builtin::BuiltinBroker::new(ctx.clone())),
    );
    router::refresh(&ctx)
        .await
        .context("loading the route table")?;
    Ok(ctx)
}

/// How long a graceful stop waits for the last log lines to be stored: its own bound, not the
/// drain time (which may be 0, and a slow disk needs more than a request does).
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// During a graceful stop, a second Ctrl-C or SIGTERM ends the process at once.
pub(crate) fn second_signal_exits(mut term: tokio::signal::unix::Signal) {
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second stop signal: exiting now");
        std::process::exit(130);
    });
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(ctx: web::Data<AppCtx>) -> actix_web::HttpResponse {
    match ctx.store.ping().await {
        Ok(()) => actix_web::HttpResponse::Ok().body("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            actix_web::HttpResponse::ServiceUnavailable().body("database unavailable")
        }
    }
}

/// The default org and space, so a single user never has to think about them (migration 0019
/// put apps without a space there), and the bootstrap admin is its admin.
async fn bootstrap_tenancy(store: &dyn Store) -> anyhow::Result<()> {
    use crate::authz::{DEFAULT_ORG, DEFAULT_SPACE};
    let space = store
        .space(DEFAULT_ORG, DEFAULT_SPACE, true)
        .await?
        .context("creating the default space")?;
    if let Some(admin) = store.user_by_name("admin").await? {
        if store.user_roles(&admin.id).await?.is_empty() {
            store.set_role(&admin.id, &space.id, Some("admin")).await?;
        }
    }
    Ok(())
}

async fn bootstrap_admin(store: &dyn Store, settings: &Settings) -> anyhow::Result<()> {
    if store.user_by_name("admin").await?.is_some() {
        return Ok(());
    }
    let password = match &settings.admin_password {
        Some(p) if !p.expose().is_empty() => p.expose().to_string(),
        _ => {
            let path = settings.data_dir.join("admin-password");
            let p = auth::load_or_create_secret(&path, || auth::random_token(24))?;
            tracing::info!(file = %path.display(), "generated the admin password");
            p
        }
    };
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        username: "admin".into(),
        password_hash: auth::hash_password(&password)?,
        created_at: Utc::now(),
        operator: true,
    };
    store.create_user_if_missing(&user).await?;
    Ok(())
}
