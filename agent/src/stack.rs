//! The stack images (issue 19): per Debian release, a run image (the runtime instances run on:
//! interpreters, no build tools) and a build image (the run image plus compilers and package
//! managers, only ever used for staging). No registry is reachable from a node, so the agent
//! builds both itself: debootstrap the run packages, import that tree, then install the build
//! packages into the same tree with apt in a chroot and import it again, which costs one
//! debootstrap per release. A file lock per stack makes parallel agents and test processes on one
//! machine build each at most once, while different stacks build side by side (debootstrap and
//! apt mostly wait on the mirror).

use bollard::image::CreateImageOptions;
use bollard::Docker;
use futures_util::TryStreamExt;
use paas_common::stack::{build_image, run_image};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Console scripts a buildpack installs (a Python venv, node's `.bin`, Go and Ruby binaries)
/// are on PATH for every command, the Procfile's included, as Heroku's `.profile.d` puts them.
const PATH_ENV: &str = "ENV PATH=/app/.venv/bin:/app/node_modules/.bin:/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MANAGED_LABEL: &str = "LABEL paas.managed=true";
/// The unprivileged user app processes run as; its home is the app dir.
pub const APP_UID: u32 = 2000;
/// Where a droplet records the stack it was staged on; a droplet without it predates stacks by
/// name and was staged on [`LEGACY_STACK`].
pub const DROPLET_STACK_FILE: &str = ".paas/stack";
pub const LEGACY_STACK: &str = "bookworm";

/// One Debian release as a stack: what its run image holds and what staging adds.
pub struct StackDef {
    pub name: &'static str,
    /// debootstrap's suite.
    suite: &'static str,
    run_packages: &'static [&'static str],
    build_packages: &'static [&'static str],
}

/// Every stack a node provides. bookworm keeps exactly its earlier run image, so droplets staged
/// before stacks had names run unchanged.
pub const STACKS: &[StackDef] = &[
    StackDef {
        name: "trixie",
        suite: "trixie",
        run_packages: &[
            "python3",
            "python-is-python3",
            "nodejs",
            "ruby",
            "ca-certificates",
        ],
        build_packages: &[
            "python3-pip",
            "python3-venv",
            "python3-dev",
            "npm",
            "ruby-dev",
            "ruby-bundler",
            "golang-go",
            "gcc",
            "make",
            "libc6-dev",
            "git",
        ],
    },
    StackDef {
        name: "bookworm",
        suite: "bookworm",
        run_packages: &["python3", "nodejs", "ca-certificates"],
        build_packages: &["python3-pip", "python3-venv", "npm"],
    },
];

pub fn stack_def(name: &str) -> Option<&'static StackDef> {
    STACKS.iter().find(|s| s.name == name)
}

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

/// What [`ensure_stack`] did.
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

async fn both_exist(docker: &Docker, stack: &StackDef) -> Result<bool, bollard::errors::Error> {
    Ok(image_exists(docker, &run_image(stack.name)).await?
        && image_exists(docker, &build_image(stack.name)).await?)
}

/// Makes sure the run and build images of `stack` exist, building both when either is missing
/// (or always with `force`).
pub async fn ensure_stack(
    docker: &Docker,
    stack: &StackDef,
    mirror: &str,
    force: bool,
) -> Result<StackOutcome, StackError> {
    if !force && both_exist(docker, stack).await? {
        return Ok(StackOutcome::AlreadyPresent);
    }
    let _lock = lock_exclusive(&lock_path(stack.name)).await?;
    // Someone else may have built it while we waited for the lock.
    if !force && both_exist(docker, stack).await? {
        tracing::info!(
            stack = stack.name,
            "stack images were built by another process"
        );
        return Ok(StackOutcome::AlreadyPresent);
    }
    build(docker, stack, mirror).await?;
    Ok(StackOutcome::Built)
}

fn lock_path(stack: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/paas-stack-build-{stack}.lock"))
}

async fn lock_exclusive(path: &Path) -> Result<crate::filelock::FileLock, StackError> {
    crate::filelock::exclusive(path, "waiting for another process building the stack image")
        .await
        .map_err(|source| StackError::Lock {
            path: path.to_path_buf(),
            source,
        })
}

async fn build(docker: &Docker, stack: &StackDef, mirror: &str) -> Result<(), StackError> {
    let started = Instant::now();
    tracing::info!(
        stack = stack.name,
        mirror,
        "building the stack's run and build images with debootstrap, a minute or two..."
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
    let include = format!("--include={}", stack.run_packages.join(","));
    run(
        "debootstrap",
        Command::new("debootstrap").args([
            "--variant=minbase",
            &include,
            stack.suite,
            &dir_arg,
            mirror,
        ]),
    )
    .await?;
    add_app_user(dir).map_err(|source| StackError::Io {
        step: "add app user",
        source,
    })?;
    clean_apt(dir).map_err(|source| StackError::Io {
        step: "clean apt",
        source,
    })?;
    tracing::info!(
        stack = stack.name,
        elapsed_s = started.elapsed().as_secs(),
        "run root file system ready, importing"
    );
    import(docker, dir, &run_image(stack.name)).await?;

    // The build image: the same tree plus the build tools, from the same mirror (the sources
    // debootstrap wrote), so staging and instances share every runtime file.
    std::fs::copy("/etc/resolv.conf", dir.join("etc/resolv.conf")).map_err(|source| {
        StackError::Io {
            step: "copy resolv.conf",
            source,
        }
    })?;
    run(
        "apt-get update",
        Command::new("chroot")
            .arg(dir)
            .args(["apt-get", "update", "-q"]),
    )
    .await?;
    run(
        "apt-get install",
        Command::new("chroot")
            .arg(dir)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["apt-get", "install", "-y", "-q", "--no-install-recommends"])
            .args(stack.build_packages),
    )
    .await?;
    let _ = std::fs::remove_file(dir.join("etc/resolv.conf"));
    clean_apt(dir).map_err(|source| StackError::Io {
        step: "clean apt",
        source,
    })?;
    // Restored dependency caches are unpacked here before staging starts (see `staging`):
    // outside the tmpfs, which an upload cannot reach, and owned by the app user.
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache)
        .and_then(|()| std::os::unix::fs::chown(&cache, Some(APP_UID), Some(APP_UID)))
        .map_err(|source| StackError::Io {
            step: "create /cache",
            source,
        })?;
    import(docker, dir, &build_image(stack.name)).await?;
    // The temp dir holds root-owned files; TempDir's drop removes it, but say so if it cannot.
    if let Err(e) = rootfs.close() {
        tracing::warn!(error = %e, "could not remove the stack build dir");
    }
    tracing::info!(
        stack = stack.name,
        elapsed_s = started.elapsed().as_secs(),
        "stack images built"
    );
    Ok(())
}

pub(crate) async fn import(docker: &Docker, dir: &Path, image: &str) -> Result<(), StackError> {
    let (repo, tag) = image
        .rsplit_once(':')
        .ok_or_else(|| StackError::BadName(image.into()))?;
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
    Ok(())
}

/// Downloaded packages and indexes are not part of a stack: they would only make it larger.
pub(crate) fn clean_apt(root: &Path) -> std::io::Result<()> {
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
    std::os::unix::fs::chown(&app, Some(APP_UID), Some(APP_UID))
}

/// The root file system as a tar held in memory: bollard 0.18 sends an import body only as one
/// buffer (its streaming import is `docker load`, a different format). About 250 MB for a run
/// image and 1.5 GB for a build image, once per stack.
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

pub(crate) async fn run(step: &'static str, cmd: &mut Command) -> Result<(), StackError> {
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

/// The stack a droplet was staged on, from its `.paas/stack`; [`LEGACY_STACK`] for a droplet
/// without one (staged before stacks had names) or naming a stack this node does not know.
pub fn droplet_stack(droplet: &[u8]) -> &'static str {
    let found = || -> Option<&'static str> {
        let mut archive = tar::Archive::new(droplet);
        for entry in archive.entries().ok()? {
            let mut entry = entry.ok()?;
            let path = entry.path().ok()?;
            if path.strip_prefix(".").unwrap_or(&path) != Path::new(DROPLET_STACK_FILE) {
                continue;
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
            return stack_def(text.trim()).map(|s| s.name);
        }
        None
    };
    found().unwrap_or(LEGACY_STACK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tar as droplet;

    #[test]
    fn a_droplet_names_its_stack_and_an_old_one_is_bookworm() {
        let d = droplet(&[("app.py", "x"), (".paas/stack", "trixie\n")]);
        assert_eq!(droplet_stack(&d), "trixie");
        assert_eq!(droplet_stack(&droplet(&[("app.py", "x")])), "bookworm");
        assert_eq!(
            droplet_stack(&droplet(&[(".paas/stack", "sid")])),
            "bookworm"
        );
        assert!(STACKS
            .iter()
            .all(|s| paas_common::stack::KNOWN.contains(&s.name)));
        assert_eq!(STACKS.len(), paas_common::stack::KNOWN.len());
    }
}
