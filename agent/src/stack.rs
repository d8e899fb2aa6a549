//! The stack image: the Debian root file system every droplet runs on. No registry is reachable
//! from a node, so the agent builds it itself with debootstrap when the engine lacks it. A file
//! lock makes parallel agents and test processes on one machine build it at most once.

use bollard::image::CreateImageOptions;
use bollard::Docker;
use fs4::fs_std::FileExt;
use futures_util::TryStreamExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

pub const DEFAULT_STACK_IMAGE: &str = "paas-stack:bookworm";
const LOCK_PATH: &str = "/tmp/paas-stack-build.lock";
const PATH_ENV: &str = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MANAGED_LABEL: &str = "LABEL paas.managed=true";
/// The unprivileged user app processes run as; its home is the app dir.
pub const APP_UID: u32 = 2000;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("stack lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("{step} failed ({status}): {stderr}")]
    Command {
        step: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("stack image name {0:?} lacks a tag")]
    BadName(String),
}

/// What [`ensure_stack_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackOutcome {
    AlreadyPresent,
    Built,
}

pub async fn image_exists(docker: &Docker, image: &str) -> Result<bool, bollard::errors::Error> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes sure `image` exists, building it when missing (or always with `force`).
pub async fn ensure_stack_image(
    docker: &Docker,
    image: &str,
    mirror: &str,
    force: bool,
) -> Result<StackOutcome, StackError> {
    if !force && image_exists(docker, image).await? {
        return Ok(StackOutcome::AlreadyPresent);
    }
    let _lock = lock_exclusive(Path::new(LOCK_PATH)).await?;
    // Someone else may have built it while we waited for the lock.
    if !force && image_exists(docker, image).await? {
        tracing::info!(image, "stack image was built by another process");
        return Ok(StackOutcome::AlreadyPresent);
    }
    build(docker, image, mirror).await?;
    Ok(StackOutcome::Built)
}

/// Held while building; the OS releases the lock when the file closes, even on a crash.
struct LockGuard(std::fs::File);

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.0);
    }
}

async fn lock_exclusive(path: &Path) -> Result<LockGuard, StackError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lock_err = |source| StackError::Lock { path: path.clone(), source };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        if !file.try_lock_exclusive().map_err(lock_err)? {
            tracing::info!(path = %path.display(), "waiting for another process building the stack image");
            file.lock_exclusive().map_err(lock_err)?;
        }
        Ok(LockGuard(file))
    })
    .await
    .map_err(|e| StackError::Io { step: "lock task", source: std::io::Error::other(e) })?
}

async fn build(docker: &Docker, image: &str, mirror: &str) -> Result<(), StackError> {
    let (repo, tag) = image
        .rsplit_once(':')
        .ok_or_else(|| StackError::BadName(image.into()))?;
    let started = Instant::now();
    tracing::info!(
        image,
        mirror,
        "building stack image with debootstrap, about a minute..."
    );
    let rootfs = tempfile::Builder::new()
        .prefix("paas-stack-")
        .tempdir()
        .map_err(|source| StackError::Io {
            step: "create temp dir",
            source,
        })?;
    let dir = rootfs.path();

    let dir_arg = dir.to_string_lossy().into_owned();
    run(
        "debootstrap",
        Command::new("debootstrap").args([
            "--variant=minbase",
            "--include=python3,nodejs,ca-certificates",
            "bookworm",
            &dir_arg,
            mirror,
        ]),
    )
    .await?;
    add_app_user(dir).map_err(|source| StackError::Io {
        step: "add app user",
        source,
    })?;
    tracing::info!(
        image,
        elapsed_s = started.elapsed().as_secs(),
        "root file system ready, importing"
    );

    let rootfs_tar = tar_dir(dir).await?;
    let options = CreateImageOptions {
        from_src: "-",
        repo,
        tag,
        changes: vec![PATH_ENV, MANAGED_LABEL],
        ..Default::default()
    };
    docker
        .create_image(Some(options), Some(rootfs_tar), None)
        .try_collect::<Vec<_>>()
        .await?;
    // The temp dir holds root-owned files; TempDir's drop removes it, but say so if it cannot.
    if let Err(e) = rootfs.close() {
        tracing::warn!(error = %e, "could not remove the stack build dir");
    }
    tracing::info!(
        image,
        elapsed_s = started.elapsed().as_secs(),
        "stack image built"
    );
    Ok(())
}

/// The `paas` user (uid/gid 2000) with its home at the app dir, which it owns.
fn add_app_user(root: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let append = |file: &str, line: &str| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join(file))?;
        f.write_all(line.as_bytes())
    };
    append(
        "etc/passwd",
        &format!("paas:x:{APP_UID}:{APP_UID}:paas:/app:/bin/sh\n"),
    )?;
    append("etc/group", &format!("paas:x:{APP_UID}:\n"))?;
    let app = root.join("app");
    std::fs::create_dir_all(&app)?;
    std::os::unix::fs::chown(&app, Some(APP_UID), Some(APP_UID))?;
    for cache in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let Ok(entries) = std::fs::read_dir(root.join(cache)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

/// The root file system as a tar held in memory: bollard 0.18 sends an import body only as one
/// buffer (its streaming import is `docker load`, a different format). About 250 MB, once.
async fn tar_dir(dir: &Path) -> Result<bytes::Bytes, StackError> {
    let mut child = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["--numeric-owner", "-c", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| StackError::Io {
            step: "spawn tar",
            source,
        })?;
    let mut stdout = child.stdout.take().ok_or_else(|| StackError::Io {
        step: "tar stdout",
        source: std::io::Error::other("no pipe"),
    })?;
    let mut buf = Vec::with_capacity(256 << 20);
    let read = stdout.read_to_end(&mut buf);
    let (read, output) = tokio::join!(read, child.wait_with_output());
    read.map_err(|source| StackError::Io {
        step: "read tar",
        source,
    })?;
    let output = output.map_err(|source| StackError::Io {
        step: "wait for tar",
        source,
    })?;
    if !output.status.success() {
        return Err(StackError::Command {
            step: "tar",
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(bytes::Bytes::from(buf))
}

async fn run(step: &'static str, cmd: &mut Command) -> Result<(), StackError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| StackError::Io { step, source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        // debootstrap reports most failures on stdout; keep the tail of both.
        let tail = |s: &str| {
            s.lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        return Err(StackError::Command {
            step,
            status: output.status,
            stderr: format!("{}\n{}", tail(&stdout), tail(&stderr)),
        });
    }
    Ok(())
}
