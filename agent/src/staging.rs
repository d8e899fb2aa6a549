//! Staging on this node (issue 3): runs the builds the controller assigns, each in a sandboxed
//! container of the stack's build image (no capabilities, memory, pids and time limits, the app
//! user; issue 19: on the staging bridge, with only the operator's package sources, CA and proxy
//! as settings, and the dependency cache of `depcache` restored into `/cache`),
//! with the built-in buildpacks (`agent/buildpacks/`, compiled into the agent) following the
//! Heroku / Cloud Foundry contract. Output goes to the controller live as `STG` lines; the
//! result is `/app` as the droplet tar plus the start command per process type.
//!
//! Level-triggered like instances: a build listed in the assignments and not yet running here is
//! started; the controller lists it until it has the result, so an agent restart runs it again.

use bollard::container::{
    Config, CreateContainerOptions, DownloadFromContainerOptions, LogOutput, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, UploadToContainerOptions, WaitContainerOptions,
};
use bollard::models::HostConfig;
use chrono::Utc;
use futures_util::StreamExt;
use paas_common::agent::{AgentLogLine, Assignments, BuildAssignment, BuildResult, LogBatch};
use paas_common::labels;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::client::ControllerClient;
use crate::runtime::Runtime;

/// Label on staging containers, so they are never mistaken for instances.
pub const LABEL_BUILD: &str = "paas.build";
const APP_USER: &str = "2000:2000";
const APP_UID: u64 = 2000;

/// The built-in buildpacks, as (path under /buildpacks, mode, bytes).
const FILES: &[(&str, u32, &[u8])] = &[
    ("stage.sh", 0o755, include_bytes!("../buildpacks/stage.sh")),
    (
        "staticfile/bin/detect",
        0o755,
        include_bytes!("../buildpacks/staticfile/bin/detect"),
    ),
    (
        "staticfile/bin/compile",
        0o755,
        include_bytes!("../buildpacks/staticfile/bin/compile"),
    ),
    (
        "staticfile/bin/release",
        0o755,
        include_bytes!("../buildpacks/staticfile/bin/release"),
    ),
    (
        "staticfile/lib/serve.py",
        0o644,
        include_bytes!("../buildpacks/staticfile/lib/serve.py"),
    ),
    (
        "python/bin/detect",
        0o755,
        include_bytes!("../buildpacks/python/bin/detect"),
    ),
    (
        "python/bin/compile",
        0o755,
        include_bytes!("../buildpacks/python/bin/compile"),
    ),
    (
        "python/bin/release",
        0o755,
        include_bytes!("../buildpacks/python/bin/release"),
    ),
    (
        "node/bin/detect",
        0o755,
        include_bytes!("../buildpacks/node/bin/detect"),
    ),
    (
        "node/bin/compile",
        0o755,
        include_bytes!("../buildpacks/node/bin/compile"),
    ),
    (
        "node/bin/release",
        0o755,
        include_bytes!("../buildpacks/node/bin/release"),
    ),
    (
        "python/lib/compile.py",
        0o644,
        include_bytes!("../buildpacks/python/lib/compile.py"),
    ),
    (
        "node/lib/compile.js",
        0o644,
        include_bytes!("../buildpacks/node/lib/compile.js"),
    ),
    (
        "ruby/bin/detect",
        0o755,
        include_bytes!("../buildpacks/ruby/bin/detect"),
    ),
    (
        "ruby/bin/compile",
        0o755,
        include_bytes!("../buildpacks/ruby/bin/compile"),
    ),
    (
        "ruby/bin/release",
        0o755,
        include_bytes!("../buildpacks/ruby/bin/release"),
    ),
    (
        "go/bin/detect",
        0o755,
        include_bytes!("../buildpacks/go/bin/detect"),
    ),
    (
        "go/bin/compile",
        0o755,
        include_bytes!("../buildpacks/go/bin/compile"),
    ),
    (
        "go/bin/release",
        0o755,
        include_bytes!("../buildpacks/go/bin/release"),
    ),
    (
        "binary/bin/detect",
        0o755,
        include_bytes!("../buildpacks/binary/bin/detect"),
    ),
    (
        "binary/bin/compile",
        0o755,
        include_bytes!("../buildpacks/binary/bin/compile"),
    ),
    (
        "binary/bin/release",
        0o755,
        include_bytes!("../buildpacks/binary/bin/release"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("controller: {0}")]
    Controller(#[from] crate::client::ClientError),
    #[error("tar: {0}")]
    Tar(#[from] std::io::Error),
}

/// The buildpacks as a tar to unpack at `/`: `buildpacks/...`, owned by root, read-only to apps.
pub fn buildpacks_tar() -> Result<Vec<u8>, std::io::Error> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _, _) in FILES {
        let mut p = std::path::Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, std::io::empty())
    };
    dir(&mut b, "buildpacks")?;
    for d in &dirs {
        dir(&mut b, &format!("buildpacks/{}", d.display()))?;
    }
    for (path, mode, bytes) in FILES {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_size(bytes.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, format!("buildpacks/{path}"), *bytes)?;
    }
    b.into_inner()
}

/// The built-ins plus operator-added buildpacks (each a tar of `bin/...` from the controller) at
/// `buildpacks/NAME/`, owned by root; files under `bin/` executable whatever the zip said.
pub fn buildpacks_tar_with(custom: &[(String, bytes::Bytes)]) -> Result<Vec<u8>, std::io::Error> {
    let base = buildpacks_tar()?;
    let mut b = tar::Builder::new(Vec::new());
    let mut base = tar::Archive::new(base.as_slice());
    for e in base.entries()? {
        let mut e = e?;
        let mut h = e.header().clone();
        let path = e.path()?.into_owned();
        b.append_data(&mut h, path, &mut e)?;
    }
    for (name, bytes) in custom {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, format!("buildpacks/{name}"), std::io::empty())?;
        let mut a = tar::Archive::new(bytes.as_ref());
        for e in a.entries()? {
            let mut e = e?;
            let rel = e.path()?.into_owned();
            let mut h = e.header().clone();
            h.set_uid(0);
            h.set_gid(0);
            let dir = h.entry_type() == tar::EntryType::Directory;
            h.set_mode(if dir || rel.starts_with("bin") {
                0o755
            } else {
                0o644
            });
            b.append_data(
                &mut h,
                std::path::Path::new("buildpacks").join(name).join(rel),
                &mut e,
            )?;
        }
    }
    b.into_inner()
}

/// The built-in buildpacks in detection order.
pub const BUILTIN_ORDER: &str = "staticfile python node ruby go binary";

/// What staging gets from the operator (issue 19) and nothing else: package sources, an extra
/// CA bundle, a proxy; and the node's dependency cache.
#[derive(Debug, Clone)]
pub struct StagingSettings {
    pub pip_index_url: Option<String>,
    pub npm_registry: Option<String>,
    pub gem_source: Option<String>,
    pub goproxy: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
    pub proxy: Option<String>,
    pub cache: crate::depcache::DepCache,
}

impl StagingSettings {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        Self {
            pip_index_url: s.pip_index_url.clone(),
            npm_registry: s.npm_registry.clone(),
            gem_source: s.gem_source.clone(),
            goproxy: s.goproxy.clone(),
            ca_file: s.staging_ca_file.clone(),
            proxy: s.staging_proxy.clone(),
            cache: crate::depcache::DepCache::new(
                s.data_dir.join("staging-cache"),
                s.staging_cache_mb,
            ),
        }
    }

    /// The installers' own variables for the operator's settings.
    fn env(&self) -> Vec<String> {
        let mut env = Vec::new();
        let mut set = |k: &str, v: &Option<String>| {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                env.push(format!("{k}={v}"));
            }
        };
        set("PIP_INDEX_URL", &self.pip_index_url);
        set("UV_INDEX_URL", &self.pip_index_url);
        // pip ignores a plain-HTTP index unless its host is trusted; an operator who names
        // one (a mirror on the node's own network) means it.
        let trusted = self
            .pip_index_url
            .as_deref()
            .and_then(|u| u.strip_prefix("http://"))
            .and_then(|rest| rest.split(['/', ':']).next())
            .filter(|h| !h.is_empty())
            .map(str::to_string);
        set("PIP_TRUSTED_HOST", &trusted);
        set("npm_config_registry", &self.npm_registry);
        set("PAAS_GEM_SOURCE", &self.gem_source);
        set("GOPROXY", &self.goproxy);
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            set(k, &self.proxy);
        }
        if let Some(proxy) = self.proxy.as_deref().filter(|v| !v.is_empty()) {
            // A package index on the node itself is reached directly.
            env.push("NO_PROXY=localhost,127.0.0.1".into());
            env.push(format!("npm_config_proxy={proxy}"));
            env.push(format!("npm_config_https_proxy={proxy}"));
        }
        env
    }
}

/// Runs every assigned build once; forgets builds no longer listed (so a re-listed one reruns).
pub async fn run_builds(
    runtime: Arc<Runtime>,
    client: Arc<ControllerClient>,
    staging: Arc<StagingSettings>,
    mut assignments: watch::Receiver<Option<Assignments>>,
) {
    let mut running: HashSet<String> = HashSet::new();
    loop {
        let builds: Vec<BuildAssignment> = assignments
            .borrow_and_update()
            .as_ref()
            .map(|a| a.builds.clone())
            .unwrap_or_default();
        let listed: HashSet<&str> = builds.iter().map(|b| b.build_id.as_str()).collect();
        running.retain(|id| listed.contains(id.as_str()));
        for b in builds {
            if !running.insert(b.build_id.clone()) {
                continue;
            }
            let (runtime, client, staging) = (runtime.clone(), client.clone(), staging.clone());
            tokio::spawn(async move {
                let id = b.build_id.clone();
                tracing::info!(build = %id, app = %b.app, stack = %b.stack, "staging");
                let result = match stage(&runtime, &client, &staging, &b).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(build = %id, error = %e, "staging failed on this node");
                        failed(format!("the node could not stage: {e}"))
                    }
                };
                if let Err(e) = client.build_result(&id, &result).await {
                    tracing::warn!(build = %id, error = %e, "could not report a build result");
                }
            });
        }
        if assignments.changed().await.is_err() {
            return;
        }
    }
}

fn failed(why: String) -> BuildResult {
    BuildResult {
        error: Some(why),
        ..Default::default()
    }
}

/// One build, start to end; the container is always removed.
async fn stage(
    runtime: &Runtime,
    client: &Arc<ControllerClient>,
    staging: &StagingSettings,
    b: &BuildAssignment,
) -> Result<BuildResult, StagingError> {
    let docker = runtime.docker();
    let s = runtime.settings();
    let source = client.build_source(&b.build_id).await?;
    if b.dockerfile {
        return crate::dockerfile::build(runtime, client, b, source).await;
    }
    let mut custom = Vec::new();
    for c in &b.custom_buildpacks {
        custom.push((c.name.clone(), client.buildpack(&c.sha256).await?));
    }
    let stack = if b.stack.is_empty() {
        paas_common::stack::DEFAULT
    } else {
        match paas_common::stack::resolve(&b.stack) {
            Ok(s) => s,
            Err(e) => return Ok(failed(e.to_string())),
        }
    };
    let memory = i64::try_from(b.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
    let mut env = vec![
        "HOME=/app".to_string(),
        format!("PAAS_APP={}", b.app),
        format!("PAAS_STACK={stack}"),
    ];
    env.extend(staging.env());
    if !b.buildpacks.is_empty() {
        env.push(format!("PAAS_BUILDPACKS={}", b.buildpacks.join(" ")));
    } else if !custom.is_empty() {
        // Detection order: the built-ins, then the added ones in the operator's order.
        let names: Vec<&str> = custom.iter().map(|(n, _)| n.as_str()).collect();
        env.push(format!(
            "PAAS_BUILDPACKS={BUILTIN_ORDER} {}",
            names.join(" ")
        ));
    }
    let buildpacks = buildpacks_tar_with(&custom)?;
    let cache_key = crate::depcache::DepCache::key(stack, &buildpacks, &source);
    // Staged layers (issue 24): built-in buildpacks only, whose additive marker is trusted.
    let layers_key = if custom.is_empty() {
        let ca = match &staging.ca_file {
            Some(p) => Some(std::fs::read(p)?),
            None => None,
        };
        let (src, bp, env, stack) = (
            source.clone(),
            buildpacks.clone(),
            env.clone(),
            stack.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            crate::layers::fast_key(&stack, &bp, &src, &env, ca.as_deref())
        })
        .await
        .ok()
        .flatten()
    } else {
        None
    };
    if let Some(key) = layers_key.as_deref().filter(|_| !b.no_cache) {
        match reuse_layers(runtime, client, staging, b, &source, key).await {
            Ok(Some(result)) => return Ok(result),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(build = %b.build_id, error = %e, "could not reuse the staged layers: staging in full");
            }
        }
    }
    let config = Config {
        image: Some(paas_common::stack::build_image(stack)),
        cmd: Some(vec!["/bin/sh".into(), "/buildpacks/stage.sh".into()]),
        user: Some(APP_USER.into()),
        working_dir: Some("/app".into()),
        env: Some(env),
        labels: Some(HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::NODE.to_string(), s.node_name.clone()),
            (labels::APP.to_string(), b.app.clone()),
            (LABEL_BUILD.to_string(), b.build_id.clone()),
        ])),
        host_config: Some(HostConfig {
            // The staging bridge: package sources the operator named, never an instance (the
            // instances' own network is another bridge).
            network_mode: Some(s.staging_network.clone()),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(memory),
            memory_swap: Some(memory),
            pids_limit: Some(512),
            privileged: Some(false),
            tmpfs: Some(HashMap::from([(
                "/tmp".into(),
                format!("rw,nosuid,size={}m", b.disk_mb.max(64)),
            )])),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = format!(
        "paas-stg-{}-{}",
        s.node_name,
        &b.build_id[..b.build_id.len().min(8)]
    );
    let id = docker
        .create_container(
            Some(CreateContainerOptions {
                name: name.as_str(),
                platform: None,
            }),
            config,
        )
        .await?
        .id;
    let ctx = RunCtx {
        staging,
        buildpacks,
        cache_key,
        layers_key,
    };
    let outcome = run_in(runtime, client, b, &id, source, ctx).await;
    // Removing a container with a large writable layer takes seconds on some storage drivers:
    // the result does not wait for it.
    let docker = docker.clone();
    tokio::spawn(async move {
        let remove = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        if let Err(e) = docker.remove_container(&id, Some(remove)).await {
            tracing::warn!(container = %id, error = %e, "could not remove a staging container");
        }
    });
    outcome
}

/// What one staging run carries besides the assignment.
struct RunCtx<'a> {
    staging: &'a StagingSettings,
    buildpacks: Vec<u8>,
    /// `None`: the app declares no dependencies, nothing to cache.
    cache_key: Option<String>,
    /// The key the staged layers are kept under when the staging is additive (`layers`);
    /// `None` with a custom buildpack.
    layers_key: Option<String>,
}

/// The droplet of a re-push that changed only the app's code, from the staged layers kept
/// under `key`: `None` when there are none (or they no longer fit), and the caller stages.
async fn reuse_layers(
    runtime: &Runtime,
    client: &Arc<ControllerClient>,
    staging: &StagingSettings,
    b: &BuildAssignment,
    source: &bytes::Bytes,
    key: &str,
) -> Result<Option<BuildResult>, StagingError> {
    let (cache, scope, k, src) = (
        staging.cache.clone(),
        b.cache_scope.clone(),
        key.to_string(),
        source.clone(),
    );
    let limit = b.disk_mb.saturating_mul(1024 * 1024) as usize;
    let built = tokio::task::spawn_blocking(move || {
        let Some(additions) = cache.get(&scope, &k) else {
            return Ok(None);
        };
        let Some(droplet) = crate::layers::assemble(&src, &additions)? else {
            return Ok(None);
        };
        if droplet.len() > limit {
            return Ok(None);
        }
        let (processes, buildpack) = droplet_meta(&droplet)?;
        Ok::<_, std::io::Error>(buildpack.map(|bp| (droplet, processes, bp)))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    let Some((droplet, processes, buildpack)) = built else {
        return Ok(None);
    };
    tracing::info!(build = %b.build_id, key, "reusing the staged layers");
    let line = AgentLogLine {
        instance_id: b.build_id.clone(),
        timestamp: Utc::now(),
        source: "STG".into(),
        stream: "stdout".into(),
        message: format!(
            "-----> Only the app's code changed: reused the layers the {buildpack} buildpack \
             staged before (no staging container)"
        ),
    };
    let batch = LogBatch { lines: vec![line] };
    if let Err(e) = client.build_logs(&b.build_id, &batch).await {
        tracing::debug!(build = %b.build_id, error = %e, "could not send staging lines");
    }
    let up = upload_and_keep(runtime, client, &b.build_id, droplet).await?;
    Ok(Some(BuildResult {
        buildpack: Some(buildpack),
        droplet: Some(up.sha256),
        processes,
        error: None,
        image: None,
        dependencies_restored: false,
        layers_reused: true,
    }))
}

/// Uploads a staged droplet and keeps it on this node (`Runtime::keep_droplet`), its digest
/// computed while it is uploaded.
async fn upload_and_keep(
    runtime: &Runtime,
    client: &ControllerClient,
    build_id: &str,
    droplet: Vec<u8>,
) -> Result<paas_common::agent::DropletUploaded, StagingError> {
    let droplet = bytes::Bytes::from(droplet);
    let hashed = droplet.clone();
    let digest = tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&hashed))
    });
    let up = client
        .upload_build_droplet(build_id, droplet.clone())
        .await?;
    if let Ok(actual) = digest.await {
        runtime.keep_droplet(&up.sha256, &actual, droplet);
    }
    Ok(up)
}

/// The process types and buildpack a droplet's `.paas/` records.
#[allow(clippy::type_complexity)]
fn droplet_meta(droplet: &[u8]) -> std::io::Result<(BTreeMap<String, String>, Option<String>)> {
    let mut processes = BTreeMap::new();
    let mut buildpack = None;
    for entry in tar::Archive::new(droplet).entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let rel = entry.path()?.into_owned();
        if rel == std::path::Path::new(".paas/processes")
            || rel == std::path::Path::new(".paas/buildpack")
        {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            read_meta(&rel, &data, &mut processes, &mut buildpack);
        }
    }
    Ok((processes, buildpack))
}

/// Reads `.paas/processes` or `.paas/buildpack` (what the staging driver recorded).
fn read_meta(
    rel: &std::path::Path,
    data: &[u8],
    processes: &mut BTreeMap<String, String>,
    buildpack: &mut Option<String>,
) {
    if rel == std::path::Path::new(".paas/processes") {
        for line in String::from_utf8_lossy(data).lines() {
            if let Some((t, c)) = line.split_once(':') {
                processes
                    .entry(t.trim().to_string())
                    .or_insert_with(|| c.trim().to_string());
            }
        }
    } else if rel == std::path::Path::new(".paas/buildpack") {
        *buildpack = Some(String::from_utf8_lossy(data).trim().to_string());
    }
}

async fn run_in(
    runtime: &Runtime,
    client: &Arc<ControllerClient>,
    b: &BuildAssignment,
    id: &str,
    source: bytes::Bytes,
    ctx: RunCtx<'_>,
) -> Result<BuildResult, StagingError> {
    let docker = runtime.docker();
    let cache = &ctx.staging.cache;
    let scope = b.cache_scope.as_str();
    let layers_source = ctx.layers_key.as_ref().map(|_| source.clone());
    docker
        .upload_to_container(
            id,
            Some(UploadToContainerOptions {
                path: "/app",
                ..Default::default()
            }),
            source,
        )
        .await?;
    docker
        .upload_to_container(
            id,
            Some(UploadToContainerOptions {
                path: "/",
                ..Default::default()
            }),
            ctx.buildpacks.into(),
        )
        .await?;
    if let Some(ca) = &ctx.staging.ca_file {
        let pem = std::fs::read(ca)?;
        docker
            .upload_to_container(
                id,
                Some(UploadToContainerOptions {
                    path: "/",
                    ..Default::default()
                }),
                single_file_tar("etc/paas/staging-ca.pem", &pem)?.into(),
            )
            .await?;
    }
    let mut restored = false;
    if let Some(key) = ctx.cache_key.as_deref().filter(|_| !b.no_cache) {
        let (c, s, k) = (cache.clone(), scope.to_string(), key.to_string());
        let entry = tokio::task::spawn_blocking(move || c.get(&s, &k))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(entry) = entry {
            docker
                .upload_to_container(
                    id,
                    Some(UploadToContainerOptions {
                        path: "/",
                        ..Default::default()
                    }),
                    entry.into(),
                )
                .await?;
            restored = true;
        }
    }
    docker
        .start_container(id, None::<StartContainerOptions<String>>)
        .await?;

    // Follow the output while waiting, so lines reach the user as they happen.
    let last_line = Arc::new(Mutex::new(String::new()));
    let follower = tokio::spawn(follow(
        docker.clone(),
        client.clone(),
        id.to_string(),
        b.build_id.clone(),
        last_line.clone(),
    ));
    let wait = async {
        docker
            .wait_container(id, None::<WaitContainerOptions<String>>)
            .next()
            .await
    };
    let code = match tokio::time::timeout(Duration::from_secs(b.timeout_secs), wait).await {
        Err(_) => {
            let _ = docker.kill_container::<String>(id, None).await;
            let _ = follower.await;
            return Ok(failed(format!(
                "staging exceeded its time limit of {} s",
                b.timeout_secs
            )));
        }
        Ok(Some(Ok(r))) => r.status_code,
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(None) => -1,
    };
    // The follower ends with the container's output, so every line is sent before the result.
    let _ = follower.await;
    let oom = docker
        .inspect_container(id, None)
        .await?
        .state
        .and_then(|s| s.oom_killed)
        .unwrap_or(false);
    if oom {
        return Ok(failed(format!(
            "staging ran out of memory (limit {} MB)",
            b.memory_mb
        )));
    }
    if code != 0 {
        let last = last_line
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .trim()
            .to_string();
        // The driver's exit codes (agent/buildpacks/stage.sh) say which step failed.
        let why = match code {
            222 | 223 => last,
            224 => format!("the buildpack's compile step failed: {last}"),
            225 => format!("the buildpack's release step failed: {last}"),
            _ => format!("{last} (exit code {code})"),
        };
        return Ok(failed(why));
    }
    let limit = b.disk_mb.saturating_mul(1024 * 1024) as usize;
    let mut raw = Vec::new();
    let mut stream =
        docker.download_from_container(id, Some(DownloadFromContainerOptions { path: "/app" }));
    while let Some(chunk) = stream.next().await {
        raw.extend_from_slice(&chunk?);
        if raw.len() > limit {
            return Ok(failed(format!(
                "the staged app is larger than the disk limit of {} MB",
                b.disk_mb
            )));
        }
    }
    let (droplet, processes, buildpack, additions) = tokio::task::spawn_blocking(move || {
        let (droplet, processes, buildpack) = reroot(&raw)?;
        // What the buildpack added, when the staging was additive (`layers`); a failure only
        // costs the next re-push its shortcut.
        let additions = layers_source.and_then(|src| {
            crate::layers::additions(&src, &droplet).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not compare the droplet with its source");
                None
            })
        });
        Ok::<_, std::io::Error>((droplet, processes, buildpack, additions))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    if let Some(key) = ctx.cache_key.as_deref().filter(|_| !restored) {
        save_cache(docker, id, cache, scope, key).await;
    }
    if let (Some(key), Some(additions)) = (ctx.layers_key.clone(), additions) {
        let (c, s) = (cache.clone(), scope.to_string());
        let stored = tokio::task::spawn_blocking(move || c.put(&s, &key, &additions)).await;
        match stored {
            Ok(Ok(())) => tracing::info!(build = %b.build_id, "kept the staged layers"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not keep the staged layers"),
            Err(e) => tracing::warn!(error = %e, "staged layers task failed"),
        }
    }
    // Kept here too: an instance of it on this node starts without fetching it back.
    let up = upload_and_keep(runtime, client, &b.build_id, droplet).await?;
    Ok(BuildResult {
        buildpack,
        droplet: Some(up.sha256),
        processes,
        error: None,
        image: None,
        dependencies_restored: restored,
        layers_reused: false,
    })
}

/// Keeps what the buildpack left in `/cache` under `key`; a failure only costs the next build
/// its shortcut.
async fn save_cache(
    docker: &bollard::Docker,
    id: &str,
    cache: &crate::depcache::DepCache,
    scope: &str,
    key: &str,
) {
    let mut raw = Vec::new();
    let mut stream =
        docker.download_from_container(id, Some(DownloadFromContainerOptions { path: "/cache" }));
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => raw.extend_from_slice(&c),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the dependency cache of a build");
                return;
            }
        }
    }
    let (c, s, k) = (cache.clone(), scope.to_string(), key.to_string());
    let stored = tokio::task::spawn_blocking(move || {
        // An empty `/cache` (a buildpack that caches nothing) is not worth an entry.
        let has_files = tar::Archive::new(raw.as_slice())
            .entries()?
            .filter_map(Result::ok)
            .any(|e| e.header().entry_type().is_file());
        if has_files {
            c.put(&s, &k, &raw)?;
        }
        Ok::<_, std::io::Error>(has_files)
    })
    .await;
    match stored {
        Ok(Ok(true)) => tracing::info!(key, "stored a dependency cache entry"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not store a dependency cache entry"),
        Err(e) => tracing::warn!(error = %e, "dependency cache task failed"),
    }
}

fn single_file_tar(path: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, path, data)?;
    b.into_inner()
}

/// Sends the container's output as `STG` lines, one batch per chunk the engine hands over.
async fn follow(
    docker: bollard::Docker,
    client: Arc<ControllerClient>,
    id: String,
    build_id: String,
    last: Arc<Mutex<String>>,
) {
    let opts = LogsOptions::<String> {
        follow: true,
        stdout: true,
        stderr: true,
        tail: "all".into(),
        ..Default::default()
    };
    let mut stream = docker.logs(&id, Some(opts));
    let mut partial = String::new();
    while let Some(item) = stream.next().await {
        let (stream_name, bytes) = match item {
            Ok(LogOutput::StdOut { message }) => ("stdout", message),
            Ok(LogOutput::StdErr { message }) => ("stderr", message),
            Ok(_) => continue,
            Err(_) => break,
        };
        partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines = Vec::new();
        while let Some(pos) = partial.find('\n') {
            let line: String = partial.drain(..=pos).collect();
            let line = line.trim_end().to_string();
            if !line.is_empty() {
                lines.push(line);
            }
        }
        if let Some(l) = lines.last() {
            *last.lock().unwrap_or_else(|p| p.into_inner()) = l.clone();
        }
        if lines.is_empty() {
            continue;
        }
        let batch = LogBatch {
            lines: lines
                .into_iter()
                .map(|message| AgentLogLine {
                    instance_id: build_id.clone(),
                    timestamp: Utc::now(),
                    source: "STG".into(),
                    stream: stream_name.into(),
                    message,
                })
                .collect(),
        };
        if let Err(e) = client.build_logs(&build_id, &batch).await {
            tracing::debug!(build = %build_id, error = %e, "could not send staging lines");
        }
    }
}

/// `/app` as the engine hands it over (entries under `app/`) re-rooted to the droplet layout
/// (entries relative to `/app`), with what the driver recorded in `.paas/`.
#[allow(clippy::type_complexity)]
fn reroot(
    raw: &[u8],
) -> Result<(Vec<u8>, BTreeMap<String, String>, Option<String>), std::io::Error> {
    let mut out = tar::Builder::new(Vec::new());
    let mut processes = BTreeMap::new();
    let mut buildpack = None;
    let mut archive = tar::Archive::new(raw);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Ok(rel) = path.strip_prefix("app") else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let rel = rel.to_path_buf();
        let mut header = entry.header().clone();
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            read_meta(&rel, &data, &mut processes, &mut buildpack);
            out.append_data(&mut header, &rel, data.as_slice())?;
        } else if entry.header().entry_type().is_symlink()
            || entry.header().entry_type().is_hard_link()
        {
            let target = entry
                .link_name()?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            header.set_size(0);
            out.append_link(&mut header, &rel, &target)?;
        } else {
            header.set_uid(header.uid().unwrap_or(APP_UID));
            out.append_data(&mut header, &rel, std::io::empty())?;
        }
    }
    Ok((out.into_inner()?, processes, buildpack))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildpacks_tar_holds_every_script_executable() {
        let tar = buildpacks_tar().unwrap();
        let mut a = tar::Archive::new(tar.as_slice());
        let mut names = Vec::new();
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            if p.contains("/bin/") {
                assert_eq!(e.header().mode().unwrap() & 0o111, 0o111, "{p}");
            }
            names.push(p);
        }
        for bp in ["staticfile", "python", "node", "ruby", "go", "binary"] {
            for step in ["detect", "compile", "release"] {
                assert!(
                    names.contains(&format!("buildpacks/{bp}/bin/{step}")),
                    "{bp} {step}: {names:?}"
                );
            }
        }
    }

    #[test]
    fn staging_gets_the_operators_sources_and_proxy_and_nothing_else() {
        let none = StagingSettings {
            pip_index_url: None,
            npm_registry: None,
            gem_source: None,
            goproxy: None,
            ca_file: None,
            proxy: None,
            cache: crate::depcache::DepCache::new("/nonexistent".into(), 1),
        };
        assert!(none.env().is_empty());
        let s = StagingSettings {
            pip_index_url: Some("http://10.0.0.5:3141/simple/".into()),
            npm_registry: Some("https://npm.example/".into()),
            gem_source: Some("https://gems.example".into()),
            goproxy: Some("https://proxy.golang.example".into()),
            proxy: Some("http://proxy:3128".into()),
            ..none
        };
        let env = s.env();
        for want in [
            "PIP_INDEX_URL=http://10.0.0.5:3141/simple/",
            "PIP_TRUSTED_HOST=10.0.0.5",
            "npm_config_registry=https://npm.example/",
            "PAAS_GEM_SOURCE=https://gems.example",
            "GOPROXY=https://proxy.golang.example",
            "HTTPS_PROXY=http://proxy:3128",
            "https_proxy=http://proxy:3128",
            "npm_config_https_proxy=http://proxy:3128",
        ] {
            assert!(env.iter().any(|e| e == want), "{want}: {env:?}");
        }
        let https_only = StagingSettings {
            pip_index_url: Some("https://pypi.example/simple/".into()),
            ..s
        };
        assert!(!https_only
            .env()
            .iter()
            .any(|e| e.starts_with("PIP_TRUSTED_HOST")));
    }

    #[test]
    fn reroot_strips_app_and_reads_processes() {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        b.append_data(&mut dir.clone(), "app", std::io::empty())
            .unwrap();
        b.append_data(&mut dir, "app/.paas", std::io::empty())
            .unwrap();
        for (p, body) in [
            ("app/app.py", "print(1)\n"),
            (
                "app/.paas/processes",
                "web: python3 app.py\nworker: python3 w.py\n",
            ),
            ("app/.paas/buildpack", "python\n"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            b.append_data(&mut h, p, body.as_bytes()).unwrap();
        }
        let (tar, procs, bp) = reroot(&b.into_inner().unwrap()).unwrap();
        assert_eq!(procs["web"], "python3 app.py");
        assert_eq!(procs["worker"], "python3 w.py");
        assert_eq!(bp.as_deref(), Some("python"));
        let names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(
            names.contains(&"app.py".to_string()) && !names.iter().any(|n| n.starts_with("app/")),
            "{names:?}"
        );
    }
}
