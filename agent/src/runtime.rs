//! The Docker side of the agent: droplet images, the sandboxed instance containers and their
//! network. Every container this module creates carries the platform labels with this node's
//! name, and every listing filters on them, so several agents can share one engine without ever
//! touching each other's (or anyone else's) containers.

use async_trait::async_trait;
use bollard::container::{
    Config, CreateContainerOptions, KillContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions, UploadToContainerOptions,
};
use bollard::models::{
    HostConfig, HostConfigLogConfig, Mount, MountTypeEnum, PortBinding, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::network::CreateNetworkOptions;
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use paas_common::agent::Assignment;
use paas_common::agent::{INSTANCE_CERT_FILE, INSTANCE_CREDENTIALS_DIR, INSTANCE_KEY_FILE};
use paas_common::labels;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The port every app listens on inside its container (`PORT`).
pub const APP_PORT: u16 = 8080;
const APP_DIR: &str = "/app";
const APP_USER: &str = "2000:2000";
/// Grace period between SIGTERM and SIGKILL when an instance is stopped.
const STOP_GRACE_SECS: i64 = 10;
/// Open files per instance, Cloud Foundry's default.
pub const FDS_LIMIT: i64 = 16384;
/// Where instances write besides a buildpack droplet's `/app` volume: the tmpfs (`TMPDIR`, and
/// `HOME` of an image that names none); the root file system is read-only.
const TMP_DIR: &str = "/tmp";

/// Runs a buildpack droplet's start command the way Cloud Foundry's launcher does: the
/// buildpacks' `.profile.d/*.sh` and then the app's own `.profile` are sourced first (in the app
/// folder, so they can set `PATH` or export settings), then the command (`$1`) replaces the
/// shell, so it is the process the engine signals.
const LAUNCHER: &str = r#"cd /app || exit 1
for f in /app/.profile.d/*.sh; do if [ -f "$f" ]; then . "$f"; fi; done
if [ -f /app/.profile ]; then . /app/.profile; fi
exec /bin/sh -c "$1""#;

/// The `uid:gid` an instance's processes run as: the platform's unprivileged user, or for a
/// Dockerfile droplet the numeric user resolved at build (`run_user` again, so root never gets
/// through).
pub fn instance_user(
    a: &Assignment,
    image_config: Option<&bollard::models::ImageConfig>,
) -> String {
    match a.image.as_ref().zip(image_config) {
        None => APP_USER.into(),
        Some((i, ic)) if i.user.is_empty() => crate::dockerfile::run_user(ic.user.as_deref()),
        Some((i, _)) => crate::dockerfile::run_user(Some(&i.user)),
    }
}

/// A free port on the node address, for an instance to be published on; `None` when the agent
/// cannot bind there (the engine then picks one).
pub(crate) fn free_host_port(address: &str) -> Option<u16> {
    std::net::TcpListener::bind((address, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()
}

/// Cloud Foundry's runtime contract: `PORT`, `VCAP_APP_HOST`/`VCAP_APP_PORT`, `VCAP_APPLICATION`,
/// `VCAP_SERVICES`, `CF_INSTANCE_*`, `MEMORY_LIMIT`, a writable `HOME` and `TMPDIR`; then the
/// platform's own `PAAS_*` and the app's env, which may override any of them.
pub fn contract_env(
    a: &Assignment,
    port: u16,
    host_port: Option<u16>,
    node_address: &str,
    home: Option<&str>,
) -> Vec<String> {
    let c = a.context.clone().unwrap_or_default();
    let mut vcap = serde_json::json!({
        "application_id": c.app_id,
        "application_name": a.app,
        "application_uris": c.uris,
        "application_version": c.revision.to_string(),
        "name": a.app,
        "uris": c.uris,
        "version": c.revision.to_string(),
        "space_id": c.space_id,
        "space_name": c.space_name,
        "organization_id": c.org_id,
        "organization_name": c.org_name,
        "instance_id": a.instance_id,
        "instance_index": a.index,
        "process_id": c.app_id,
        "process_type": a.process_type,
        "host": "0.0.0.0",
        "port": port,
        "limits": {"mem": a.process_memory_mb(), "disk": a.disk_mb, "fds": FDS_LIMIT},
    });
    if let Some(p) = host_port {
        vcap["instance_port"] = p.into();
    }
    let mut env = vec![
        format!("PORT={port}"),
        format!("VCAP_APP_PORT={port}"),
        "VCAP_APP_HOST=0.0.0.0".to_string(),
        format!("VCAP_APPLICATION={vcap}"),
        "VCAP_SERVICES={}".to_string(),
        // The process's own container: the instance's memory less its sidecars'.
        format!("MEMORY_LIMIT={}m", a.process_memory_mb()),
        format!("CF_INSTANCE_INDEX={}", a.index),
        format!("CF_INSTANCE_GUID={}", a.instance_id),
        format!("CF_INSTANCE_IP={node_address}"),
        format!("TMPDIR={TMP_DIR}"),
    ];
    if let Some(p) = host_port {
        env.push(format!("CF_INSTANCE_PORT={p}"));
        env.push(format!("CF_INSTANCE_ADDR={node_address}:{p}"));
    }
    if let Some(h) = home {
        env.push(format!("HOME={h}"));
    }
    env.extend([
        format!("PAAS_APP={}", a.app),
        format!("PAAS_INSTANCE_INDEX={}", a.index),
    ]);
    env.extend(a.env.iter().map(|(k, v)| format!("{k}={v}")));
    env
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("downloading droplet {sha}: {message}")]
    DropletFetch { sha: String, message: String },
    #[error("droplet {expected} arrived with digest {actual}")]
    DropletDigest { expected: String, actual: String },
    #[error("container {0} has no state")]
    NoState(String),
    #[error("loading the image of droplet {sha}: {message}")]
    ImageLoad { sha: String, message: String },
    #[error("{0}")]
    Network(String),
}

/// Where droplet tars come from: the controller in production, a map in tests.
#[async_trait]
pub trait DropletSource: Send + Sync {
    async fn fetch(&self, sha256: &str) -> Result<bytes::Bytes, String>;
}

#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub node_name: String,
    /// Host IP instance ports are published on.
    pub node_address: String,
    pub network: String,
    /// The default stack's run image: what a Dockerfile names first.
    pub stack_image: String,
    /// The bridge network staging containers join.
    pub staging_network: String,
    /// The json-file driver's rotation of each instance's output (`max-size`, `max-file`).
    pub log_max_size: String,
    pub log_max_files: u32,
    /// Whether followers read the json-file log directly (else the engine's logs API).
    pub read_log_files: bool,
}

impl RuntimeSettings {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            node_name: settings.node_name.clone(),
            node_address: settings.node_address.clone(),
            network: settings.docker_network.clone(),
            stack_image: paas_common::stack::run_image(paas_common::stack::DEFAULT),
            staging_network: settings.staging_network.clone(),
            log_max_size: settings.log_file_max_size.clone(),
            log_max_files: settings.log_file_max_files.max(1),
            read_log_files: settings.log_read_files,
        }
    }
}

/// One of this node's instance containers, as listed by the engine.
#[derive(Debug, Clone)]
pub struct OwnedContainer {
    pub id: String,
    pub instance_id: String,
    pub running: bool,
}

/// One of this node's sidecar containers, as listed by the engine.
#[derive(Debug, Clone)]
pub struct OwnedSidecar {
    pub id: String,
    pub instance_id: String,
    /// The sidecar's name.
    pub name: String,
    /// The instance container whose network namespace it shares.
    pub of: String,
    pub running: bool,
}

/// What the engine knows about one container's current or last run.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub host_port: Option<u16>,
    /// The container's address on the instance network.
    pub ip: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    /// The json-file driver's log of the container (empty with other drivers).
    pub log_path: Option<std::path::PathBuf>,
}

impl ContainerStatus {
    /// The reason shown to users for a run that ended.
    pub fn exit_reason(&self) -> String {
        if self.oom_killed {
            "OOM-killed".into()
        } else {
            format!("exited with code {}", self.exit_code)
        }
    }
}

pub struct Runtime {
    docker: Docker,
    settings: RuntimeSettings,
    /// One lock per droplet so concurrent instances of one app fetch it once.
    droplet_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Droplets this node fetched, newest last, bounded by [`DROPLET_CACHE_BYTES`].
    droplet_cache: Mutex<Vec<(String, bytes::Bytes)>>,
    /// The instance network's subnet and gateway, read once it exists (issue 25): instances
    /// resolve names through the node's resolver on the gateway.
    instance_net: std::sync::OnceLock<InstanceNet>,
}

/// The instance network's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceNet {
    /// CIDR, e.g. `172.18.0.0/16`.
    pub subnet: String,
    pub gateway: std::net::Ipv4Addr,
}

/// Droplets kept in memory per node; an evicted one is fetched again when next needed.
const DROPLET_CACHE_BYTES: usize = 512 << 20;

/// Connects to the local engine, settling on an API version it accepts.
pub async fn connect_docker() -> Result<Docker, bollard::errors::Error> {
    // bollard's default API version is newer than some engines in use (20.10 speaks 1.41).
    Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await
}

impl Runtime {
    pub fn new(docker: Docker, settings: RuntimeSettings) -> Self {
        Self {
            docker,
            settings,
            droplet_locks: Mutex::default(),
            droplet_cache: Mutex::default(),
            instance_net: std::sync::OnceLock::new(),
        }
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    /// The instance network's subnet and gateway, once [`Self::ensure_network`] read them.
    pub fn instance_net(&self) -> Option<&InstanceNet> {
        self.instance_net.get()
    }

    /// Creates the instance network with inter-container traffic disabled, so apps reach each
    /// other only through the router.
    pub async fn ensure_network(&self) -> Result<(), RuntimeError> {
        self.ensure_bridge(&self.settings.network, "instance")
            .await?;
        let net = self
            .docker
            .inspect_network::<String>(&self.settings.network, None)
            .await?;
        let ipv4 = net
            .ipam
            .and_then(|i| i.config)
            .into_iter()
            .flatten()
            .find_map(|c| {
                let gateway = c.gateway?.parse().ok()?;
                Some(InstanceNet {
                    subnet: c.subnet?,
                    gateway,
                })
            });
        match ipv4 {
            Some(n) => {
                tracing::info!(network = %self.settings.network, subnet = %n.subnet, gateway = %n.gateway, "instance network");
                let _ = self.instance_net.set(n);
            }
            None => {
                tracing::warn!(network = %self.settings.network, "the instance network has no IPv4 subnet: no internal routes or policies")
            }
        }
        // Staging's own bridge: a build reaches package indexes, never an instance.
        self.ensure_bridge(&self.settings.staging_network, "staging")
            .await
    }

    async fn ensure_bridge(&self, name: &str, purpose: &str) -> Result<(), RuntimeError> {
        // The engine does not refuse a second network of the same name: agents starting side by
        // side on one engine take turns, or both would create one and every later lookup by
        // name would be ambiguous.
        let _turn = crate::filelock::exclusive(
            Path::new(&format!("/tmp/paas-network-{name}.lock")),
            "waiting for another agent creating the network",
        )
        .await
        .map_err(|e| RuntimeError::Network(format!("network lock: {e}")))?;
        match self.docker.inspect_network::<String>(name, None).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            // Two of that name already (made before this lock existed): keep the oldest.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 400,
                message,
            }) if message.contains("ambiguous") => return self.dedupe_network(name).await,
            Err(e) => return Err(e.into()),
        }
        let options = CreateNetworkOptions {
            name,
            check_duplicate: true,
            driver: "bridge",
            options: HashMap::from([("com.docker.network.bridge.enable_icc", "false")]),
            labels: HashMap::from([(labels::MANAGED, "true")]),
            ..Default::default()
        };
        match self.docker.create_network(options).await {
            Ok(_) => {
                tracing::info!(network = name, purpose, "created network");
                Ok(())
            }
            // Another agent created it first.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes all but the oldest network named `name` (those with containers stay: the engine
    /// refuses to remove them, and they go with their containers).
    async fn dedupe_network(&self, name: &str) -> Result<(), RuntimeError> {
        let filters = HashMap::from([("name", vec![name])]);
        let mut found: Vec<_> = self
            .docker
            .list_networks(Some(bollard::network::ListNetworksOptions { filters }))
            .await?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect();
        found.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        for extra in found.iter().skip(1) {
            let Some(id) = &extra.id else { continue };
            match self.docker.remove_network(id).await {
                Ok(()) => tracing::warn!(network = name, id, "removed a duplicate network"),
                Err(e) => {
                    tracing::warn!(network = name, id, error = %e, "cannot remove a duplicate network")
                }
            }
        }
        Ok(())
    }

    /// The droplet tar, fetched from the controller once per node and checked against its digest.
    ///
    /// Instances run from the stack image with the droplet unpacked into their own writable `/app`
    /// volume just before they start, rather than from a committed per-droplet image: on
    /// overlay-on-FUSE engines a commit costs seconds per new droplet, an upload milliseconds.
    pub async fn droplet_tar(
        &self,
        sha256: &str,
        source: &dyn DropletSource,
    ) -> Result<bytes::Bytes, RuntimeError> {
        let lock = {
            let mut locks = self.droplet_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(sha256.to_string()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(tar) = self.cached_droplet(sha256) {
            return Ok(tar);
        }
        let tar = source
            .fetch(sha256)
            .await
            .map_err(|message| RuntimeError::DropletFetch {
                sha: sha256.into(),
                message,
            })?;
        let actual = hex::encode(Sha256::digest(&tar));
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(RuntimeError::DropletDigest {
                expected: sha256.into(),
                actual,
            });
        }
        tracing::info!(droplet = sha256, bytes = tar.len(), "fetched droplet");
        self.cache_droplet(sha256, tar.clone());
        Ok(tar)
    }

    /// Keeps a droplet this node staged (issue 24), so its instances here start without
    /// fetching it back from the controller: only when `actual`, the digest of `tar` computed
    /// here, is `sha256`, the digest the controller stored it under.
    pub fn keep_droplet(&self, sha256: &str, actual: &str, tar: bytes::Bytes) {
        if actual.eq_ignore_ascii_case(sha256) && self.cached_droplet(sha256).is_none() {
            self.cache_droplet(sha256, tar);
        }
    }

    fn cache_droplet(&self, sha256: &str, tar: bytes::Bytes) {
        let mut cache = self.droplet_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.push((sha256.to_string(), tar));
        while cache.len() > 1
            && cache.iter().map(|(_, t)| t.len()).sum::<usize>() > DROPLET_CACHE_BYTES
        {
            cache.remove(0);
        }
    }

    fn cached_droplet(&self, sha256: &str) -> Option<bytes::Bytes> {
        let mut cache = self.droplet_cache.lock().unwrap_or_else(|p| p.into_inner());
        let pos = cache.iter().position(|(s, _)| s == sha256)?;
        // Most recently used last.
        let entry = cache.remove(pos);
        let tar = entry.1.clone();
        cache.push(entry);
        Some(tar)
    }

    /// Makes sure the engine has the image of a Dockerfile droplet: when it does not (another
    /// node built it, or someone removed it), the droplet's `docker save` tar is fetched from the
    /// controller, checked against its digest and loaded. Not kept in the droplet cache: once
    /// loaded, the engine holds it. Returns the image's config and, when it loaded it, the size.
    pub async fn ensure_image(
        &self,
        droplet: &str,
        image: &paas_common::agent::DropletImage,
        source: &dyn DropletSource,
    ) -> Result<(bollard::models::ImageConfig, Option<usize>), RuntimeError> {
        let lock = {
            let mut locks = self.droplet_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(droplet.to_string()).or_default().clone()
        };
        let _guard = lock.lock().await;
        match self.docker.inspect_image(&image.id).await {
            Ok(i) => return Ok((i.config.unwrap_or_default(), None)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        let load_error = |message: String| RuntimeError::ImageLoad {
            sha: droplet.into(),
            message,
        };
        let tar = source
            .fetch(droplet)
            .await
            .map_err(|message| RuntimeError::DropletFetch {
                sha: droplet.into(),
                message,
            })?;
        // An image tar is hundreds of MB: hashing it on the async workers would stall the
        // agent's other loops (heartbeats among them) long enough for the node to count as lost.
        let actual = {
            let tar = tar.clone();
            tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&tar)))
                .await
                .map_err(|e| load_error(e.to_string()))?
        };
        if !actual.eq_ignore_ascii_case(droplet) {
            return Err(RuntimeError::DropletDigest {
                expected: droplet.into(),
                actual,
            });
        }
        let size = tar.len();
        let mut load = self.docker.import_image(
            bollard::image::ImportImageOptions { quiet: true },
            tar,
            None,
        );
        while let Some(item) = load.next().await {
            if let Some(e) = item?.error {
                return Err(load_error(e));
            }
        }
        let config = match self.docker.inspect_image(&image.id).await {
            Ok(i) => i.config.unwrap_or_default(),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                return Err(load_error(format!(
                    "the droplet does not hold image {}",
                    image.id
                )))
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(droplet, image = %image.id, bytes = size, "loaded a droplet image");
        Ok((config, Some(size)))
    }

    /// Unpacks the droplet into a created (not yet started) instance's `/app` volume. The root
    /// file system is read-only; the engine allows this because `/app` is a volume.
    pub async fn install_droplet(
        &self,
        container: &str,
        tar: bytes::Bytes,
    ) -> Result<(), RuntimeError> {
        let upload = UploadToContainerOptions {
            path: APP_DIR,
            ..Default::default()
        };
        self.docker
            .upload_to_container(container, Some(upload), tar)
            .await?;
        Ok(())
    }

    /// This node's instance containers, running or not (not its tasks').
    pub async fn list_owned(&self) -> Result<Vec<OwnedContainer>, RuntimeError> {
        self.list(false).await
    }

    /// This node's task containers, running or ended; `instance_id` is the task's id.
    pub async fn list_tasks(&self) -> Result<Vec<OwnedContainer>, RuntimeError> {
        self.list(true).await
    }

    async fn list(&self, tasks: bool) -> Result<Vec<OwnedContainer>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}=true", labels::MANAGED),
                format!("{}={}", labels::NODE, self.settings.node_name),
            ],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters,
            ..Default::default()
        };
        let containers = self.docker.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                // Defence in depth: the engine filtered already, but never act on a stranger.
                if labels.get(labels::NODE) != Some(&self.settings.node_name) {
                    return None;
                }
                // Tasks and instances have separate owners in the agent; sidecars are listed
                // apart ([`Runtime::list_sidecars`]).
                if labels.contains_key(labels::TASK) != tasks
                    || labels.contains_key(labels::SIDECAR)
                {
                    return None;
                }
                Some(OwnedContainer {
                    id: c.id?,
                    instance_id: labels.get(labels::INSTANCE)?.clone(),
                    running: c.state.as_deref() == Some("running"),
                })
            })
            .collect())
    }

    /// This node's sidecar containers, running or not.
    pub async fn list_sidecars(&self) -> Result<Vec<OwnedSidecar>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}=true", labels::MANAGED),
                format!("{}={}", labels::NODE, self.settings.node_name),
                labels::SIDECAR.to_string(),
            ],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters,
            ..Default::default()
        };
        let containers = self.docker.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                if labels.get(labels::NODE) != Some(&self.settings.node_name) {
                    return None;
                }
                Some(OwnedSidecar {
                    id: c.id?,
                    instance_id: labels.get(labels::INSTANCE)?.clone(),
                    name: labels.get(labels::SIDECAR)?.clone(),
                    of: labels.get(labels::SIDECAR_OF).cloned().unwrap_or_default(),
                    running: c.state.as_deref() == Some("running"),
                })
            })
            .collect())
    }

    /// The sandbox every container of an instance runs in, the app's and each sidecar's: no
    /// capabilities, no new privileges, its memory (swap included), CPU shares, pids and open
    /// files limited, a read-only root with a small no-exec `/tmp`, an init, no restart by the
    /// engine (the agent restarts, with backoff) and bounded json-file logs. Callers add the
    /// network, mounts and ports.
    fn sandbox(&self, a: &Assignment, memory: i64) -> HostConfig {
        HostConfig {
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(memory),
            memory_swap: Some(memory),
            cpu_shares: Some(i64::try_from(a.cpu_shares).unwrap_or(i64::MAX)),
            pids_limit: Some(a.pids_limit),
            // Cloud Foundry's file descriptor limit, which `VCAP_APPLICATION` states.
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(FDS_LIMIT),
                hard: Some(FDS_LIMIT),
            }]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".into(),
                "rw,noexec,nosuid,size=64m".into(),
            )])),
            init: Some(true),
            privileged: Some(false),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".into(), self.settings.log_max_size.clone()),
                    ("max-file".into(), self.settings.log_max_files.to_string()),
                ])),
            }),
            ..Default::default()
        }
    }

    /// Creates (does not start) sidecar `s` of the instance whose (created) container is
    /// `app_container`: the same image, user, env and `/app` volume, the same sandbox with its
    /// own memory limit, and the app container's network namespace (`localhost` is shared; no
    /// port of its own is published). The app container must run when this one starts, since
    /// the engine joins its network namespace at start.
    pub async fn create_sidecar(
        &self,
        a: &Assignment,
        s: &paas_common::api::Sidecar,
        app_container: &str,
    ) -> Result<String, RuntimeError> {
        let app = self.docker.inspect_container(app_container, None).await?;
        let app_config = app.config.unwrap_or_default();
        let image = app
            .image
            .or(app_config.image.clone())
            .ok_or_else(|| RuntimeError::NoState(app_container.into()))?;
        let memory = i64::try_from(s.reserved_mb().saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        let mut env: Vec<String> = app_config
            .env
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !e.starts_with("MEMORY_LIMIT="))
            .collect();
        env.push(format!("MEMORY_LIMIT={}m", s.reserved_mb()));
        env.push(format!("CF_SIDECAR_NAME={}", s.name));
        let mut container_labels = instance_labels(a, &self.settings.node_name);
        container_labels.insert(labels::SIDECAR.to_string(), s.name.clone());
        container_labels.insert(labels::SIDECAR_OF.to_string(), app_container.to_string());
        let host_config = HostConfig {
            // The droplet as the app has it: its `/app` volume (nothing for an image droplet,
            // whose files are in the image).
            volumes_from: Some(vec![app_container.to_string()]),
            network_mode: Some(format!("container:{app_container}")),
            ..self.sandbox(a, memory)
        };
        let (entrypoint, cmd) = if a.image.is_none() {
            // The launcher, as for the app: `.profile.d` and `.profile` first.
            (
                None,
                vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    LAUNCHER.into(),
                    "launcher".into(),
                    s.command.clone(),
                ],
            )
        } else {
            (
                Some(vec!["/bin/sh".to_string(), "-c".to_string()]),
                vec![s.command.clone()],
            )
        };
        let config = Config {
            image: Some(image),
            entrypoint,
            cmd: Some(cmd),
            working_dir: app_config.working_dir.filter(|w| !w.is_empty()),
            // The app container's user, which `create` made sure is never root.
            user: app_config
                .user
                .filter(|u| !u.is_empty())
                .or(Some(APP_USER.into())),
            env: Some(env),
            labels: Some(container_labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = format!(
            "{}-{}-{}",
            app.name
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches('/'),
            s.name,
            app_container.chars().take(6).collect::<String>()
        );
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let options = CreateContainerOptions {
            name: name.as_str(),
            platform: None,
        };
        let id = self
            .docker
            .create_container(Some(options), config)
            .await?
            .id;
        tracing::debug!(container = %id, %name, sidecar = %s.name, "created sidecar container");
        Ok(id)
    }

    pub fn container_name(&self, a: &Assignment) -> String {
        let raw = format!(
            "paas-{}-{}-{}-{}",
            self.settings.node_name,
            a.app,
            a.index,
            a.instance_id.chars().take(8).collect::<String>()
        );
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }

    /// Creates (does not start) the sandboxed container for one assignment: from the stack
    /// image with the droplet to unpack into `/app`, or, for a Dockerfile droplet, from its image
    /// (`image_config` is that image's config) with the same sandbox and no `/app` volume.
    pub async fn create_instance(
        &self,
        a: &Assignment,
        image: &str,
        image_config: Option<&bollard::models::ImageConfig>,
    ) -> Result<String, RuntimeError> {
        self.create(a, image, image_config, false, None).await
    }

    /// Creates (does not start) a one-off task's container: the same sandbox as an instance's,
    /// labelled as a task (its id in [`labels::TASK`]) so instance reconciliation leaves it alone.
    /// `identity`: the host folder of the instance's identity credentials (issue 25), mounted
    /// read-only at [`INSTANCE_CREDENTIALS_DIR`] and named by `CF_INSTANCE_CERT`/`_KEY`.
    pub async fn create(
        &self,
        a: &Assignment,
        image: &str,
        image_config: Option<&bollard::models::ImageConfig>,
        task: bool,
        identity: Option<&Path>,
    ) -> Result<String, RuntimeError> {
        let s = &self.settings;
        let built = a.image.as_ref().zip(image_config);
        let port = built.map_or(APP_PORT, |(i, _)| i.port);
        let port_key = format!("{port}/tcp");
        // The host port is chosen here rather than by the engine so that the instance can be
        // told it (`CF_INSTANCE_PORT`); when none can be reserved the engine picks one.
        let host_port = free_host_port(&s.node_address);
        // A writable HOME: the app's volume, or for an image that names none, the tmpfs (its
        // root file system is read-only like every instance's).
        let home = match built {
            None => Some(APP_DIR),
            Some((_, ic)) => {
                let own = ic.env.iter().flatten().any(|e| e.starts_with("HOME="));
                (!own).then_some(TMP_DIR)
            }
        };
        let mut env = contract_env(a, port, host_port, &s.node_address, home);
        if identity.is_some() {
            env.extend([
                format!("CF_INSTANCE_CERT={INSTANCE_CREDENTIALS_DIR}/{INSTANCE_CERT_FILE}"),
                format!("CF_INSTANCE_KEY={INSTANCE_CREDENTIALS_DIR}/{INSTANCE_KEY_FILE}"),
            ]);
        }
        let mut mounts = Vec::new();
        if built.is_none() {
            // Anonymous volume: writable, filled from the image's /app on first start. An image
            // droplet has its files in its layers and writes only to /tmp.
            mounts.push(Mount {
                target: Some(APP_DIR.into()),
                typ: Some(MountTypeEnum::VOLUME),
                read_only: Some(false),
                ..Default::default()
            });
        }
        if let Some(dir) = identity {
            // A folder, not files: the agent replaces the credentials by renaming inside it,
            // which a file bind mount would not show.
            mounts.push(Mount {
                target: Some(INSTANCE_CREDENTIALS_DIR.into()),
                source: Some(dir.display().to_string()),
                typ: Some(MountTypeEnum::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
        let mut container_labels = instance_labels(a, &s.node_name);
        if task {
            container_labels.insert(labels::TASK.to_string(), a.instance_id.clone());
        }
        // Sidecars have their own containers and limits, carved out of the instance's memory,
        // so the instance as a whole never uses more than the app's memory.
        let memory =
            i64::try_from(a.process_memory_mb().saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(s.node_address.clone()),
                    // Empty: the engine picks a free port; read back with `inspect`.
                    host_port: Some(host_port.map(|p| p.to_string()).unwrap_or_default()),
                }]),
            )])),
            mounts: (!mounts.is_empty()).then_some(mounts),
            network_mode: Some(s.network.clone()),
            // The engine's embedded resolver answers container names and forwards the rest
            // here: the node's resolver on the gateway answers `*.apps.internal` and forwards
            // other names to the host's resolvers (issue 25).
            dns: self.instance_net.get().map(|n| vec![n.gateway.to_string()]),
            ..self.sandbox(a, memory)
        };
        let mut config = Config {
            image: Some(image.to_string()),
            cmd: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                LAUNCHER.into(),
                "launcher".into(),
                a.command.clone(),
            ]),
            working_dir: Some(APP_DIR.into()),
            user: Some(APP_USER.into()),
            env: Some(env),
            labels: Some(container_labels),
            exposed_ports: Some(HashMap::from([(port_key, HashMap::new())])),
            host_config: Some(host_config),
            ..Default::default()
        };
        config.user = Some(instance_user(a, image_config));
        if let Some((_, ic)) = built {
            config.working_dir = None;
            if a.command == crate::dockerfile::start_command(ic) {
                // The image's own ENTRYPOINT and CMD, exactly as its Dockerfile says.
                config.cmd = None;
            } else {
                // A command from the manifest or `-c` replaces both, through the shell.
                config.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
                config.cmd = Some(vec![a.command.clone()]);
            }
        }
        let name = self.container_name(a);
        let options = CreateContainerOptions {
            name: name.as_str(),
            platform: None,
        };
        let id = self
            .docker
            .create_container(Some(options), config)
            .await?
            .id;
        tracing::debug!(container = %id, %name, "created instance container");
        // The networks of the built-in services the app is bound to: it reaches each by its
        // alias there, and nothing else (issue 22). A service on another node's engine has no
        // network here: the app uses the credentials' external address then.
        for net in &a.networks {
            let connect = bollard::network::ConnectNetworkOptions {
                container: id.clone(),
                endpoint_config: Default::default(),
            };
            if let Err(e) = self.docker.connect_network(net, connect).await {
                tracing::warn!(container = %id, network = %net, error = %e, "cannot join a bound service's network");
            }
        }
        Ok(id)
    }

    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container(id, None::<StartContainerOptions<String>>)
            .await?;
        Ok(())
    }

    pub async fn inspect(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let info = self.docker.inspect_container(id, None).await?;
        let state = info.state.ok_or_else(|| RuntimeError::NoState(id.into()))?;
        let network = info.network_settings.unwrap_or_default();
        let ip = network
            .networks
            .as_ref()
            .and_then(|n| n.get(&self.settings.network))
            .and_then(|n| n.ip_address.clone())
            .filter(|ip| !ip.is_empty());
        // One port is published (8080, or a Dockerfile image's own): the one with a binding.
        let host_port = network.ports.and_then(|ports| {
            ports
                .into_values()
                .flatten()
                .flatten()
                .find_map(|b| b.host_port?.parse().ok())
        });
        Ok(ContainerStatus {
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
            host_port,
            ip,
            started_at: state
                .started_at
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
            log_path: info
                .log_path
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from),
        })
    }

    /// A stream that yields whenever one of this node's containers exits, so a crash is handled
    /// at once rather than on the next periodic pass.
    pub fn exit_events(
        &self,
    ) -> impl futures_util::Stream<Item = Result<bollard::models::EventMessage, bollard::errors::Error>>
    {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["die".to_string()]),
            (
                "label".to_string(),
                vec![format!("{}={}", labels::NODE, self.settings.node_name)],
            ),
        ]);
        self.docker.events(Some(bollard::system::EventsOptions {
            filters,
            ..Default::default()
        }))
    }

    /// SIGKILL, for an instance that failed its liveness check.
    pub async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .kill_container(id, Some(KillContainerOptions { signal: "SIGKILL" }))
            .await
        {
            Ok(()) => Ok(()),
            // 409: not running any more, which is what we wanted.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops an instance's container and its sidecars' side by side (one grace period), then
    /// removes the sidecars before the instance's: they use its `/app` volume, which the engine
    /// would leave behind if it were still in use when the instance's container goes.
    pub async fn stop_and_remove_instance(&self, id: &str) -> Result<(), RuntimeError> {
        let sidecars: Vec<String> = self
            .list_sidecars()
            .await?
            .into_iter()
            .filter(|s| s.of == id)
            .map(|s| s.id)
            .collect();
        if !sidecars.is_empty() {
            let own = id.to_string();
            let stops =
                futures_util::future::join_all(sidecars.iter().chain(std::iter::once(&own)).map(
                    |c| async move {
                        match self
                            .docker
                            .stop_container(c, Some(StopContainerOptions { t: STOP_GRACE_SECS }))
                            .await
                        {
                            Ok(()) => {}
                            Err(e) => {
                                tracing::debug!(container = %c, error = %e, "stop before removal")
                            }
                        }
                    },
                ));
            stops.await;
            for s in &sidecars {
                self.stop_and_remove(s).await?;
            }
        }
        self.stop_and_remove(id).await
    }

    /// SIGTERM with a grace period, then removal with the container's anonymous volumes.
    pub async fn stop_and_remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .stop_container(id, Some(StopContainerOptions { t: STOP_GRACE_SECS }))
            .await
        {
            Ok(()) => {}
            // 304: already stopped; 404: already gone.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        let options = RemoveContainerOptions {
            v: true,
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A listening TCP socket inside an instance's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub ip: std::net::IpAddr,
    pub port: u16,
}

impl Runtime {
    /// The TCP sockets listening inside a running container, read from the host's view of its
    /// network namespace (`/proc/<init pid>/net/tcp{,6}`): no exec into the container, which
    /// may have no tools. `None` when the engine gives no pid or the files cannot be read.
    pub async fn listeners(&self, id: &str) -> Option<Vec<Listener>> {
        let info = self.docker.inspect_container(id, None).await.ok()?;
        let pid = info.state?.pid.filter(|p| *p > 0)?;
        let mut out = Vec::new();
        let mut any = false;
        for file in ["tcp", "tcp6"] {
            if let Ok(text) = tokio::fs::read_to_string(format!("/proc/{pid}/net/{file}")).await {
                any = true;
                out.extend(parse_listeners(&text));
            }
        }
        any.then_some(out)
    }
}

/// The `LISTEN` sockets of a `/proc/net/tcp` or `tcp6` table. Addresses are printed as the
/// kernel holds them in memory (network order bytes as native words), hence `to_ne_bytes`.
pub fn parse_listeners(text: &str) -> Vec<Listener> {
    const LISTEN: &str = "0A";
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(local), Some(_remote), Some(state)) =
            (fields.nth(1), fields.next(), fields.next())
        else {
            continue;
        };
        if state != LISTEN {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        let words: Option<Vec<[u8; 4]>> = (0..addr.len() / 8)
            .map(|i| {
                u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16)
                    .ok()
                    .map(u32::to_ne_bytes)
            })
            .collect();
        let ip = match words.as_deref() {
            Some([w]) => std::net::IpAddr::from(*w),
            Some([a, b, c, d]) => {
                let mut bytes = [0u8; 16];
                for (i, w) in [a, b, c, d].iter().enumerate() {
                    bytes[i * 4..i * 4 + 4].copy_from_slice(*w);
                }
                std::net::IpAddr::from(bytes)
            }
            _ => continue,
        };
        out.push(Listener { ip, port });
    }
    out
}

/// What the platform sees when an instance does not answer on its port, for the user: `None`
/// when something listens on `port` on every address (the failure is elsewhere).
pub fn diagnose_listeners(port: u16, listeners: &[Listener]) -> Option<String> {
    let loopback_only = |ip: &std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    let on_port: Vec<&Listener> = listeners.iter().filter(|l| l.port == port).collect();
    if on_port.iter().any(|l| !loopback_only(&l.ip)) {
        return None;
    }
    if let Some(l) = on_port.first() {
        return Some(format!(
            "the app listens on {} only, which the platform cannot reach: listen on 0.0.0.0 ($VCAP_APP_HOST) port {port} ($PORT)",
            show(l)
        ));
    }
    let mut others: Vec<String> = listeners.iter().map(show).collect();
    others.sort();
    others.dedup();
    Some(if others.is_empty() {
        format!("nothing listens on port {port} ($PORT)")
    } else {
        format!(
            "nothing listens on port {port} ($PORT); the app listens on {} instead: listen on $PORT",
            others.join(", ")
        )
    })
}

fn show(l: &Listener) -> String {
    match l.ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", l.port),
            None => format!("[{v6}]:{}", l.port),
        },
        std::net::IpAddr::V4(v4) => format!("{v4}:{}", l.port),
    }
}

/// The labels of an instance's containers (its sidecars add theirs): how the agent finds and
/// re-adopts them, and never touches another node's.
fn instance_labels(a: &Assignment, node: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::APP.to_string(), a.app.clone()),
        (labels::INSTANCE.to_string(), a.instance_id.clone()),
        (labels::INDEX.to_string(), a.index.to_string()),
        (labels::NODE.to_string(), node.to_string()),
        (labels::PROCESS.to_string(), a.process_type.clone()),
        (labels::DROPLET.to_string(), a.droplet.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  2000        0 1 1 0 100 0 0 10 0
   1: 020011AC:1F90 0200A8C0:D431 01 00000000:00000000 00:00000000 00000000  2000        0 0 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1388 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  2000        0 1 1 0 100 0 0 10 0
";

    #[test]
    fn listeners_from_proc_tables() {
        let l = parse_listeners(TCP);
        assert_eq!(
            l,
            vec![Listener {
                ip: "127.0.0.1".parse().unwrap(),
                port: 8080
            }],
            "only LISTEN rows count"
        );
        let l6 = parse_listeners(TCP6);
        assert_eq!(l6[0].port, 5000);
        assert!(l6[0].ip.is_unspecified());
    }

    #[test]
    fn diagnoses() {
        let lo = parse_listeners(TCP);
        let msg = diagnose_listeners(8080, &lo).unwrap();
        assert!(msg.contains("127.0.0.1:8080 only"), "{msg}");
        let any6 = parse_listeners(TCP6);
        let msg = diagnose_listeners(8080, &any6).unwrap();
        assert!(
            msg.contains("nothing listens on port 8080") && msg.contains("[::]:5000"),
            "{msg}"
        );
        assert_eq!(diagnose_listeners(5000, &any6), None);
        assert_eq!(
            diagnose_listeners(8080, &[]).unwrap(),
            "nothing listens on port 8080 ($PORT)"
        );
    }

    #[test]
    fn the_contract_env() {
        let a = Assignment {
            instance_id: "i-1".into(),
            app: "My App".into(),
            process_type: "web".into(),
            index: 2,
            droplet: "d".into(),
            command: "run".into(),
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            memory_mb: 256,
            disk_mb: 1024,
            cpu_shares: 256,
            pids_limit: 64,
            health: Default::default(),
            image: None,
            log_rate_limit_bytes: None,
            context: Some(paas_common::agent::AppContext {
                app_id: "app-id".into(),
                space_id: "space-id".into(),
                space_name: "dev".into(),
                org_id: "org-id".into(),
                org_name: "acme".into(),
                uris: vec!["my-app.localhost".into()],
                revision: 3,
            }),
            networks: Vec::new(),
            sidecars: Vec::new(),
        };
        let env = contract_env(&a, 8080, Some(40000), "127.0.0.1", Some("/app"));
        let get = |k: &str| {
            env.iter()
                .find_map(|e| e.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing: {env:?}"))
                .to_string()
        };
        assert_eq!(get("PORT"), "8080");
        assert_eq!(get("VCAP_APP_HOST"), "0.0.0.0");
        assert_eq!(get("MEMORY_LIMIT"), "256m");
        assert_eq!(get("CF_INSTANCE_ADDR"), "127.0.0.1:40000");
        assert_eq!(get("HOME"), "/app");
        assert_eq!(get("VCAP_SERVICES"), "{}");
        let v: serde_json::Value = serde_json::from_str(&get("VCAP_APPLICATION")).unwrap();
        assert_eq!(v["application_name"], "My App");
        assert_eq!(v["organization_name"], "acme");
        assert_eq!(v["limits"]["mem"], 256);
        assert_eq!(v["instance_index"], 2);
        assert_eq!(v["application_uris"][0], "my-app.localhost");
    }
}
