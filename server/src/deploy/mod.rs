//! The deploy layer: every change to what runs, as plain functions with typed errors, used alike
//! by the REST API, the dashboard and the streamed push. A handler parses, authorizes, calls one
//! of these and maps the error; it never writes the store itself. Each function records intent
//! (a revision, app settings, rows marked for replacement, node state) together with its event,
//! and wakes the convergence loop, which does the work (see `control`).
//!
//! Every change that needs new instances (push, env change, rollback, restart, memory, health
//! check or command change) makes the instances of the app *stale*; convergence replaces them
//! rolling, and a newer change supersedes one still in flight (its unrouted rows go at once).

pub mod lifecycle;
pub mod push;
pub mod revisions;
pub mod staging;

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
        actor: actor.actor.clone(),
        kind: kind.into(),
        message,
    }
}

/// A platform line in the app's log stream (source `API`, `STG`, ...).
pub async fn log_platform(ctx: &AppCtx, app: &str, source: &str, message: String) {
    ctx.logs
        .publish(
            app,
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

/// The app named `name`, re-read (after a change, for the answer).
pub async fn reload(ctx: &AppCtx, app: &AppRecord) -> DeployResult<AppRecord> {
    ctx.store
        .app_by_name(&app.name)
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
    ctx.store.delete_app(&app.id, &ev).await?;
    ctx.logs.forget(&app.name).await;
    crate::router::refresh(ctx).await?;
    ctx.bump_assignments();
    ctx.converge.notify_one();
    Ok(())
}

/// The app named `name`, created in `space_id` (started, one instance, default memory and disk)
/// together with its space in one transaction when it does not exist yet. An existing app must
/// be in that space: `app_name_taken` otherwise (names are platform-wide).
pub async fn find_or_create_app(
    ctx: &AppCtx,
    actor: &Actor,
    name: &paas_common::domain::AppName,
    space_id: &str,
) -> DeployResult<AppRecord> {
    let app = match ctx.store.app_by_name(name.as_str()).await? {
        Some(a) => a,
        None => {
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
            };
            let ev = event(
                actor,
                &rec,
                "app.create",
                format!("created app {}", rec.name),
            );
            match ctx.store.create_app(&rec, space_id, &ev).await {
                Ok(()) => rec,
                // Another push created it meanwhile.
                Err(StoreError::Conflict(_)) => ctx
                    .store
                    .app_by_name(name.as_str())
                    .await?
                    .ok_or_else(|| DeployError::AppNotFound(name.to_string()))?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    // The app found or created since the caller's space was checked must still be in that
    // space (a delete and a re-create by another space in between).
    if ctx.store.app_space(&app.id).await?.as_deref() != Some(space_id) {
        return Err(DeployError::invalid(
            ErrorCode::AppNameTaken,
            format!(
                "the app name {name} is taken (app names are platform-wide): push with another name"
            ),
        ));
    }
    Ok(app)
}
