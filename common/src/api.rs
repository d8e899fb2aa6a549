//! REST DTOs under `/v1`, used by the CLI, the dashboard and CI pipelines.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// A bearer JWT for `Authorization: Bearer ...`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// What the user asked for: the app should run or not.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
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
    pub restarts: u32,
    /// Why the last run ended: "exited with code 1", "OOM-killed", "health check failed".
    pub last_exit: Option<String>,
    /// Why the instance is not placed, when it is pending (e.g. no node is available).
    pub placement_error: Option<String>,
    /// When the instance entered its current state.
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
pub struct RevisionInfo {
    pub number: i64,
    pub droplet: String,
    pub command: String,
    pub detected: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppDetail {
    pub name: String,
    pub state: AppState,
    pub url: String,
    pub desired_instances: u32,
    pub memory_mb: u64,
    pub revision: Option<RevisionInfo>,
    pub instances: Vec<InstanceInfo>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<AppSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub address: String,
    pub zone: String,
    /// ready | lost
    pub state: String,
    pub memory_mb: u64,
    pub memory_used_mb: u64,
    pub instance_slots: u32,
    pub instances: u32,
    pub last_heartbeat: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeList {
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub timestamp: DateTime<Utc>,
    /// `APP/<process>/<index>`, `STG`, `RTR`, `API` or `CELL`.
    pub source: String,
    /// `stdout` or `stderr` for app lines, `out` otherwise.
    pub stream: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogList {
    pub lines: Vec<LogLine>,
}

/// Optional settings sent with a push (multipart text fields of the same names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// Manifest `routes` (multipart `routes`, a JSON list of hostnames/paths); stored on the app
    /// for the routes work (issue 5), which makes them effective.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Manifest health settings (multipart `health`, JSON); stored for issue 4.
    #[serde(default)]
    pub health: Option<HealthCheckSettings>,
    /// Manifest `processes` besides the web one (multipart `processes`, JSON list); stored.
    #[serde(default)]
    pub processes: Vec<ProcessSettings>,
    /// Files left out of the zip because the controller holds them (multipart `resources`).
    #[serde(default)]
    pub resources: Vec<PushResource>,
}

/// Health-check settings as a manifest states them; every field optional (server defaults apply).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
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
pub struct AppEnv {
    pub revision: Option<i64>,
    pub env: std::collections::BTreeMap<String, String>,
}

/// `PATCH /v1/apps/{name}/env`: set and unset keys; makes a new revision with the same droplet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EnvUpdate {
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub unset: Vec<String>,
}

/// One revision in `GET /v1/apps/{name}/revisions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// False once the droplet was garbage-collected: a rollback to it is refused.
    pub droplet_available: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionList {
    /// Newest first.
    pub revisions: Vec<RevisionSummary>,
}

/// `POST /v1/apps/{name}/rollback`: to revision `to`, or the one before the current when absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    #[serde(default)]
    pub to: Option<i64>,
}

/// A file the CLI is about to push, by content (incremental upload, issue 3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct FileHash {
    pub sha256: String,
    pub size: u64,
}

/// `POST /v1/resources/match`: which of these files the controller already holds for the caller.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResourceMatch {
    pub resources: Vec<FileHash>,
}

/// The answer: the sha256 of every file the caller need not upload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResourceMatchResult {
    pub known: Vec<String>,
}

/// A file of the app left out of the upload because the controller holds it (multipart field
/// `resources` of a push: a JSON list of these).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PushResource {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    #[serde(default)]
    pub executable: bool,
}
