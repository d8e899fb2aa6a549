//! Revisions: every env change and rollback makes a new revision that reuses a stored droplet,
//! so nothing is rebuilt; a push ends in [`deploy_revision`] too. Convergence then replaces the
//! instances, rolling, and a newer revision supersedes one still rolling out.

use paas_common::api::EnvUpdate;
use paas_common::ErrorCode;
use std::collections::BTreeMap;

use super::{event, log_platform, Actor, DeployError, DeployResult};
use crate::state::AppCtx;
use crate::store::{AppRecord, NewRevision, RevisionExtra, RevisionRecord};

/// Env names the platform sets itself; a user value would be overwritten or break routing.
const RESERVED: &[&str] = &["PORT", "HOME", "PATH"];

/// Checks one env var: a POSIX-ish name that is not the platform's, and a value without NUL.
pub fn check_env(key: &str, value: Option<&str>) -> DeployResult<()> {
    let name_ok = !key.is_empty()
        && key.len() <= 256
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(DeployError::invalid(
            ErrorCode::InvalidEnv,
            format!("invalid env var name {key:?}: use letters, digits and '_', not starting with a digit"),
        ));
    }
    if RESERVED.contains(&key) || key.starts_with("PAAS_") || key.starts_with("CF_") {
        return Err(DeployError::invalid(
            ErrorCode::InvalidEnv,
            format!("env var {key} is set by the platform"),
        ));
    }
    if let Some(v) = value {
        if v.contains('\0') || v.len() > 32 * 1024 {
            return Err(DeployError::invalid(
                ErrorCode::InvalidEnv,
                format!("the value of {key} is too long or holds a NUL byte"),
            ));
        }
    }
    Ok(())
}

/// The app's current revision, if it has one.
pub async fn current(ctx: &AppCtx, app: &AppRecord) -> DeployResult<Option<RevisionRecord>> {
    Ok(match app.current_revision {
        Some(n) => ctx.store.revision(&app.id, n).await?,
        None => None,
    })
}

fn no_revision(app: &AppRecord) -> DeployError {
    DeployError::RevisionNotFound(format!("{} has no revision yet: push it first", app.name))
}

/// Makes `rev` the app's new current revision with `extra`, records `kind` as its event, and
/// wakes convergence. Returns the revision's number.
pub async fn deploy_revision(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    rev: &NewRevision,
    extra: &RevisionExtra,
    kind: &str,
    message: String,
) -> DeployResult<i64> {
    let ev = event(actor, app, kind, message);
    let number = ctx
        .store
        .deploy_revision_with(&app.id, rev, extra, &ev)
        .await?;
    ctx.converge.notify_one();
    crate::droplets::collect_soon(ctx);
    Ok(number)
}

/// A new revision of `base`'s droplet with `env`.
pub(crate) async fn redeploy(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    base: &RevisionRecord,
    env: BTreeMap<String, String>,
    kind: &str,
    description: String,
) -> DeployResult<i64> {
    let rev = NewRevision {
        package: base.package.clone(),
        droplet: base.droplet.clone(),
        command: base.command.clone(),
        detected: base.detected.clone(),
        desired_instances: app.desired_instances,
        memory_mb: app.memory_mb,
    };
    let extra = RevisionExtra {
        env,
        created_by: actor.username.clone(),
        description: description.clone(),
        // An env change keeps the current revision's sidecars; a rollback brings back those of
        // the revision it returns to.
        sidecars: base.sidecars.clone(),
        ..Default::default()
    };
    let number = deploy_revision(ctx, actor, app, &rev, &extra, kind, description.clone()).await?;
    log_platform(
        ctx,
        app,
        "API",
        format!("{} made revision {number}: {description}", actor.username),
    )
    .await;
    Ok(number)
}

/// Sets and unsets env vars: a new revision, same droplet, new env. Secret values are sealed
/// before they reach the store.
pub async fn update_env(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    change: &EnvUpdate,
) -> DeployResult<i64> {
    if change.set.is_empty() && change.unset.is_empty() {
        return Err(DeployError::bad("nothing to change: give `set` or `unset`"));
    }
    let base = current(ctx, app).await?.ok_or_else(|| no_revision(app))?;
    let mut env = base.env.clone();
    for k in &change.secret {
        if !change.set.contains_key(k) {
            return Err(DeployError::invalid(
                ErrorCode::InvalidEnv,
                format!("secret names {k}, which `set` does not"),
            ));
        }
    }
    for (k, v) in &change.set {
        check_env(k, Some(v))?;
        // A secret is sealed before it reaches the store; the event names only the key.
        let v = if change.secret.contains(k) {
            ctx.secrets.seal(&app.id, v)
        } else {
            v.clone()
        };
        env.insert(k.clone(), v);
    }
    for k in &change.unset {
        if env.remove(k).is_none() {
            return Err(DeployError::invalid(
                ErrorCode::InvalidEnv,
                format!("env var {k} is not set on {}", app.name),
            ));
        }
    }
    let mut what: Vec<String> = change.set.keys().map(|k| format!("set-env {k}")).collect();
    what.extend(change.unset.iter().map(|k| format!("unset-env {k}")));
    redeploy(ctx, actor, app, &base, env, "app.env", what.join(", ")).await
}

/// A new revision with the droplet, command and env of revision `to` (default: the one before
/// the current).
pub async fn rollback(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    to: Option<i64>,
) -> DeployResult<i64> {
    let cur = app.current_revision.ok_or_else(|| no_revision(app))?;
    let to = match to {
        Some(n) => n,
        None if cur > 1 => cur - 1,
        None => {
            return Err(DeployError::RevisionNotFound(format!(
                "{} has only revision {cur}: nothing to roll back to",
                app.name
            )))
        }
    };
    if to == cur {
        return Err(DeployError::invalid(
            ErrorCode::Conflict,
            format!(
                "revision {to} is already the current revision of {}",
                app.name
            ),
        ));
    }
    let target = ctx.store.revision(&app.id, to).await?.ok_or_else(|| {
        DeployError::RevisionNotFound(format!("{} has no revision {to}", app.name))
    })?;
    if !ctx.blobs.exists(&target.droplet) {
        return Err(DeployError::invalid(
            ErrorCode::DropletNotFound,
            format!(
                "the droplet of revision {to} was collected (the newest {} are kept): push that code again",
                ctx.settings.keep_droplets
            ),
        ));
    }
    // Code and env come back, but service bindings are as they are now: an older revision's
    // credentials may have been revoked since.
    let mut env = target.env.clone();
    super::services::overlay_env(ctx, &app.id, &mut env).await?;
    redeploy(
        ctx,
        actor,
        app,
        &target,
        env,
        "app.rollback",
        format!("rollback to {to}"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_checked() {
        assert!(check_env("GREETING", Some("hi")).is_ok());
        assert!(check_env("_X1", None).is_ok());
        for bad in [
            "",
            "1X",
            "A-B",
            "A B",
            "PORT",
            "PAAS_APP_REVISION",
            "CF_INSTANCE_INDEX",
        ] {
            assert!(check_env(bad, Some("v")).is_err(), "{bad:?} accepted");
        }
        assert!(check_env("K", Some("a\0b")).is_err());
    }
}
