//! The image built-in service containers run (issue 22): the trixie run image's tree with
//! Debian's `postgresql` and `redis-server` installed by apt in a chroot, imported like a stack
//! (no registry, no pulls). Built once per engine under a file lock, as the stacks are.

use bollard::container::{Config, RemoveContainerOptions};
use bollard::Docker;
use futures_util::StreamExt;
use paas_common::stack::{run_image, SERVICE_IMAGE};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::stack::{self, StackError, StackOutcome};

/// The run image the service image starts from.
const BASE_STACK: &str = "trixie";
const PACKAGES: &[&str] = &["postgresql", "redis-server"];
/// Where the service image links the installed PostgreSQL's binaries (the major version is
/// Debian's, found at build), so the container's script need not know it.
pub const PG_BIN: &str = "/usr/local/lib/paas-pg/bin";

/// Makes sure [`SERVICE_IMAGE`] exists, building it from the trixie run image when missing
/// (or always with `force`). The run image must exist already.
pub async fn ensure(docker: &Docker, force: bool) -> Result<StackOutcome, StackError> {
    if !force && stack::image_exists(docker, SERVICE_IMAGE).await? {
        return Ok(StackOutcome::AlreadyPresent);
    }
    let lock = Path::new("/tmp/paas-service-image-build.lock");
    let _lock = crate::filelock::exclusive(
        lock,
        "waiting for another process building the service image",
    )
    .await
    .map_err(|source| StackError::Lock {
        path: lock.to_path_buf(),
        source,
    })?;
    if !force && stack::image_exists(docker, SERVICE_IMAGE).await? {
        return Ok(StackOutcome::AlreadyPresent);
    }
    build(docker).await?;
    Ok(StackOutcome::Built)
}

fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> StackError {
    move |source| StackError::Io { step, source }
}

async fn build(docker: &Docker) -> Result<(), StackError> {
    let started = Instant::now();
    tracing::info!("building the service image (postgresql, redis-server) on the trixie run image");
    let tree = tempfile::Builder::new()
        .prefix("paas-service-image-")
        .tempdir()
        .map_err(io("create temp dir"))?;
    let dir = tree.path();
    export_run_image(docker, dir).await?;

    // Nothing starts at install time (policy-rc.d), and no cluster is created in the image:
    // each service instance initialises its own on its volume.
    std::fs::write(dir.join("usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n")
        .map_err(io("write policy-rc.d"))?;
    std::fs::set_permissions(
        dir.join("usr/sbin/policy-rc.d"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(io("chmod policy-rc.d"))?;
    let conf_d = dir.join("etc/postgresql-common/createcluster.d");
    std::fs::create_dir_all(&conf_d).map_err(io("create createcluster.d"))?;
    std::fs::write(conf_d.join("paas.conf"), "create_main_cluster = false\n")
        .map_err(io("write createcluster.conf"))?;
    std::fs::copy("/etc/resolv.conf", dir.join("etc/resolv.conf"))
        .map_err(io("copy resolv.conf"))?;
    stack::run(
        "apt-get update",
        Command::new("chroot")
            .arg(dir)
            .args(["apt-get", "update", "-q"]),
    )
    .await?;
    stack::run(
        "apt-get install",
        Command::new("chroot")
            .arg(dir)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["apt-get", "install", "-y", "-q", "--no-install-recommends"])
            .args(PACKAGES),
    )
    .await?;
    let _ = std::fs::remove_file(dir.join("etc/resolv.conf"));
    let _ = std::fs::remove_file(dir.join("usr/sbin/policy-rc.d"));
    stack::clean_apt(dir).map_err(io("clean apt"))?;
    // /usr/local/lib/paas-pg -> /usr/lib/postgresql/<major>
    let major = std::fs::read_dir(dir.join("usr/lib/postgresql"))
        .map_err(io("find postgresql"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .ok_or_else(|| StackError::Io {
            step: "find postgresql",
            source: std::io::Error::other("no /usr/lib/postgresql/<major>"),
        })?;
    let link = dir.join("usr/local/lib/paas-pg");
    std::fs::create_dir_all(dir.join("usr/local/lib")).map_err(io("mkdir usr/local/lib"))?;
    std::os::unix::fs::symlink(format!("/usr/lib/postgresql/{major}"), &link)
        .map_err(io("link postgresql"))?;
    // The volumes mount at these (empty, so the engine copies owner and mode into a new volume):
    // each service owns its data directory and nobody else reads it.
    for (path, owner) in [
        ("var/lib/postgresql", "postgres"),
        ("var/lib/redis", "redis"),
    ] {
        let (uid, gid) = user_ids(dir, owner).map_err(io("read passwd"))?;
        let p = dir.join(path);
        std::fs::create_dir_all(&p).map_err(io("create data dir"))?;
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(io("chown data dir"))?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io("chmod data dir"))?;
    }
    stack::import(docker, dir, SERVICE_IMAGE).await?;
    if let Err(e) = tree.close() {
        tracing::warn!(error = %e, "could not remove the service image build dir");
    }
    tracing::info!(
        elapsed_s = started.elapsed().as_secs(),
        "service image built"
    );
    Ok(())
}

/// The uid and gid of `user` in the tree's `/etc/passwd`.
fn user_ids(root: &Path, user: &str) -> std::io::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == user)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| std::io::Error::other(format!("no user {user}")))
}

/// Unpacks the run image's file system into `dir` (a created, never started container's
/// export), owners kept.
async fn export_run_image(docker: &Docker, dir: &Path) -> Result<(), StackError> {
    let base = run_image(BASE_STACK);
    let created = docker
        .create_container::<String, String>(
            None,
            Config {
                image: Some(base.clone()),
                cmd: Some(vec!["/bin/true".into()]),
                labels: Some(
                    [(paas_common::labels::MANAGED.to_string(), "true".to_string())].into(),
                ),
                ..Default::default()
            },
        )
        .await?;
    let result = async {
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(dir)
            .args(["--numeric-owner", "-x"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("spawn tar"))?;
        let mut stdin = tar.stdin.take().ok_or_else(|| StackError::Io {
            step: "tar stdin",
            source: std::io::Error::other("no pipe"),
        })?;
        let mut export = docker.export_container(&created.id);
        while let Some(chunk) = export.next().await {
            stdin.write_all(&chunk?).await.map_err(io("write tar"))?;
        }
        drop(stdin);
        let out = tar.wait_with_output().await.map_err(io("wait for tar"))?;
        if !out.status.success() {
            return Err(StackError::Command {
                step: "untar the run image",
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }
    .await;
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    result
}
