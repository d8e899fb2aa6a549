//! The store: every read and write of controller state goes through [`Store`], the umbrella of
//! one role trait per resource family ([`AppStore`], [`NodeStore`], ...). Two backends implement
//! them with one shared body of SQL ([`sql`]): SQLite, the default, and PostgreSQL, chosen by
//! `PAAS_DATABASE_URL` ([`open`]). A state change and the event that records it are written in one
//! transaction.

mod autoscale;
mod builtin_services;
mod cron;
mod deployments;
mod domains;
mod identity;
mod logfeed;
mod network;
mod node_metrics;
mod postgres;
mod quotas;
mod rollups;
mod services;
mod sql;
mod sqlite;
mod ssh;
mod stagings;

pub use domains::{DomainRecord, DomainStore, NewCertificate, CERT_ACME, CERT_MANUAL};
pub use logfeed::{LogFeedStore, LogRun};
pub use services::{
    binding_aad, broker_aad, instance_aad, state as service_state, BindingRecord, BrokerRecord,
    ServiceInstanceRecord, ServiceStore, KIND_MANAGED, KIND_USER_PROVIDED,
};
mod tasks;

pub use autoscale::{AutoscaleRecord, AutoscaleStore, ScaleDirection};
pub use builtin_services::{
    BuiltinBindingRecord, BuiltinInstanceRecord, BuiltinJobRecord, BuiltinServiceStore,
};
pub use cron::{CronRecord, CronStore};
pub use deployments::{DeploymentChange, DeploymentRecord, DeploymentStore};
pub use identity::{CaRecord, IdentityStore};
pub use network::{NetworkStore, PolicyRecord};
pub use node_metrics::{NodeMetricRow, NodeMetricStore};
pub use postgres::PgStore;
pub use quotas::QuotaStore;
pub use rollups::RollupStore;
pub use sqlite::SqliteStore;
pub use ssh::SshStore;
pub use stagings::{StagingRecord, StagingStore};
pub use tasks::{NewTask, TaskRecord, TaskStore, KIND_RELEASE, KIND_TASK};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use paas_common::agent::{InstanceReport, NodeCapacity};
use paas_common::api::{AppState, InstanceState, InstanceUsage, LogLine};
use std::collections::{BTreeMap, HashMap, HashSet};

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
    #[error("database configuration: {0}")]
    Config(String),
    /// A scheduler write refused because its lease moved on (another controller leads now, or
    /// the lease expired): nothing of it was written.
    #[error("fenced: {0}")]
    Fenced(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A JWT signing key (`migrations/sqlite/0012_keys_refresh.sql`).
#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// Sealed with the secret-env key.
    pub secret: String,
    pub created_at: DateTime<Utc>,
    /// `None` for the active key.
    pub retired_at: Option<DateTime<Utc>>,
}

/// A refresh token; only its sha256 is stored.
#[derive(Debug, Clone)]
pub struct RefreshRecord {
    pub id: String,
    /// Every token descended from one login shares the family; a replay revokes all of them.
    pub family: String,
    pub user_id: String,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// One app's events, by id.
    pub app_id: Option<String>,
    /// Events whose actor is this user, directly or through one of their API tokens
    /// (`USER (token NAME)`): logins, token use, their changes.
    pub actor: Option<String>,
    /// Only events from this id on: an app's own history starts at its `app.create`, so an app
    /// created again under a name another space used before does not show that space's events.
    pub since_id: Option<i64>,
}

/// A stored event with its id (the list's cursor) and time.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: i64,
    pub time: DateTime<Utc>,
    pub event: Event,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// Operators manage nodes, buildpacks, users and spaces platform-wide.
    pub operator: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceRecord {
    pub id: String,
    pub org: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// The JWT's `jti`.
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub scope: String,
    /// The app's name when the token was made, for display.
    pub app_name: Option<String>,
    /// The one app the token may act on, by id (`Some("")`: its app is gone, it reaches none).
    pub app_id: Option<String>,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The signing key's id, so key rotation keeps that key while the token lives.
    pub kid: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub name: String,
    pub address: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: NodeCapacity,
    pub token_hash: String,
    /// ready | draining | drained | lost
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
    /// The space that owns the app and its name (names are unique per space).
    pub space_id: String,
    /// The default route's host label (`HOST.<apps domain>`), unique platform-wide; `None`: the
    /// app has no default route (`--no-route`).
    pub host: Option<String>,
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
    /// The sidecars its instances run beside their processes.
    pub sidecars: Vec<paas_common::api::Sidecar>,
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
    /// Health settings to apply to the app (web), when given.
    pub health: Option<paas_common::agent::HealthSettings>,
    /// Placement labels to apply to the app, when given.
    pub placement_labels: Option<BTreeMap<String, String>>,
    /// Log rate limit to apply to the app, when given (`Some(None)`: the platform default).
    pub log_rate_limit: Option<Option<u64>>,
    /// Leave the app stopped with this revision (`paas push --no-start`) rather than start it,
    /// in the same transaction, so no convergence pass starts an instance in between.
    pub no_start: bool,
    /// The revision's sidecars (stored with it, never on the app).
    pub sidecars: Vec<paas_common::api::Sidecar>,
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
    /// The node's last readiness result; only a running and ready instance is routed.
    pub ready: bool,
}

impl InstanceRecord {
    /// A row the scheduler has just decided on: pending on no node, never run, not ready (not
    /// routed before its node says it runs and is ready).
    pub fn pending(
        id: String,
        app_id: String,
        revision: i64,
        process_type: String,
        index: u32,
    ) -> Self {
        let now = Utc::now();
        Self {
            id,
            app_id,
            revision,
            process_type,
            index,
            node_name: None,
            state: InstanceState::Pending,
            container_id: None,
            host_port: None,
            restarts: 0,
            last_exit: None,
            placement_error: None,
            since: now,
            created_at: now,
            ready: false,
        }
    }
}

/// An instance row as it was before a node's report replaced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedBefore {
    pub app_id: String,
    pub app_name: String,
    pub index: u32,
    pub state: InstanceState,
    pub host_port: Option<u16>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub ready: bool,
}

impl ReportedBefore {
    /// Whether the report changes what the router sees of the instance.
    pub fn routing_changed(&self, r: &InstanceReport) -> bool {
        self.state != r.state || self.host_port != r.host_port || self.ready != r.ready
    }
}

/// A node's heartbeat as [`InstanceStore::apply_heartbeat`] writes it.
pub struct NodeHeartbeat<'a> {
    pub capacity: &'a NodeCapacity,
    pub at: DateTime<Utc>,
    pub reports: &'a [InstanceReport],
    /// Whether to write the reports' usage samples as well (one statement); between two such
    /// heartbeats the caller keeps them in memory, since they change with every report.
    pub write_usage: bool,
    /// How old the node's stored last-seen time may get before a heartbeat that changes
    /// nothing else writes it anyway: a heartbeat that changes nothing (no report, capacity or
    /// state, no usage due) takes no write transaction, so 100 nodes at rest do not queue on
    /// SQLite's one writer; the node's row then moves at least this often, which must stay well
    /// under the grace after which a node counts as lost.
    pub seen_every: chrono::TimeDelta,
}

/// The events one report calls for, given the row it replaces (`events::events_for`): written
/// in the heartbeat's transaction.
pub type ReportEvents<'a> =
    &'a (dyn Fn(&InstanceReport, &ReportedBefore) -> Vec<Event> + Send + Sync);

/// What [`InstanceStore::apply_heartbeat`] found and wrote.
#[derive(Debug, Default)]
pub struct HeartbeatApplied {
    /// Per report, in order: the app of its row when the row is assigned to the node; `None`
    /// for a report the store ignored.
    pub apps: Vec<Option<String>>,
    /// The reports that changed their row (index in the reports, the row as it was).
    pub changed: Vec<(usize, ReportedBefore)>,
    /// Instance rows updated (state or usage) and events inserted, besides the node's row.
    pub rows_written: u64,
    /// Whether the heartbeat took a write transaction (the node's row is written in each).
    pub node_written: bool,
}

/// What one convergence pass writes, in one transaction ([`InstanceStore::write_pass`]).
#[derive(Debug, Default)]
pub struct PassWrites {
    /// Rows removed.
    pub delete: Vec<String>,
    /// New rows, placed already (or with their placement error) when the pass decided.
    pub insert: Vec<InstanceRecord>,
    /// Existing rows placed on a node, or left unplaced with a new reason: (id, node, error).
    pub place: Vec<(String, Option<String>, Option<String>)>,
    pub events: Vec<Event>,
}

impl PassWrites {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty()
            && self.insert.is_empty()
            && self.place.is_empty()
            && self.events.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    /// The app's name as it was, for display (history outlives the app).
    pub app_name: Option<String>,
    /// The app it is about: who may read it follows from the app's space.
    pub app_id: Option<String>,
    pub actor: String,
    pub kind: String,
    pub message: String,
}

/// An app's lifecycle settings, kept beside [`AppRecord`] so that record's shape stays as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLifecycle {
    /// Indices replaced at once by a rolling deploy or restart.
    pub max_in_flight: u32,
    /// `None`: Cloud Foundry's defaults.
    pub health: Option<paas_common::agent::HealthSettings>,
    /// Labels a node must carry to run the app.
    pub placement_labels: BTreeMap<String, String>,
    /// The developer's log rate limit per instance, bytes/s; `None`: the platform default.
    pub log_rate_limit_bytes: Option<u64>,
}

impl Default for AppLifecycle {
    fn default() -> Self {
        Self {
            max_in_flight: 1,
            health: None,
            placement_labels: BTreeMap::new(),
            log_rate_limit_bytes: None,
        }
    }
}

/// A change to an app's settings; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct AppUpdate {
    pub desired_instances: Option<u32>,
    pub memory_mb: Option<u64>,
    pub state: Option<AppState>,
    pub max_in_flight: Option<u32>,
    pub health: Option<paas_common::agent::HealthSettings>,
    pub placement_labels: Option<BTreeMap<String, String>>,
    /// `Some(None)`: back to the platform default.
    pub log_rate_limit: Option<Option<u64>>,
}

/// Users, their API tokens, refresh tokens and JWT signing keys.
#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
    /// Creates the user unless one of that name exists; returns whether it was created.
    async fn create_user_if_missing(&self, user: &User) -> StoreResult<bool>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    async fn set_operator(&self, user_id: &str, operator: bool) -> StoreResult<()>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;
    async fn insert_token(&self, t: &TokenRecord) -> StoreResult<()>;
    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>>;
    async fn list_tokens(&self, user_id: &str) -> StoreResult<Vec<TokenRecord>>;
    async fn revoke_token(&self, id: &str, user_id: &str) -> StoreResult<bool>;
    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()>;
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Retires the active key (at `key.created_at`), makes `key` the active one and records the
    /// event, in one transaction.
    async fn add_signing_key(&self, key: &SigningKeyRecord, event: &Event) -> StoreResult<()>;
    /// Deletes keys retired before `retired_before` that no live CI token (unrevoked, expiring
    /// after `now`) names; returns their kids.
    async fn drop_signing_keys(
        &self,
        retired_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<String>>;
    /// Names `kid` as the signer of CI tokens from before keys had ids.
    async fn backfill_token_kids(&self, kid: &str) -> StoreResult<u64>;
    async fn insert_refresh_token(&self, t: &RefreshRecord) -> StoreResult<()>;
    async fn refresh_token_by_hash(&self, token_hash: &str) -> StoreResult<Option<RefreshRecord>>;
    /// Marks the token used unless it already was (or is revoked); returns whether this call did.
    async fn use_refresh_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Revokes every token of the family; returns how many were still unrevoked.
    async fn revoke_refresh_family(&self, family: &str, at: DateTime<Utc>) -> StoreResult<u64>;
    /// Forgets refresh tokens expired before `before` (used ones are kept until then, to
    /// recognise a replay); returns how many.
    async fn delete_expired_refresh_tokens(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// Orgs, spaces and the roles users hold in them.
#[async_trait]
pub trait SpaceStore: Send + Sync + 'static {
    /// The space `org/name`, created (with its org) if `create` and missing.
    async fn space(&self, org: &str, name: &str, create: bool) -> StoreResult<Option<SpaceRecord>>;
    async fn list_spaces(&self) -> StoreResult<Vec<SpaceRecord>>;
    /// Every space role of a user: (space id, role).
    async fn user_roles(&self, user_id: &str) -> StoreResult<Vec<(String, String)>>;
    /// Sets (or with `None` removes) a user's role in a space.
    async fn set_role(&self, user_id: &str, space_id: &str, role: Option<&str>) -> StoreResult<()>;
    /// Every org role of a user: (org name, role: manager | auditor).
    async fn user_org_roles(&self, user_id: &str) -> StoreResult<Vec<(String, String)>>;
    /// Sets (or with `None` removes) a user's role in an org; `NotFound` if there is no such org.
    async fn set_org_role(&self, user_id: &str, org: &str, role: Option<&str>) -> StoreResult<()>;
}

/// Nodes: registration, heartbeats, state.
#[async_trait]
pub trait NodeStore: Send + Sync + 'static {
    /// Registers a node or re-registers it with a new credential.
    async fn upsert_node(&self, node: &NodeRecord) -> StoreResult<()>;
    async fn node_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<NodeRecord>>;
    /// Records a heartbeat; a lost node becomes ready again.
    async fn heartbeat_node(
        &self,
        name: &str,
        capacity: &NodeCapacity,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>>;
    /// Marks ready nodes silent since `before` as lost; returns their names.
    async fn mark_lost_nodes(&self, before: DateTime<Utc>) -> StoreResult<Vec<String>>;
    /// Sets a node's state (ready | draining | drained | lost) with its event; NotFound if unknown.
    async fn set_node_state(&self, name: &str, state: &str, event: &Event) -> StoreResult<()>;
}

/// Apps and their settings (web on the app, other process types beside it).
#[async_trait]
pub trait AppStore: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;
    /// The app `name` of a space (app names are unique per space, issue 18).
    async fn app_in_space(&self, space_id: &str, name: &str) -> StoreResult<Option<AppRecord>>;
    /// Every app called `name`, whatever its space.
    async fn apps_named(&self, name: &str) -> StoreResult<Vec<AppRecord>>;
    async fn app_by_id(&self, id: &str) -> StoreResult<Option<AppRecord>>;
    /// The app whose default route's host label is `host`.
    async fn app_by_host(&self, host: &str) -> StoreResult<Option<AppRecord>>;
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>>;
    /// Creates the app in its space (`app.space_id`) with its event, in one transaction: an app
    /// never exists without a space (issue 18). `Conflict` if its space has an app of that name
    /// or another app has its default host.
    async fn create_app(&self, app: &AppRecord, event: &Event) -> StoreResult<()>;
    /// Deletes the app with its revisions, instances and logs.
    async fn delete_app(&self, app_id: &str, event: &Event) -> StoreResult<()>;
    async fn app_space(&self, app_id: &str) -> StoreResult<Option<String>>;
    /// Every app's space: app id -> space id (apps without a space are absent).
    async fn app_spaces(&self) -> StoreResult<HashMap<String, String>>;
    /// Lifecycle settings of every app, by app id (apps without a row here have the defaults).
    async fn app_lifecycles(&self) -> StoreResult<HashMap<String, AppLifecycle>>;
    /// Applies `update` and records `event` in one transaction. A memory or health check change
    /// marks every instance of the app for replacement (a rolling deploy), since a running
    /// container's limit and its check are fixed at start. Returns whether it did.
    async fn update_app(
        &self,
        app_id: &str,
        update: &AppUpdate,
        event: &Event,
    ) -> StoreResult<bool>;
    /// The push settings JSON stored on the app (`{}` when none).
    async fn app_push_settings(&self, app_id: &str) -> StoreResult<String>;
    /// Settings of every app's non-web process types, by app id.
    async fn app_processes(&self) -> StoreResult<HashMap<String, Vec<ProcessRecord>>>;
    /// Creates or replaces one non-web process type's settings and records `event`. A memory or
    /// health change marks that type's instances for rolling replacement; returns whether it did.
    async fn upsert_process(
        &self,
        app_id: &str,
        p: &ProcessRecord,
        event: &Event,
    ) -> StoreResult<bool>;
}

/// Revisions: what each deploy ran.
#[async_trait]
pub trait RevisionStore: Send + Sync + 'static {
    /// Stores a new revision, makes it current, applies the process settings and records the
    /// event, in one transaction. Returns the revision number.
    async fn deploy_revision(
        &self,
        app_id: &str,
        rev: &NewRevision,
        event: &Event,
    ) -> StoreResult<i64>;
    /// [`RevisionStore::deploy_revision`] with an env, provenance and optional stored settings: every
    /// push, env change and rollback goes through here (issue 3).
    async fn deploy_revision_with(
        &self,
        app_id: &str,
        rev: &NewRevision,
        extra: &RevisionExtra,
        event: &Event,
    ) -> StoreResult<i64>;
    async fn revision(&self, app_id: &str, number: i64) -> StoreResult<Option<RevisionRecord>>;
    async fn list_revisions(&self) -> StoreResult<Vec<RevisionRecord>>;
    /// Every app's current revision, in one query (the desired state reads them every pass).
    async fn current_revisions(&self) -> StoreResult<Vec<RevisionRecord>>;
    /// The app's revisions, newest first.
    async fn app_revisions(&self, app_id: &str) -> StoreResult<Vec<RevisionRecord>>;
}

/// Instances: desired placement and what nodes report of them.
#[async_trait]
pub trait InstanceStore: Send + Sync + 'static {
    async fn list_instances(&self) -> StoreResult<Vec<InstanceRecord>>;
    /// How many rows of each app run (state `running`), by app id: counted by the database, so
    /// a page of the app list does not decode every instance row.
    async fn running_counts(&self) -> StoreResult<HashMap<String, u32>>;
    /// The rows placed on one node (its assignments), by the `instances_node` index.
    async fn node_instances(&self, node: &str) -> StoreResult<Vec<InstanceRecord>>;
    async fn app_instances(&self, app_id: &str) -> StoreResult<Vec<InstanceRecord>>;
    async fn insert_instance(&self, inst: &InstanceRecord) -> StoreResult<()>;
    async fn delete_instance(&self, id: &str) -> StoreResult<()>;
    async fn place_instance(
        &self,
        id: &str,
        node: Option<&str>,
        placement_error: Option<&str>,
    ) -> StoreResult<()>;
    /// Applies a node's report of an instance; ignored unless the instance is assigned to `node`.
    /// Returns what it replaced, so the caller can tell what changed (crashes, readiness, what
    /// the router cares about); `None` when the instance is not assigned to `node`.
    async fn report_instance(
        &self,
        node: &str,
        report: &InstanceReport,
    ) -> StoreResult<Option<ReportedBefore>>;
    /// A convergence pass's removals, new rows, placements and their events, in one write
    /// transaction (rows and events in multi-row statements), fenced by `fence` when given: all
    /// of it is written, or nothing.
    async fn write_pass(&self, fence: Option<&Fence>, writes: &PassWrites) -> StoreResult<()>;
    /// A node's whole heartbeat in one write transaction: its capacity and last-seen time, then
    /// its rows read once and only those a report changes (state, container, port, restarts,
    /// last exit, since, readiness) written, with the events `events` gives for each; the usage
    /// samples only when `hb.write_usage`. Reports of rows not assigned to `node` are ignored.
    /// An unchanged heartbeat writes the node's row only.
    async fn apply_heartbeat(
        &self,
        node: &str,
        hb: &NodeHeartbeat<'_>,
        events: ReportEvents<'_>,
    ) -> StoreResult<HeartbeatApplied>;
    /// The app (id) of an instance assigned to `node`.
    async fn app_of_instance(&self, instance_id: &str, node: &str) -> StoreResult<Option<String>>;
    /// Marks the app's instances (or those of one process type's index) for rolling replacement;
    /// returns how many.
    async fn retire_instances(
        &self,
        app_id: &str,
        target: Option<(&str, u32)>,
        event: &Event,
    ) -> StoreResult<u64>;
    /// Ids of instance rows marked for replacement.
    async fn retiring_instances(&self) -> StoreResult<HashSet<String>>;
    /// Keeps the node's last resource sample of an instance assigned to it.
    async fn record_usage(
        &self,
        node: &str,
        instance_id: &str,
        usage: &InstanceUsage,
    ) -> StoreResult<()>;
    /// The last resource samples of an app's instances, by instance id.
    async fn app_usage(&self, app_id: &str) -> StoreResult<HashMap<String, InstanceUsage>>;
    /// The last resource samples of every instance, by instance id: one read for the metrics
    /// flush, which asking per app made 1,000 queries every 10 s at 1,000 apps.
    async fn all_usage(&self) -> StoreResult<HashMap<String, InstanceUsage>>;
}

/// The event history.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    async fn add_event(&self, event: &Event) -> StoreResult<()>;
    async fn recent_events(
        &self,
        app_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<(DateTime<Utc>, Event)>>;
    /// Events matching `filter`, oldest first, with ids above `after_id`, at most `limit`.
    async fn list_events(
        &self,
        filter: &EventFilter,
        after_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<EventRow>>;
    async fn count_events(&self, filter: &EventFilter) -> StoreResult<u64>;
    /// The id of the newest `app.create` event of `app_name`: where the current app's history
    /// starts.
    async fn app_created_event(&self, app_id: &str) -> StoreResult<Option<i64>>;
}

/// Stored log lines and log drains.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Stores lines, each with its app's id.
    async fn append_logs(&self, lines: &[(String, std::sync::Arc<LogLine>)]) -> StoreResult<()>;
    async fn recent_logs(&self, app_id: &str, limit: i64) -> StoreResult<Vec<LogLine>>;
    /// The lines of one app with ids from `lo` to `hi`, oldest first: a run another controller
    /// announced (see [`LogFeedStore`]).
    async fn logs_in_range(&self, app_id: &str, lo: i64, hi: i64) -> StoreResult<Vec<LogLine>>;
    /// Keeps the newest `keep` lines of each app.
    async fn trim_logs(&self, keep: i64) -> StoreResult<()>;
    /// Lines of one app matching `filter`, oldest first, at most the newest `limit`.
    async fn query_logs(
        &self,
        app_id: &str,
        filter: &LogQuery,
        limit: i64,
    ) -> StoreResult<Vec<LogLine>>;
    /// The highest log line id stored (0 when none), so the hub's ids keep increasing across
    /// restarts.
    async fn max_log_id(&self) -> StoreResult<i64>;
    /// Retention by age: deletes the lines older than `before` that arrived before every line
    /// still inside the window (in arrival order, as they were appended); returns how many.
    async fn trim_logs_before(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Adds a log drain (idempotent) and records the event.
    async fn add_log_drain(&self, app_id: &str, url: &str, event: &Event) -> StoreResult<()>;
    /// Removes a log drain; returns whether it existed.
    async fn remove_log_drain(&self, app_id: &str, url: &str, event: &Event) -> StoreResult<bool>;
    /// Every drain as (app id, url).
    async fn list_log_drains(&self) -> StoreResult<Vec<(String, String)>>;
}

/// Routes mapped beside the implicit default ones.
#[async_trait]
pub trait RouteStore: Send + Sync + 'static {
    /// Every stored route (default routes are implicit), with its app's name.
    async fn list_routes(&self) -> StoreResult<Vec<RouteRecord>>;
    /// Maps `host` + `path` to the app; `Conflict` if that route is taken (by any app), or if
    /// the host already has routes of an app in another space (a host belongs to one space).
    async fn add_route(
        &self,
        app_id: &str,
        host: &str,
        path: &str,
        event: &Event,
    ) -> StoreResult<()>;
    /// Unmaps the route from the app; `NotFound` if the app has no such route.
    async fn delete_route(
        &self,
        app_id: &str,
        host: &str,
        path: &str,
        event: &Event,
    ) -> StoreResult<()>;
}

/// What builds use: buildpacks, allowed base images, droplets' process types and images, the
/// upload file cache.
#[async_trait]
pub trait BuildStore: Send + Sync + 'static {
    /// Operator-added buildpacks in detection order.
    async fn list_buildpacks(&self) -> StoreResult<Vec<BuildpackRecord>>;
    /// Adds a buildpack last in order; `Conflict` if the name is taken.
    async fn add_buildpack(
        &self,
        name: &str,
        blob: &str,
        created_by: &str,
        event: &Event,
    ) -> StoreResult<()>;
    /// Removes a buildpack; `NotFound` if there is none of that name.
    async fn delete_buildpack(&self, name: &str, event: &Event) -> StoreResult<()>;
    /// Base images a Dockerfile may name besides the stack image, by name, sorted.
    async fn list_base_images(&self) -> StoreResult<Vec<BaseImageRecord>>;
    /// Allows a base image (idempotent) and records the event.
    async fn add_base_image(&self, name: &str, created_by: &str, event: &Event) -> StoreResult<()>;
    /// Disallows a base image; `NotFound` if it was not allowed.
    async fn delete_base_image(&self, name: &str, event: &Event) -> StoreResult<()>;
    /// Records the start command per process type of a droplet (issue 3, processes).
    async fn set_droplet_processes(
        &self,
        droplet: &str,
        processes: &BTreeMap<String, String>,
    ) -> StoreResult<()>;
    /// Start commands per process type of every droplet that has them, by droplet sha256.
    async fn droplet_processes(&self) -> StoreResult<HashMap<String, BTreeMap<String, String>>>;
    /// Records that a droplet is an image built from a Dockerfile (issue 3).
    async fn set_droplet_image(
        &self,
        droplet: &str,
        image: &paas_common::agent::DropletImage,
    ) -> StoreResult<()>;
    /// Every droplet that is an image, by droplet sha256.
    async fn droplet_images(
        &self,
    ) -> StoreResult<HashMap<String, paas_common::agent::DropletImage>>;
    /// Records the source digest a droplet was staged from (`paas apply`).
    async fn set_droplet_tree(&self, droplet: &str, tree: &str) -> StoreResult<()>;
    /// The source digest a droplet was staged from, if its push recorded one.
    async fn droplet_tree(&self, droplet: &str) -> StoreResult<Option<String>>;
    /// Of `files`, those `owner` has uploaded before (incremental upload).
    async fn known_files(&self, owner: &str, files: &[(String, u64)]) -> StoreResult<Vec<String>>;
    /// Records files `owner` uploaded.
    async fn remember_files(&self, owner: &str, files: &[(String, u64)]) -> StoreResult<()>;
    /// Every cached file's blob, so collection keeps them.
    async fn cached_file_blobs(&self) -> StoreResult<Vec<String>>;
}

/// Per-app metrics over time.
#[async_trait]
pub trait MetricStore: Send + Sync + 'static {
    /// Stores metric rows (a row already stored for that app and time is replaced).
    async fn add_app_metrics(&self, rows: &[MetricRow]) -> StoreResult<()>;
    /// One app's rows from `since` (unix seconds) on, oldest first.
    async fn app_metrics(&self, app_id: &str, since: i64) -> StoreResult<Vec<MetricRow>>;
    /// Deletes rows older than `before` (unix seconds); returns how many.
    async fn trim_app_metrics(&self, before: i64) -> StoreResult<u64>;
}

/// A lease as stored: who holds it, at which epoch, until when (database clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// One more at every change of holder.
    pub epoch: i64,
    /// Milliseconds since the Unix epoch, by the database's clock.
    pub expires_at_ms: i64,
}

/// What a fenced write carries: it is applied only while `holder` still holds lease `name` at
/// `epoch`, unexpired, checked inside the write's own transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

impl From<&Lease> for Fence {
    fn from(l: &Lease) -> Self {
        Self {
            name: l.name.clone(),
            holder: l.holder.clone(),
            epoch: l.epoch,
        }
    }
}

/// Leader leases and the scheduler's fenced writes (several controllers on one database).
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Whether several controllers may share this database (PostgreSQL), so the scheduler must
    /// hold the lease; SQLite has one controller, which always leads.
    fn shared(&self) -> bool;
    /// Takes lease `name` for `holder` when it is free or expired (the epoch grows by one when
    /// the holder changes), or renews it when `holder` has it; one statement. `Some`: `holder`
    /// now holds it until `ttl` from now; `None`: someone else does.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<Option<Lease>>;
    /// Lets the lease go at once if `holder` has it (a graceful stop), keeping its epoch.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool>;
    /// The lease as stored, expired or not.
    async fn lease(&self, name: &str) -> StoreResult<Option<Lease>>;
    /// [`NodeStore::mark_lost_nodes`], fenced.
    async fn fenced_mark_lost_nodes(
        &self,
        fence: &Fence,
        before: DateTime<Utc>,
    ) -> StoreResult<Vec<String>>;
    /// [`NodeStore::set_node_state`], fenced.
    async fn fenced_set_node_state(
        &self,
        fence: &Fence,
        name: &str,
        state: &str,
        event: &Event,
    ) -> StoreResult<()>;
    /// [`InstanceStore::insert_instance`], fenced.
    async fn fenced_insert_instance(&self, fence: &Fence, inst: &InstanceRecord)
        -> StoreResult<()>;
    /// [`InstanceStore::delete_instance`], fenced.
    async fn fenced_delete_instance(&self, fence: &Fence, id: &str) -> StoreResult<()>;
    /// [`InstanceStore::place_instance`], fenced.
    async fn fenced_place_instance(
        &self,
        fence: &Fence,
        id: &str,
        node: Option<&str>,
        placement_error: Option<&str>,
    ) -> StoreResult<()>;
}

/// Every role: what handlers hold (`Arc<dyn Store>`). Implemented for anything that implements
/// all the roles, so a backend only implements those.
pub trait Store:
    AuthStore
    + SpaceStore
    + NodeStore
    + AppStore
    + RevisionStore
    + InstanceStore
    + EventStore
    + LogStore
    + RouteStore
    + BuildStore
    + MetricStore
    + RollupStore
    + NodeMetricStore
    + QuotaStore
    + StagingStore
    + LogFeedStore
    + DomainStore
    + ServiceStore
    + SshStore
    + IdentityStore
    + TaskStore
    + CronStore
    + AutoscaleStore
    + DeploymentStore
    + LeaseStore
    + BuiltinServiceStore
    + NetworkStore
{
}

impl<T> Store for T where
    T: AuthStore
        + SpaceStore
        + NodeStore
        + AppStore
        + RevisionStore
        + InstanceStore
        + EventStore
        + LogStore
        + RouteStore
        + BuildStore
        + MetricStore
        + RollupStore
        + NodeMetricStore
        + QuotaStore
        + StagingStore
        + LogFeedStore
        + DomainStore
        + ServiceStore
        + SshStore
        + IdentityStore
        + TaskStore
        + CronStore
        + AutoscaleStore
        + DeploymentStore
        + LeaseStore
        + BuiltinServiceStore
        + NetworkStore
{
}

/// The role traits, for calling store methods on a concrete backend (`dyn Store` needs none).
pub mod prelude {
    pub use super::{
        AppStore, AuthStore, AutoscaleStore, BuildStore, BuiltinServiceStore, CronStore,
        DeploymentStore, DomainStore, EventStore, IdentityStore, InstanceStore, LeaseStore,
        LogFeedStore, LogStore, MetricStore, NetworkStore, NodeMetricStore, NodeStore, QuotaStore,
        RevisionStore, RollupStore, RouteStore, ServiceStore, SpaceStore, SshStore, StagingStore,
        Store, TaskStore,
    };
}

/// One app's metrics over one interval (`migrations/sqlite/0022_app_metrics.sql`, issue 26).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub app_id: String,
    /// The interval's start, unix seconds.
    pub ts: i64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub memory_bytes: u64,
    pub cpu_percent: f64,
    pub restarts: u64,
    /// (index, memory bytes, CPU percent) per instance.
    pub instances: Vec<(u32, u64, f64)>,
}

/// A base image an operator allowed for Dockerfile builds (`migrations/sqlite/0019_*.sql`).
#[derive(Debug, Clone)]
pub struct BaseImageRecord {
    pub name: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// An operator-added buildpack (`migrations/sqlite/0009_issue3b.sql`).
#[derive(Debug, Clone)]
pub struct BuildpackRecord {
    pub name: String,
    pub position: i64,
    pub blob: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// Settings of one non-web process type of an app (`migrations/sqlite/0009_issue3b.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    pub process_type: String,
    pub instances: u32,
    /// `None`: the app's memory.
    pub memory_mb: Option<u64>,
    /// `None`: the droplet's command for this type.
    pub command: Option<String>,
    /// `None`: a process check (a worker listens on no port).
    pub health: Option<paas_common::agent::HealthSettings>,
}

impl ProcessRecord {
    /// A process type the droplet declares and nobody has configured yet.
    pub fn default_for(process_type: &str) -> Self {
        Self {
            process_type: process_type.into(),
            instances: 1,
            memory_mb: None,
            command: None,
            health: None,
        }
    }

    pub fn health_or_default(&self) -> paas_common::agent::HealthSettings {
        self.health
            .clone()
            .unwrap_or(paas_common::agent::HealthSettings {
                check: paas_common::agent::HealthCheck::Process,
                ..Default::default()
            })
    }
}

/// A stored route (see `migrations/sqlite/0003_issue5.sql`).
#[derive(Debug, Clone)]
pub struct RouteRecord {
    pub host: String,
    pub path: String,
    pub app_id: String,
    pub app_name: String,
    pub https_redirect: bool,
    pub hsts: bool,
}

/// Filters of a log query, parsed once from the API's query string.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Source prefixes: `APP` matches `APP/web/0`; empty means all.
    pub sources: Vec<String>,
    pub instance: Option<u32>,
    pub since: Option<DateTime<Utc>>,
    /// Plain substring of the message.
    pub grep: Option<String>,
}

impl LogQuery {
    pub fn matches(&self, l: &LogLine) -> bool {
        (self.sources.is_empty()
            || self.sources.iter().any(|s| {
                l.source == *s
                    || (l.source.starts_with(s.as_str())
                        && l.source.as_bytes().get(s.len()) == Some(&b'/'))
            }))
            && self
                .instance
                .is_none_or(|i| crate::loghub::split_app_source(&l.source).1 == Some(i))
            && self.since.is_none_or(|t| l.timestamp >= t)
            && self
                .grep
                .as_ref()
                .is_none_or(|g| l.message.contains(g.as_str()))
    }
}

/// Opens the store `url` names: `sqlite://PATH` or `postgres://...` (`postgresql://` too).
pub async fn open(url: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(std::sync::Arc::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::open(url).await?))
    } else {
        Err(StoreError::Config(
            "PAAS_DATABASE_URL must start with sqlite:// or postgres://".into(),
        ))
    }
}
