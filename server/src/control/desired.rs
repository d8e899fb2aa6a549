//! The one desired state: from the store, what should run for every app. Per app and process
//! type: the revision, instance count, memory, disk, command, health and readiness settings, and
//! the app's placement labels and rollout settings. Convergence takes one [`DesiredState`] per
//! pass; the agents' assignments, the API's app detail and the dashboard read the same thing, so
//! `web` and the other process types are resolved in one function ([`resolve`]) and nowhere else.
//!
//! A process type the droplet declares and nobody configured runs one instance with the app's
//! memory and a process health check (a worker listens on no port). One instance rather than
//! Cloud Foundry's zero, so a Procfile's worker runs after a push without a second command.
//!
//! An instance row keeps what it was created with: a row of an older revision runs that
//! revision's command and env ([`DesiredState::process_for`]), so an assignment never changes
//! under a running container; only the current revision is *desired*.

use paas_common::agent::{DropletImage, HealthCheck, HealthSettings};
use paas_common::api::{AppState, ProcessInfo};
use std::collections::{BTreeMap, HashMap};

use crate::store::{AppLifecycle, AppRecord, ProcessRecord, RevisionRecord, Store, StoreResult};

/// What one process type of an app should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessDesired {
    pub process_type: String,
    pub instances: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub command: String,
    /// Liveness, and readiness when set.
    pub health: HealthSettings,
}

/// What one app should run: its current revision's process types, `web` first.
#[derive(Debug, Clone)]
pub struct AppDesired {
    pub app: AppRecord,
    pub revision: RevisionRecord,
    pub lifecycle: AppLifecycle,
    pub processes: Vec<ProcessDesired>,
}

impl AppDesired {
    /// Whether its instances should run at all (a stopped app keeps its desired settings).
    pub fn started(&self) -> bool {
        self.app.state == AppState::Started
    }

    pub fn process(&self, process_type: &str) -> Option<&ProcessDesired> {
        self.processes
            .iter()
            .find(|p| p.process_type == process_type)
    }

    /// The per-type view of the app detail and the dashboard.
    pub fn infos(&self) -> Vec<ProcessInfo> {
        self.processes
            .iter()
            .map(|p| ProcessInfo {
                process_type: p.process_type.clone(),
                instances: p.instances,
                memory_mb: p.memory_mb,
                command: p.command.clone(),
                health_check: check_name(&p.health.check),
            })
            .collect()
    }
}

/// Every app's desired state, read from the store in one go.
#[derive(Debug, Default)]
pub struct DesiredState {
    /// Every app, started or not, with or without a revision.
    pub all_apps: Vec<AppRecord>,
    /// Apps that have a current revision, by app id.
    apps: HashMap<String, AppDesired>,
    declared: HashMap<String, BTreeMap<String, String>>,
    configured: HashMap<String, Vec<ProcessRecord>>,
    lifecycles: HashMap<String, AppLifecycle>,
    images: HashMap<String, DropletImage>,
}

impl DesiredState {
    /// Reads every app's desired state.
    pub async fn load(store: &dyn Store) -> StoreResult<Self> {
        let apps = store.list_apps().await?;
        // One query for every current revision rather than one per app: the passes, and each
        // node's assignments, read this for all apps.
        let mut current: HashMap<(String, i64), RevisionRecord> = store
            .current_revisions()
            .await?
            .into_iter()
            .map(|r| ((r.app_id.clone(), r.number), r))
            .collect();
        Self::load_with(store, apps, &mut current).await
    }

    /// Reads the desired state of `apps` only (an API view of one app).
    pub async fn load_for(store: &dyn Store, apps: Vec<AppRecord>) -> StoreResult<Self> {
        Self::load_with(store, apps, &mut HashMap::new()).await
    }

    /// `current` holds revisions read ahead; one missing there (none read ahead, or the app
    /// got a new revision in between) is read on its own.
    async fn load_with(
        store: &dyn Store,
        apps: Vec<AppRecord>,
        current: &mut HashMap<(String, i64), RevisionRecord>,
    ) -> StoreResult<Self> {
        let mut out = DesiredState {
            declared: store.droplet_processes().await?,
            configured: store.app_processes().await?,
            lifecycles: store.app_lifecycles().await?,
            images: store.droplet_images().await?,
            ..Default::default()
        };
        for app in &apps {
            let Some(n) = app.current_revision else {
                continue;
            };
            let rev = match current.remove(&(app.id.clone(), n)) {
                Some(r) => r,
                None => match store.revision(&app.id, n).await? {
                    Some(r) => r,
                    None => continue,
                },
            };
            let lifecycle = out.lifecycle(&app.id);
            let processes = out.resolve_for(app, &lifecycle, &rev);
            out.apps.insert(
                app.id.clone(),
                AppDesired {
                    app: app.clone(),
                    revision: rev,
                    lifecycle,
                    processes,
                },
            );
        }
        out.all_apps = apps;
        Ok(out)
    }

    /// The desired state of one app, when it has a revision.
    pub async fn of_app(store: &dyn Store, app: &AppRecord) -> StoreResult<Option<AppDesired>> {
        Ok(Self::load_for(store, vec![app.clone()])
            .await?
            .apps
            .remove(&app.id))
    }

    /// Apps with a current revision.
    pub fn apps(&self) -> impl Iterator<Item = &AppDesired> {
        self.apps.values()
    }

    pub fn app(&self, app_id: &str) -> Option<&AppDesired> {
        self.apps.get(app_id)
    }

    pub fn lifecycle(&self, app_id: &str) -> AppLifecycle {
        self.lifecycles.get(app_id).cloned().unwrap_or_default()
    }

    /// The engine image of a Dockerfile droplet.
    pub fn image(&self, droplet: &str) -> Option<&DropletImage> {
        self.images.get(droplet)
    }

    fn resolve_for(
        &self,
        app: &AppRecord,
        lifecycle: &AppLifecycle,
        rev: &RevisionRecord,
    ) -> Vec<ProcessDesired> {
        resolve(
            app,
            lifecycle,
            rev,
            self.declared.get(&rev.droplet),
            self.configured
                .get(&app.id)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        )
    }

    /// What a row of `rev` (current or older) of process type `process_type` runs; `None` when
    /// that revision has no such type.
    pub fn process_for(
        &self,
        app: &AppRecord,
        rev: &RevisionRecord,
        process_type: &str,
    ) -> Option<ProcessDesired> {
        if let Some(d) = self.apps.get(&app.id) {
            if d.revision.number == rev.number {
                return d.process(process_type).cloned();
            }
        }
        self.resolve_for(app, &self.lifecycle(&app.id), rev)
            .into_iter()
            .find(|p| p.process_type == process_type)
    }

    /// Memory an instance of `process_type` of the app reserves (its current settings).
    pub fn memory_of(&self, app: &AppRecord, process_type: &str) -> u64 {
        self.apps
            .get(&app.id)
            .and_then(|d| d.process(process_type))
            .map_or(app.memory_mb, |p| p.memory_mb)
    }

    /// Instances wanted per non-web process type of started apps (convergence's plan input).
    pub fn process_counts(&self) -> HashMap<String, Vec<(String, u32)>> {
        self.apps
            .values()
            .map(|d| {
                (
                    d.app.id.clone(),
                    d.processes
                        .iter()
                        .filter(|p| p.process_type != "web")
                        .map(|p| (p.process_type.clone(), p.instances))
                        .collect(),
                )
            })
            .collect()
    }

    /// Every app's lifecycle settings (convergence's plan input).
    pub fn lifecycles(&self) -> &HashMap<String, AppLifecycle> {
        &self.lifecycles
    }
}

/// The Procfile's release phase (Heroku's contract): run once per push as a task, never as
/// instances.
pub const RELEASE_PROCESS: &str = "release";

/// The process types of an app running revision `rev`, `web` first. `declared` are the droplet's
/// commands per type (Procfile or the buildpack's `bin/release`), `configured` the app's settings
/// per type (manifest `processes`, `paas scale -p`). `web` takes the app's own instances, memory
/// and health check and the revision's command; a configured type with its own command runs even
/// if the droplet does not declare it (a manifest process with a `command`).
pub fn resolve(
    app: &AppRecord,
    lifecycle: &AppLifecycle,
    rev: &RevisionRecord,
    declared: Option<&BTreeMap<String, String>>,
    configured: &[ProcessRecord],
) -> Vec<ProcessDesired> {
    let mut out = vec![ProcessDesired {
        process_type: "web".into(),
        instances: app.desired_instances,
        memory_mb: app.memory_mb,
        disk_mb: app.disk_mb,
        command: rev.command.clone(),
        health: lifecycle.health.clone().unwrap_or_default(),
    }];
    let mut types: Vec<&str> = declared
        .into_iter()
        .flat_map(|d| d.keys().map(String::as_str))
        .collect();
    types.extend(
        configured
            .iter()
            .filter(|p| p.command.is_some())
            .map(|p| p.process_type.as_str()),
    );
    types.sort_unstable();
    types.dedup();
    out.extend(
        types
            .into_iter()
            .filter(|t| *t != "web" && *t != RELEASE_PROCESS)
            .filter_map(|t| {
                let rec = configured
                    .iter()
                    .find(|p| p.process_type == t)
                    .cloned()
                    .unwrap_or_else(|| ProcessRecord::default_for(t));
                let command = rec
                    .command
                    .clone()
                    .or_else(|| declared.and_then(|d| d.get(t).cloned()))?;
                Some(ProcessDesired {
                    process_type: t.to_string(),
                    instances: rec.instances,
                    memory_mb: rec.memory_mb.unwrap_or(app.memory_mb),
                    disk_mb: app.disk_mb,
                    health: rec.health_or_default(),
                    command,
                })
            }),
    );
    out
}

fn check_name(h: &HealthCheck) -> String {
    match h {
        HealthCheck::Port => "port".into(),
        HealthCheck::Process => "process".into(),
        HealthCheck::Http { endpoint } => format!("http {endpoint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn app() -> AppRecord {
        let now = Utc::now();
        AppRecord {
            id: "a".into(),
            name: "a".into(),
            state: AppState::Started,
            desired_instances: 2,
            memory_mb: 256,
            disk_mb: 512,
            current_revision: Some(1),
            created_at: now,
            updated_at: now,
            space_id: String::new(),
            host: None,
        }
    }

    fn rev() -> RevisionRecord {
        RevisionRecord {
            app_id: "a".into(),
            number: 1,
            package: "p".into(),
            droplet: "d".into(),
            command: "serve".into(),
            detected: "python".into(),
            env: BTreeMap::new(),
            created_at: Utc::now(),
            created_by: "u".into(),
            description: "push".into(),
            sidecars: Vec::new(),
        }
    }

    fn summary(s: &[ProcessDesired]) -> Vec<(&str, u32, u64, &str)> {
        s.iter()
            .map(|p| {
                (
                    p.process_type.as_str(),
                    p.instances,
                    p.memory_mb,
                    p.command.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn web_first_declared_types_run_once_with_a_process_check_and_settings_override() {
        let declared: BTreeMap<String, String> = [
            ("web".to_string(), "serve".to_string()),
            ("worker".into(), "work".into()),
        ]
        .into_iter()
        .collect();
        let lc = AppLifecycle::default();
        let s = resolve(&app(), &lc, &rev(), Some(&declared), &[]);
        assert_eq!(
            summary(&s),
            [("web", 2, 256, "serve"), ("worker", 1, 256, "work")]
        );
        assert_eq!(
            s[0].health.check,
            HealthCheck::Port,
            "web: Cloud Foundry's port check"
        );
        assert_eq!(s[1].health.check, HealthCheck::Process);
        assert_eq!(s[1].disk_mb, 512);
        let rec = ProcessRecord {
            instances: 3,
            memory_mb: Some(64),
            ..ProcessRecord::default_for("worker")
        };
        let clock = ProcessRecord {
            command: Some("tick".into()),
            ..ProcessRecord::default_for("clock")
        };
        let s = resolve(&app(), &lc, &rev(), Some(&declared), &[rec, clock]);
        assert_eq!(
            summary(&s),
            [
                ("web", 2, 256, "serve"),
                ("clock", 1, 256, "tick"),
                ("worker", 3, 64, "work")
            ]
        );
        // A configured type without a command and absent from the droplet does not run.
        let s = resolve(
            &app(),
            &lc,
            &rev(),
            None,
            &[ProcessRecord::default_for("worker")],
        );
        assert_eq!(summary(&s), [("web", 2, 256, "serve")]);
    }
}
