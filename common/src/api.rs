//! REST DTOs under `/v1`, used by the CLI, the dashboard and CI pipelines.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    /// A short-lived bearer JWT for `Authorization: Bearer ...` (the access token).
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// Opaque and single-use: `POST /v1/auth/refresh` trades it for a new access token and a new
    /// refresh token. Absent from servers before refresh tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_expires_at: Option<DateTime<Utc>>,
}

/// `POST /v1/auth/refresh` and `POST /v1/auth/logout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// One JWT signing key (`GET /v1/admin/keys`); the secret never leaves the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningKeyInfo {
    /// The `kid` in the header of every token it signed.
    pub kid: String,
    /// Whether it signs new tokens (exactly one key does).
    pub active: bool,
    pub created_at: DateTime<Utc>,
    /// When it stopped signing; it verifies login tokens for one token lifetime after.
    pub retired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningKeyList {
    pub keys: Vec<SigningKeyInfo>,
}

/// What the user asked for: the app should run or not.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    Started,
    Stopped,
}

impl AppState {
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Started => "started",
            AppState::Stopped => "stopped",
        }
    }
}

/// The actual state of one instance, as last reported by its node (or `pending` while the
/// scheduler has not placed it yet).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Desired, but not yet placed on a node or not yet reported by it.
    Pending,
    /// Container created and started; health check not yet passed.
    Starting,
    /// Health check passed; the router sends traffic here.
    Running,
    /// The process exited or failed its health check; the node restarts it with backoff.
    Crashed,
    /// Being stopped (removed from routes first).
    Stopping,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Crashed => "crashed",
            InstanceState::Stopping => "stopping",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => InstanceState::Pending,
            "starting" => InstanceState::Starting,
            "running" => InstanceState::Running,
            "crashed" => InstanceState::Crashed,
            "stopping" => InstanceState::Stopping,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceInfo {
    pub index: u32,
    /// The revision this instance runs.
    #[serde(default)]
    pub revision: Option<i64>,
    pub state: InstanceState,
    /// Node name, once placed.
    pub node: Option<String>,
    /// `host:port` the instance is published on, once started.
    pub address: Option<String>,
    /// The instance's IPv4 address on its node's instance network, once started: what
    /// `NAME.apps.internal` resolves to (issue 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub restarts: u32,
    /// Why the last run ended: "exited with code 1", "OOM-killed", "health check failed".
    pub last_exit: Option<String>,
    /// Why the instance is not placed, when it is pending (e.g. no node is available).
    pub placement_error: Option<String>,
    /// When the instance entered its current state.
    pub since: Option<DateTime<Utc>>,
    /// Resource use last sampled by the node, when it is running.
    #[serde(default)]
    pub usage: Option<InstanceUsage>,
    /// The process type this instance runs (`web`, `worker`, ...).
    #[serde(default = "web_process")]
    pub process_type: String,
    /// Whether a running instance passes its readiness check, i.e. the router sends it traffic
    /// (Cloud Foundry's `routable`). A `running` instance with `ready: false` keeps running and
    /// is not restarted; it is out of the routes until its readiness check passes again.
    #[serde(default = "yes")]
    pub ready: bool,
    /// Being replaced: a rolling restart (or drain) started its successor and stops it once the
    /// successor runs. Its revision may be the current one, so only this tells old from new.
    #[serde(default)]
    pub retiring: bool,
}

fn web_process() -> String {
    "web".into()
}

fn yes() -> bool {
    true
}

/// One process type of an app's current revision, as `GET /v1/apps/NAME` shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessInfo {
    #[serde(rename = "type")]
    pub process_type: String,
    pub instances: u32,
    pub memory_mb: u64,
    pub command: String,
    /// `port`, `http` or `process`.
    pub health_check: String,
}

/// Resource use of one instance, sampled from the engine by its node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceUsage {
    /// Percent of one CPU core (200.0 = two cores busy).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Bytes written in the container's writable layer and app dir.
    pub disk_bytes: u64,
    /// Seconds since the container's current run started.
    pub uptime_secs: u64,
    pub sampled_at: Option<DateTime<Utc>>,
}

/// One app's metrics over a window (`GET /v1/apps/{name}/metrics`, issue 26).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppMetrics {
    /// Seconds each point covers.
    pub resolution_secs: u32,
    pub points: Vec<MetricPoint>,
    /// Deploys, restarts, rollbacks and crashes in the window, for the time axis.
    pub marks: Vec<MetricMark>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricPoint {
    /// The start of the interval.
    pub time: DateTime<Utc>,
    /// Requests the router answered in the interval.
    pub requests: u64,
    /// Of those, 5xx answers.
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// All instances' memory at the end of the interval.
    pub memory_bytes: u64,
    pub cpu_percent: f64,
    /// Restarts of the app's instances so far.
    pub restarts: u64,
    pub instances: Vec<InstanceMetric>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceMetric {
    pub index: u32,
    pub memory_bytes: u64,
    pub cpu_percent: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricMark {
    pub time: DateTime<Utc>,
    /// `deploy` or `crash`.
    pub kind: String,
    pub message: String,
}

/// `GET /v1/nodes/metrics`: each node's health over a window, one point per minute.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeMetrics {
    /// Seconds each point covers.
    pub resolution_secs: u32,
    pub nodes: Vec<NodeSeries>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeSeries {
    pub name: String,
    pub points: Vec<NodeMetricPoint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeMetricPoint {
    /// The start of the minute.
    pub time: DateTime<Utc>,
    /// ready | draining | drained | lost, as last seen in the minute.
    pub state: String,
    /// The longest time since the node's last heartbeat seen during the minute, seconds.
    pub lag_secs: f64,
    /// Memory the scheduler reserved there, MB.
    pub reserved_mb: u64,
    pub capacity_mb: u64,
    /// Instances placed there.
    pub instances: u64,
}

/// One entry of the audit trail (`GET /v1/apps/NAME/events`, `GET /v1/events`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventInfo {
    pub time: DateTime<Utc>,
    /// A user name, `USER (token NAME)` for what a CI token did, `node:NAME` or `platform`.
    pub actor: String,
    /// e.g. `app.push`, `app.rollback`, `app.delete`, `instance.crash`, `login`, `token.create`.
    pub kind: String,
    pub message: String,
    /// The app it concerns; absent for platform events (logins, tokens, keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventList {
    pub events: Vec<EventInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppSummary {
    pub name: String,
    pub state: AppState,
    pub desired_instances: u32,
    pub running_instances: u32,
    pub memory_mb: u64,
    pub revision: Option<i64>,
    pub url: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevisionInfo {
    pub number: i64,
    pub droplet: String,
    pub command: String,
    pub detected: String,
    pub created_at: DateTime<Utc>,
    /// The revision's sidecars (manifest `sidecars:`), which a rollback brings back with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<Sidecar>,
}

/// Memory a sidecar without `memory:` is given, carved out of its process's memory like a
/// stated one: each sidecar runs in its own container with its own limit, so one without a
/// limit could take the instance past the app's memory.
pub const DEFAULT_SIDECAR_MEMORY_MB: u64 = 64;

/// A sidecar (Cloud Foundry's manifest `sidecars:`): a helper process that runs beside each
/// instance of the named process types, from the same droplet with the same env, in the same
/// network namespace (its `localhost` is the app's), its memory counted in the instance's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sidecar {
    pub name: String,
    /// The process types it runs beside (`[web]` when the manifest names none).
    pub process_types: Vec<String>,
    /// Run with `/bin/sh -c` in `/app`, like the app's own command.
    pub command: String,
    /// Its memory limit; `None`: [`DEFAULT_SIDECAR_MEMORY_MB`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
}

impl Sidecar {
    /// The memory its container is limited to, carved out of the instance's.
    pub fn reserved_mb(&self) -> u64 {
        self.memory_mb.unwrap_or(DEFAULT_SIDECAR_MEMORY_MB)
    }

    pub fn runs_with(&self, process_type: &str) -> bool {
        self.process_types.iter().any(|t| t == process_type)
    }
}

/// The memory the sidecars of `process_type` take out of each of its instances.
pub fn sidecar_memory_mb(sidecars: &[Sidecar], process_type: &str) -> u64 {
    sidecars
        .iter()
        .filter(|s| s.runs_with(process_type))
        .map(Sidecar::reserved_mb)
        .sum()
}

/// Checks sidecars on their own: names (unique; letters, digits, `-`, `_`, `.`; they name a
/// container and a log source), non-empty commands and process types.
pub fn check_sidecars(sidecars: &[Sidecar]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for s in sidecars {
        let valid = !s.name.is_empty()
            && s.name.len() <= 63
            && s.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(format!(
                "sidecar name {:?}: use 1 to 63 letters, digits, '-', '_' or '.'",
                s.name
            ));
        }
        if !seen.insert(s.name.as_str()) {
            return Err(format!("sidecar {} is listed twice", s.name));
        }
        if s.command.trim().is_empty() {
            return Err(format!("sidecar {}: command: must not be empty", s.name));
        }
        if s.process_types.is_empty() || s.process_types.iter().any(|t| t.trim().is_empty()) {
            return Err(format!(
                "sidecar {}: process_types: name at least one process type",
                s.name
            ));
        }
        if s.memory_mb == Some(0) {
            return Err(format!("sidecar {}: memory: must be more than 0", s.name));
        }
    }
    Ok(())
}

/// Checks sidecars against the app: each process type they name must be one of `known`, and the
/// sidecars of each process type must leave its process some memory (`memory_of` gives a type's
/// memory per instance, when known).
pub fn check_sidecars_fit(
    sidecars: &[Sidecar],
    known: &[&str],
    memory_of: impl Fn(&str) -> Option<u64>,
) -> Result<(), String> {
    check_sidecars(sidecars)?;
    for s in sidecars {
        if let Some(t) = s
            .process_types
            .iter()
            .find(|t| !known.contains(&t.as_str()))
        {
            return Err(format!(
                "sidecar {}: process_types: unknown process type {t:?} (the app has {})",
                s.name,
                known.join(", ")
            ));
        }
    }
    let mut types: Vec<&str> = sidecars
        .iter()
        .flat_map(|s| s.process_types.iter().map(String::as_str))
        .collect();
    types.sort_unstable();
    types.dedup();
    for t in types {
        let Some(memory) = memory_of(t) else { continue };
        let taken = sidecar_memory_mb(sidecars, t);
        if taken >= memory {
            return Err(format!(
                "the sidecars of process type {t} take {taken} MB of its {memory} MB per instance, which leaves the process nothing: give the sidecars less memory or the process more (a sidecar without `memory` takes {DEFAULT_SIDECAR_MEMORY_MB} MB)"
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppDetail {
    pub name: String,
    pub state: AppState,
    pub url: String,
    pub desired_instances: u32,
    pub memory_mb: u64,
    pub revision: Option<RevisionInfo>,
    pub instances: Vec<InstanceInfo>,
    pub created_at: DateTime<Utc>,
    /// Process types of the current revision, `web` first (issue 3).
    #[serde(default)]
    pub processes: Vec<ProcessInfo>,
    pub updated_at: DateTime<Utc>,
    /// Labels a node must carry to run the app's instances (`paas push --placement KEY=VALUE`).
    #[serde(default)]
    pub placement_labels: std::collections::BTreeMap<String, String>,
    /// The developer's log rate limit in bytes per second per instance; `None`: the platform's
    /// default (each node's `PAAS_LOG_RATE_LIMIT_*`).
    #[serde(default)]
    pub log_rate_limit_bytes: Option<u64>,
    /// The stack the app stages and runs on: the last one a push named (`-s`, manifest
    /// `stack:`), kept until a push names another, as Cloud Foundry keeps an app's stack.
    #[serde(default)]
    pub stack: String,
    /// The service instances bound to the app, by name (issue 22).
    #[serde(default)]
    pub services: Vec<String>,
}

/// A log rate limit as a request gives it, like Cloud Foundry's `log-rate-limit-per-second`:
/// bytes per second per instance as a number (`1024`) or text (`"1K"`, `"16M"`), `-1` or `"-1"`
/// for the platform default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum LogRateLimit {
    Bytes(i64),
    Text(String),
}

impl LogRateLimit {
    /// Bytes per second, `None` for the platform default; see [`crate::domain::parse_log_rate_limit`].
    pub fn bytes(&self) -> Result<Option<u64>, String> {
        match self {
            LogRateLimit::Bytes(n) => crate::domain::parse_log_rate_limit(&n.to_string()),
            LogRateLimit::Text(t) => crate::domain::parse_log_rate_limit(t),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppList {
    pub apps: Vec<AppSummary>,
}

/// `GET /v1/info`: which controller answered and whether it runs the scheduler (issue 20).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ControllerInfo {
    /// The controller's random id for this run (the scheduler lease's holder).
    pub controller: String,
    /// Whether it holds the scheduler lease now (always true for the only controller on SQLite).
    pub leader: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub name: String,
    pub address: String,
    pub zone: String,
    /// ready | draining | drained | lost
    pub state: String,
    pub memory_mb: u64,
    /// Reserved by the instances placed here, as the scheduler counts it.
    pub memory_used_mb: u64,
    /// Disk the node offers (its agent's `PAAS_NODE_DISK_MB`, else the free space it found).
    #[serde(default)]
    pub disk_mb: u64,
    /// Reserved by the instances placed here, as the scheduler counts it.
    #[serde(default)]
    pub disk_used_mb: u64,
    pub instance_slots: u32,
    /// Slots taken: instances, unfinished tasks and service containers.
    pub instances: u32,
    /// Of those, built-in service containers (issue 22), each reserving its plan's memory and
    /// disk in `memory_used_mb` and `disk_used_mb`.
    #[serde(default)]
    pub services: u32,
    #[serde(default)]
    pub services_memory_mb: u64,
    #[serde(default)]
    pub services_disk_mb: u64,
    pub last_heartbeat: DateTime<Utc>,
    /// What apps can require with placement labels (the agent's `PAAS_NODE_LABELS`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeList {
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    // Every streamed and listed line formats its time: chrono's formatter was a visible share.
    #[serde(serialize_with = "crate::logwire::serialize_timestamp")]
    pub timestamp: DateTime<Utc>,
    /// `APP/<process>/<index>` (a sidecar's: `APP/<process>/<index>/SIDECAR/<name>`), `STG`,
    /// `RTR`, `API` or `CELL`.
    pub source: String,
    /// `stdout` or `stderr` for app lines, `out` otherwise.
    pub stream: String,
    pub message: String,
    /// The hub's sequence number: increasing per controller (and across its restarts), so a
    /// client can tell which lines it already has. 0 for a line not yet through the hub.
    #[serde(default)]
    pub id: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogList {
    pub lines: Vec<LogLine>,
}

/// Optional settings sent with a push (multipart text fields of the same names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushSettings {
    pub instances: Option<u32>,
    pub memory_mb: Option<u64>,
    pub command: Option<String>,
    /// Env vars to set on the new revision (multipart field `env`, a JSON object); the previous
    /// revision's env is carried over and these are applied on top.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Disk per instance (multipart `disk_mb` or `disk_quota`, e.g. "1G"); stored on the app.
    #[serde(default)]
    pub disk_mb: Option<u64>,
    /// Buildpack names in order (multipart `buildpacks`, a JSON list); stored for staging.
    #[serde(default)]
    pub buildpacks: Vec<String>,
    /// Manifest `routes` (multipart `routes`, a JSON list of `HOST[/PATH]`): checked before the
    /// push changes anything (a private domain must be the space's) and mapped to the app after
    /// its revision (issue 22).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Manifest `services` (multipart `services`, a JSON list of service instance names): each
    /// must exist in the space before the push changes anything; bound on push (issue 22).
    #[serde(default)]
    pub services: Vec<String>,
    /// Manifest health settings (multipart `health`, JSON); stored for issue 4.
    #[serde(default)]
    pub health: Option<HealthCheckSettings>,
    /// Manifest `processes` besides the web one (multipart `processes`, JSON list); stored.
    #[serde(default)]
    pub processes: Vec<ProcessSettings>,
    /// Files left out of the zip because the controller holds them (multipart `resources`).
    #[serde(default)]
    pub resources: Vec<PushResource>,
    /// Labels a node must carry to run the app (multipart `placement_labels`, a JSON object);
    /// absent: the app keeps its labels, `{}`: any node.
    #[serde(default)]
    pub placement_labels: Option<std::collections::BTreeMap<String, String>>,
    /// The log rate limit per instance (multipart `log_rate_limit`, e.g. "1K", "-1" for the
    /// platform default); absent: the app keeps its limit.
    #[serde(default)]
    pub log_rate_limit: Option<String>,
    /// The default route's host label instead of one derived from the app name (multipart
    /// `hostname`, `cf push --hostname`).
    #[serde(default)]
    pub hostname: Option<String>,
    /// A generated default route host (multipart `random_route`, "true"; manifest `random-route`).
    #[serde(default)]
    pub random_route: bool,
    /// No default route (multipart `no_route`, "true"; manifest `no-route`).
    #[serde(default)]
    pub no_route: bool,
    /// The stack to stage and run on by name (multipart `stack`; manifest `stack:`, `-s`).
    #[serde(default)]
    pub stack: Option<String>,
    /// Stage without the dependency cache (multipart `no_cache`, "true"; `paas push --no-cache`).
    #[serde(default)]
    pub no_cache: bool,
    /// Build from the app's Dockerfile even if a buildpack detects the app (multipart
    /// `dockerfile`, "true"; `paas push --dockerfile`).
    #[serde(default)]
    pub dockerfile: bool,
    /// Stage and record the new revision but leave the app stopped (multipart `no_start`,
    /// "true"; `paas push --no-start`).
    #[serde(default)]
    pub no_start: bool,
    /// A canary or blue-green deployment instead of the rolling one (multipart `strategy`, a
    /// JSON [`crate::deployment::DeployStrategy`]; issue 23).
    #[serde(default)]
    pub strategy: Option<crate::deployment::DeployStrategy>,
    /// Manifest `sidecars:` (multipart `sidecars`, a JSON list of [`Sidecar`]): the new
    /// revision's sidecars; absent: the current revision's are kept.
    #[serde(default)]
    pub sidecars: Option<Vec<Sidecar>>,
}

/// Health-check settings as a manifest states them; every field optional (server defaults apply).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthCheckSettings {
    /// `port`, `http` or `process`.
    #[serde(default)]
    pub check_type: Option<String>,
    #[serde(default)]
    pub http_endpoint: Option<String>,
    #[serde(default)]
    pub invocation_timeout_secs: Option<u64>,
    /// Manifest `timeout`: how long an instance may take to start.
    #[serde(default)]
    pub start_timeout_secs: Option<u64>,
    /// Manifest `readiness-health-check-type`.
    #[serde(default)]
    pub readiness_type: Option<String>,
    #[serde(default)]
    pub readiness_http_endpoint: Option<String>,
    #[serde(default)]
    pub readiness_invocation_timeout_secs: Option<u64>,
    #[serde(default)]
    pub readiness_interval_secs: Option<u64>,
}

/// One process type's settings from a manifest's `processes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessSettings {
    #[serde(rename = "type")]
    pub process_type: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub instances: Option<u32>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub disk_mb: Option<u64>,
    #[serde(default)]
    pub health: Option<HealthCheckSettings>,
}

/// `GET /v1/apps/{name}/env`: the env of the current revision.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppEnv {
    pub revision: Option<i64>,
    pub env: std::collections::BTreeMap<String, String>,
}

/// `PATCH /v1/apps/{name}/env`: set and unset keys; makes a new revision with the same droplet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvUpdate {
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub unset: Vec<String>,
    /// Keys of `set` whose values are secret: sealed at rest and shown as `***` (issue 7).
    #[serde(default)]
    pub secret: Vec<String>,
}

/// One revision in `GET /v1/apps/{name}/revisions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevisionSummary {
    pub number: i64,
    pub droplet: String,
    pub package: String,
    /// Names only: values may be secrets.
    pub env_keys: Vec<String>,
    pub command: String,
    pub detected: String,
    pub created_at: DateTime<Utc>,
    /// The user who made it.
    pub created_by: String,
    /// What made it: "push", "set-env GREETING", "rollback to 2".
    pub description: String,
    /// Whether this is the app's current revision.
    pub current: bool,
    /// Its sidecars (manifest `sidecars:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<Sidecar>,
    /// False once the droplet was garbage-collected: a rollback to it is refused.
    pub droplet_available: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevisionList {
    /// Newest first.
    pub revisions: Vec<RevisionSummary>,
}

/// `POST /v1/apps/{name}/rollback`: to revision `to`, or the one before the current when absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RollbackRequest {
    #[serde(default)]
    pub to: Option<i64>,
}

/// A file the CLI is about to push, by content (incremental upload, issue 3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileHash {
    pub sha256: String,
    pub size: u64,
}

/// `POST /v1/resources/match`: which of these files the controller already holds for the caller.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceMatch {
    pub resources: Vec<FileHash>,
}

/// The answer: the sha256 of every file the caller need not upload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceMatchResult {
    pub known: Vec<String>,
}

/// A file of the app left out of the upload because the controller holds it (multipart field
/// `resources` of a push: a JSON list of these).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushResource {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    #[serde(default)]
    pub executable: bool,
}

/// `POST /v1/tokens`: an API token for CI.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreateRequest {
    pub name: String,
    /// read | deploy | admin
    pub scope: String,
    /// Restricts the token to one app.
    #[serde(default)]
    pub app: Option<String>,
    /// Lifetime such as `30d`, `12h`, `90m` or seconds; default 30 days, at most 365 days.
    #[serde(default)]
    pub expires_in: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub app: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

/// The answer to a token creation: the only time the token itself is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpaceRole {
    /// `ORG/SPACE`
    pub space: String,
    /// admin | developer | viewer
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    pub username: String,
    pub operator: bool,
    pub roles: Vec<SpaceRole>,
    /// Roles per organization (Cloud Foundry's org manager and org auditor).
    #[serde(default)]
    pub org_roles: Vec<OrgRole>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserList {
    pub users: Vec<UserInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub operator: bool,
}

/// `PUT /v1/users/NAME/roles`: sets the user's role in a space; `role: null` removes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetRoleRequest {
    /// `ORG/SPACE`: a role in one space (admin | developer | viewer).
    #[serde(default)]
    pub space: String,
    /// `ORG` instead of `space`: a role in the organization (manager | auditor).
    #[serde(default)]
    pub org: Option<String>,
    pub role: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgRole {
    pub org: String,
    /// manager | auditor
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpaceInfo {
    pub org: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpaceList {
    pub spaces: Vec<SpaceInfo>,
}

/// `POST /v1/spaces`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSpaceRequest {
    pub org: String,
    pub name: String,
}

/// A space's limits (Cloud Foundry's space quota); an absent limit is unlimited. The body of
/// `PUT /v1/spaces/{org}/{space}/quota`, which replaces the whole quota.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpaceQuota {
    /// Memory of every started instance together, MB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Started instances, every process type counted.
    #[serde(default)]
    pub instances: Option<u64>,
    /// Apps, started or stopped.
    #[serde(default)]
    pub apps: Option<u64>,
    /// Routes: default routes and mapped ones.
    #[serde(default)]
    pub routes: Option<u64>,
}

/// What a space uses of what its quota counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpaceUsage {
    pub memory_mb: u64,
    pub instances: u64,
    pub apps: u64,
    pub routes: u64,
}

/// `GET /v1/spaces/{org}/{space}/quota`: the quota with the current usage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpaceQuotaInfo {
    /// `ORG/SPACE`
    pub space: String,
    pub quota: SpaceQuota,
    pub usage: SpaceUsage,
}

/// `PATCH /v1/apps/{name}`: change an app's settings; absent fields keep their value. Changing
/// `instances` starts or stops only the instances above the kept ones; changing `memory_mb` or
/// the health check replaces every instance in a rolling deploy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppUpdateRequest {
    #[serde(default)]
    pub instances: Option<u32>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Indices replaced at once by rolling deploys and restarts (default 1).
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    #[serde(default)]
    pub health_check: Option<HealthCheckUpdate>,
    /// Labels a node must carry to run the app; replaces the whole set.
    #[serde(default)]
    pub placement_labels: Option<std::collections::BTreeMap<String, String>>,
    /// The process type `instances` and `memory_mb` apply to; absent: `web`.
    #[serde(default)]
    pub process: Option<String>,
    /// Log bytes per second each instance may print before the excess is dropped (and counted
    /// in a `CELL` line): `"1K"`, `"16M"`, a number of bytes, or -1 for the platform default.
    /// Applies to the running instances without replacing them.
    #[serde(default)]
    pub log_rate_limit: Option<LogRateLimit>,
}

/// The health check of an app's instances. A change replaces the instances (rolling).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthCheckUpdate {
    /// `port`, `http` or `process`.
    #[serde(rename = "type")]
    pub check_type: String,
    /// For `http`: the path that must answer 2xx, e.g. `/health`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Seconds per attempt (default 1).
    #[serde(default)]
    pub invocation_timeout_secs: Option<u64>,
    /// Seconds an instance may take to pass its first check (default 60).
    #[serde(default)]
    pub start_timeout_secs: Option<u64>,
}

/// An app's lifecycle settings, answered by the update and lifecycle endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppSettings {
    pub name: String,
    pub state: AppState,
    pub desired_instances: u32,
    pub memory_mb: u64,
    pub max_in_flight: u32,
    pub health: crate::agent::HealthSettings,
    #[serde(default)]
    pub placement_labels: std::collections::BTreeMap<String, String>,
    /// The developer's log rate limit in bytes per second per instance; `None`: the platform's
    /// default.
    #[serde(default)]
    pub log_rate_limit_bytes: Option<u64>,
    /// Whether this change replaces instances (rolling), e.g. after a memory change or a restart.
    #[serde(default)]
    pub rolling: bool,
}

/// `POST /v1/apps/{name}/restart`: a rolling restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestartRequest {
    /// Indices replaced at once; also kept as the app's setting. Default: the app's setting (1).
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

/// `POST /v1/nodes/{name}/drain` answers the node's new state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStateResponse {
    pub name: String,
    /// ready | draining | drained | lost
    pub state: String,
}

/// One buildpack in detection order (`GET /v1/buildpacks`, issue 3).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildpackInfo {
    pub name: String,
    /// 1-based place in detection order.
    pub position: u32,
    /// Compiled into the agent; cannot be deleted.
    pub builtin: bool,
    /// sha256 of the stored buildpack tar (added ones only).
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildpackList {
    pub buildpacks: Vec<BuildpackInfo>,
}

/// A base image an operator allowed for Dockerfile builds (`GET /v1/base-images`, issue 18).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaseImageInfo {
    /// An image reference by name (`alpine:3.20`, `registry.example/team/base:1`).
    pub name: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseImageList {
    /// Besides these, a node's own stack image is always allowed.
    pub base_images: Vec<BaseImageInfo>,
}

/// `POST /v1/base-images`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllowBaseImage {
    pub name: String,
}

/// One line of a streamed push (`POST /v1/apps/NAME/push` with `Accept: application/x-ndjson`):
/// newline-delimited JSON, each line one of these, tagged by `type`. The last line is always a
/// `result`; its `status` says whether the push succeeded, since the HTTP status (200) is sent
/// before the outcome is known.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PushProgress {
    /// The upload arrived and was stored.
    Upload { bytes: u64 },
    /// The archive was checked: files and unpacked bytes, and what the controller detected.
    Archive {
        files: u64,
        bytes: u64,
        detected: String,
    },
    /// A log line while staging (`STG`), as it is written.
    Log { source: String, message: String },
    /// Where the build stands: `waiting` says why no node takes it yet (it starts once one
    /// fits), `node` that it started there.
    Staging {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waiting: Option<String>,
    },
    /// Staging produced the droplet.
    Droplet {
        sha256: String,
        bytes: u64,
        buildpack: String,
    },
    /// The new revision is current; instances are being replaced.
    Revision { number: i64 },
    /// Instances of the new revision: running of desired, and placed on a node.
    Instances {
        running: u32,
        desired: u32,
        placed: u32,
    },
    /// One instance of the new revision changed: its state, its node once placed, and why it
    /// waits when no node takes it (the scheduler's reason). Indices count per process type.
    Instance {
        process_type: String,
        index: u32,
        state: InstanceState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The droplet's `release:` process, run once as a task before the new revision becomes
    /// current (issue 21): each state it reaches, with the exit code once it ended.
    Release {
        task: u64,
        state: TaskState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The last line.
    Result(PushResult),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushResult {
    /// `succeeded` (every desired instance of the new revision runs) or `failed`.
    pub status: PushStatus,
    /// When failed: the stable error code (`staging_failed`, `start_failed`, `not_an_app`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// When failed: why, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When succeeded (and when the revision was made but did not start): the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<Box<AppDetail>>,
    /// When succeeded: how long each step took, as the controller saw it (issue 24), so the
    /// slow one is visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<PushPhases>,
}

/// A push's steps in milliseconds, each from the end of the one before, as the controller
/// measured them: their sum is the time from the upload's first byte to the last new instance
/// routed. A step that did not happen (`--no-start`) is 0.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushPhases {
    /// The archive received, stored and checked.
    pub upload_ms: u64,
    /// Staging on a node (or the build cache's droplet) until the new revision is current.
    pub stage_ms: u64,
    /// Placement, the droplet on the node, and the container created and started: until every
    /// new web instance was reported starting.
    pub start_ms: u64,
    /// Until every new web instance passed its health check (reported running).
    pub health_ms: u64,
    /// Until every new running, ready web instance is in the route table.
    pub route_ms: u64,
    /// Whether staging reused earlier work: `droplet` (the build cache: same files, same
    /// buildpacks, nothing staged), `layers` (only the app's code changed: the node put the new
    /// files on the layers an earlier staging added, no staging container), `dependencies`
    /// (staged, with the dependency layer restored from the node's cache) or `none`.
    #[serde(default)]
    pub reused: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PushStatus {
    Succeeded,
    Failed,
}

/// Where a one-off task stands (Cloud Foundry v3 tasks). Only `PENDING -> RUNNING ->
/// SUCCEEDED | FAILED`, or straight to `FAILED` (terminated, node lost); a finished task never
/// runs again.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Running => "RUNNING",
            TaskState::Succeeded => "SUCCEEDED",
            TaskState::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => TaskState::Pending,
            "RUNNING" => TaskState::Running,
            "SUCCEEDED" => TaskState::Succeeded,
            "FAILED" => TaskState::Failed,
            _ => return None,
        })
    }

    /// Succeeded or failed: nothing about it changes any more.
    pub fn finished(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/apps/{name}/tasks`: run `command` once on the app's current droplet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunTaskRequest {
    pub command: String,
    /// A name for people; default: the task's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Memory (`256M`, `1G`); default: the app's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Disk (`512M`, `1G`); default: the app's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

/// One task of an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskInfo {
    /// The app's sequence number: the id users see (`TASK/<id>` in the logs).
    pub id: u64,
    pub name: String,
    pub command: String,
    pub state: TaskState,
    /// The revision whose droplet and env it runs.
    pub revision: i64,
    pub memory_mb: u64,
    pub disk_mb: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why it failed (`exited with code 3`, `terminated`, `node lost`), or why it waits for a
    /// node while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `release` for a push's release phase, else `task`.
    pub kind: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/apps/{name}/cron`: run `command` as a task on `schedule` (issue 21).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddCronRequest {
    /// Five fields (`*/5 * * * *`), or six with seconds first (`*/10 * * * * *`), or `@hourly`.
    pub schedule: String,
    pub command: String,
}

/// One cron entry of an app, with its last and next runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CronEntry {
    /// The app's sequence number for entries (what `paas cron NAME remove ID` takes).
    pub id: u64,
    pub schedule: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<DateTime<Utc>>,
    /// The task of the last run (`paas tasks`), and where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<TaskState>,
    pub next_run_at: DateTime<Utc>,
    pub created_by: String,
}

/// `PUT /v1/apps/{name}/autoscale`: scale the app's `web` instances on load (issue 23). Each
/// rule given proposes a count; the largest wins, clamped to `[min_instances, max_instances]`
/// and to the space's quota. With no rule given, `cpu_percent` 70 applies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AutoscaleRequest {
    pub min_instances: u32,
    pub max_instances: u32,
    /// Target mean CPU per instance, in percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
    /// Target requests per second per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps_per_instance: Option<u32>,
    /// Target p99 latency: above it, one more instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<u32>,
    /// Least time between two scale-outs (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_out_cooldown_secs: Option<u32>,
    /// Least time after any scaling before a scale-in (default 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_cooldown_secs: Option<u32>,
}

/// An app's autoscaling policy with what the autoscaler last did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AutoscaleStatus {
    pub min_instances: u32,
    pub max_instances: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps_per_instance: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<u32>,
    pub scale_out_cooldown_secs: u32,
    pub scale_in_cooldown_secs: u32,
    /// The app's desired `web` instances now.
    pub instances: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_out_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_in_at: Option<DateTime<Utc>>,
    /// The last decision that changed the count, with its reason (as its `app.autoscale` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// A backup of a built-in PostgreSQL service instance (`pg_dump -Fc` of its database in the
/// blobstore), or a restore of one (issue 22).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceBackup {
    pub id: String,
    /// `backup` or `restore`.
    pub kind: String,
    /// `pending`, `done` or `failed`.
    pub state: String,
    /// For a restore: the backup it restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/services/{name}/restore`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreRequest {
    /// The backup's id. Defaulted so a caller without a role is told so before its body is
    /// judged (an empty id is no backup: 404).
    #[serde(default)]
    pub backup: String,
}
