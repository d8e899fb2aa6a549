//! Integration tests against the real Docker engine: the stack image, droplet images, sandboxed
//! instances, health checks, crash restarts and re-adoption. Each test uses its own fake node
//! name, so tests (and real agents) sharing the engine never see each other's containers, and
//! removes everything it created when it ends, even on failure. `TEST_LOG=1` shows agent logs.

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use bollard::container::{ListContainersOptions, RemoveContainerOptions};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::image::RemoveImageOptions;
use futures_util::StreamExt;
use paas_agent::logs::LogSink;
use paas_agent::reconcile::Reconciler;
use paas_agent::runtime::{connect_docker, DropletSource, Runtime, RuntimeSettings};
use paas_agent::stack::{self, StackOutcome};
use paas_agent::Settings;
use paas_common::agent::{
    AgentLogLine, Assignment, HealthCheck, HealthSettings, InstanceReport, ReadinessSettings,
};
use paas_common::api::InstanceState;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,paas_agent=debug")
            .with_test_writer()
            .try_init();
    }
}

struct StaticDroplets(HashMap<String, bytes::Bytes>);

#[async_trait]
impl DropletSource for StaticDroplets {
    async fn fetch(&self, sha256: &str) -> Result<bytes::Bytes, String> {
        self.0
            .get(sha256)
            .cloned()
            .ok_or_else(|| format!("no droplet {sha256}"))
    }
}

/// A droplet tar as the controller serves it: relative paths owned by the app user.
fn droplet_tar(files: &[(&str, &str)]) -> (String, bytes::Bytes) {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_uid(2000);
        header.set_gid(2000);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    let bytes = builder.into_inner().unwrap();
    (hex::encode(Sha256::digest(&bytes)), bytes.into())
}

/// One fake node: its runtime, a reconciler, and the log lines it produced. Dropping it removes
/// every container labelled with its node name and the droplet images it built.
struct TestNode {
    node: String,
    runtime: Arc<Runtime>,
    reconciler: Reconciler,
    logs: mpsc::Receiver<AgentLogLine>,
    images: Vec<String>,
}

impl TestNode {
    async fn start(droplets: HashMap<String, bytes::Bytes>) -> Result<Self> {
        init_tracing();
        let settings = Settings::default();
        let docker = connect_docker().await?;
        // These droplets carry no `.paas/stack`: they run on the legacy stack.
        let legacy = stack::stack_def(stack::LEGACY_STACK).context("legacy stack")?;
        stack::ensure_stack(&docker, legacy, &settings.debian_mirror, false).await?;
        let node = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let runtime = Arc::new(Runtime::new(
            docker,
            RuntimeSettings {
                node_name: node.clone(),
                node_address: "127.0.0.1".into(),
                network: settings.docker_network.clone(),
                stack_image: paas_common::stack::run_image(stack::LEGACY_STACK),
                staging_network: settings.staging_network.clone(),
                log_max_size: "10m".into(),
                log_max_files: 2,
                read_log_files: true,
            },
        ));
        runtime.ensure_network().await?;
        // Instances run from the stack image; no per-droplet image is made.
        let images = Vec::new();
        let (sink, logs) = LogSink::channel();
        let reconciler = Reconciler::new(runtime.clone(), Arc::new(StaticDroplets(droplets)), sink);
        Ok(Self {
            node,
            runtime,
            reconciler,
            logs,
            images,
        })
    }

    /// Runs passes until `done` holds for the instance's report, or fails after `within`.
    async fn pass_until(
        &mut self,
        desired: &[Assignment],
        within: Duration,
        mut done: impl FnMut(&InstanceReport) -> bool,
    ) -> Result<InstanceReport> {
        let deadline = Instant::now() + within;
        let id = &desired[0].instance_id;
        loop {
            self.reconciler.reconcile(desired).await?;
            let report = self
                .reconciler
                .reports()
                .into_iter()
                .find(|r| &r.instance_id == id);
            if let Some(report) = report {
                if done(&report) {
                    return Ok(report);
                }
                if Instant::now() > deadline {
                    bail!("condition not reached within {within:?}; last report: {report:?}");
                }
            } else if Instant::now() > deadline {
                bail!("instance {id} never reported within {within:?}");
            }
            let next = self
                .reconciler
                .next_due()
                .unwrap_or(deadline)
                .min(Instant::now() + Duration::from_millis(200));
            tokio::time::sleep_until(next).await;
        }
    }

    async fn owned_containers(&self) -> Result<Vec<String>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("paas.node={}", self.node)],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters,
            ..Default::default()
        };
        let list = self.runtime.docker().list_containers(Some(options)).await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    fn drain_logs(&mut self) -> Vec<AgentLogLine> {
        std::iter::from_fn(|| self.logs.try_recv().ok()).collect()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let node = self.node.clone();
        let images = self.images.clone();
        // Async cleanup from Drop: a fresh runtime on its own thread, so it also runs on panic.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let docker = connect_docker().await.unwrap();
                let filters =
                    HashMap::from([("label".to_string(), vec![format!("paas.node={node}")])]);
                let options = ListContainersOptions {
                    all: true,
                    filters,
                    ..Default::default()
                };
                for c in docker
                    .list_containers(Some(options))
                    .await
                    .unwrap_or_default()
                {
                    let Some(id) = c.id else { continue };
                    let rm = RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    };
                    let _ = docker.remove_container(&id, Some(rm)).await;
                }
                for image in images {
                    let rm = RemoveImageOptions {
                        force: true,
                        ..Default::default()
                    };
                    let _ = docker.remove_image(&image, Some(rm), None).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn assignment(
    instance_id: &str,
    droplet: &str,
    command: &str,
    health: HealthSettings,
) -> Assignment {
    Assignment {
        sidecars: Vec::new(),
        instance_id: instance_id.into(),
        app: "testapp".into(),
        process_type: "web".into(),
        index: 0,
        droplet: droplet.into(),
        command: command.into(),
        env: BTreeMap::from([("GREETING".to_string(), "hello from paas".to_string())]),
        memory_mb: 128,
        disk_mb: 512,
        cpu_shares: 256,
        pids_limit: 64,
        health,
        image: None,
        log_rate_limit_bytes: None,
        context: None,
        networks: Vec::new(),
    }
}

/// Runs `cmd` in the container as its own user; returns (exit code, output).
async fn exec(runtime: &Runtime, container: &str, cmd: &[&str]) -> Result<(i64, String)> {
    let docker = runtime.docker();
    let options = CreateExecOptions {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(cmd.to_vec()),
        ..Default::default()
    };
    let id = docker.create_exec(container, options).await?.id;
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&id, None).await? {
        while let Some(chunk) = output.next().await {
            out.push_str(&chunk?.to_string());
        }
    }
    let code = docker
        .inspect_exec(&id)
        .await?
        .exit_code
        .context("exec has no exit code")?;
    Ok((code, out))
}

const SERVER_PY: &str = r#"
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get("GREETING", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
print("listening on", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[tokio::test]
async fn stack_image_is_ensured() -> Result<()> {
    let settings = Settings::default();
    let docker = connect_docker().await?;
    for s in stack::STACKS {
        let outcome = stack::ensure_stack(&docker, s, &settings.debian_mirror, false).await?;
        assert!(matches!(
            outcome,
            StackOutcome::AlreadyPresent | StackOutcome::Built
        ));
        assert!(stack::image_exists(&docker, &paas_common::stack::run_image(s.name)).await?);
        assert!(stack::image_exists(&docker, &paas_common::stack::build_image(s.name)).await?);
        // Present now, so a second call is a cheap no-op.
        let again = stack::ensure_stack(&docker, s, &settings.debian_mirror, false).await?;
        assert_eq!(again, StackOutcome::AlreadyPresent);
    }
    Ok(())
}

#[tokio::test]
async fn droplet_runs_sandboxed_healthy_and_is_removed() -> Result<()> {
    // The unique comment gives this test its own droplet sha, hence its own image.
    let unique = uuid::Uuid::new_v4().to_string();
    let app = format!("# {unique}\n{SERVER_PY}");
    let (sha, tar) = droplet_tar(&[("app.py", &app), ("Procfile", "web: python3 app.py\n")]);
    let mut node = TestNode::start(HashMap::from([(sha.clone(), tar)])).await?;
    let health = HealthSettings {
        check: HealthCheck::Port,
        invocation_timeout_secs: 1,
        start_timeout_secs: 60,
        start_interval_secs: 1,
        interval_secs: 30,
        readiness: None,
    };
    let desired = vec![assignment(
        &format!("inst-{unique}"),
        &sha,
        "exec python3 app.py",
        health,
    )];

    let report = node
        .pass_until(&desired, Duration::from_secs(90), |r| {
            r.state == InstanceState::Running
        })
        .await?;
    let container = report.container_id.clone().context("no container id")?;
    let port = report.host_port.context("no host port")?;
    assert_eq!(report.restarts, 0);

    let http = reqwest::Client::builder().no_proxy().build()?;
    let resp = http.get(format!("http://127.0.0.1:{port}/")).send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await?, "hello from paas");

    // The sandbox, seen from inside.
    let (code, uid) = exec(&node.runtime, &container, &["id", "-u"]).await?;
    assert_eq!((code, uid.trim()), (0, "2000"));
    let (_, caps) = exec(
        &node.runtime,
        &container,
        &["grep", "CapEff", "/proc/self/status"],
    )
    .await?;
    assert!(
        caps.trim().ends_with("0000000000000000"),
        "capabilities left: {caps}"
    );
    let (code, _) = exec(&node.runtime, &container, &["touch", "/escape"]).await?;
    assert_ne!(code, 0, "the root file system is writable");
    let (code, out) = exec(&node.runtime, &container, &["touch", "/app/ok", "/tmp/ok"]).await?;
    assert_eq!(code, 0, "app dir or /tmp not writable: {out}");
    let info = node
        .runtime
        .docker()
        .inspect_container(&container, None)
        .await?;
    let host = info.host_config.context("no host config")?;
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.memory, Some(128 << 20));
    assert_eq!(host.memory_swap, Some(128 << 20));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert!(host.binds.unwrap_or_default().is_empty());

    // A restarted agent re-adopts the running container: same id, no restart.
    let (sink, _logs) = LogSink::channel();
    let mut second = Reconciler::new(
        node.runtime.clone(),
        Arc::new(StaticDroplets(HashMap::new())),
        sink,
    );
    second.reconcile(&desired).await?;
    let adopted = second.reports();
    assert_eq!(adopted.len(), 1);
    assert_eq!(adopted[0].container_id.as_deref(), Some(container.as_str()));
    assert_eq!(node.owned_containers().await?, vec![container.clone()]);

    let lines = node.drain_logs();
    let cell: Vec<_> = lines
        .iter()
        .filter(|l| l.source == "CELL")
        .map(|l| l.message.as_str())
        .collect();
    assert!(cell.contains(&"Starting instance 0"), "{cell:?}");
    assert!(cell.contains(&"Instance 0 is healthy"), "{cell:?}");

    // Unassigned: stopped and removed with its volume.
    node.reconciler.reconcile(&[]).await?;
    assert_eq!(node.reconciler.reports()[0].state, InstanceState::Stopping);
    node.reconciler.wait_stopped().await;
    node.reconciler.reconcile(&[]).await?;
    assert!(node.reconciler.reports().is_empty());
    assert!(node.owned_containers().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn crashing_instance_is_reported_and_restarted_with_backoff() -> Result<()> {
    let unique = uuid::Uuid::new_v4().to_string();
    let (sha, tar) = droplet_tar(&[("crash.sh", &format!("# {unique}\necho boom\nexit 3\n"))]);
    let mut node = TestNode::start(HashMap::from([(sha.clone(), tar)])).await?;
    let health = HealthSettings {
        check: HealthCheck::Process,
        ..HealthSettings::default()
    };
    let desired = vec![assignment(
        &format!("inst-{unique}"),
        &sha,
        "sh crash.sh",
        health,
    )];

    // Three immediate restarts, then the fourth crash waits 30 s in state Crashed.
    let report = node
        .pass_until(&desired, Duration::from_secs(90), |r| {
            r.state == InstanceState::Crashed && r.restarts >= 3
        })
        .await?;
    assert_eq!(report.restarts, 3);
    assert_eq!(report.last_exit.as_deref(), Some("exited with code 3"));
    let container = report.container_id.clone().context("no container id")?;
    // Restarted in place: still one container, the same one.
    assert_eq!(node.owned_containers().await?, vec![container]);

    let lines = node.drain_logs();
    assert!(
        lines
            .iter()
            .any(|l| l.source == "CELL" && l.message == "Instance 0 crashed: exited with code 3"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.source == "APP/web/0" && l.stream == "stdout" && l.message == "boom"),
        "{lines:?}"
    );
    Ok(())
}

/// Answers `/ready` with 503 while `/tmp/unready` exists.
const READY_PY: &str = r#"
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = 503 if self.path == "/ready" and os.path.exists("/tmp/unready") else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[tokio::test]
async fn failing_readiness_unroutes_without_restarting() -> Result<()> {
    let unique = uuid::Uuid::new_v4().to_string();
    let app = format!("# {unique}\n{READY_PY}");
    let (sha, tar) = droplet_tar(&[("app.py", &app)]);
    let mut node = TestNode::start(HashMap::from([(sha.clone(), tar)])).await?;
    let health = HealthSettings {
        readiness: Some(ReadinessSettings {
            check: HealthCheck::Http {
                endpoint: "/ready".into(),
            },
            invocation_timeout_secs: 1,
            interval_secs: 1,
        }),
        ..HealthSettings::default()
    };
    let desired = vec![assignment(
        &format!("inst-{unique}"),
        &sha,
        "exec python3 app.py",
        health,
    )];
    let ready = node
        .pass_until(&desired, Duration::from_secs(60), |r| {
            r.state == InstanceState::Running && r.ready
        })
        .await?;
    let container = ready.container_id.clone().context("no container id")?;

    // Unready: still running, same container, no restart, no crash.
    let (code, out) = exec(&node.runtime, &container, &["touch", "/tmp/unready"]).await?;
    assert_eq!(code, 0, "{out}");
    let unready = node
        .pass_until(&desired, Duration::from_secs(10), |r| !r.ready)
        .await?;
    assert_eq!(unready.state, InstanceState::Running, "{unready:?}");
    assert_eq!(unready.container_id.as_deref(), Some(container.as_str()));
    assert_eq!((unready.restarts, unready.last_exit.clone()), (0, None));

    // Ready again.
    let (code, out) = exec(&node.runtime, &container, &["rm", "/tmp/unready"]).await?;
    assert_eq!(code, 0, "{out}");
    let back = node
        .pass_until(&desired, Duration::from_secs(10), |r| r.ready)
        .await?;
    assert_eq!(back.container_id.as_deref(), Some(container.as_str()));
    assert_eq!(back.restarts, 0);
    let cell: Vec<String> = node
        .drain_logs()
        .into_iter()
        .filter(|l| l.source == "CELL")
        .map(|l| l.message)
        .collect();
    assert!(
        cell.iter()
            .any(|m| m.starts_with("Instance 0 is not ready:")),
        "{cell:?}"
    );
    assert_eq!(
        cell.iter().filter(|m| *m == "Instance 0 is ready").count(),
        2,
        "ready at start and again: {cell:?}"
    );
    Ok(())
}

/// Builds a one-layer image from the stack image with `labels`; a unique LABEL line gives each
/// its own id. Returns the full id.
async fn build_labelled(
    docker: &bollard::Docker,
    unique: &str,
    labels: &[(&str, &str)],
) -> Result<String> {
    let dockerfile = format!("FROM paas-stack:bookworm\nLABEL test.unique={unique}\n");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(dockerfile.len() as u64);
    b.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())?;
    let options = bollard::image::BuildImageOptions::<String> {
        dockerfile: "Dockerfile".into(),
        rm: true,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(b.into_inner()?.into()));
    let mut id = None;
    while let Some(item) = stream.next().await {
        let info = item?;
        if let Some(e) = info.error {
            bail!("build failed: {e}");
        }
        if let Some(i) = info.aux.and_then(|a| a.id) {
            id = Some(i);
        }
    }
    id.context("the build gave no image id")
}

/// A collected droplet's image goes only when it carries the platform's image label and no
/// container uses it: a stranger's image and an image in use stay, whatever the list says.
#[tokio::test]
async fn collected_images_are_removed_only_when_ours_and_unused() -> Result<()> {
    let mut node = TestNode::start(HashMap::new()).await?;
    let docker = node.runtime.docker().clone();
    let ours_label = [("paas.managed", "true"), ("paas.image", "droplet")];
    let ours = build_labelled(&docker, &format!("{}-ours", node.node), &ours_label).await?;
    node.images.push(ours.clone());
    let stranger = build_labelled(&docker, &format!("{}-stranger", node.node), &[]).await?;
    node.images.push(stranger.clone());
    let used = build_labelled(&docker, &format!("{}-used", node.node), &ours_label).await?;
    node.images.push(used.clone());
    docker
        .create_container(
            None::<bollard::container::CreateContainerOptions<String>>,
            bollard::container::Config {
                image: Some(used.clone()),
                cmd: Some(vec!["true".to_string()]),
                labels: Some(HashMap::from([
                    ("paas.managed".to_string(), "true".to_string()),
                    ("paas.node".to_string(), node.node.clone()),
                ])),
                ..Default::default()
            },
        )
        .await?;

    let mut done = std::collections::HashSet::new();
    let listed = [ours.clone(), stranger.clone(), used.clone()];
    paas_agent::dockerfile::remove_collected(&node.runtime, &listed, &mut done).await;
    assert!(
        docker.inspect_image(&ours).await.is_err(),
        "the platform's unused image is removed"
    );
    assert!(docker.inspect_image(&stranger).await.is_ok(), "not ours");
    assert!(docker.inspect_image(&used).await.is_ok(), "in use");
    assert!(done.contains(&ours) && done.contains(&stranger) && !done.contains(&used));
    Ok(())
}
