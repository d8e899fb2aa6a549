//! `paas apply` (issue 25): makes a space match a document ([`paas_common::apply`]). The whole
//! document is diffed against the space first (every change listed, every input checked) and
//! only then, unless it is a dry run, applied through the same functions the single commands
//! use: service creation, scaling, routes, bindings, deletion.
//!
//! An app is pushed again only when its folder differs: the client sends each folder's source
//! digest and it is compared with the digest recorded for the droplet the app runs. New and
//! changed apps are listed as `create_app`/`push` and left to the client, which pushes their
//! source through the ordinary push (one staging, one revision, every manifest setting with
//! it). For an app whose source is unchanged, env, memory, disk, health and new bindings become
//! one revision (one rolling replacement), a change of instances alone a scale; what equals the
//! space already is no change at all, so applying the same file twice makes nothing new.
//!
//! `prune` deletes the space's apps the document does not name, and unmaps routes of the
//! document's apps that their `routes:` no longer list (the default route stays).
//!
//! `network_policies:` between the space's apps are added when missing (prune removes the
//! space's policies between its own apps the document does not list). A policy naming an app
//! this apply creates is listed but waits for that app: the client applies the document again
//! once its pushes are done, which adds it.
//!
//! Diffed for an existing app: web instances and memory, disk, env keys the document names
//! (others are left alone: bindings add some), the health check, other process types'
//! instances and memory, routes and bindings to add. The rest of a manifest entry (commands,
//! buildpacks, stack, placement, log rate limit, cron, autoscale, route flags) takes effect
//! when the app is pushed, i.e. when it is new or its folder changed.

use paas_common::api::AppUpdateRequest;
use paas_common::apply::{ApplyDocument, ApplyPlan, ChangeKind, PlannedChange};
use paas_common::domain::AppName;
use paas_common::manifest::AppManifest;
use paas_common::route::RouteSpec;
use paas_common::ErrorCode;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Actor, DeployError, DeployResult};
use crate::state::AppCtx;
use crate::store::{AppRecord, NewRevision, RevisionExtra, SpaceRecord};

/// How to apply.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// List the changes, make none.
    pub dry_run: bool,
    /// Delete apps (and unmap routes) the document no longer names.
    pub prune: bool,
}

/// The planned changes of one existing app whose source is unchanged.
#[derive(Default)]
struct AppChanges {
    instances: Option<u32>,
    memory_mb: Option<u64>,
    disk_mb: Option<u64>,
    env: BTreeMap<String, String>,
    health: Option<paas_common::agent::HealthSettings>,
    processes: Vec<(String, Option<u32>, Option<u64>)>,
    map: Vec<RouteSpec>,
    unmap: Vec<RouteSpec>,
    bind: Vec<String>,
}

impl AppChanges {
    /// Whether the app needs a new revision (one, whatever number of these fields changed).
    fn needs_revision(&self) -> bool {
        self.memory_mb.is_some()
            || self.disk_mb.is_some()
            || !self.env.is_empty()
            || self.health.is_some()
            || !self.bind.is_empty()
    }
}

enum Step {
    /// New or changed source: the client pushes it.
    Push,
    Update(Box<AppRecord>, Box<AppChanges>),
}

fn change(
    kind: ChangeKind,
    app: Option<&str>,
    target: impl Into<String>,
    before: Option<String>,
    after: Option<String>,
) -> PlannedChange {
    PlannedChange {
        kind,
        app: app.map(str::to_string),
        target: target.into(),
        before,
        after,
        applied: false,
    }
}

fn bad(message: impl Into<String>) -> DeployError {
    DeployError::invalid(ErrorCode::BadRequest, message)
}

/// Plans, and unless `opts.dry_run` applies, `doc` to `space`. Returns the plan, each change
/// marked applied or not.
pub async fn apply(
    ctx: &AppCtx,
    actor: &Actor,
    space: &SpaceRecord,
    doc: &ApplyDocument,
    warnings: Vec<String>,
    opts: Options,
) -> DeployResult<ApplyPlan> {
    let label = format!("{}/{}", space.org, space.name);
    if let Some(named) = doc.space.as_deref().filter(|s| *s != label) {
        return Err(bad(format!(
            "the document is for space {named}, not {label}"
        )));
    }
    let mut plan = ApplyPlan {
        space: label,
        dry_run: opts.dry_run,
        warnings,
        ..Default::default()
    };

    // Services first: apps bind them.
    let mut new_services = Vec::new();
    for s in &doc.services {
        if ctx
            .store
            .service_instance_by_name(&space.id, &s.name)
            .await?
            .is_none()
        {
            let what = match (&s.offering, &s.plan) {
                (Some(o), Some(p)) => format!("{o} {p}"),
                (Some(o), None) => o.clone(),
                _ => "user-provided".into(),
            };
            plan.changes.push(change(
                ChangeKind::CreateService,
                None,
                s.name.clone(),
                None,
                Some(what),
            ));
            new_services.push(s);
        }
    }
    let declared_services: BTreeSet<&str> = doc.services.iter().map(|s| s.name.as_str()).collect();

    let mut steps = Vec::with_capacity(doc.applications.len());
    for a in &doc.applications {
        let name = a
            .name
            .clone()
            .ok_or_else(|| bad("every application of an apply document has a name"))?;
        check_sizes(&name, a)?;
        for s in &a.services {
            if !declared_services.contains(s.name())
                && ctx
                    .store
                    .service_instance_by_name(&space.id, s.name())
                    .await?
                    .is_none()
            {
                return Err(DeployError::invalid(
                    ErrorCode::ServiceNotFound,
                    format!(
                        "applications.{name}.services: service instance {} is neither in the space nor in the document",
                        s.name()
                    ),
                ));
            }
        }
        let routes: Vec<String> = a.routes.iter().map(|r| r.route.clone()).collect();
        let routes = super::push::check_manifest_routes(ctx, &space.id, &name, &routes).await?;
        let step = plan_app(ctx, space, doc, a, &name, &routes, opts, &mut plan).await?;
        steps.push((name, step));
    }

    let named: BTreeSet<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    let mut prune = Vec::new();
    if opts.prune {
        let mut gone: Vec<AppRecord> = ctx
            .store
            .list_apps()
            .await?
            .into_iter()
            .filter(|a| a.space_id == space.id && !named.contains(a.name.as_str()))
            .collect();
        gone.sort_by(|a, b| a.name.cmp(&b.name));
        for app in gone {
            plan.changes.push(change(
                ChangeKind::DeleteApp,
                Some(&app.name),
                "",
                Some(format!("{} instance(s)", app.desired_instances)),
                None,
            ));
            prune.push(app);
        }
    }
    let policies = plan_policies(ctx, space, doc, opts, &mut plan).await?;
    if opts.dry_run {
        return Ok(plan);
    }

    // Applied in the order listed; an error part way answers the error and leaves the earlier
    // changes made (applying again sees them as done and goes on from there).
    for s in new_services {
        super::services::create_service(ctx, actor, space, s).await?;
    }
    for (_, step) in steps {
        if let Step::Update(app, changes) = step {
            apply_app(ctx, actor, space, &app, *changes).await?;
        }
    }
    // A pruned app's policies go with it: the ones to remove go first.
    for (src, dst, t) in &policies.remove {
        super::network::remove(ctx, actor, src, dst, t).await?;
    }
    for app in &prune {
        super::delete_app(ctx, actor, app).await?;
    }
    for (src, dst, t) in &policies.add {
        super::network::add(ctx, actor, src, dst, t).await?;
    }
    for c in &mut plan.changes {
        let left_to_client = matches!(c.kind, ChangeKind::CreateApp | ChangeKind::Push);
        let waits = c.kind == ChangeKind::AddPolicy && c.after.as_deref() == Some(WAITS_FOR_PUSH);
        c.applied = !left_to_client && !waits;
    }
    if !plan.changes.is_empty() {
        tracing::info!(space = %plan.space, changes = plan.changes.len(), pushes = plan.push.len(), "applied a document");
    }
    Ok(plan)
}

/// The `after` of a policy that names an app this apply creates: added by the client's second
/// apply, once the pushes are done.
const WAITS_FOR_PUSH: &str = "once its apps are pushed";

/// The network policies to add and (with prune) remove.
#[derive(Default)]
struct PolicySteps {
    add: Vec<(AppRecord, AppRecord, super::network::PolicyTarget)>,
    remove: Vec<(AppRecord, AppRecord, super::network::PolicyTarget)>,
}

fn policy_label(src: &str, dst: &str, t: &super::network::PolicyTarget) -> String {
    let ports = if t.ports.0 == t.ports.1 {
        t.ports.0.to_string()
    } else {
        format!("{}-{}", t.ports.0, t.ports.1)
    };
    format!("{src} -> {dst} {} {ports}", t.protocol)
}

/// Diffs `network_policies:` against the policies between the space's apps.
async fn plan_policies(
    ctx: &AppCtx,
    space: &SpaceRecord,
    doc: &ApplyDocument,
    opts: Options,
    plan: &mut ApplyPlan,
) -> DeployResult<PolicySteps> {
    let mut steps = PolicySteps::default();
    if doc.network_policies.is_empty() && !opts.prune {
        return Ok(steps);
    }
    let apps: HashMap<String, AppRecord> = ctx
        .store
        .list_apps()
        .await?
        .into_iter()
        .filter(|a| a.space_id == space.id)
        .map(|a| (a.id.clone(), a))
        .collect();
    let by_name: HashMap<&str, &AppRecord> = apps.values().map(|a| (a.name.as_str(), a)).collect();
    let documented: BTreeSet<&str> = doc
        .applications
        .iter()
        .filter_map(|a| a.name.as_ref().map(|n| n.as_str()))
        .collect();
    let existing: Vec<_> = ctx
        .store
        .list_policies()
        .await?
        .into_iter()
        .filter(|p| apps.contains_key(&p.source_app_id) && apps.contains_key(&p.destination_app_id))
        .collect();
    let mut wanted = BTreeSet::new();
    for np in &doc.network_policies {
        let t = super::network::parse(&np.protocol, &np.ports)?;
        for n in [&np.source, &np.destination] {
            if !by_name.contains_key(n.as_str()) && !documented.contains(n.as_str()) {
                return Err(DeployError::invalid(
                    ErrorCode::AppNotFound,
                    format!(
                        "network_policies: app {n} is neither in the space nor in the document"
                    ),
                ));
            }
        }
        let label = policy_label(&np.source, &np.destination, &t);
        if !wanted.insert(label.clone()) {
            continue;
        }
        let src = by_name.get(np.source.as_str());
        let dst = by_name.get(np.destination.as_str());
        let (Some(src), Some(dst)) = (src, dst) else {
            plan.changes.push(change(
                ChangeKind::AddPolicy,
                None,
                label,
                None,
                Some(WAITS_FOR_PUSH.into()),
            ));
            continue;
        };
        let exists = existing.iter().any(|p| {
            p.source_app_id == src.id
                && p.destination_app_id == dst.id
                && p.protocol == t.protocol
                && (p.start_port, p.end_port) == t.ports
        });
        if !exists {
            plan.changes
                .push(change(ChangeKind::AddPolicy, None, label, None, None));
            steps.add.push(((*src).clone(), (*dst).clone(), t));
        }
    }
    if opts.prune {
        for p in &existing {
            let (src, dst) = (&apps[&p.source_app_id], &apps[&p.destination_app_id]);
            let t = super::network::PolicyTarget {
                protocol: p.protocol.clone(),
                ports: (p.start_port, p.end_port),
            };
            let label = policy_label(&src.name, &dst.name, &t);
            if !wanted.contains(&label) {
                plan.changes
                    .push(change(ChangeKind::RemovePolicy, None, label, None, None));
                steps.remove.push((src.clone(), dst.clone(), t));
            }
        }
    }
    Ok(steps)
}

/// The bounds a scale would check, refused before anything changes.
fn check_sizes(name: &AppName, a: &AppManifest) -> DeployResult<()> {
    let max = super::lifecycle::MAX_INSTANCES;
    let instances = std::iter::once(("web", a.instances, a.memory)).chain(
        a.processes
            .iter()
            .map(|p| (p.process_type.as_str(), p.instances, p.memory)),
    );
    for (process, n, m) in instances {
        if n.is_some_and(|n| n > max) {
            return Err(bad(format!(
                "applications.{name}: {process} instances must be from 0 to {max}"
            )));
        }
        if m.is_some_and(|m| !(16..=64 * 1024).contains(&m)) {
            return Err(bad(format!(
                "applications.{name}: {process} memory must be from 16 MB to 64 GB"
            )));
        }
    }
    Ok(())
}

/// The web settings the document states: the app's own, else its `processes` entry for `web`.
fn web_of(a: &AppManifest) -> (Option<u32>, Option<u64>) {
    let web = a.processes.iter().find(|p| p.process_type == "web");
    (
        a.instances.or(web.and_then(|p| p.instances)),
        a.memory.or(web.and_then(|p| p.memory)),
    )
}

#[allow(clippy::too_many_arguments)]
async fn plan_app(
    ctx: &AppCtx,
    space: &SpaceRecord,
    doc: &ApplyDocument,
    a: &AppManifest,
    name: &AppName,
    routes: &[RouteSpec],
    opts: Options,
    plan: &mut ApplyPlan,
) -> DeployResult<Step> {
    let n = name.as_str();
    let (instances, memory) = web_of(a);
    let Some(app) = ctx.store.app_in_space(&space.id, n).await? else {
        plan.changes.push(change(
            ChangeKind::CreateApp,
            Some(n),
            "",
            None,
            Some(format!(
                "{} instance(s) of {}",
                instances.unwrap_or(1),
                memory.map_or_else(|| "the default memory".into(), |m| format!("{m} MB"))
            )),
        ));
        plan.push.push(n.to_string());
        return Ok(Step::Push);
    };
    let rev = super::revisions::current(ctx, &app).await?;
    let current_tree = match &rev {
        Some(r) => ctx.store.droplet_tree(&r.droplet).await?,
        None => None,
    };
    let wanted_tree = doc.sources.get(n);
    if rev.is_none() || wanted_tree.is_some_and(|t| Some(t) != current_tree.as_ref()) {
        plan.changes.push(change(
            ChangeKind::Push,
            Some(n),
            "source",
            Some(current_tree.as_deref().map_or("unknown", short).to_string()),
            wanted_tree.map(|t| short(t).to_string()),
        ));
        plan.push.push(n.to_string());
        return Ok(Step::Push);
    }
    let mut c = AppChanges::default();
    if let Some(i) = instances.filter(|i| *i != app.desired_instances) {
        c.instances = Some(i);
        plan.changes.push(change(
            ChangeKind::Scale,
            Some(n),
            "web",
            Some(app.desired_instances.to_string()),
            Some(i.to_string()),
        ));
    }
    if let Some(m) = memory.filter(|m| *m != app.memory_mb) {
        c.memory_mb = Some(m);
        plan.changes.push(change(
            ChangeKind::SetMemory,
            Some(n),
            "web",
            Some(format!("{} MB", app.memory_mb)),
            Some(format!("{m} MB")),
        ));
    }
    if let Some(d) = a.disk_quota.filter(|d| *d != app.disk_mb) {
        c.disk_mb = Some(d);
        plan.changes.push(change(
            ChangeKind::SetDisk,
            Some(n),
            "",
            Some(format!("{} MB", app.disk_mb)),
            Some(format!("{d} MB")),
        ));
    }
    let env = rev.as_ref().map(|r| r.env.clone()).unwrap_or_default();
    for (k, v) in &a.env {
        // A secret (`set-env --secret`) is stored sealed: compared by its plain value.
        let same = env.get(k).is_some_and(|old| {
            if crate::secrets::is_sealed(old) {
                ctx.secrets.open(&app.id, old).is_ok_and(|p| p == *v)
            } else {
                old == v
            }
        });
        if !same {
            super::revisions::check_env(k, Some(v))?;
            plan.changes.push(change(
                ChangeKind::SetEnv,
                Some(n),
                k.clone(),
                env.get(k).map(|old| shown(old)),
                Some(v.clone()),
            ));
            c.env.insert(k.clone(), v.clone());
        }
    }
    if let Some(h) = a.health().to_settings() {
        let current = ctx
            .store
            .app_lifecycles()
            .await?
            .remove(&app.id)
            .and_then(|l| l.health);
        let now = current.clone().unwrap_or_default();
        let after = super::lifecycle::manifest_health(&now, &h)?;
        if after != now {
            plan.changes.push(change(
                ChangeKind::SetHealth,
                Some(n),
                "web",
                Some(format!("{:?}", now.check)),
                Some(format!("{:?}", after.check)),
            ));
            c.health = Some(after);
        }
    }
    let configured = ctx
        .store
        .app_processes()
        .await?
        .remove(&app.id)
        .unwrap_or_default();
    for p in a.processes.iter().filter(|p| p.process_type != "web") {
        let rec = configured
            .iter()
            .find(|r| r.process_type == p.process_type)
            .cloned()
            .unwrap_or_else(|| crate::store::ProcessRecord::default_for(&p.process_type));
        let n_change = p.instances.filter(|i| *i != rec.instances);
        let m_change = p.memory.filter(|m| Some(*m) != rec.memory_mb);
        if n_change.is_none() && m_change.is_none() {
            continue;
        }
        let mut what = Vec::new();
        if let Some(i) = n_change {
            what.push((
                format!("{} instance(s)", rec.instances),
                format!("{i} instance(s)"),
            ));
        }
        if let Some(m) = m_change {
            what.push((
                rec.memory_mb
                    .map_or_else(|| "app memory".into(), |o| format!("{o} MB")),
                format!("{m} MB"),
            ));
        }
        plan.changes.push(change(
            ChangeKind::ScaleProcess,
            Some(n),
            p.process_type.clone(),
            Some(
                what.iter()
                    .map(|w| w.0.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Some(
                what.iter()
                    .map(|w| w.1.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ));
        c.processes
            .push((p.process_type.clone(), n_change, m_change));
    }
    let mapped: Vec<RouteSpec> = ctx
        .store
        .list_routes()
        .await?
        .into_iter()
        .filter(|r| r.app_id == app.id)
        .map(|r| RouteSpec {
            host: r.host,
            path: r.path,
        })
        .collect();
    for spec in routes {
        if !mapped.contains(spec) && !super::push::is_default_of(ctx, Some(&app), spec) {
            plan.changes.push(change(
                ChangeKind::MapRoute,
                Some(n),
                spec.to_string(),
                None,
                None,
            ));
            c.map.push(spec.clone());
        }
    }
    if opts.prune {
        for spec in mapped.iter().filter(|m| !routes.contains(m)) {
            plan.changes.push(change(
                ChangeKind::UnmapRoute,
                Some(n),
                spec.to_string(),
                None,
                None,
            ));
            c.unmap.push(spec.clone());
        }
    }
    let mut bound = BTreeSet::new();
    for b in ctx.store.bindings_of_app(&app.id).await? {
        if let Some(i) = ctx.store.service_instance(&b.instance_id).await? {
            bound.insert(i.name);
        }
    }
    for s in &a.services {
        if !bound.contains(s.name()) {
            plan.changes.push(change(
                ChangeKind::Bind,
                Some(n),
                s.name().to_string(),
                None,
                None,
            ));
            c.bind.push(s.name().to_string());
        }
    }
    Ok(Step::Update(Box::new(app), Box::new(c)))
}

/// A digest's first 12 characters, as the push output shows a package.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// An env value for the plan: a sealed secret is not shown.
fn shown(value: &str) -> String {
    if crate::secrets::is_sealed(value) {
        "(secret)".into()
    } else {
        value.to_string()
    }
}

/// Makes `c` on an app whose source is unchanged: bindings, then one revision for everything
/// that needs one (or a scale alone), process scales, routes.
async fn apply_app(
    ctx: &AppCtx,
    actor: &Actor,
    space: &SpaceRecord,
    app: &AppRecord,
    c: AppChanges,
) -> DeployResult<()> {
    if c.needs_revision() {
        let base = super::revisions::current(ctx, app)
            .await?
            .ok_or_else(|| bad(format!("{} has no revision yet: push it", app.name)))?;
        let mut after = app.clone();
        after.desired_instances = c.instances.unwrap_or(app.desired_instances);
        after.memory_mb = c.memory_mb.unwrap_or(app.memory_mb);
        super::quota::check_app(ctx, &after).await?;
        for s in &c.bind {
            let inst = super::services::instance_named(ctx, &space.id, s).await?;
            super::services::bind_only(ctx, app, &inst).await?;
        }
        let mut env = base.env.clone();
        env.extend(c.env.clone());
        super::services::overlay_env(ctx, &app.id, &mut env).await?;
        let mut what: Vec<String> = c.env.keys().map(|k| format!("set-env {k}")).collect();
        if let Some(m) = c.memory_mb {
            what.push(format!("memory {m} MB"));
        }
        if let Some(d) = c.disk_mb {
            what.push(format!("disk {d} MB"));
        }
        if c.health.is_some() {
            what.push("health check".into());
        }
        what.extend(c.bind.iter().map(|s| format!("bind-service {s}")));
        if let Some(i) = c.instances {
            what.push(format!("instances {i}"));
        }
        let description = format!("apply: {}", what.join(", "));
        let number = super::revisions::deploy_revision(
            ctx,
            actor,
            app,
            &NewRevision {
                package: base.package.clone(),
                droplet: base.droplet.clone(),
                command: base.command.clone(),
                detected: base.detected.clone(),
                desired_instances: after.desired_instances,
                memory_mb: after.memory_mb,
            },
            &RevisionExtra {
                env,
                created_by: actor.username.clone(),
                description: description.clone(),
                disk_mb: c.disk_mb,
                health: c.health.clone(),
                ..Default::default()
            },
            "app.apply",
            description.clone(),
        )
        .await?;
        super::log_platform(
            ctx,
            app,
            "API",
            format!("{} made revision {number}: {description}", actor.username),
        )
        .await;
    } else if let Some(i) = c.instances {
        super::lifecycle::update(ctx, actor, app, scale_request(None, Some(i), None)).await?;
    }
    for (process, instances, memory) in c.processes {
        super::lifecycle::update(
            ctx,
            actor,
            app,
            scale_request(Some(process), instances, memory),
        )
        .await?;
    }
    for spec in &c.map {
        super::domains::map_route(ctx, actor, app, spec, None, None).await?;
    }
    for spec in &c.unmap {
        let ev = super::event(
            actor,
            app,
            "route.unmap",
            format!("unmapped route {spec} from {} (apply --prune)", app.name),
        );
        ctx.store
            .delete_route(&app.id, &spec.host, &spec.path, &ev)
            .await?;
    }
    if !c.unmap.is_empty() {
        crate::router::refresh(ctx).await?;
    }
    Ok(())
}

fn scale_request(
    process: Option<String>,
    instances: Option<u32>,
    memory_mb: Option<u64>,
) -> AppUpdateRequest {
    AppUpdateRequest {
        instances,
        memory_mb,
        max_in_flight: None,
        health_check: None,
        placement_labels: None,
        process,
        log_rate_limit: None,
    }
}
