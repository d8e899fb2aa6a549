//! The deploy layer: every change to what runs, as plain functions with typed errors, used alike
//! by the REST API, the dashboard and the streamed push. A handler parses, authorizes, calls one
//! of these and maps the error; it never writes the store itself. Each function records intent
//! (a revision, app settings, rows marked for replacement, node state) together with its event,
//! and wakes the convergence loop, which does the work (see `control`).
//!
//! Every change that needs new instances (push, env change, rollback, restart, memory, health
//! check or command change) makes the instances of the app *stale*; convergence replaces them
//! rolling, and a newer change supersedes one still in flight (its unrouted rows go at once).

pub mod apply;
pub mod autoscale;
pub mod cron;
pub mod deployments;
pub mod domains;
pub mod lifecycle;
pub mod network;
pub mod push;
pub mod quota;
pub mod revisions;
pub mod services;
pub mod staging;
pub mod tasks;

use paas_common::ErrorCode;

use crate::state::AppCtx;
use crate::store::{AppRecord, Event, StoreError};

/// Why a deploy step was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("app {0:?} not found")]
    AppNotFound(String),
    #[error("app {0:?} is stopped: start it instead")]
    AppStopped(String),
    #[error("app {app:?} has no process {process:?} (it has: {})", known.join(", "))]
    ProcessNotFound {
        app: String,
        process: String,
        known: Vec<String>,
    },
    #[error("app {app:?} has no {process} instance {index} (it has {instances})")]
    InstanceNotFound {
        app: String,
        process: String,
        index: u32,
        instances: u32,
    },
    #[error("node {0:?} not found")]
    NodeNotFound(String),
    #[error("{0}")]
    RevisionNotFound(String),
    /// The request itself is wrong; `code` says how (`bad_request`, `invalid_env`, ...).
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    /// The change would take the space past a limit of its quota (`quota_exceeded`).
    #[error(
        "space {space}: {what} quota {limit}{unit}, in use {in_use}{unit}, asked {asked}{unit}"
    )]
    QuotaExceeded {
        space: String,
        what: &'static str,
        unit: &'static str,
        limit: u64,
        in_use: u64,
        asked: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] crate::blobstore::BlobError),
}

pub type DeployResult<T> = Result<T, DeployError>;

impl DeployError {
    pub fn bad(message: impl Into<String>) -> Self {
        DeployError::Invalid {
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }

    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        DeployError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// The stable wire code of a refusal (`None`: a store failure, mapped by the HTTP layer).
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            DeployError::AppNotFound(_) => ErrorCode::AppNotFound,
            DeployError::AppStopped(_) => ErrorCode::AppStopped,
            DeployError::ProcessNotFound { .. } => ErrorCode::ProcessNotFound,
            DeployError::InstanceNotFound { .. } => ErrorCode::InstanceNotFound,
            DeployError::NodeNotFound(_) => ErrorCode::NodeNotFound,
            DeployError::RevisionNotFound(_) => ErrorCode::RevisionNotFound,
            DeployError::Invalid { code, .. } => *code,
            DeployError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            DeployError::Store(_) | DeployError::Blob(_) => return None,
        })
    }
}

/// Who asked for a change, for its event and log lines.
#[derive(Debug, Clone)]
pub struct Actor {
    pub username: String,
    /// The username, with the API token's name when one was used.
    pub actor: String,
}

impl From<&crate::auth::AuthUser> for Actor {
    fn from(u: &crate::auth::AuthUser) -> Self {
        Actor {
            username: u.username.clone(),
            actor: u.actor.clone(),
        }
    }
}

pub(crate) fn event(actor: &Actor, app: &AppRecord, kind: &str, message: String) -> Event {
    Event {
        app_name: Some(app.name.clone()),
        app_id: Some(app.id.clone()),
        actor: actor.actor.clone(),
        kind: kind.into(),
        message,
    }
}

/// A platform line in the app's log stream (source `API`, `STG`, ...).
pub async fn log_platform(ctx: &AppCtx, app: &AppRecord, source: &str, message: String) {
    ctx.logs
        .publish(
            &app.id,
            paas_common::api::LogLine {
                timestamp: chrono::Utc::now(),
                source: source.into(),
                stream: "out".into(),
                message,
                id: 0,
            },
        )
        .await;
}

/// The app, re-read (after a change, for the answer).
pub async fn reload(ctx: &AppCtx, app: &AppRecord) -> DeployResult<AppRecord> {
    ctx.store
        .app_by_id(&app.id)
        .await?
        .ok_or_else(|| DeployError::AppNotFound(app.name.clone()))
}

/// Deletes an app with its instances, revisions and routes. The router forgets it at once;
/// agents remove its containers on their next poll.
pub async fn delete_app(ctx: &AppCtx, actor: &Actor, app: &AppRecord) -> DeployResult<()> {
    let ev = event(
        actor,
        app,
        "app.delete",
        format!("deleted app {}", app.name),
    );
    // Its bindings go with it: the brokers revoke their credentials first.
    services::revoke_bindings(ctx, app).await?;
    ctx.store.delete_app(&app.id, &ev).await?;
    ctx.logs.forget(&app.id).await;
    crate::router::refresh(ctx).await?;
    ctx.bump_assignments();
    ctx.converge.notify_one();
    Ok(())
}

/// How a new app's default route is chosen (`cf push --hostname`, `--random-route`,
/// `--no-route`); an existing app keeps its own.
#[derive(Debug, Clone, Default)]
pub struct DefaultRoute {
    pub hostname: Option<String>,
    pub random: bool,
    pub none: bool,
}

impl From<&paas_common::api::PushSettings> for DefaultRoute {
    fn from(s: &paas_common::api::PushSettings) -> Self {
        DefaultRoute {
            hostname: s.hostname.clone(),
            random: s.random_route,
            none: s.no_route,
        }
    }
}

/// Checks a `--hostname`: one DNS label.
pub fn check_host_label(label: &str) -> DeployResult<()> {
    let ok = !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(DeployError::invalid(
            ErrorCode::InvalidRoute,
            format!("invalid hostname {label:?}: use 1 to 63 lowercase letters, digits and '-'"),
        ))
    }
}

/// A generated host label, `NAME-xxxxxx`, as `--random-route` asks.
fn random_label(name: &str) -> String {
    use rand::Rng;
    let base: String = paas_common::domain::host_label(name)
        .chars()
        .take(50)
        .collect();
    let suffix: String = rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(6)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    if base.is_empty() {
        format!("app-{suffix}")
    } else {
        format!("{base}-{suffix}")
    }
}

/// Why `label`'s default route is not free for an app of `space_id`: another app has it, or
/// another space serves paths on that host; `None` when it is free.
async fn host_taken(
    ctx: &AppCtx,
    label: &str,
    space_id: &str,
) -> DeployResult<Option<&'static str>> {
    if ctx.store.app_by_host(label).await?.is_some() {
        return Ok(Some("is the default route of another app"));
    }
    let host = format!("{label}.{}", ctx.settings.apps_domain);
    let routes = ctx.store.list_routes().await?;
    let mut on_host = routes
        .iter()
        .filter(|r| r.host.eq_ignore_ascii_case(&host))
        .peekable();
    if on_host.peek().is_none() {
        return Ok(None);
    }
    let spaces = ctx.store.app_spaces().await?;
    if on_host.all(|r| spaces.get(&r.app_id).map(String::as_str) == Some(space_id)) {
        Ok(None)
    } else {
        Ok(Some("belongs to another space"))
    }
}

/// The default route's host label a new app gets.
async fn choose_host(
    ctx: &AppCtx,
    name: &paas_common::domain::AppName,
    space_id: &str,
    route: &DefaultRoute,
) -> DeployResult<Option<String>> {
    if route.none {
        return Ok(None);
    }
    if route.random {
        for _ in 0..5 {
            let label = random_label(name.as_str());
            if host_taken(ctx, &label, space_id).await?.is_none() {
                return Ok(Some(label));
            }
        }
        return Err(DeployError::invalid(
            ErrorCode::RouteTaken,
            "no free random route found: try again",
        ));
    }
    let label = match &route.hostname {
        Some(h) => {
            check_host_label(h)?;
            h.clone()
        }
        None => paas_common::domain::route_host_for(name),
    };
    let Some(why) = host_taken(ctx, &label, space_id).await? else {
        return Ok(Some(label));
    };
    Err(DeployError::invalid(
        ErrorCode::RouteTaken,
        format!(
            "the route {label}.{} {why}: push with --hostname NAME, --random-route or --no-route",
            ctx.settings.apps_domain
        ),
    ))
}

/// The app `name` of space `space_id`, created there (started, one instance, default memory and
/// disk, its default route chosen by `route`) together with its space in one transaction when
/// it does not exist yet.
pub async fn find_or_create_app(
    ctx: &AppCtx,
    actor: &Actor,
    name: &paas_common::domain::AppName,
    space_id: &str,
    route: &DefaultRoute,
) -> DeployResult<AppRecord> {
    if let Some(app) = ctx.store.app_in_space(space_id, name.as_str()).await? {
        return Ok(app);
    }
    let host = choose_host(ctx, name, space_id, route).await?;
    let now = chrono::Utc::now();
    let rec = AppRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        state: paas_common::api::AppState::Started,
        desired_instances: 1,
        memory_mb: ctx.settings.default_memory_mb,
        disk_mb: ctx.settings.default_disk_mb,
        current_revision: None,
        created_at: now,
        updated_at: now,
        space_id: space_id.to_string(),
        host,
    };
    let ev = event(
        actor,
        &rec,
        "app.create",
        format!("created app {}", rec.name),
    );
    match ctx.store.create_app(&rec, &ev).await {
        Ok(()) => Ok(rec),
        Err(StoreError::Conflict(m)) => {
            // Another push created it meanwhile, or took its host.
            match ctx.store.app_in_space(space_id, name.as_str()).await? {
                Some(app) => Ok(app),
                None => Err(DeployError::invalid(
                    ErrorCode::RouteTaken,
                    format!("{m}: push with --hostname NAME, --random-route or --no-route"),
                )),
            }
        }
        Err(e) => Err(e.into()),
    }
}
