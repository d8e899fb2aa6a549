//! App manifests: `paas.yml`, or a Cloud Foundry `manifest.yml` as it is. Parsed here so the CLI
//! and the server read them alike. An unknown field is a warning (CF manifests carry fields we do
//! not use, such as `stack` or `services`); a wrong type or value is an error that names the
//! field and the line.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::api::{HealthCheckSettings, ProcessSettings};
use crate::domain::{parse_memory_mb, AppName};

/// Buildpacks the platform ships; Cloud Foundry's `<name>_buildpack` spellings are accepted too.
pub const BUILTIN_BUILDPACKS: &[&str] = &[
    "staticfile",
    "python",
    "node",
    "ruby",
    "go",
    "binary",
    "procfile",
];

/// The platform name of buildpack `name` (`python_buildpack` -> `python`), if it is known.
pub fn buildpack_name(name: &str) -> Option<&'static str> {
    let n = name.trim().to_ascii_lowercase();
    let n = n
        .strip_suffix("_buildpack")
        .or_else(|| n.strip_suffix("-buildpack"))
        .unwrap_or(&n);
    let n = if n == "nodejs" { "node" } else { n };
    BUILTIN_BUILDPACKS.iter().copied().find(|b| *b == n)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// 1-based line of the offending value, when the parser knows it.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ManifestError {}

/// A parsed manifest and the warnings it raised (unknown fields, by path).
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub applications: Vec<AppManifest>,
    pub warnings: Vec<String>,
}

/// One entry of `applications`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AppManifest {
    /// Absent only in a manifest of one app pushed with NAME on the command line.
    #[serde(default, deserialize_with = "app_name")]
    pub name: Option<AppName>,
    #[serde(default, deserialize_with = "count")]
    pub instances: Option<u32>,
    #[serde(default, deserialize_with = "memory")]
    pub memory: Option<u64>,
    #[serde(default, deserialize_with = "disk_quota")]
    pub disk_quota: Option<u64>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default, deserialize_with = "buildpacks")]
    pub buildpacks: Vec<String>,
    /// Cloud Foundry's older single `buildpack:`; `buildpacks:` wins when both are given.
    #[serde(default, deserialize_with = "one_buildpack")]
    pub buildpack: Option<String>,
    /// A generated route host instead of one derived from the name (`random-route: true`).
    #[serde(default, rename = "random-route", deserialize_with = "random_route")]
    pub random_route: bool,
    /// No route at all (`no-route: true`), e.g. for a worker.
    #[serde(default, rename = "no-route", deserialize_with = "no_route")]
    pub no_route: bool,
    #[serde(default, deserialize_with = "env_map")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
    /// Service instances bound on push (Cloud Foundry's `services:`, names or `{name: ...}`).
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    /// Relative to the manifest's folder.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default, rename = "health-check-type", deserialize_with = "check_type")]
    pub health_check_type: Option<String>,
    #[serde(default, rename = "health-check-http-endpoint")]
    pub health_check_http_endpoint: Option<String>,
    #[serde(
        default,
        rename = "health-check-invocation-timeout",
        deserialize_with = "count_u64"
    )]
    pub health_check_invocation_timeout: Option<u64>,
    #[serde(default, deserialize_with = "count_u64")]
    pub timeout: Option<u64>,
    #[serde(
        default,
        rename = "readiness-health-check-type",
        deserialize_with = "check_type"
    )]
    pub readiness_health_check_type: Option<String>,
    #[serde(default, rename = "readiness-health-check-http-endpoint")]
    pub readiness_health_check_http_endpoint: Option<String>,
    #[serde(
        default,
        rename = "readiness-health-check-invocation-timeout",
        deserialize_with = "count_u64"
    )]
    pub readiness_health_check_invocation_timeout: Option<u64>,
    #[serde(
        default,
        rename = "readiness-health-check-interval",
        deserialize_with = "count_u64"
    )]
    pub readiness_health_check_interval: Option<u64>,
    #[serde(default)]
    pub processes: Vec<ProcessManifest>,
    /// Scheduled tasks (`cron: [{schedule: "*/5 * * * *", command: ...}]`, Dokku's `app.json`
    /// shape); a platform field. A push adds the ones the app does not have yet.
    #[serde(default)]
    pub cron: Vec<CronManifest>,
    /// Autoscaling (`autoscale: {min: 1, max: 10, rps-per-instance: 200, p99: 300ms}`); a
    /// platform field. A push sets it as the app's policy after the push.
    #[serde(default)]
    pub autoscale: Option<AutoscaleManifest>,
    /// Labels a node must carry to run the app (`placement-labels: {disk: ssd}`); a platform
    /// field, not Cloud Foundry's. Absent: the app keeps the labels it has.
    #[serde(default, rename = "placement-labels", deserialize_with = "label_map")]
    pub placement_labels: Option<BTreeMap<String, String>>,
    /// Cloud Foundry's `log-rate-limit-per-second` (`1K`, `16M`, `-1` for the platform default),
    /// checked here and kept as written. Absent: the app keeps the limit it has.
    #[serde(
        default,
        rename = "log-rate-limit-per-second",
        deserialize_with = "log_rate_limit"
    )]
    pub log_rate_limit_per_second: Option<String>,
    /// The stack by name (`trixie`, `bookworm`, or Cloud Foundry's `cflinuxfs4`/`cflinuxfs3`),
    /// kept as its canonical name; an unknown one is an error naming the known ones.
    #[serde(default, deserialize_with = "stack")]
    pub stack: Option<String>,
    /// Issue 23: `strategy: canary|bluegreen|rolling` and its settings (`steps: [10, 50, 100]`
    /// or `"10,50,100"`, `step-wait: 60s` or `pause`, `max-error-rate: 5%`,
    /// `max-p99-increase: 50%`, `min-requests: 50`, `grace: 60s`), platform fields, parsed by
    /// [`crate::deployment::StrategyInput`] (see [`AppManifest::strategy_input`]).
    #[serde(default, deserialize_with = "scalar")]
    pub strategy: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    pub steps: Option<String>,
    #[serde(default, rename = "step-wait", deserialize_with = "scalar")]
    pub step_wait: Option<String>,
    #[serde(default, rename = "max-error-rate", deserialize_with = "scalar")]
    pub max_error_rate: Option<String>,
    #[serde(default, rename = "max-p99-increase", deserialize_with = "scalar")]
    pub max_p99_increase: Option<String>,
    #[serde(default, rename = "min-requests", deserialize_with = "scalar")]
    pub min_requests: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    pub grace: Option<String>,
    /// Cloud Foundry's `sidecars:` (name, process_types, command, memory). Absent: a push keeps
    /// the app's current sidecars; `[]` removes them.
    #[serde(default)]
    pub sidecars: Option<Vec<SidecarManifest>>,
}

/// One entry of `sidecars:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SidecarManifest {
    pub name: String,
    /// Default `[web]`.
    #[serde(default)]
    pub process_types: Vec<String>,
    #[serde(default)]
    pub command: String,
    #[serde(default, deserialize_with = "memory")]
    pub memory: Option<u64>,
}

impl SidecarManifest {
    pub fn to_sidecar(&self) -> crate::api::Sidecar {
        crate::api::Sidecar {
            name: self.name.clone(),
            process_types: if self.process_types.is_empty() {
                vec!["web".into()]
            } else {
                self.process_types.clone()
            },
            command: self.command.clone(),
            memory_mb: self.memory,
        }
    }
}

/// A scalar (or a list of numbers, joined by commas) as text: the strategy fields accept
/// `60s` and `60`, `[10, 50, 100]` and `"10,50,100"`.
fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        N(u64),
        F(f64),
        L(Vec<u64>),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|v| match v {
        Scalar::S(s) => s,
        Scalar::N(n) => n.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::L(l) => l.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
    }))
}

fn stack<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let Some(name) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    crate::stack::resolve(&name)
        .map(|s| Some(s.to_string()))
        .map_err(|e| de::Error::custom(format!("stack: {e}")))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RouteEntry {
    pub route: String,
}

/// One entry of `services:`: a service instance's name, or Cloud Foundry's `{name: NAME}` form.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ServiceEntry {
    Name(String),
    Object { name: String },
}

impl ServiceEntry {
    pub fn name(&self) -> &str {
        match self {
            ServiceEntry::Name(n) | ServiceEntry::Object { name: n } => n,
        }
    }
}

/// The health-check fields an app or a process may state, in Cloud Foundry's spelling. Inlined
/// into [`AppManifest`] and [`ProcessManifest`] rather than `#[serde(flatten)]`, because
/// flattening buffers the map and loses the line of a bad value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthFields {
    pub health_check_type: Option<String>,
    pub health_check_http_endpoint: Option<String>,
    pub health_check_invocation_timeout: Option<u64>,
    pub timeout: Option<u64>,
    pub readiness_health_check_type: Option<String>,
    pub readiness_health_check_http_endpoint: Option<String>,
    pub readiness_health_check_invocation_timeout: Option<u64>,
    pub readiness_health_check_interval: Option<u64>,
}

macro_rules! health_of {
    ($s:expr) => {
        HealthFields {
            health_check_type: $s.health_check_type.clone(),
            health_check_http_endpoint: $s.health_check_http_endpoint.clone(),
            health_check_invocation_timeout: $s.health_check_invocation_timeout,
            timeout: $s.timeout,
            readiness_health_check_type: $s.readiness_health_check_type.clone(),
            readiness_health_check_http_endpoint: $s.readiness_health_check_http_endpoint.clone(),
            readiness_health_check_invocation_timeout: $s.readiness_health_check_invocation_timeout,
            readiness_health_check_interval: $s.readiness_health_check_interval,
        }
    };
}

impl AppManifest {
    /// The strategy fields as written, for [`crate::deployment::StrategyInput::parse`].
    pub fn strategy_input(&self) -> crate::deployment::StrategyInput {
        crate::deployment::StrategyInput {
            strategy: self.strategy.clone(),
            steps: self.steps.clone(),
            step_wait: self.step_wait.clone(),
            max_error_rate: self.max_error_rate.clone(),
            max_p99_increase: self.max_p99_increase.clone(),
            min_requests: self.min_requests.clone(),
            grace: self.grace.clone(),
        }
    }

    pub fn health(&self) -> HealthFields {
        health_of!(self)
    }

    /// The buildpacks to stage with: `buildpacks:`, else the single `buildpack:`.
    pub fn all_buildpacks(&self) -> Vec<String> {
        if self.buildpacks.is_empty() {
            self.buildpack.iter().cloned().collect()
        } else {
            self.buildpacks.clone()
        }
    }

    /// The sidecars as the push sends them (`None`: the manifest says nothing about sidecars).
    pub fn sidecar_list(&self) -> Option<Vec<crate::api::Sidecar>> {
        self.sidecars
            .as_ref()
            .map(|l| l.iter().map(SidecarManifest::to_sidecar).collect())
    }

    /// The name to push under: the manifest's, else `given` (NAME on the command line).
    pub fn name_or(&self, given: Option<&AppName>) -> Option<AppName> {
        self.name.clone().or_else(|| given.cloned())
    }
}

impl HealthFields {
    /// The wire form, or `None` when the manifest states nothing about health.
    pub fn to_settings(&self) -> Option<HealthCheckSettings> {
        let s = HealthCheckSettings {
            check_type: self.health_check_type.clone(),
            http_endpoint: self.health_check_http_endpoint.clone(),
            invocation_timeout_secs: self.health_check_invocation_timeout,
            start_timeout_secs: self.timeout,
            readiness_type: self.readiness_health_check_type.clone(),
            readiness_http_endpoint: self.readiness_health_check_http_endpoint.clone(),
            readiness_invocation_timeout_secs: self.readiness_health_check_invocation_timeout,
            readiness_interval_secs: self.readiness_health_check_interval,
        };
        (s != HealthCheckSettings::default()).then_some(s)
    }
}

/// One entry of `cron` (the manifest's, or `app.json`'s as Dokku reads it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CronManifest {
    pub schedule: String,
    pub command: String,
}

/// `autoscale:` of an application, as `paas autoscale` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AutoscaleManifest {
    pub min: u32,
    pub max: u32,
    #[serde(default)]
    pub cpu: Option<u32>,
    #[serde(default)]
    pub rps_per_instance: Option<u32>,
    /// `300ms`, `1s`, or a number of milliseconds.
    #[serde(default, deserialize_with = "duration_millis")]
    pub p99: Option<u32>,
    /// `60s`, `2m`, or a number of seconds.
    #[serde(default, deserialize_with = "duration_secs")]
    pub scale_out_cooldown: Option<u32>,
    #[serde(default, deserialize_with = "duration_secs")]
    pub scale_in_cooldown: Option<u32>,
}

impl AutoscaleManifest {
    pub fn request(&self) -> crate::api::AutoscaleRequest {
        crate::api::AutoscaleRequest {
            min_instances: self.min,
            max_instances: self.max,
            cpu_percent: self.cpu,
            rps_per_instance: self.rps_per_instance,
            p99_ms: self.p99,
            scale_out_cooldown_secs: self.scale_out_cooldown,
            scale_in_cooldown_secs: self.scale_in_cooldown,
        }
    }
}

/// A duration written as text (`300ms`) or a bare number.
fn duration_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(f64),
        Text(String),
    }
    Ok(Option::<NumOrText>::deserialize(d)?.map(|v| match v {
        NumOrText::Num(n) => n.to_string(),
        NumOrText::Text(t) => t,
    }))
}

fn duration_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    duration_text(d)?
        .map(|t| crate::domain::parse_millis(&t).map_err(de::Error::custom))
        .transpose()
}

fn duration_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    duration_text(d)?
        .map(|t| crate::domain::parse_secs(&t).map_err(de::Error::custom))
        .transpose()
}

/// The `cron` entries of a Dokku `app.json` (`{"cron": [{"command": .., "schedule": ..}]}`);
/// other fields are not read.
pub fn app_json_cron(text: &str) -> Result<Vec<CronManifest>, String> {
    #[derive(Deserialize)]
    struct AppJson {
        #[serde(default)]
        cron: Vec<CronManifest>,
    }
    serde_json::from_str::<AppJson>(text)
        .map(|a| a.cron)
        .map_err(|e| format!("app.json: {e}"))
}

/// One entry of `processes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ProcessManifest {
    #[serde(rename = "type")]
    pub process_type: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default, deserialize_with = "count")]
    pub instances: Option<u32>,
    #[serde(default, deserialize_with = "memory")]
    pub memory: Option<u64>,
    #[serde(default, deserialize_with = "disk_quota")]
    pub disk_quota: Option<u64>,

    #[serde(default, rename = "health-check-type", deserialize_with = "check_type")]
    pub health_check_type: Option<String>,
    #[serde(default, rename = "health-check-http-endpoint")]
    pub health_check_http_endpoint: Option<String>,
    #[serde(
        default,
        rename = "health-check-invocation-timeout",
        deserialize_with = "count_u64"
    )]
    pub health_check_invocation_timeout: Option<u64>,
    #[serde(default, deserialize_with = "count_u64")]
    pub timeout: Option<u64>,
    #[serde(
        default,
        rename = "readiness-health-check-type",
        deserialize_with = "check_type"
    )]
    pub readiness_health_check_type: Option<String>,
    #[serde(default, rename = "readiness-health-check-http-endpoint")]
    pub readiness_health_check_http_endpoint: Option<String>,
    #[serde(
        default,
        rename = "readiness-health-check-invocation-timeout",
        deserialize_with = "count_u64"
    )]
    pub readiness_health_check_invocation_timeout: Option<u64>,
    #[serde(
        default,
        rename = "readiness-health-check-interval",
        deserialize_with = "count_u64"
    )]
    pub readiness_health_check_interval: Option<u64>,
}

impl ProcessManifest {
    pub fn to_settings(&self) -> ProcessSettings {
        ProcessSettings {
            process_type: self.process_type.clone(),
            command: self.command.clone(),
            instances: self.instances,
            memory_mb: self.memory,
            disk_mb: self.disk_quota,
            health: health_of!(self).to_settings(),
        }
    }
}

#[derive(Deserialize)]
struct Top {
    #[serde(default)]
    applications: Vec<AppManifest>,
    /// Cloud Foundry's manifest schema version; accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<serde_norway::Value>,
}

/// Parses manifest text. Errors carry the line; warnings list every field that was ignored.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let (top, warnings): (Top, _) = deserialize_with_warnings(text)?;
    if top.applications.is_empty() {
        return Err(ManifestError {
            line: None,
            message: "the manifest lists no `applications`".into(),
        });
    }
    check_applications(text, &top.applications, top.applications.len() > 1)?;
    Ok(Manifest {
        applications: top.applications,
        warnings,
    })
}

/// Deserializes YAML (or JSON, which YAML reads too) into `T`: an error carries the line of the
/// offending value; every field `T` does not know is a warning, by its path.
pub(crate) fn deserialize_with_warnings<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<(T, Vec<String>), ManifestError> {
    let mut warnings = Vec::new();
    let de = serde_norway::Deserializer::from_str(text);
    let value: T = serde_ignored::deserialize(de, |path| {
        warnings.push(format!(
            "unknown field {} ignored",
            cf_path(&path.to_string())
        ));
    })
    .map_err(|e| {
        let message = strip_location(&e.to_string());
        let line = e.location().map(|l| refine_line(text, l.line(), &message));
        ManifestError { line, message }
    })?;
    Ok((value, warnings))
}

/// The checks serde cannot make on a list of applications: unique names (every app named when
/// `need_names`), route flags that exclude each other, process types unique and not empty.
pub(crate) fn check_applications(
    text: &str,
    applications: &[AppManifest],
    need_names: bool,
) -> Result<(), ManifestError> {
    let mut seen = std::collections::HashSet::new();
    for (i, a) in applications.iter().enumerate() {
        let name = match &a.name {
            Some(n) => n.as_str().to_string(),
            None if need_names => {
                return Err(ManifestError {
                    line: None,
                    message: format!(
                        "applications[{i}]: name: missing (a manifest of several apps names each)"
                    ),
                })
            }
            None => String::new(),
        };
        if !seen.insert(name.clone()) {
            return Err(ManifestError {
                line: line_of(text, &name),
                message: format!("application {name} is listed twice"),
            });
        }
        if a.random_route && a.no_route {
            return Err(ManifestError {
                line: line_of(text, "random-route"),
                message: format!("applications[{i}]: random-route and no-route exclude each other"),
            });
        }
        let mut types = std::collections::HashSet::new();
        for p in &a.processes {
            if p.process_type.is_empty() || !types.insert(p.process_type.clone()) {
                return Err(ManifestError {
                    line: line_of(text, &p.process_type),
                    message: format!(
                        "applications.{name}.processes: process type {:?} is empty or listed twice",
                        p.process_type
                    ),
                });
            }
        }
        check_manifest_sidecars(text, &name, a)?;
    }
    Ok(())
}

/// An app's `sidecars:` checked on their own and against what the manifest itself says about
/// the app's memory. Process types are checked by the controller, which knows the droplet's
/// Procfile too.
fn check_manifest_sidecars(text: &str, name: &str, a: &AppManifest) -> Result<(), ManifestError> {
    let Some(list) = a.sidecar_list() else {
        return Ok(());
    };
    let at = |needle: &str| {
        text.lines()
            .position(|l| l.trim_start().starts_with("sidecars:"))
            .and_then(|start| {
                text.lines()
                    .enumerate()
                    .skip(start)
                    .find(|(_, l)| {
                        let t = l.trim_start().trim_start_matches("- ").trim_end();
                        t == format!("name: {needle}")
                    })
                    .map(|(i, _)| i + 1)
            })
            .or_else(|| line_of(text, "sidecars:"))
    };
    let fail = |needle: &str, m: String| ManifestError {
        line: at(needle),
        message: format!("applications.{name}.sidecars: {m}"),
    };
    if let Err(m) = crate::api::check_sidecars(&list) {
        let who = list
            .iter()
            .find(|s| m.contains(&format!("sidecar {}", s.name)))
            .map(|s| s.name.clone())
            .unwrap_or_else(|| "sidecars:".into());
        return Err(fail(&who, m));
    }
    let memory_of = |t: &str| {
        if t == "web" {
            return a.memory;
        }
        a.processes
            .iter()
            .find(|p| p.process_type == t)
            .and_then(|p| p.memory)
            .or(a.memory)
    };
    for s in &list {
        for t in &s.process_types {
            let Some(memory) = memory_of(t) else { continue };
            let taken = crate::api::sidecar_memory_mb(&list, t);
            if taken >= memory {
                return Err(fail(
                    &s.name,
                    format!(
                        "the sidecars of process type {t} take {taken} MB of its {memory} MB per instance, which leaves the process nothing: give the sidecars less memory or the process more"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// serde_ignored's `applications.0.stack` as `applications[0].stack`.
fn cf_path(p: &str) -> String {
    let mut out = String::new();
    for (i, part) in p.split('.').enumerate() {
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// The parser appends " at line L column C"; the line is reported on its own.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A value our own checks refuse is reported by the parser at the start of its mapping; the
/// message starts with the field (`applications[0]: memory: ...`), so find that field's line at
/// or after the mapping's.
fn refine_line(text: &str, line: usize, message: &str) -> usize {
    let after_path = message
        .split_once(": ")
        .map(|(_, rest)| rest)
        .unwrap_or(message);
    let Some((field, _)) = after_path.split_once(": ") else {
        return line;
    };
    if field.is_empty()
        || !field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return line;
    }
    let key = format!("{field}:");
    text.lines()
        .enumerate()
        .skip(line.saturating_sub(1))
        .find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&key)
        })
        .map(|(i, _)| i + 1)
        .unwrap_or(line)
}

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// A YAML scalar as text: CF manifests write `PORT: 8080` and `DEBUG: true` in `env`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    S(String),
    I(i64),
    F(f64),
    B(bool),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        }
    }
}

fn app_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AppName>, D::Error> {
    let Some(s) = Option::<Scalar>::deserialize(d)? else {
        return Ok(None);
    };
    AppName::parse(&s.text())
        .map(Some)
        .map_err(|m| de::Error::custom(format!("name: {m}")))
}

fn flag<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<bool, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(false),
        Some(Scalar::B(b)) => Ok(b),
        Some(Scalar::S(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(other) => Err(de::Error::custom(format!(
            "{key}: must be true or false, not {:?}",
            other.text()
        ))),
    }
}

fn random_route<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    flag(d, "random-route")
}

fn no_route<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    flag(d, "no-route")
}

fn one_buildpack<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let Some(n) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    buildpack_name(&n)
        .map(|b| Some(b.to_string()))
        .ok_or_else(|| {
            de::Error::custom(format!(
                "buildpack: unknown buildpack {n:?}: known are {}",
                BUILTIN_BUILDPACKS.join(", ")
            ))
        })
}

/// Replaces Cloud Foundry's `((name))` variables in manifest text with `vars` (from `--var
/// k=v` and `--vars-file`), before it is parsed. A variable without a value is an error naming
/// it and its line, as `cf push` refuses such a manifest.
pub fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> Result<String, ManifestError> {
    let mut out = String::with_capacity(text.len());
    let mut missing: Vec<(usize, String)> = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("((") {
            let Some(len) = rest[start + 2..].find("))") else {
                break;
            };
            let name = &rest[start + 2..start + 2 + len];
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
            out.push_str(&rest[..start]);
            match vars.get(name.trim()) {
                Some(v) if valid => out.push_str(v),
                _ if !valid => out.push_str(&rest[start..start + 4 + len]),
                _ => {
                    missing.push((n + 1, name.to_string()));
                    out.push_str(&rest[start..start + 4 + len]);
                }
            }
            rest = &rest[start + 4 + len..];
        }
        out.push_str(rest);
    }
    match missing.first() {
        None => Ok(out),
        Some((line, _)) => Err(ManifestError {
            line: Some(*line),
            message: format!(
                "no value for {}: give it with --var NAME=VALUE or --vars-file",
                missing
                    .iter()
                    .map(|(_, n)| format!("(({n}))"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// A `--vars-file`: a YAML mapping of names to scalar values.
pub fn parse_vars(text: &str) -> Result<BTreeMap<String, String>, ManifestError> {
    let map: Option<BTreeMap<String, Scalar>> =
        serde_norway::from_str(text).map_err(|e| ManifestError {
            line: e.location().map(|l| l.line()),
            message: format!(
                "a vars file is a mapping of names to values: {}",
                strip_location(&e.to_string())
            ),
        })?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.text()))
        .collect())
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = Option::<i64>::deserialize(d)?;
    match n {
        None => Ok(None),
        Some(n) if (0..=100).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(de::Error::custom(format!(
            "instances: must be from 0 to 100, not {n}"
        ))),
    }
}

fn count_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = Option::<i64>::deserialize(d)?;
    match n {
        None => Ok(None),
        Some(n) if n > 0 => Ok(Some(n as u64)),
        Some(n) => Err(de::Error::custom(format!(
            "timeout: must be a positive number of seconds, not {n}"
        ))),
    }
}

fn memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size_mb(d).map_err(|e| de::Error::custom(format!("memory: {e}")))
}

fn disk_quota<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size_mb(d).map_err(|e| de::Error::custom(format!("disk_quota: {e}")))
}

fn log_rate_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let Some(v) = Option::<Scalar>::deserialize(d)? else {
        return Ok(None);
    };
    let text = v.text();
    crate::domain::parse_log_rate_limit(&text)
        .map_err(|e| de::Error::custom(format!("log-rate-limit-per-second: {e}")))?;
    Ok(Some(text))
}

fn size_mb<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::I(n)) if n > 0 => parse_memory_mb(&format!("{n}M"))
            .map(Some)
            .map_err(de::Error::custom),
        Some(Scalar::S(s)) => parse_memory_mb(&s).map(Some).map_err(de::Error::custom),
        Some(other) => Err(de::Error::custom(format!(
            "invalid size {:?}: use e.g. 256M or 1G",
            other.text()
        ))),
    }
}

/// A health check type as Cloud Foundry spells it (`none` is its older name for `port`), for
/// the manifest and `paas push -u` alike.
pub fn health_check_type(s: &str) -> Result<&'static str, String> {
    match s {
        "port" | "none" => Ok("port"),
        "http" => Ok("http"),
        "process" => Ok("process"),
        other => Err(format!(
            "unknown health check type {other:?}: use port, http or process"
        )),
    }
}

fn check_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    health_check_type(&s)
        .map(|t| Some(t.to_string()))
        .map_err(|m| de::Error::custom(format!("health-check-type: {m}")))
}

fn buildpacks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .into_iter()
        .map(|n| {
            buildpack_name(&n).map(str::to_string).ok_or_else(|| {
                de::Error::custom(format!(
                    "buildpacks: unknown buildpack {n:?}: known are {}",
                    BUILTIN_BUILDPACKS.join(", ")
                ))
            })
        })
        .collect()
}

fn env_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let m = Option::<BTreeMap<String, Scalar>>::deserialize(d)?;
    Ok(m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.text()))
        .collect())
}

fn label_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    env_map(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CF: &str = "---
version: 1
applications:
- name: web-one
  instances: 2
  memory: 256M
  disk_quota: 1G
  command: python3 app.py
  buildpacks:
  - python_buildpack
  env:
    GREETING: hi
    WORKERS: 4
    DEBUG: true
  routes:
  - route: web-one.example.com
  path: ./one
  health-check-type: http
  health-check-http-endpoint: /health
  health-check-invocation-timeout: 5
  timeout: 90
  readiness-health-check-type: http
  readiness-health-check-http-endpoint: /ready
  stack: cflinuxfs4
  processes:
  - type: worker
    command: python3 worker.py
    instances: 1
    memory: 128M
- name: web-two
  memory: 512
  log-rate-limit-per-second: 16M
  placement-labels:
    disk: ssd
    rack: 7
";

    #[test]
    fn a_cloud_foundry_manifest_as_it_is() {
        let m = parse(CF).unwrap();
        assert_eq!(m.applications.len(), 2);
        let a = &m.applications[0];
        assert_eq!(a.name.as_ref().unwrap().as_str(), "web-one");
        assert_eq!(a.instances, Some(2));
        assert_eq!(a.memory, Some(256));
        assert_eq!(a.disk_quota, Some(1024));
        assert_eq!(a.buildpacks, vec!["python".to_string()]);
        assert_eq!(a.env["WORKERS"], "4");
        assert_eq!(a.env["DEBUG"], "true");
        assert_eq!(a.routes[0].route, "web-one.example.com");
        assert_eq!(a.path.as_deref(), Some(std::path::Path::new("./one")));
        let h = a.health().to_settings().unwrap();
        assert_eq!(h.check_type.as_deref(), Some("http"));
        assert_eq!(h.http_endpoint.as_deref(), Some("/health"));
        assert_eq!(h.invocation_timeout_secs, Some(5));
        assert_eq!(h.start_timeout_secs, Some(90));
        assert_eq!(h.readiness_http_endpoint.as_deref(), Some("/ready"));
        assert_eq!(a.processes[0].to_settings().memory_mb, Some(128));
        assert_eq!(
            m.applications[1].memory,
            Some(512),
            "a bare number is megabytes"
        );
        assert_eq!(a.placement_labels, None);
        assert_eq!(a.log_rate_limit_per_second, None);
        assert_eq!(
            m.applications[1].log_rate_limit_per_second.as_deref(),
            Some("16M")
        );
        let labels = m.applications[1].placement_labels.clone().unwrap();
        assert_eq!(labels["disk"], "ssd");
        assert_eq!(labels["rack"], "7");
        assert_eq!(a.stack.as_deref(), Some("trixie"), "cflinuxfs4 is trixie");
        assert_eq!(m.applications[1].stack, None);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let e = err("applications:\n- name: a\n  stack: windows2016\n").to_string();
        assert!(
            e.contains("stack: unknown stack") && e.contains("bookworm"),
            "{e}"
        );
    }

    fn err(text: &str) -> ManifestError {
        parse(text).expect_err("must be refused")
    }

    #[test]
    fn memory_lots_names_field_and_line() {
        let e = err("applications:\n- name: a\n  memory: lots\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(
            e.message.contains("memory") && e.message.contains("lots"),
            "{e}"
        );
    }

    #[test]
    fn log_rate_limits_are_checked_with_their_line() {
        let m = parse("applications:\n- name: a\n  log-rate-limit-per-second: -1\n").unwrap();
        assert_eq!(
            m.applications[0].log_rate_limit_per_second.as_deref(),
            Some("-1")
        );
        let e = err("applications:\n- name: a\n  log-rate-limit-per-second: lots\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(
            e.message.contains("log-rate-limit-per-second") && e.message.contains("lots"),
            "{e}"
        );
    }

    #[test]
    fn negative_instances() {
        let e = err("applications:\n- name: a\n  instances: -1\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(
            e.message.contains("instances") && e.message.contains("-1"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types() {
        let e = err("applications:\n- name: a\n  instances: many\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("instances"), "{e}");
        let e = err("applications:\n- name: a\n  env: [A, B]\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("env"), "{e}");
        let e = err("applications:\n- name: a\n  routes: web.example.com\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("routes"), "{e}");
        let e =
            err("applications:\n- name: a\n  processes:\n  - type: worker\n    instances: {}\n");
        assert_eq!(e.line, Some(5), "{e}");
        let e = err("applications: yes\n");
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn autoscale_with_durations_as_text_or_numbers() {
        let m = parse(
            "applications:\n- name: a\n  autoscale:\n    min: 1\n    max: 5\n    rps-per-instance: 200\n    p99: 300ms\n    scale-out-cooldown: 30\n    scale-in-cooldown: 5m\n",
        )
        .unwrap();
        let r = m.applications[0].autoscale.as_ref().unwrap().request();
        assert_eq!(
            (
                r.min_instances,
                r.max_instances,
                r.rps_per_instance,
                r.p99_ms
            ),
            (1, 5, Some(200), Some(300))
        );
        assert_eq!(
            (
                r.scale_out_cooldown_secs,
                r.scale_in_cooldown_secs,
                r.cpu_percent
            ),
            (Some(30), Some(300), None)
        );
        let bad = parse(
            "applications:\n- name: a\n  autoscale:\n    min: 1\n    max: 5\n    p99: soon\n",
        );
        assert!(bad.is_err());
    }

    #[test]
    fn cron_entries_from_the_manifest_and_app_json() {
        let m = parse(
            "applications:\n- name: a\n  cron:\n  - schedule: \"*/5 * * * *\"\n    command: ./report\n",
        )
        .unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(
            m.applications[0].cron,
            vec![CronManifest {
                schedule: "*/5 * * * *".into(),
                command: "./report".into()
            }]
        );
        let c = app_json_cron(r#"{"name": "x", "cron": [{"command": "a", "schedule": "@daily"}]}"#)
            .unwrap();
        assert_eq!(
            (c[0].command.as_str(), c[0].schedule.as_str()),
            ("a", "@daily")
        );
        assert!(app_json_cron("{}").unwrap().is_empty());
        assert!(app_json_cron("not json").is_err());
    }

    #[test]
    fn unknown_buildpack() {
        let e = err("applications:\n- name: a\n  buildpacks:\n  - cobol_buildpack\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(
            e.message.contains("unknown buildpack \"cobol_buildpack\""),
            "{e}"
        );
    }

    #[test]
    fn bad_names_and_values() {
        let e = err("applications:\n- name: Bad/Name\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("invalid app name"), "{e}");
        let e = err("applications:\n- name: a\n  health-check-type: ping\n");
        assert!(e.message.contains("health check type"), "{e}");
        let e = err("applications:\n- name: a\n  timeout: 0\n");
        assert!(e.message.contains("timeout"), "{e}");
        let e = err("applications:\n- instances: 1\n- name: b\n");
        assert!(e.message.contains("name: missing"), "{e}");
        assert!(err("applications: []\n")
            .message
            .contains("no `applications`"));
        assert!(err("applications:\n- name: a\n- name: a\n")
            .message
            .contains("twice"));
        assert!(err(": : :\n  - [").line.is_some());
    }

    #[test]
    fn sidecars_are_read_and_checked_with_their_line() {
        let m = parse(
            "applications:\n- name: a\n  memory: 256M\n  sidecars:\n  - name: config-server\n    process_types: [web]\n    command: ./config-server\n    memory: 64M\n  - name: helper\n    command: ./helper\n",
        )
        .unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let s = m.applications[0].sidecar_list().unwrap();
        assert_eq!(s[0].name, "config-server");
        assert_eq!(s[0].memory_mb, Some(64));
        assert_eq!(
            s[1].process_types,
            vec!["web".to_string()],
            "web by default"
        );
        assert_eq!(s[1].memory_mb, None);
        assert_eq!(
            parse("applications:\n- name: a\n").unwrap().applications[0].sidecar_list(),
            None
        );
        let e = err("applications:\n- name: a\n  memory: 128M\n  sidecars:\n  - name: big\n    command: x\n    memory: 128M\n");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("take 128 MB of its 128 MB"), "{e}");
        let e = err("applications:\n- name: a\n  sidecars:\n  - name: s\n    command: x\n  - name: s\n    command: y\n");
        assert!(e.message.contains("listed twice"), "{e}");
        let e = err("applications:\n- name: a\n  sidecars:\n  - name: s\n    command: ''\n");
        assert!(e.message.contains("command"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");
        let e = err("applications:\n- name: a\n  sidecars:\n  - name: s\n    command: x\n    memory: lots\n");
        assert_eq!(e.line, Some(6), "{e}");
    }

    #[test]
    fn buildpack_aliases() {
        assert_eq!(buildpack_name("nodejs_buildpack"), Some("node"));
        assert_eq!(buildpack_name("staticfile_buildpack"), Some("staticfile"));
        assert_eq!(buildpack_name("binary"), Some("binary"));
        assert_eq!(buildpack_name("cobol"), None);
    }

    /// A Cloud Foundry sample's manifest as written: a display name with capitals, a random
    /// route, the older single `buildpack:`, and keys this platform does not use.
    #[test]
    fn a_cf_sample_manifest_as_written() {
        let m = parse(
            "---\napplications:\n- name: GetStartedPython\n  random-route: true\n  memory: 128M\n  buildpack: python_buildpack\n  services:\n  - mydb\n  timeout: 120\n  health-check-invocation-timeout: 3\n",
        )
        .unwrap();
        let a = &m.applications[0];
        assert_eq!(a.name.as_ref().unwrap().as_str(), "GetStartedPython");
        assert!(a.random_route && !a.no_route);
        assert_eq!(a.all_buildpacks(), vec!["python".to_string()]);
        let h = a.health().to_settings().unwrap();
        assert_eq!(h.start_timeout_secs, Some(120));
        assert_eq!(h.invocation_timeout_secs, Some(3));
        assert_eq!(a.services, vec![ServiceEntry::Name("mydb".into())]);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn one_app_without_a_name_takes_the_command_lines() {
        let m = parse("applications:\n- memory: 64M\n  no-route: true\n").unwrap();
        let a = &m.applications[0];
        assert_eq!(a.name, None);
        assert!(a.no_route);
        let given = AppName::parse("worker").unwrap();
        assert_eq!(a.name_or(Some(&given)), Some(given));
    }

    #[test]
    fn route_flags_name_their_key() {
        let e = err("applications:\n- name: a\n  random-route: maybe\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(
            e.message.contains("random-route") && e.message.contains("maybe"),
            "{e}"
        );
        let e = err("applications:\n- name: a\n  no-route: 1\n");
        assert!(e.message.contains("no-route"), "{e}");
        let e = err("applications:\n- name: a\n  random-route: true\n  no-route: true\n");
        assert!(e.message.contains("exclude"), "{e}");
        let e = err("applications:\n- name: a\n  buildpack: cobol\n");
        assert!(e.message.contains("buildpack: unknown"), "{e}");
    }

    #[test]
    fn vars_are_interpolated_before_parsing() {
        let text = "applications:\n- name: ((app))\n  instances: ((count))\n  env:\n    URL: https://((host))/x\n";
        let vars: BTreeMap<String, String> =
            parse_vars("app: My App\ncount: 2\nhost: db.example\n").unwrap();
        let m = parse(&interpolate(text, &vars).unwrap()).unwrap();
        let a = &m.applications[0];
        assert_eq!(a.name.as_ref().unwrap().as_str(), "My App");
        assert_eq!(a.instances, Some(2));
        assert_eq!(a.env["URL"], "https://db.example/x");
        let mut partial = vars.clone();
        partial.remove("host");
        let e = interpolate(text, &partial).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("((host))"), "{e}");
        assert!(parse_vars("- a\n- b\n").is_err());
    }
}
