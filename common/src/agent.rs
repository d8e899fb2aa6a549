//! The controller <-> agent protocol. Level-triggered: the agent long-polls its whole assignment
//! list and makes its engine match it; it reports the whole actual state of its instances in every
//! heartbeat. A lost message is healed by the next poll or heartbeat, never by a retry path.
//!
//! Endpoints (all under `/v1/agent`, bearer auth):
//! - `POST /register` with the join token -> [`RegisterResponse`] (a node credential)
//! - `POST /heartbeat` [`Heartbeat`] with the node credential
//! - `GET /assignments?after=VERSION` -> [`Assignments`]; answers at once when the list's version
//!   differs from `after`, else holds up to ~25 s and answers with the unchanged list
//! - `GET /droplets/{sha256}` -> the droplet tar
//! - `POST /logs` a batch of [`AgentLogLine`]s in the compact framing of [`crate::logwire`]
//!   (`Content-Type: application/x-paas-log-batch`), or a JSON [`LogBatch`]
//! - `GET /builds/{id}/source` -> the source tar of a build assigned to this node (issue 3)
//! - `POST /builds/{id}/logs` [`LogBatch`] -> `STG` lines of that build, live
//! - `PUT /builds/{id}/droplet` the droplet tar -> [`DropletUploaded`]
//! - `POST /builds/{id}/result` [`BuildResult`]: the build is over (staged or failed)
//! - `GET /buildpacks/{sha256}` -> the tar of an operator-added buildpack a build names
//! - `POST /instances/{id}/identity` [`IdentityRequest`] (a CSR for a key the node made) ->
//!   [`IdentityResponse`]: the instance's identity certificate (issue 25), signed by the platform
//!   CA, only for an instance assigned to the calling node
//!
//! A droplet is either a tar of `/app` (buildpacks) or, for an app with a Dockerfile, the
//! `docker save` tar of the image built from it ([`DropletImage`]); a node that lacks that image
//! loads it from the droplet, never from a registry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::api::InstanceState;

/// How a node's `last_exit` begins once it stopped restarting a crashing instance: such an
/// instance reserves nothing on its node any more (the scheduler's accounting skips it).
pub const GAVE_UP_PREFIX: &str = "gave up after ";

/// Whether an instance is crashed for good (see [`GAVE_UP_PREFIX`]).
pub fn gave_up(state: InstanceState, last_exit: Option<&str>) -> bool {
    state == InstanceState::Crashed && last_exit.is_some_and(|e| e.starts_with(GAVE_UP_PREFIX))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeCapacity {
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub instance_slots: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub node_name: String,
    /// The address instances are published on and the router connects to.
    pub address: String,
    pub zone: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub capacity: NodeCapacity,
    /// The node's instance network's subnet (CIDR), for the other nodes' routes to it
    /// (issue 25). Absent from an older agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_name: String,
    /// The node's own credential, sent as bearer token on every later call.
    pub node_token: String,
    pub heartbeat_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub capacity: NodeCapacity,
    /// Every instance the agent owns, in any state. An assigned instance missing from this list
    /// is one the agent has not started yet.
    pub instances: Vec<InstanceReport>,
    /// Every task assigned to the node that it started (running or ended, until unassigned).
    #[serde(default)]
    pub tasks: Vec<TaskReport>,
    /// Every built-in service container assigned to the node (issue 22).
    #[serde(default)]
    pub services: Vec<ServiceReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The assignment version the controller holds now; a differing version tells the agent to
    /// fetch its assignments at once.
    pub assignments_version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceReport {
    pub instance_id: String,
    pub state: InstanceState,
    pub container_id: Option<String>,
    /// Port on the node address the instance's `PORT` is published on.
    pub host_port: Option<u16>,
    /// Restarts since the instance was assigned.
    pub restarts: u32,
    /// Why the last run ended, e.g. "exited with code 1", "OOM-killed", "health check failed".
    pub last_exit: Option<String>,
    /// When the instance entered its current state.
    pub since: DateTime<Utc>,
    /// Resource use sampled from the engine every few seconds; absent until the first sample.
    #[serde(default)]
    pub usage: Option<crate::api::InstanceUsage>,
    /// Whether the instance passes its readiness check (always true without one). Only a
    /// running, ready instance is routed; an unready one keeps running. Absent from an older
    /// agent, which has no readiness checks: ready.
    #[serde(default = "ready_by_default")]
    pub ready: bool,
    /// The container's IPv4 address on the node's instance network (issue 25): what
    /// `NAME.apps.internal` resolves to and what network policies name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

fn ready_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignments {
    pub version: u64,
    pub instances: Vec<Assignment>,
    /// Builds (staging) this node should run, until it reports their result. Level-triggered
    /// like instances: a build stays listed until the controller has its result.
    #[serde(default)]
    pub builds: Vec<BuildAssignment>,
    /// Images of Dockerfile droplets the controller has collected: the node removes them from its
    /// engine when they carry the platform's image label and no container uses them. Only these,
    /// so an engine shared with anything else never loses an image it did not get from us.
    #[serde(default)]
    pub collected_images: Vec<String>,
    /// One-off tasks placed on this node that have not finished (issue 21). A task is listed
    /// until the controller has its end; the node starts each at most once, ever.
    #[serde(default)]
    pub tasks: Vec<TaskAssignment>,
    /// Containers of the built-in service brokers (issue 22) placed on this node: each runs
    /// until it leaves the list, which is its deprovision (container, then its data volume, go).
    #[serde(default)]
    pub services: Vec<ServiceAssignment>,
    /// App-to-app networking (issue 25): the internal DNS table and the network policies this
    /// node enforces. Absent from an older controller: nothing resolves, nothing is open.
    #[serde(default)]
    pub network: crate::network::NodeNetwork,
}

/// One built-in service instance (PostgreSQL or Redis) to keep running on this node, its data on
/// the named volume [`ServiceAssignment::volume`], reachable by the controller on a port
/// published on the node address and by bound apps on the service's own network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceAssignment {
    /// The platform's service instance id.
    pub service_id: String,
    /// `postgresql` or `redis`.
    pub kind: String,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// The password of the service's administrator (`paas_admin` / Redis `default`), set the
    /// first time the data volume is initialised.
    pub admin_password: String,
    /// Backups and restores to run in the service container (PostgreSQL), each until the
    /// controller has its result: a backup uploads `pg_dump -Fc` of the database to
    /// `PUT /v1/agent/service-jobs/{id}/dump`; a restore feeds `GET` of the same path to
    /// `pg_restore --clean`; both then `POST /v1/agent/service-jobs/{id}/result`.
    #[serde(default)]
    pub jobs: Vec<ServiceJob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceJob {
    pub id: String,
    /// `backup` or `restore`.
    pub kind: String,
}

/// How a service job ended on the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceJobResult {
    /// Why it failed; `None`: it succeeded.
    #[serde(default)]
    pub error: Option<String>,
}

impl ServiceAssignment {
    /// The named volume holding the service's data; removed only on deprovision.
    pub fn volume(&self) -> String {
        format!("paas-svc-{}", self.service_id)
    }

    /// The service's own bridge: the service container and the containers of apps bound to it,
    /// nothing else (app instances are on an ICC-less bridge and cannot reach it otherwise).
    pub fn network(&self) -> String {
        service_network(&self.service_id)
    }

    /// The service's host name on [`Self::network`].
    pub fn alias(&self) -> String {
        format!("svc-{}", self.service_id)
    }

    /// The port the service listens on inside its container (and on its network).
    pub fn port(&self) -> u16 {
        match self.kind.as_str() {
            "redis" => 6379,
            _ => 5432,
        }
    }
}

/// What a node knows of one service container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceReport {
    pub service_id: String,
    /// Whether its container runs now.
    pub running: bool,
    /// The port published on the node address, once the container started.
    #[serde(default)]
    pub host_port: Option<u16>,
    /// Starts after the first (crashes the engine or the agent restarted).
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub last_exit: Option<String>,
}

/// One task to run once on this node: `run` says what and how, exactly as an instance (its
/// `instance_id` is the task's id, `process_type` is `task`), in the same sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskAssignment {
    /// The app's sequence number: the log source is `TASK/<sequence>`.
    pub sequence: u64,
    pub name: String,
    pub run: Assignment,
}

/// What a node knows of a task it was assigned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskReport {
    pub task_id: String,
    /// `None` while it runs.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Why it ended without an exit code of its own (`lost`: started before, container gone),
    /// or what ended it (`OOM-killed`).
    #[serde(default)]
    pub failure: Option<String>,
}

/// A droplet built from the app's Dockerfile: the droplet blob is the image's `docker save` tar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DropletImage {
    /// The engine's image id (`sha256:...`), the same on every node that loaded the tar.
    pub id: String,
    /// The port the app listens on inside its container (the image's exposed port, else 8080);
    /// `PORT` is set to it.
    pub port: u16,
    /// The numeric `uid:gid` its instances run as, resolved at build from the image's `USER`
    /// and `/etc/passwd` (a name may map to uid 0); never root.
    #[serde(default)]
    pub user: String,
}

/// One staging run: unpack the source tar in `/app` of a sandboxed stack container, run the
/// buildpacks' `bin/detect`, `bin/compile` and `bin/release`, and send back `/app` as the droplet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildAssignment {
    pub build_id: String,
    pub app: String,
    /// Buildpack names to try in order; empty: every built-in, first that detects wins.
    #[serde(default)]
    pub buildpacks: Vec<String>,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub timeout_secs: u64,
    /// Operator-added buildpacks, tried after the built-ins in this order; fetch each from
    /// `GET /v1/agent/buildpacks/{sha256}` (a tar with `bin/detect`, `bin/compile`, `bin/release`).
    #[serde(default)]
    pub custom_buildpacks: Vec<CustomBuildpack>,
    /// Build the source's `Dockerfile` on the node's engine (local base images only, no network)
    /// instead of running buildpacks; the image becomes the droplet.
    #[serde(default)]
    pub dockerfile: bool,
    /// Base images a Dockerfile may name besides the node's stack image, by name with tag
    /// (`paas allow-base-image`); anything else is refused before the build (issue 18).
    #[serde(default)]
    pub allowed_base_images: Vec<String>,
    /// The stack to stage on (a name from [`crate::stack::KNOWN`]); empty: the node's default.
    /// The droplet records it (`.paas/stack`), so its instances run the same stack's run image.
    #[serde(default)]
    pub stack: String,
    /// Stage without restoring the dependency cache (`paas push --no-cache`); the fresh result
    /// still replaces the cached one.
    #[serde(default)]
    pub no_cache: bool,
    /// Who shares dependency cache entries (the app's space): apps in one space with the same
    /// lockfile on the same stack reuse one entry; other spaces never see it.
    #[serde(default)]
    pub cache_scope: String,
}

/// An operator-added buildpack as a build assignment names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomBuildpack {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropletUploaded {
    pub sha256: String,
    pub size: u64,
}

/// How a build ended, as the node saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildResult {
    /// The buildpack that detected and compiled, when one did.
    #[serde(default)]
    pub buildpack: Option<String>,
    /// The uploaded droplet, when staging succeeded.
    #[serde(default)]
    pub droplet: Option<String>,
    /// Start command per process type (Procfile, else the buildpack's `bin/release`).
    #[serde(default)]
    pub processes: BTreeMap<String, String>,
    /// Why staging failed, for the user.
    #[serde(default)]
    pub error: Option<String>,
    /// Set when the droplet is an image built from a Dockerfile.
    #[serde(default)]
    pub image: Option<DropletImage>,
    /// The dependency layer came from the node's cache (same dependency files): the push's
    /// phases say so (issue 24).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dependencies_restored: bool,
    /// No staging container ran: the app's code alone changed since an additive staging, and the
    /// droplet is the new source plus the layers that staging added (issue 24).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub layers_reused: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum HealthCheck {
    /// A TCP connect to `PORT` succeeds.
    Port,
    /// `GET endpoint` on `PORT` answers 2xx.
    Http { endpoint: String },
    /// The process is alive.
    Process,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthSettings {
    pub check: HealthCheck,
    /// Per attempt.
    pub invocation_timeout_secs: u64,
    /// How long an instance may take to pass its first check before it counts as crashed.
    pub start_timeout_secs: u64,
    /// Between checks while starting.
    pub start_interval_secs: u64,
    /// Between checks once running.
    pub interval_secs: u64,
    /// A readiness check beside the liveness one above; `None`: ready whenever running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ReadinessSettings>,
}

/// Cloud Foundry's readiness check: while it fails the instance is out of the routes, but it is
/// neither restarted nor counted as crashed; when it passes again it is routed again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadinessSettings {
    pub check: HealthCheck,
    /// Per attempt.
    pub invocation_timeout_secs: u64,
    /// Between checks, from the moment the instance runs.
    pub interval_secs: u64,
}

impl ReadinessSettings {
    /// Seconds between readiness checks when the manifest does not say.
    pub const DEFAULT_INTERVAL_SECS: u64 = 5;
}

impl Default for HealthSettings {
    /// Cloud Foundry's defaults.
    fn default() -> Self {
        Self {
            check: HealthCheck::Port,
            invocation_timeout_secs: 1,
            start_timeout_secs: 60,
            start_interval_secs: 2,
            interval_secs: 30,
            readiness: None,
        }
    }
}

/// One instance the controller wants running on this node. Everything the agent needs to run it
/// is here; an assignment never changes in place (a new revision is a new instance id), but for
/// its log rate limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Assignment {
    pub instance_id: String,
    pub app: String,
    pub process_type: String,
    pub index: u32,
    /// sha256 of the droplet tar in the blobstore; download from `/v1/agent/droplets/{sha256}`.
    pub droplet: String,
    /// Run with `/bin/sh -c` in the app directory (`/app`), as the unprivileged user.
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub cpu_shares: u64,
    pub pids_limit: i64,
    pub health: HealthSettings,
    /// Set when the droplet is an image (Dockerfile): the instance runs that image, loaded from
    /// the droplet when the engine lacks it, instead of the stack image with `/app` unpacked.
    #[serde(default)]
    pub image: Option<DropletImage>,
    /// The app's log rate limit in bytes per second for this instance, set by its developer;
    /// `None`: the node's default. The one field that may change while the instance runs (the
    /// agent applies it to the running instance's collector, nothing restarts), so a new limit
    /// needs no new instance.
    #[serde(default)]
    pub log_rate_limit_bytes: Option<u64>,
    /// What Cloud Foundry's runtime contract tells an instance about its app (the agent builds
    /// `VCAP_APPLICATION` and the `CF_INSTANCE_*` variables from it). Absent from an older
    /// controller: the agent fills in what it knows (the name).
    #[serde(default)]
    pub context: Option<AppContext>,
    /// Docker networks of built-in service instances the app is bound to (issue 22): the
    /// instance's container joins each, beside its ICC-less bridge, so it reaches those services
    /// (by their alias) and nothing else. Derived from the revision's bindings, so it never
    /// changes for a running instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// The revision's sidecars for this process type: each runs in its own container in the
    /// instance's network namespace, its memory carved out of `memory_mb` (see
    /// [`Assignment::process_memory_mb`]). Part of the revision, so it never changes for a
    /// running instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<crate::api::Sidecar>,
}

impl Assignment {
    /// The memory of the process's own container: the instance's memory less its sidecars'
    /// (the controller refuses sidecars that leave nothing; never below 1 MB here).
    pub fn process_memory_mb(&self) -> u64 {
        let taken: u64 = self
            .sidecars
            .iter()
            .map(crate::api::Sidecar::reserved_mb)
            .sum();
        self.memory_mb.saturating_sub(taken).max(1)
    }
}

/// The Docker network of a built-in service instance: its container and the containers of the
/// apps bound to it.
pub fn service_network(service_id: &str) -> String {
    format!("paas-svc-{service_id}")
}

/// The app an instance belongs to, as `VCAP_APPLICATION` describes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppContext {
    pub app_id: String,
    pub space_id: String,
    pub space_name: String,
    /// Orgs have no id of their own: a stable one derived from the org's name.
    pub org_id: String,
    pub org_name: String,
    /// The app's routes as `host[/path]`, its default one first.
    pub uris: Vec<String>,
    /// The revision the instance runs (`application_version`, `version`).
    pub revision: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentLogLine {
    pub instance_id: String,
    pub timestamp: DateTime<Utc>,
    /// `APP/<process>/<index>` (a sidecar's: `.../SIDECAR/<name>`) or `CELL`.
    pub source: String,
    /// `stdout`, `stderr`, or `out` for platform lines.
    pub stream: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogBatch {
    pub lines: Vec<AgentLogLine>,
}

/// Where an instance finds its identity certificate and key (issue 25), as in Cloud Foundry:
/// a read-only folder whose files are replaced (never rewritten in place) before they expire.
pub const INSTANCE_CREDENTIALS_DIR: &str = "/etc/cf-instance-credentials";
/// The instance's certificate, then the platform CA's (`CF_INSTANCE_CERT`).
pub const INSTANCE_CERT_FILE: &str = "instance.crt";
/// The instance's private key, PKCS#8 PEM (`CF_INSTANCE_KEY`).
pub const INSTANCE_KEY_FILE: &str = "instance.key";
/// The platform CA alone, the trust anchor for verifying another instance's certificate.
pub const INSTANCE_CA_FILE: &str = "ca.crt";

/// A node asks for an instance's identity certificate: the key stays on the node, only this
/// certificate signing request (PEM) travels. The controller takes the public key from it and
/// decides every name in the certificate itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityRequest {
    pub csr_pem: String,
}

/// An instance identity certificate: CN the instance id, OUs `app:`, `space:` and
/// `organization:` with their ids (Cloud Foundry's form), a SPIFFE URI
/// `spiffe://paas/space/<space_id>/app/<app_id>` and a DNS name of the instance id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityResponse {
    /// The leaf, then the platform CA.
    pub certificate_chain_pem: String,
    pub ca_pem: String,
    /// Hex serial number of the leaf.
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}
