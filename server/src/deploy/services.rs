//! Backing services (issue 22): registering brokers, the marketplace, creating and deleting
//! service instances (asynchronous provisions polled by [`run_poller`]), user-provided
//! instances, and binding apps to them.
//!
//! A binding reaches the app as env: `VCAP_SERVICES` in Cloud Foundry's format plus the
//! conventional `DATABASE_URL` and `REDIS_URL`, sealed by `secrets` with the app's id like secret
//! env (so the database holds no plain credentials and the API shows `***`). Bind and unbind make
//! a new revision (same droplet, new env) that convergence rolls out like any env change, with no
//! downtime; a push and a rollback recompute the same keys from the bindings of the moment
//! ([`overlay_env`]), so an older revision never brings back revoked credentials. The keys the
//! platform set are listed in `PAAS_SERVICE_ENV` (a name users cannot set), so a user's own
//! `DATABASE_URL` is left alone and an unbind removes only what a binding put there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use paas_common::service::{BrokerInfo, CreateBroker, CreateService, Offering, PlanInfo};
use paas_common::ErrorCode;
use serde_json::{json, Map, Value};

use super::{Actor, DeployError, DeployResult};
use crate::services::broker::{
    BindRequest, BrokerError, Catalog, CatalogService, Context, OperationState, ProvisionRequest,
    ServicePlan,
};
use crate::services::ServiceBroker;
use crate::state::AppCtx;
use crate::store::{
    binding_aad, broker_aad, instance_aad, service_state as state, AppRecord, BindingRecord,
    BrokerRecord, ServiceInstanceRecord, SpaceRecord, StoreError, KIND_MANAGED, KIND_USER_PROVIDED,
};

/// Lists the env keys the platform set from bindings (see the module doc).
pub const MARKER: &str = "PAAS_SERVICE_ENV";
pub const VCAP_SERVICES: &str = "VCAP_SERVICES";

fn broker_error(e: BrokerError) -> DeployError {
    DeployError::invalid(ErrorCode::BrokerError, e.to_string())
}

fn service_not_found(name: &str) -> DeployError {
    DeployError::invalid(
        ErrorCode::ServiceNotFound,
        format!("service instance {name} not found"),
    )
}

/// Maps the store's refusal to delete a bound instance to `service_bound`.
fn bound_err(e: StoreError, name: &str) -> DeployError {
    match e {
        StoreError::Conflict(m) => DeployError::invalid(
            ErrorCode::ServiceBound,
            format!("service instance {name}: {m}"),
        ),
        e => e.into(),
    }
}

fn check_name(what: &str, name: &str, max: usize) -> DeployResult<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DeployError::invalid(
            ErrorCode::InvalidName,
            format!(
                "invalid {what} name {name:?}: use 1 to {max} letters, digits, '-', '_' or '.'"
            ),
        ))
    }
}

/// The broker of an instance (or a name).
pub async fn broker(ctx: &AppCtx, name: &str) -> DeployResult<Arc<dyn ServiceBroker>> {
    if let Some(b) = ctx.services.builtin(name) {
        return Ok(b);
    }
    let row = ctx
        .store
        .list_brokers()
        .await?
        .into_iter()
        .find(|b| b.name == name)
        .ok_or_else(|| {
            DeployError::invalid(
                ErrorCode::BrokerNotFound,
                format!("service broker {name} not found"),
            )
        })?;
    ctx.services
        .http(&row, &ctx.secrets)
        .map_err(|e| DeployError::invalid(ErrorCode::Internal, format!("broker {name}: {e}")))
}

/// Registers an external broker: its catalog is fetched first (a broker that does not answer
/// is refused, `broker_error`), then the row is stored with the password sealed.
pub async fn create_broker(
    ctx: &AppCtx,
    req: &CreateBroker,
    space_id: Option<String>,
) -> DeployResult<Catalog> {
    check_name("service broker", &req.name, 63)?;
    if ctx.services.builtin(&req.name).is_some() {
        return Err(DeployError::invalid(
            ErrorCode::Conflict,
            format!("service broker {} is built in", req.name),
        ));
    }
    let url = url::Url::parse(&req.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            DeployError::bad(format!(
                "invalid broker URL {:?}: give http(s)://HOST[:PORT][/PATH]",
                req.url
            ))
        })?;
    let http = ctx
        .services
        .http_plain(url.as_str(), &req.username, &req.password);
    let catalog = http.catalog().await.map_err(broker_error)?;
    let row = BrokerRecord {
        name: req.name.clone(),
        url: url.as_str().trim_end_matches('/').to_string(),
        username: req.username.clone(),
        password: ctx.secrets.seal(&broker_aad(&req.name), &req.password),
        space_id,
        catalog: Some(serde_json::to_string(&catalog).unwrap_or_default()),
        created_at: Utc::now(),
    };
    ctx.store.create_broker(&row).await?;
    tracing::info!(broker = %req.name, url = %row.url, services = catalog.services.len(), "service broker registered");
    Ok(catalog)
}

pub async fn delete_broker(ctx: &AppCtx, name: &str) -> DeployResult<()> {
    ctx.store.delete_broker(name).await.map_err(|e| match e {
        StoreError::NotFound(_) => DeployError::invalid(
            ErrorCode::BrokerNotFound,
            format!("service broker {name} not found"),
        ),
        e => e.into(),
    })
}

/// Every broker `space_id` sees (`None`: all of them) with its catalog: the built-in ones asked
/// now, the registered ones from their cached catalog. A broker whose catalog fails is left out
/// (and logged), so one broken broker does not hide the others.
pub async fn catalogs(
    ctx: &AppCtx,
    space_id: Option<&str>,
) -> DeployResult<Vec<(BrokerInfo, Catalog)>> {
    let mut out = Vec::new();
    for (name, b) in ctx.services.builtins() {
        match b.catalog().await {
            Ok(c) => out.push((
                BrokerInfo {
                    name,
                    url: String::new(),
                    space: None,
                    builtin: true,
                    services: c.services.iter().map(|s| s.name.clone()).collect(),
                },
                c,
            )),
            Err(e) => tracing::warn!(broker = %name, error = %e, "built-in broker catalog failed"),
        }
    }
    let spaces = ctx.store.list_spaces().await?;
    for row in ctx.store.list_brokers().await? {
        if let (Some(want), Some(own)) = (space_id, row.space_id.as_deref()) {
            if want != own {
                continue;
            }
        }
        let catalog: Catalog = match row.catalog.as_deref().map(serde_json::from_str) {
            Some(Ok(c)) => c,
            _ => Catalog::default(),
        };
        let space = row.space_id.as_deref().and_then(|id| {
            spaces
                .iter()
                .find(|s| s.id == id)
                .map(|s| format!("{}/{}", s.org, s.name))
        });
        out.push((
            BrokerInfo {
                name: row.name.clone(),
                url: row.url.clone(),
                space,
                builtin: false,
                services: catalog.services.iter().map(|s| s.name.clone()).collect(),
            },
            catalog,
        ));
    }
    Ok(out)
}

/// The marketplace of `space_id`: every offering of every broker it sees.
pub async fn marketplace(ctx: &AppCtx, space_id: Option<&str>) -> DeployResult<Vec<Offering>> {
    let mut out = Vec::new();
    for (broker, catalog) in catalogs(ctx, space_id).await? {
        for s in catalog.services {
            out.push(Offering {
                name: s.name.clone(),
                description: s.description.clone(),
                broker: broker.name.clone(),
                tags: s.tags.clone(),
                bindable: s.bindable,
                plans: s
                    .plans
                    .iter()
                    .map(|p| PlanInfo {
                        name: p.name.clone(),
                        description: p.description.clone(),
                        free: p.free,
                    })
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// Creates a service instance in `space`: user-provided (`credentials`, no offering) at once,
/// or managed: the row first (so the name is taken), then the broker's provision. A synchronous
/// provision is `succeeded` at once; an asynchronous one stays `create in progress` until
/// [`run_poller`] hears the broker's outcome.
pub async fn create_service(
    ctx: &AppCtx,
    actor: &Actor,
    space: &SpaceRecord,
    req: &CreateService,
) -> DeployResult<ServiceInstanceRecord> {
    check_name("service instance", &req.name, 255)?;
    let now = Utc::now();
    let id = uuid::Uuid::new_v4().to_string();
    let Some(offering) = req.offering.as_deref() else {
        let creds = req.credentials.clone().unwrap_or_default();
        let rec = ServiceInstanceRecord {
            id: id.clone(),
            name: req.name.clone(),
            space_id: space.id.clone(),
            kind: KIND_USER_PROVIDED.into(),
            broker: None,
            service_id: String::new(),
            plan_id: String::new(),
            label: KIND_USER_PROVIDED.into(),
            plan: String::new(),
            tags: req.tags.clone(),
            credentials: Some(
                ctx.secrets
                    .seal(&instance_aad(&id), &Value::Object(creds).to_string()),
            ),
            syslog_drain_url: req.syslog_drain_url.clone(),
            dashboard_url: None,
            state: state::SUCCEEDED.into(),
            operation: None,
            description: None,
            created_at: now,
            updated_at: now,
        };
        ctx.store
            .create_service_instance(&rec)
            .await
            .map_err(conflict_name)?;
        tracing::info!(service = %req.name, space = %space.name, actor = %actor.actor, "user-provided service created");
        return Ok(rec);
    };
    let plan_name = req
        .plan
        .as_deref()
        .ok_or_else(|| DeployError::bad("give the plan of the offering"))?;
    let (broker_name, service) =
        find_offering(ctx, &space.id, offering, req.broker.as_deref()).await?;
    let plan = service
        .plans
        .iter()
        .find(|p| p.name == plan_name)
        .ok_or_else(|| {
            DeployError::invalid(
                ErrorCode::PlanNotFound,
                format!(
                    "offering {offering} has no plan {plan_name} (it has: {})",
                    service
                        .plans
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    let mut tags = service.tags.clone();
    tags.extend(req.tags.iter().cloned());
    let mut rec = ServiceInstanceRecord {
        id: id.clone(),
        name: req.name.clone(),
        space_id: space.id.clone(),
        kind: KIND_MANAGED.into(),
        broker: Some(broker_name.clone()),
        service_id: service.id.clone(),
        plan_id: plan.id.clone(),
        label: service.name.clone(),
        plan: plan.name.clone(),
        tags,
        credentials: None,
        syslog_drain_url: None,
        dashboard_url: None,
        state: state::CREATING.into(),
        operation: None,
        description: None,
        created_at: now,
        updated_at: now,
    };
    ctx.store
        .create_service_instance(&rec)
        .await
        .map_err(conflict_name)?;
    let b = broker(ctx, &broker_name).await?;
    let request = ProvisionRequest {
        service_id: service.id.clone(),
        plan_id: plan.id.clone(),
        context: Context {
            platform: "paas".into(),
            organization_guid: Some(space.org.clone()),
            space_guid: Some(space.id.clone()),
            instance_name: Some(req.name.clone()),
        },
        organization_guid: space.org.clone(),
        space_guid: space.id.clone(),
        parameters: req.parameters.clone(),
    };
    match b.provision(&id, &request).await {
        Ok(r) if r.asynchronous => {
            ctx.store
                .set_service_state(&id, state::CREATING, r.operation.as_deref(), None)
                .await?;
            rec.operation = r.operation;
        }
        Ok(_) => {
            ctx.store
                .set_service_state(&id, state::SUCCEEDED, None, None)
                .await?;
            rec.state = state::SUCCEEDED.into();
        }
        Err(e) => {
            // Nothing was made: the name is free again.
            let _ = ctx.store.delete_service_instance(&id).await;
            return Err(broker_error(e));
        }
    }
    tracing::info!(service = %req.name, offering, plan = plan_name, broker = %broker_name, state = %rec.state, actor = %actor.actor, "service instance created");
    Ok(rec)
}

fn conflict_name(e: StoreError) -> DeployError {
    match e {
        StoreError::Conflict(m) => DeployError::invalid(ErrorCode::Conflict, m),
        e => e.into(),
    }
}

/// The offering `name` among the brokers the space sees (`broker` picks one when several offer
/// it).
async fn find_offering(
    ctx: &AppCtx,
    space_id: &str,
    name: &str,
    broker: Option<&str>,
) -> DeployResult<(String, CatalogService)> {
    let mut found: Vec<(String, CatalogService)> = Vec::new();
    for (b, catalog) in catalogs(ctx, Some(space_id)).await? {
        if broker.is_some_and(|want| want != b.name) {
            continue;
        }
        for s in catalog.services {
            if s.name == name {
                found.push((b.name.clone(), s));
            }
        }
    }
    match found.len() {
        0 => Err(DeployError::invalid(
            ErrorCode::OfferingNotFound,
            format!("no offering {name} in the marketplace (see `paas marketplace`)"),
        )),
        1 => Ok(found.remove(0)),
        _ => Err(DeployError::invalid(
            ErrorCode::Conflict,
            format!(
                "several brokers offer {name} ({}): name one with `-b BROKER`",
                found
                    .iter()
                    .map(|(b, _)| b.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Replaces a user-provided instance's credentials (and drain), then redeploys every app bound
/// to it with the new values.
pub async fn update_user_provided(
    ctx: &AppCtx,
    actor: &Actor,
    inst: &ServiceInstanceRecord,
    credentials: Option<Map<String, Value>>,
    syslog_drain_url: Option<String>,
) -> DeployResult<()> {
    if inst.kind != KIND_USER_PROVIDED {
        return Err(DeployError::bad(format!(
            "{} is a managed service instance: only user-provided ones are updated this way",
            inst.name
        )));
    }
    let creds = match credentials {
        Some(c) => ctx
            .secrets
            .seal(&instance_aad(&inst.id), &Value::Object(c).to_string()),
        None => inst.credentials.clone().unwrap_or_default(),
    };
    let drain = syslog_drain_url.or_else(|| inst.syslog_drain_url.clone());
    ctx.store
        .set_service_credentials(&inst.id, &creds, drain.as_deref())
        .await?;
    for b in ctx.store.bindings_of_instance(&inst.id).await? {
        if let Some(app) = ctx.store.app_by_id(&b.app_id).await? {
            apply_env(
                ctx,
                actor,
                &app,
                "app.service",
                format!("updated service {}", inst.name),
            )
            .await?;
        }
    }
    Ok(())
}

/// Deletes an instance: refused (`service_bound`) while apps are bound to it; a managed one is
/// deprovisioned by its broker, at once or (202) by [`run_poller`] once the broker is done.
/// Returns whether the row is gone already.
pub async fn delete_service(
    ctx: &AppCtx,
    actor: &Actor,
    inst: &ServiceInstanceRecord,
) -> DeployResult<bool> {
    if inst.kind == KIND_USER_PROVIDED {
        ctx.store
            .delete_service_instance(&inst.id)
            .await
            .map_err(|e| bound_err(e, &inst.name))?;
        return Ok(true);
    }
    if inst.state == state::CREATING {
        return Err(DeployError::invalid(
            ErrorCode::Conflict,
            format!(
                "service instance {} is still being created: wait for it",
                inst.name
            ),
        ));
    }
    ctx.store
        .begin_service_delete(&inst.id)
        .await
        .map_err(|e| bound_err(e, &inst.name))?;
    let b = broker(ctx, inst.broker.as_deref().unwrap_or_default()).await?;
    let plan = plan_of(inst);
    match b.deprovision(&inst.id, &plan).await {
        Ok(r) if r.asynchronous => {
            ctx.store
                .set_service_state(&inst.id, state::DELETING, r.operation.as_deref(), None)
                .await?;
            tracing::info!(service = %inst.name, actor = %actor.actor, "service instance delete in progress");
            Ok(false)
        }
        Ok(_) | Err(BrokerError::Gone(_)) => {
            ctx.store.delete_service_instance(&inst.id).await?;
            tracing::info!(service = %inst.name, actor = %actor.actor, "service instance deleted");
            Ok(true)
        }
        Err(e) => {
            ctx.store
                .set_service_state(
                    &inst.id,
                    state::SUCCEEDED,
                    None,
                    Some(&format!("delete failed: {e}")),
                )
                .await?;
            Err(broker_error(e))
        }
    }
}

fn plan_of(inst: &ServiceInstanceRecord) -> ServicePlan {
    ServicePlan {
        service_id: inst.service_id.clone(),
        plan_id: inst.plan_id.clone(),
    }
}

/// Asks the brokers about every create or delete in progress, once.
pub async fn poll_once(ctx: &AppCtx) -> DeployResult<()> {
    for inst in ctx.store.services_in_progress().await? {
        let Some(name) = inst.broker.as_deref() else {
            continue;
        };
        let b = match broker(ctx, name).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(service = %inst.name, error = %e, "no broker to poll");
                continue;
            }
        };
        let deleting = inst.state == state::DELETING;
        let outcome = b
            .last_operation(&inst.id, &plan_of(&inst), inst.operation.as_deref())
            .await;
        match outcome {
            Ok(op) => match (op.state, deleting) {
                (OperationState::InProgress, _) => {
                    if op.description != inst.description {
                        ctx.store
                            .set_service_state(
                                &inst.id,
                                &inst.state,
                                inst.operation.as_deref(),
                                op.description.as_deref(),
                            )
                            .await?;
                    }
                }
                (OperationState::Succeeded, false) => {
                    ctx.store
                        .set_service_state(
                            &inst.id,
                            state::SUCCEEDED,
                            None,
                            op.description.as_deref(),
                        )
                        .await?;
                    tracing::info!(service = %inst.name, "service instance created");
                }
                (OperationState::Succeeded, true) => {
                    ctx.store.delete_service_instance(&inst.id).await?;
                    tracing::info!(service = %inst.name, "service instance deleted");
                }
                (OperationState::Failed, false) => {
                    ctx.store
                        .set_service_state(&inst.id, state::FAILED, None, op.description.as_deref())
                        .await?;
                    tracing::warn!(service = %inst.name, description = ?op.description, "service instance create failed");
                }
                (OperationState::Failed, true) => {
                    let d = format!(
                        "delete failed: {}",
                        op.description.as_deref().unwrap_or("the broker said so")
                    );
                    ctx.store
                        .set_service_state(&inst.id, state::SUCCEEDED, None, Some(&d))
                        .await?;
                }
            },
            Err(BrokerError::Gone(_)) if deleting => {
                ctx.store.delete_service_instance(&inst.id).await?;
            }
            Err(e) => {
                tracing::warn!(service = %inst.name, error = %e, "last_operation failed; asking again later");
            }
        }
    }
    Ok(())
}

/// Polls the brokers of operations in progress every second until the controller stops.
pub async fn run_poller(ctx: Arc<AppCtx>) {
    loop {
        tokio::select! {
            _ = ctx.stopping.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = poll_once(&ctx).await {
            tracing::warn!(error = %e, "service operation poll failed");
        }
    }
}

/// Binds `app` to `inst` without redeploying: the broker's bind (a managed instance), then the
/// binding row with the credentials sealed. Callers redeploy ([`bind`]) or fold the env into the
/// revision they make (a push).
pub async fn bind_only(
    ctx: &AppCtx,
    app: &AppRecord,
    inst: &ServiceInstanceRecord,
) -> DeployResult<BindingRecord> {
    if inst.state != state::SUCCEEDED {
        return Err(DeployError::invalid(
            ErrorCode::Conflict,
            format!(
                "service instance {} is not ready to bind ({})",
                inst.name, inst.state
            ),
        ));
    }
    if ctx
        .store
        .bindings_of_app(&app.id)
        .await?
        .iter()
        .any(|b| b.instance_id == inst.id)
    {
        return Err(DeployError::invalid(
            ErrorCode::Conflict,
            format!("{} is already bound to {}", app.name, inst.name),
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let (credentials, drain) = if inst.kind == KIND_USER_PROVIDED {
        // A user-provided instance's credentials are read from the instance, so an update
        // reaches every binding.
        (Map::new(), None)
    } else {
        let b = broker(ctx, inst.broker.as_deref().unwrap_or_default()).await?;
        let plan = plan_of(inst);
        let r = b
            .bind(
                &inst.id,
                &id,
                &BindRequest {
                    service_id: plan.service_id.clone(),
                    plan_id: plan.plan_id.clone(),
                    context: Context {
                        platform: "paas".into(),
                        space_guid: Some(app.space_id.clone()),
                        instance_name: Some(inst.name.clone()),
                        ..Default::default()
                    },
                    bind_resource: Some(json!({ "app_guid": app.id })),
                    parameters: None,
                },
            )
            .await
            .map_err(broker_error)?;
        (r.credentials.into_iter().collect(), r.syslog_drain_url)
    };
    let rec = BindingRecord {
        id: id.clone(),
        app_id: app.id.clone(),
        instance_id: inst.id.clone(),
        credentials: ctx
            .secrets
            .seal(&binding_aad(&id), &Value::Object(credentials).to_string()),
        syslog_drain_url: drain,
        created_at: Utc::now(),
    };
    if let Err(e) = ctx.store.create_binding(&rec).await {
        // The broker made credentials nobody will hold: revoke them.
        if inst.kind == KIND_MANAGED {
            if let Ok(b) = broker(ctx, inst.broker.as_deref().unwrap_or_default()).await {
                let _ = b.unbind(&inst.id, &id, &plan_of(inst)).await;
            }
        }
        return Err(conflict_name(e));
    }
    Ok(rec)
}

/// Binds and redeploys the app with the new env; the revision made, if the app has one.
pub async fn bind(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    inst: &ServiceInstanceRecord,
) -> DeployResult<(BindingRecord, Option<i64>)> {
    let rec = bind_only(ctx, app, inst).await?;
    let rev = apply_env(
        ctx,
        actor,
        app,
        "app.bind",
        format!("bind-service {}", inst.name),
    )
    .await?;
    Ok((rec, rev))
}

/// Unbinds: the broker revokes the binding's credentials (a failure leaves the binding as it
/// was, `broker_error`), the row goes, and the app redeploys without them.
pub async fn unbind(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    inst: &ServiceInstanceRecord,
) -> DeployResult<Option<i64>> {
    let binding = ctx
        .store
        .bindings_of_app(&app.id)
        .await?
        .into_iter()
        .find(|b| b.instance_id == inst.id)
        .ok_or_else(|| {
            DeployError::invalid(
                ErrorCode::NotFound,
                format!("{} is not bound to {}", app.name, inst.name),
            )
        })?;
    if inst.kind == KIND_MANAGED {
        let b = broker(ctx, inst.broker.as_deref().unwrap_or_default()).await?;
        match b.unbind(&inst.id, &binding.id, &plan_of(inst)).await {
            Ok(()) | Err(BrokerError::Gone(_)) => {}
            Err(e) => return Err(broker_error(e)),
        }
    }
    ctx.store.delete_binding(&binding.id).await?;
    apply_env(
        ctx,
        actor,
        app,
        "app.unbind",
        format!("unbind-service {}", inst.name),
    )
    .await
}

/// Unbinds every binding of an app that is being deleted (no redeploy). A broker that fails is
/// logged and the binding dropped all the same, so a broken broker never keeps an app alive.
pub async fn revoke_bindings(ctx: &AppCtx, app: &AppRecord) -> DeployResult<()> {
    for binding in ctx.store.bindings_of_app(&app.id).await? {
        let Some(inst) = ctx.store.service_instance(&binding.instance_id).await? else {
            continue;
        };
        if inst.kind == KIND_MANAGED {
            let revoked = match broker(ctx, inst.broker.as_deref().unwrap_or_default()).await {
                Ok(b) => b
                    .unbind(&inst.id, &binding.id, &plan_of(&inst))
                    .await
                    .map_err(broker_error),
                Err(e) => Err(e),
            };
            if let Err(e) = revoked {
                tracing::warn!(app = %app.name, service = %inst.name, error = %e, "unbind of a deleted app failed; its binding is dropped");
            }
        }
        ctx.store.delete_binding(&binding.id).await?;
    }
    Ok(())
}

/// A new revision of the app's current one with the service env of its bindings now; `None`
/// when the app has no revision yet (its first push computes the env).
pub async fn apply_env(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    kind: &str,
    description: String,
) -> DeployResult<Option<i64>> {
    let Some(base) = super::revisions::current(ctx, app).await? else {
        return Ok(None);
    };
    let mut env = base.env.clone();
    overlay_env(ctx, &app.id, &mut env).await?;
    let n = super::revisions::redeploy(ctx, actor, app, &base, env, kind, description).await?;
    Ok(Some(n))
}

/// Replaces the service keys of `env` (those `PAAS_SERVICE_ENV` lists) with the ones the app's
/// bindings give now, sealed with the app's id.
pub async fn overlay_env(
    ctx: &AppCtx,
    app_id: &str,
    env: &mut BTreeMap<String, String>,
) -> DeployResult<()> {
    if let Some(keys) = env.remove(MARKER) {
        for k in keys.split(',').filter(|k| !k.is_empty()) {
            env.remove(k);
        }
    }
    let computed = service_env(ctx, app_id).await?;
    if computed.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::new();
    for (k, v) in computed {
        // A user's own DATABASE_URL (or REDIS_URL) wins; VCAP_SERVICES is the platform's.
        if k != VCAP_SERVICES && env.contains_key(&k) {
            continue;
        }
        env.insert(k.clone(), ctx.secrets.seal(app_id, &v));
        keys.push(k);
    }
    env.insert(MARKER.into(), keys.join(","));
    Ok(())
}

/// One bound instance as the env builder sees it.
pub struct Bound {
    pub instance: ServiceInstanceRecord,
    pub binding: BindingRecord,
    pub credentials: Map<String, Value>,
}

/// The app's bindings with their credentials opened.
pub async fn bound(ctx: &AppCtx, app_id: &str) -> DeployResult<Vec<Bound>> {
    let mut out = Vec::new();
    for binding in ctx.store.bindings_of_app(app_id).await? {
        let Some(instance) = ctx.store.service_instance(&binding.instance_id).await? else {
            continue;
        };
        let sealed = if instance.kind == KIND_USER_PROVIDED {
            (
                instance_aad(&instance.id),
                instance.credentials.clone().unwrap_or_default(),
            )
        } else {
            (binding_aad(&binding.id), binding.credentials.clone())
        };
        let plain = ctx.secrets.open(&sealed.0, &sealed.1).map_err(|e| {
            DeployError::invalid(
                ErrorCode::Internal,
                format!("credentials of {}: {e}", instance.name),
            )
        })?;
        let credentials = match serde_json::from_str(&plain) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        out.push(Bound {
            instance,
            binding,
            credentials,
        });
    }
    Ok(out)
}

/// `VCAP_SERVICES`, `DATABASE_URL` and `REDIS_URL` of the app's bindings (empty: no binding).
pub async fn service_env(ctx: &AppCtx, app_id: &str) -> DeployResult<BTreeMap<String, String>> {
    Ok(env_of(&bound(ctx, app_id).await?))
}

/// The env of a list of bindings, in Cloud Foundry's `VCAP_SERVICES` format: an object keyed by
/// the offering's label (`user-provided` for those), each a list of the bound instances.
pub fn env_of(bound: &[Bound]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if bound.is_empty() {
        return env;
    }
    let mut vcap: Map<String, Value> = Map::new();
    let mut database_url = None;
    let mut redis_url = None;
    for b in bound {
        let i = &b.instance;
        let drain = b
            .binding
            .syslog_drain_url
            .clone()
            .or_else(|| i.syslog_drain_url.clone());
        let entry = if i.kind == KIND_USER_PROVIDED {
            json!({
                "name": i.name,
                "instance_guid": i.id,
                "instance_name": i.name,
                "binding_guid": b.binding.id,
                "binding_name": null,
                "label": KIND_USER_PROVIDED,
                "tags": i.tags,
                "credentials": b.credentials,
                "syslog_drain_url": drain.unwrap_or_default(),
                "volume_mounts": [],
            })
        } else {
            json!({
                "name": i.name,
                "instance_guid": i.id,
                "instance_name": i.name,
                "binding_guid": b.binding.id,
                "binding_name": null,
                "label": i.label,
                "tags": i.tags,
                "plan": i.plan,
                "provider": null,
                "credentials": b.credentials,
                "syslog_drain_url": drain,
                "volume_mounts": [],
            })
        };
        let label = if i.kind == KIND_USER_PROVIDED {
            KIND_USER_PROVIDED.to_string()
        } else {
            i.label.clone()
        };
        if let Value::Array(list) = vcap.entry(label).or_insert_with(|| Value::Array(vec![])) {
            list.push(entry);
        }
        let url = ["uri", "url"]
            .iter()
            .find_map(|k| b.credentials.get(*k).and_then(Value::as_str));
        let kinds: Vec<String> = i
            .tags
            .iter()
            .chain(std::iter::once(&i.label))
            .map(|t| t.to_ascii_lowercase())
            .collect();
        let is = |names: &[&str]| kinds.iter().any(|k| names.contains(&k.as_str()));
        if let Some(url) = url {
            if database_url.is_none() && is(&["postgres", "postgresql", "mysql"]) {
                database_url = Some(url.to_string());
            }
            if redis_url.is_none() && is(&["redis"]) {
                redis_url = Some(url.to_string());
            }
        }
    }
    env.insert(VCAP_SERVICES.into(), Value::Object(vcap).to_string());
    if let Some(u) = database_url {
        env.insert("DATABASE_URL".into(), u);
    }
    if let Some(u) = redis_url {
        env.insert("REDIS_URL".into(), u);
    }
    env
}

/// The service instances a push's manifest names, checked before the push changes anything:
/// each must exist in the space and be ready (an unknown one refuses the push, naming it).
pub async fn check_manifest_services(
    ctx: &AppCtx,
    space_id: &str,
    names: &[String],
) -> DeployResult<Vec<ServiceInstanceRecord>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let inst = ctx
            .store
            .service_instance_by_name(space_id, name)
            .await?
            .ok_or_else(|| {
                DeployError::invalid(
                    ErrorCode::ServiceNotFound,
                    format!("manifest services: service instance {name} not found in the space"),
                )
            })?;
        if inst.state != state::SUCCEEDED {
            return Err(DeployError::invalid(
                ErrorCode::Conflict,
                format!(
                    "manifest services: service instance {name} is not ready ({})",
                    inst.state
                ),
            ));
        }
        out.push(inst);
    }
    Ok(out)
}

/// Binds the manifest's instances the app is not bound to yet (no redeploy: the push's revision
/// carries the env).
pub async fn bind_manifest_services(
    ctx: &AppCtx,
    app: &AppRecord,
    instances: &[ServiceInstanceRecord],
) -> DeployResult<()> {
    let have: Vec<String> = ctx
        .store
        .bindings_of_app(&app.id)
        .await?
        .into_iter()
        .map(|b| b.instance_id)
        .collect();
    for inst in instances {
        if !have.contains(&inst.id) {
            bind_only(ctx, app, inst).await?;
        }
    }
    Ok(())
}

/// The instance `name` of `space_id`, or `service_not_found`.
pub async fn instance_named(
    ctx: &AppCtx,
    space_id: &str,
    name: &str,
) -> DeployResult<ServiceInstanceRecord> {
    ctx.store
        .service_instance_by_name(space_id, name)
        .await?
        .ok_or_else(|| service_not_found(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(kind: &str, label: &str, tags: &[&str]) -> ServiceInstanceRecord {
        ServiceInstanceRecord {
            id: format!("i-{label}"),
            name: format!("my-{label}"),
            space_id: "s".into(),
            kind: kind.into(),
            broker: None,
            service_id: "svc".into(),
            plan_id: "plan".into(),
            label: label.into(),
            plan: "small".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            credentials: None,
            syslog_drain_url: None,
            dashboard_url: None,
            state: state::SUCCEEDED.into(),
            operation: None,
            description: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn bound(i: ServiceInstanceRecord, creds: Value) -> Bound {
        Bound {
            binding: BindingRecord {
                id: format!("b-{}", i.id),
                app_id: "a".into(),
                instance_id: i.id.clone(),
                credentials: String::new(),
                syslog_drain_url: None,
                created_at: Utc::now(),
            },
            instance: i,
            credentials: creds.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn vcap_services_is_keyed_by_label_with_urls_picked_by_tag() {
        let env = env_of(&[
            bound(
                inst(KIND_MANAGED, "elephant", &["postgresql", "relational"]),
                json!({"uri": "postgres://u:p@db/x"}),
            ),
            bound(
                inst(KIND_MANAGED, "redis", &[]),
                json!({"url": "redis://r:6379"}),
            ),
            bound(
                inst(KIND_USER_PROVIDED, "user-provided", &[]),
                json!({"k": "v"}),
            ),
        ]);
        let vcap: Value = serde_json::from_str(&env[VCAP_SERVICES]).unwrap();
        let pg = &vcap["elephant"][0];
        assert_eq!(pg["name"], "my-elephant");
        assert_eq!(pg["instance_name"], "my-elephant");
        assert_eq!(pg["plan"], "small");
        assert_eq!(pg["label"], "elephant");
        assert_eq!(pg["credentials"]["uri"], "postgres://u:p@db/x");
        assert_eq!(pg["tags"], json!(["postgresql", "relational"]));
        assert!(pg["binding_name"].is_null() && pg["provider"].is_null());
        assert_eq!(pg["volume_mounts"], json!([]));
        assert_eq!(vcap["user-provided"][0]["credentials"]["k"], "v");
        assert_eq!(vcap["user-provided"][0]["label"], "user-provided");
        assert_eq!(env["DATABASE_URL"], "postgres://u:p@db/x");
        assert_eq!(env["REDIS_URL"], "redis://r:6379");
        assert!(env_of(&[]).is_empty());
    }
}
