//! Built-in service containers (issue 22): PostgreSQL and Redis instances the controller's
//! built-in broker provisioned and placed on this node. Level-triggered like instances: every
//! pass makes the engine match [`Assignments::services`]. Each service has
//!
//! - a named volume `paas-svc-<id>` with its data, which outlives the container (a crash, an
//!   agent or engine restart) and goes only when the service leaves the list (deprovision);
//! - its own bridge `paas-svc-<id>` (inter-container traffic on), which only the service and the
//!   apps bound to it join: app instances sit on the ICC-less instance bridge and cannot reach
//!   anything else there;
//! - its port published on the node address, for the controller (which creates and drops the
//!   per-binding roles and users over it) and for anything that reaches the node address.
//!
//! The container gets the instance sandbox: no capabilities, no-new-privileges, memory and pids
//! limits, the service's own non-root user (`postgres`, `redis`), a read-only root with a tmpfs
//! `/tmp`; it writes only its volume.

use bollard::container::{Config, CreateContainerOptions, ListContainersOptions};
use bollard::models::{
    HostConfig, Mount, MountTypeEnum, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::network::CreateNetworkOptions;
use bollard::volume::CreateVolumeOptions;
use paas_common::agent::{ServiceAssignment, ServiceReport};
use paas_common::labels;
use std::collections::{BTreeMap, HashMap};

use crate::client::ControllerClient;
use crate::runtime::{Runtime, RuntimeError};
use crate::service_image::PG_BIN;

const PIDS_LIMIT: i64 = 256;

/// First start: a cluster on the volume with the administrator `paas_admin` (password from the
/// assignment), password logins only; then the server, as the `postgres` user.
fn postgres_script() -> String {
    format!(
        r#"set -e
export PGDATA=/var/lib/postgresql/data
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  rm -rf "$PGDATA.init"
  pw=$(mktemp)
  printf '%s' "$PAAS_ADMIN_PASSWORD" > "$pw"
  {PG_BIN}/initdb -D "$PGDATA.init" -U paas_admin --pwfile="$pw" -E UTF8 --auth-local=scram-sha-256 --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >> "$PGDATA.init/pg_hba.conf"
  mv "$PGDATA.init" "$PGDATA"
fi
unset PAAS_ADMIN_PASSWORD
exec {PG_BIN}/postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp -c shared_buffers=32MB"#
    )
}

/// First start: an ACL file on the volume with the `default` user's password; binding users are
/// added to it (`ACL SETUSER` + `ACL SAVE`) and so survive restarts.
const REDIS_SCRIPT: &str = r#"set -e
acl=/var/lib/redis/users.acl
if [ ! -s "$acl" ]; then
  printf 'user default on >%s ~* &* +@all\n' "$PAAS_ADMIN_PASSWORD" > "$acl.new"
  mv "$acl.new" "$acl"
fi
unset PAAS_ADMIN_PASSWORD
exec redis-server --bind 0.0.0.0 --port 6379 --protected-mode no --dir /var/lib/redis --appendonly yes --aclfile "$acl""#;

/// Runs this node's service containers.
pub struct ServiceRunner {
    runtime: std::sync::Arc<Runtime>,
    client: std::sync::Arc<ControllerClient>,
    /// Backup and restore jobs started by this process (each runs once per agent life; one
    /// run again after an agent restart is harmless: a second dump, the same restore).
    jobs_started: std::collections::HashSet<String>,
    /// Per service: starts after the first, and why its last run ended.
    restarts: HashMap<String, (u32, Option<String>)>,
    reports: Vec<ServiceReport>,
}

impl ServiceRunner {
    pub fn new(runtime: std::sync::Arc<Runtime>, client: std::sync::Arc<ControllerClient>) -> Self {
        Self {
            runtime,
            client,
            jobs_started: Default::default(),
            restarts: HashMap::new(),
            reports: Vec::new(),
        }
    }

    pub fn reports(&self) -> Vec<ServiceReport> {
        self.reports.clone()
    }

    fn node(&self) -> &str {
        &self.runtime.settings().node_name
    }

    /// This node's service containers by service id (running, id).
    async fn owned(&self) -> Result<HashMap<String, (String, bool)>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}=true", labels::MANAGED),
                format!("{}={}", labels::NODE, self.node()),
                labels::SERVICE.to_string(),
            ],
        )]);
        let list = self
            .runtime
            .docker()
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let l = c.labels.unwrap_or_default();
                if l.get(labels::NODE).map(String::as_str) != Some(self.node()) {
                    return None;
                }
                Some((
                    l.get(labels::SERVICE)?.clone(),
                    (c.id?, c.state.as_deref() == Some("running")),
                ))
            })
            .collect())
    }

    /// One pass: start what is assigned and not running, remove what is no longer assigned
    /// (container, then volume, then network).
    pub async fn reconcile(&mut self, assigned: &[ServiceAssignment]) -> Result<(), RuntimeError> {
        let owned = self.owned().await?;
        let mut reports = Vec::new();
        for s in assigned {
            match self.ensure(s, owned.get(&s.service_id)).await {
                Ok(report) => reports.push(report),
                Err(e) => {
                    tracing::warn!(service = %s.service_id, error = %e, "service container not started");
                    reports.push(ServiceReport {
                        service_id: s.service_id.clone(),
                        running: false,
                        host_port: None,
                        restarts: 0,
                        last_exit: Some(e.to_string()),
                    });
                }
            }
        }
        let wanted: std::collections::HashSet<&str> =
            assigned.iter().map(|s| s.service_id.as_str()).collect();
        for (service, (id, _)) in &owned {
            if !wanted.contains(service.as_str()) {
                tracing::info!(
                    service,
                    "removing a deprovisioned service container and its data"
                );
                self.runtime.stop_and_remove(id).await?;
                self.remove_volume_and_network(service).await;
                self.restarts.remove(service);
            }
        }
        // A volume or network left behind by a removal that failed half way.
        self.remove_leftovers(&wanted).await;
        self.start_jobs(assigned, &owned).await;
        self.reports = reports;
        Ok(())
    }

    async fn ensure(
        &mut self,
        s: &ServiceAssignment,
        existing: Option<&(String, bool)>,
    ) -> Result<ServiceReport, RuntimeError> {
        let id = match existing {
            Some((id, true)) => id.clone(),
            Some((id, false)) => {
                let status = self.runtime.inspect(id).await?;
                let entry = self.restarts.entry(s.service_id.clone()).or_default();
                entry.0 += 1;
                entry.1 = Some(status.exit_reason());
                tracing::warn!(service = %s.service_id, exit = %status.exit_reason(), "restarting a service container");
                self.runtime.start(id).await?;
                id.clone()
            }
            None => {
                self.ensure_network(s).await?;
                self.ensure_volume(s).await?;
                let id = self.create(s).await?;
                self.runtime.start(&id).await?;
                tracing::info!(service = %s.service_id, kind = %s.kind, "started a service container");
                id
            }
        };
        let status = self.runtime.inspect(&id).await?;
        let (restarts, last_exit) = self
            .restarts
            .get(&s.service_id)
            .cloned()
            .unwrap_or_default();
        Ok(ServiceReport {
            service_id: s.service_id.clone(),
            running: status.running,
            host_port: status.host_port,
            restarts,
            last_exit,
        })
    }

    fn labels(&self, s: &ServiceAssignment) -> HashMap<String, String> {
        HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::NODE.to_string(), self.node().to_string()),
            (labels::SERVICE.to_string(), s.service_id.clone()),
        ])
    }

    async fn ensure_network(&self, s: &ServiceAssignment) -> Result<(), RuntimeError> {
        let name = s.network();
        match self
            .runtime
            .docker()
            .inspect_network::<String>(&name, None)
            .await
        {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        let labels = self.labels(s);
        let options = CreateNetworkOptions {
            name: name.as_str(),
            check_duplicate: true,
            driver: "bridge",
            labels: labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            ..Default::default()
        };
        match self.runtime.docker().create_network(options).await {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn ensure_volume(&self, s: &ServiceAssignment) -> Result<(), RuntimeError> {
        // Creating an existing volume is a no-op for the engine: the data stays.
        self.runtime
            .docker()
            .create_volume(CreateVolumeOptions {
                name: s.volume(),
                driver: "local".to_string(),
                labels: self.labels(s),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn create(&self, s: &ServiceAssignment) -> Result<String, RuntimeError> {
        let settings = self.runtime.settings();
        let (user, data_dir, script) = match s.kind.as_str() {
            "redis" => ("redis", "/var/lib/redis", REDIS_SCRIPT.to_string()),
            _ => ("postgres", "/var/lib/postgresql", postgres_script()),
        };
        let port_key = format!("{}/tcp", s.port());
        let host_port = crate::runtime::free_host_port(&settings.node_address);
        let memory = i64::try_from(s.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        let network = s.network();
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(settings.node_address.clone()),
                    host_port: Some(host_port.map(|p| p.to_string()).unwrap_or_default()),
                }]),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(memory),
            memory_swap: Some(memory),
            pids_limit: Some(PIDS_LIMIT),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".into(),
                "rw,noexec,nosuid,size=64m".into(),
            )])),
            mounts: Some(vec![Mount {
                target: Some(data_dir.into()),
                source: Some(s.volume()),
                typ: Some(MountTypeEnum::VOLUME),
                read_only: Some(false),
                ..Default::default()
            }]),
            init: Some(true),
            network_mode: Some(network.clone()),
            privileged: Some(false),
            // The agent restarts it (and counts it); the engine alone would hide crashes.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        let config = Config {
            image: Some(paas_common::stack::SERVICE_IMAGE.to_string()),
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), script]),
            user: Some(user.into()),
            env: Some(vec![format!("PAAS_ADMIN_PASSWORD={}", s.admin_password)]),
            labels: Some(self.labels(s)),
            exposed_ports: Some(HashMap::from([(port_key, HashMap::new())])),
            host_config: Some(host_config),
            networking_config: Some(bollard::container::NetworkingConfig {
                endpoints_config: HashMap::from([(
                    network,
                    bollard::models::EndpointSettings {
                        aliases: Some(vec![s.alias()]),
                        ..Default::default()
                    },
                )]),
            }),
            ..Default::default()
        };
        let name = format!(
            "paas-svc-{}-{}",
            self.node(),
            s.service_id.chars().take(12).collect::<String>()
        )
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect::<String>();
        let id = self
            .runtime
            .docker()
            .create_container(
                Some(CreateContainerOptions {
                    name: name.as_str(),
                    platform: None,
                }),
                config,
            )
            .await?
            .id;
        Ok(id)
    }

    async fn remove_volume_and_network(&self, service: &str) {
        let name = format!("paas-svc-{service}");
        if let Err(e) = self.runtime.docker().remove_volume(&name, None).await {
            tracing::warn!(service, error = %e, "cannot remove the service's volume");
        }
        if let Err(e) = self.runtime.docker().remove_network(&name).await {
            tracing::warn!(service, error = %e, "cannot remove the service's network");
        }
    }

    /// Volumes and networks of this node's services that are no longer assigned and have no
    /// container any more.
    async fn remove_leftovers(&self, wanted: &std::collections::HashSet<&str>) {
        let filter = vec![
            format!("{}={}", labels::NODE, self.node()),
            labels::SERVICE.to_string(),
        ];
        let docker = self.runtime.docker();
        let mut gone: BTreeMap<String, ()> = BTreeMap::new();
        if let Ok(v) = docker
            .list_volumes(Some(bollard::volume::ListVolumesOptions {
                filters: HashMap::from([("label".to_string(), filter.clone())]),
            }))
            .await
        {
            for vol in v.volumes.unwrap_or_default() {
                if let Some(s) = vol.labels.get(labels::SERVICE) {
                    if !wanted.contains(s.as_str()) {
                        gone.insert(s.clone(), ());
                    }
                }
            }
        }
        if let Ok(nets) = docker
            .list_networks(Some(bollard::network::ListNetworksOptions {
                filters: HashMap::from([("label".to_string(), filter)]),
            }))
            .await
        {
            for n in nets {
                if let Some(s) = n.labels.as_ref().and_then(|l| l.get(labels::SERVICE)) {
                    if !wanted.contains(s.as_str()) {
                        gone.insert(s.clone(), ());
                    }
                }
            }
        }
        for s in gone.keys() {
            self.remove_volume_and_network(s).await;
        }
    }
}

/// What a backup or restore runs in the service container, as the `postgres` user over the
/// container's own socket.
fn job_command(kind: &str) -> Vec<String> {
    let base = |tool: &str| format!("{PG_BIN}/{tool}");
    let conn = ["-h", "/tmp", "-U", "paas_admin", "-d", "db"].map(String::from);
    match kind {
        "restore" => [base("pg_restore"), "--clean".into(), "--if-exists".into()]
            .into_iter()
            .chain(conn)
            .collect(),
        _ => [base("pg_dump"), "-Fc".into()]
            .into_iter()
            .chain(conn)
            .collect(),
    }
}

impl ServiceRunner {
    /// Starts each listed job this process has not started, in the background: a dump can take
    /// long and must not hold the other services' passes.
    async fn start_jobs(
        &mut self,
        assigned: &[ServiceAssignment],
        owned: &HashMap<String, (String, bool)>,
    ) {
        let listed: std::collections::HashSet<&str> = assigned
            .iter()
            .flat_map(|s| s.jobs.iter().map(|j| j.id.as_str()))
            .collect();
        self.jobs_started.retain(|j| listed.contains(j.as_str()));
        for s in assigned {
            let Some((container, true)) = owned.get(&s.service_id) else {
                continue;
            };
            for job in &s.jobs {
                if !self.jobs_started.insert(job.id.clone()) {
                    continue;
                }
                let docker = self.runtime.docker().clone();
                let client = self.client.clone();
                let (container, job, password) =
                    (container.clone(), job.clone(), s.admin_password.clone());
                tokio::spawn(async move {
                    let outcome = run_job(&docker, &client, &container, &job, &password).await;
                    let result = paas_common::agent::ServiceJobResult {
                        error: outcome.err(),
                    };
                    if let Some(e) = &result.error {
                        tracing::warn!(job = %job.id, kind = %job.kind, error = %e, "service job failed");
                    }
                    // A backup that uploaded is done already; the result is for the rest.
                    if let Err(e) = client.service_job_result(&job.id, &result).await {
                        tracing::debug!(job = %job.id, error = %e, "service job result not taken");
                    }
                });
            }
        }
    }
}

async fn run_job(
    docker: &bollard::Docker,
    client: &ControllerClient,
    container: &str,
    job: &paas_common::agent::ServiceJob,
    password: &str,
) -> Result<(), String> {
    use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let restore = job.kind == "restore";
    let input = if restore {
        Some(
            client
                .service_dump(&job.id)
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdin: Some(restore),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(job_command(&job.kind)),
                env: Some(vec![format!("PGPASSWORD={password}")]),
                user: Some("postgres".to_string()),
                privileged: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let started = docker
        .start_exec(&exec.id, Some(StartExecOptions::default()))
        .await
        .map_err(|e| e.to_string())?;
    let StartExecResults::Attached {
        mut output,
        input: mut stdin,
    } = started
    else {
        return Err("the engine detached the exec".into());
    };
    let feed = async {
        // Only a restore attaches stdin; its end is the dump's end.
        if let Some(data) = input {
            stdin.write_all(&data).await?;
            stdin.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let read = async {
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(bollard::container::LogOutput::StdOut { message }) => {
                    out.extend_from_slice(&message)
                }
                Ok(bollard::container::LogOutput::StdErr { message }) => {
                    err.extend_from_slice(&message)
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    };
    let (fed, read) = tokio::join!(feed, read);
    read?;
    fed.map_err(|e| format!("feeding the dump: {e}"))?;
    let code = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| e.to_string())?
        .exit_code
        .unwrap_or(-1);
    if code != 0 {
        let tail: String = String::from_utf8_lossy(&err)
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!("{} exited with {code}: {tail}", job.kind));
    }
    if !restore {
        client
            .upload_service_dump(&job.id, out)
            .await
            .map_err(|e| format!("uploading the dump: {e}"))?;
    }
    tracing::info!(job = %job.id, kind = %job.kind, "service job done");
    Ok(())
}
