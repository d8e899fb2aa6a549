//! Process types besides `web` (issue 3): a droplet declares a start command per type (Procfile
//! or the buildpack's `bin/release`); the app's `app_processes` rows (manifest `processes`,
//! `paas scale -p TYPE`) set each type's instances, memory, command and health check. `web` keeps
//! its settings on the app itself and is the only type the router sends traffic to.
//!
//! A type the droplet declares and nobody configured runs one instance with the app's memory and
//! a process health check (a worker listens on no port). One instance rather than Cloud Foundry's
//! zero, so a Procfile's worker runs after a push without a second command.

use paas_common::agent::HealthSettings;
use std::collections::{BTreeMap, HashMap};

use paas_common::api::ProcessInfo;

use crate::store::{AppRecord, ProcessRecord, Store, StoreResult};

/// What one non-web process type of an app should run, resolved from the droplet and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub process_type: String,
    pub instances: u32,
    pub memory_mb: u64,
    pub command: String,
    pub health: HealthSettings,
}

/// The non-web process types of an app running a droplet with `declared` commands, given the
/// app's configured rows. A configured type with its own command runs even if the droplet does
/// not declare it (a manifest process with a `command`).
pub fn resolve(
    app: &AppRecord,
    declared: Option<&BTreeMap<String, String>>,
    configured: &[ProcessRecord],
) -> Vec<ProcessSpec> {
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
    types
        .into_iter()
        .filter(|t| *t != "web")
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
            Some(ProcessSpec {
                process_type: t.to_string(),
                instances: rec.instances,
                memory_mb: rec.memory_mb.unwrap_or(app.memory_mb),
                health: rec.health_or_default(),
                command,
            })
        })
        .collect()
}

/// Non-web process specs of every app's current revision, by app id.
pub async fn specs(
    store: &dyn Store,
    apps: &[AppRecord],
) -> StoreResult<HashMap<String, Vec<ProcessSpec>>> {
    let declared = store.droplet_processes().await?;
    let configured = store.app_processes().await?;
    let mut out = HashMap::new();
    for app in apps {
        let Some(n) = app.current_revision else {
            continue;
        };
        let Some(rev) = store.revision(&app.id, n).await? else {
            continue;
        };
        let list = resolve(
            app,
            declared.get(&rev.droplet),
            configured.get(&app.id).map(Vec::as_slice).unwrap_or(&[]),
        );
        out.insert(app.id.clone(), list);
    }
    Ok(out)
}

fn check_name(h: &paas_common::agent::HealthCheck) -> String {
    match h {
        paas_common::agent::HealthCheck::Port => "port".into(),
        paas_common::agent::HealthCheck::Process => "process".into(),
        paas_common::agent::HealthCheck::Http { endpoint } => format!("http {endpoint}"),
    }
}

/// Every process type of the app's current revision, `web` first (the app detail and the
/// dashboard's app page); empty before the first revision, whose `web_command` is `None`.
pub async fn infos(
    store: &dyn Store,
    app: &AppRecord,
    web_command: Option<&str>,
) -> StoreResult<Vec<ProcessInfo>> {
    let Some(web_command) = web_command else {
        return Ok(Vec::new());
    };
    let health = store
        .app_lifecycles()
        .await?
        .remove(&app.id)
        .and_then(|l| l.health)
        .unwrap_or_default();
    let mut out = vec![ProcessInfo {
        process_type: "web".into(),
        instances: app.desired_instances,
        memory_mb: app.memory_mb,
        command: web_command.into(),
        health_check: check_name(&health.check),
    }];
    out.extend(
        specs(store, std::slice::from_ref(app))
            .await?
            .remove(&app.id)
            .unwrap_or_default()
            .into_iter()
            .map(|p| ProcessInfo {
                health_check: check_name(&p.health.check),
                process_type: p.process_type,
                instances: p.instances,
                memory_mb: p.memory_mb,
                command: p.command,
            }),
    );
    Ok(out)
}

/// Memory per instance of one process type of an app.
pub fn memory_of(
    specs: &HashMap<String, Vec<ProcessSpec>>,
    app: &AppRecord,
    process_type: &str,
) -> u64 {
    specs
        .get(&app.id)
        .and_then(|l| l.iter().find(|p| p.process_type == process_type))
        .map_or(app.memory_mb, |p| p.memory_mb)
}

/// Parses Procfile lines `type: command` into a map, for the fallback without a staging node.
pub fn from_procfile(procfile: &str) -> BTreeMap<String, String> {
    crate::staging::parse_procfile(procfile)
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use paas_common::agent::HealthCheck;
    use paas_common::api::AppState;

    fn app() -> AppRecord {
        let now = Utc::now();
        AppRecord {
            id: "a".into(),
            name: "a".into(),
            state: AppState::Started,
            desired_instances: 1,
            memory_mb: 256,
            disk_mb: 512,
            current_revision: Some(1),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn declared_types_run_once_with_a_process_check_and_settings_override() {
        let declared: BTreeMap<String, String> = [
            ("web".to_string(), "serve".to_string()),
            ("worker".into(), "work".into()),
        ]
        .into_iter()
        .collect();
        let s = resolve(&app(), Some(&declared), &[]);
        assert_eq!(s.len(), 1, "web is not a separate process spec");
        assert_eq!(
            (s[0].process_type.as_str(), s[0].instances, s[0].memory_mb),
            ("worker", 1, 256)
        );
        assert_eq!(s[0].health.check, HealthCheck::Process);
        let rec = ProcessRecord {
            instances: 3,
            memory_mb: Some(64),
            ..ProcessRecord::default_for("worker")
        };
        let clock = ProcessRecord {
            command: Some("tick".into()),
            ..ProcessRecord::default_for("clock")
        };
        let s = resolve(&app(), Some(&declared), &[rec, clock]);
        let got: Vec<(&str, u32, u64, &str)> = s
            .iter()
            .map(|p| {
                (
                    p.process_type.as_str(),
                    p.instances,
                    p.memory_mb,
                    p.command.as_str(),
                )
            })
            .collect();
        assert_eq!(got, [("clock", 1, 256, "tick"), ("worker", 3, 64, "work")]);
        // A configured type without a command and absent from the droplet does not run.
        assert!(resolve(&app(), None, &[ProcessRecord::default_for("worker")]).is_empty());
    }
}
