//! The store interface: every read and write of controller state goes through [`Store`], so a
//! PostgreSQL implementation can join the SQLite one without touching handlers. A state change and
//! the event that records it are written in one transaction.

mod sqlite;

pub use sqlite::SqliteStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use paas_common::agent::{InstanceReport, NodeCapacity};
use paas_common::api::{AppState, InstanceState, LogLine};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub name: String,
    pub address: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: NodeCapacity,
    pub token_hash: String,
    /// ready | lost
    pub state: String,
    pub last_heartbeat: DateTime<Utc>,
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct AppRecord {
    pub id: String,
    pub name: String,
    pub state: AppState,
    pub desired_instances: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub current_revision: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct RevisionRecord {
    pub app_id: String,
    pub number: i64,
    pub package: String,
    pub droplet: String,
    pub command: String,
    pub detected: String,
    pub env: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    /// Who made it (a username); empty for revisions made before this was recorded.
    pub created_by: String,
    /// What made it: "push", "set-env KEY", "rollback to N".
    pub description: String,
}

/// What a revision records beyond [`NewRevision`]: its env and its provenance.
#[derive(Debug, Clone, Default)]
pub struct RevisionExtra {
    pub env: BTreeMap<String, String>,
    pub created_by: String,
    pub description: String,
    /// Disk per instance to apply to the app, when given.
    pub disk_mb: Option<u64>,
    /// JSON of the push settings to store on the app, when given.
    pub push_settings: Option<String>,
}

/// A revision about to be made, with the process settings it starts with.
#[derive(Debug, Clone)]
pub struct NewRevision {
    pub package: String,
    pub droplet: String,
    pub command: String,
    pub detected: String,
    pub desired_instances: u32,
    pub memory_mb: u64,
}

#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub id: String,
    pub app_id: String,
    pub revision: i64,
    pub process_type: String,
    pub index: u32,
    pub node_name: Option<String>,
    pub state: InstanceState,
    pub container_id: Option<String>,
    pub host_port: Option<u16>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub placement_error: Option<String>,
    pub since: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub app_name: Option<String>,
    pub actor: String,
    pub kind: String,
    pub message: String,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
    /// Creates the user unless one of that name exists; returns whether it was created.
    async fn create_user_if_missing(&self, user: &User) -> StoreResult<bool>;

    /// Registers a node or re-registers it with a new credential.
    async fn upsert_node(&self, node: &NodeRecord) -> StoreResult<()>;
    async fn node_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<NodeRecord>>;
    /// Records a heartbeat; a lost node becomes ready again.
    async fn heartbeat_node(&self, name: &str, capacity: &NodeCapacity, at: DateTime<Utc>) -> StoreResult<()>;
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>>;
    /// Marks ready nodes silent since `before` as lost; returns their names.
    async fn mark_lost_nodes(&self, before: DateTime<Utc>) -> StoreResult<Vec<String>>;

    async fn app_by_name(&self, name: &str) -> StoreResult<Option<AppRecord>>;
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>>;
    async fn create_app(&self, app: &AppRecord, event: &Event) -> StoreResult<()>;
    /// Deletes the app with its revisions, instances and logs.
    async fn delete_app(&self, app_id: &str, event: &Event) -> StoreResult<()>;

    /// Stores a new revision, makes it current, applies the process settings and records the
    /// event, in one transaction. Returns the revision number.
    async fn deploy_revision(&self, app_id: &str, rev: &NewRevision, event: &Event) -> StoreResult<i64>;
    async fn revision(&self, app_id: &str, number: i64) -> StoreResult<Option<RevisionRecord>>;
    async fn list_revisions(&self) -> StoreResult<Vec<RevisionRecord>>;

    async fn list_instances(&self) -> StoreResult<Vec<InstanceRecord>>;
    async fn app_instances(&self, app_id: &str) -> StoreResult<Vec<InstanceRecord>>;
    async fn insert_instance(&self, inst: &InstanceRecord) -> StoreResult<()>;
    async fn delete_instance(&self, id: &str) -> StoreResult<()>;
    async fn place_instance(&self, id: &str, node: Option<&str>, placement_error: Option<&str>) -> StoreResult<()>;
    /// Applies a node's report of an instance; ignored unless the instance is assigned to `node`.
    /// Returns whether anything the router cares about (state, address) changed.
    async fn report_instance(&self, node: &str, report: &InstanceReport) -> StoreResult<bool>;

    async fn add_event(&self, event: &Event) -> StoreResult<()>;
    async fn recent_events(&self, app_name: &str, limit: i64) -> StoreResult<Vec<(DateTime<Utc>, Event)>>;

    /// The app of an instance assigned to `node`.
    async fn app_name_of_instance(&self, instance_id: &str, node: &str) -> StoreResult<Option<String>>;
    async fn append_logs(&self, lines: &[(String, LogLine)]) -> StoreResult<()>;
    async fn recent_logs(&self, app_name: &str, limit: i64) -> StoreResult<Vec<LogLine>>;
    /// Keeps the newest `keep` lines of each app.
    async fn trim_logs(&self, keep: i64) -> StoreResult<()>;

    /// [`Store::deploy_revision`] with an env, provenance and optional stored settings: every
    /// push, env change and rollback goes through here (issue 3).
    async fn deploy_revision_with(&self, app_id: &str, rev: &NewRevision, extra: &RevisionExtra, event: &Event) -> StoreResult<i64>;
    /// The app's revisions, newest first.
    async fn app_revisions(&self, app_id: &str) -> StoreResult<Vec<RevisionRecord>>;
    /// The push settings JSON stored on the app (`{}` when none).
    async fn app_push_settings(&self, app_id: &str) -> StoreResult<String>;
    /// Of `files`, those `owner` has uploaded before (incremental upload).
    async fn known_files(&self, owner: &str, files: &[(String, u64)]) -> StoreResult<Vec<String>>;
    /// Records files `owner` uploaded.
    async fn remember_files(&self, owner: &str, files: &[(String, u64)]) -> StoreResult<()>;
    /// Every cached file's blob, so collection keeps them.
    async fn cached_file_blobs(&self) -> StoreResult<Vec<String>>;
}
