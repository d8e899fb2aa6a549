//! The Dockerfile lifecycle (issue 3): an app with a `Dockerfile` is built on this node's engine
//! (classic builder, the source tar as context) and the image becomes the droplet, its
//! `docker save` tar uploaded to the controller's blobstore like any droplet. A node that has to
//! run it and lacks the image loads that tar (`runtime::ensure_image`); no registry is involved.
//!
//! Nothing is pulled: every base image (`FROM`, `COPY --from`) must already be on the engine,
//! which is checked before the build because the engine would otherwise pull a missing one. `RUN`
//! steps get no network, the staging memory limit and the staging time limit. Built images carry
//! the platform's image label, the only images a node ever removes ([`remove_collected`]).

use bollard::image::{BuildImageOptions, RemoveImageOptions};
use chrono::Utc;
use futures_util::StreamExt;
use paas_common::agent::{AgentLogLine, BuildAssignment, BuildResult, DropletImage, LogBatch};
use paas_common::domain::ImageName;
use paas_common::labels;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use crate::client::ControllerClient;
use crate::runtime::{Runtime, APP_PORT};
use crate::staging::StagingError;

/// The user a container of an image whose `USER` is root (or unset) runs as.
pub const UNPRIVILEGED_USER: &str = "2000:2000";

/// Base images a Dockerfile needs from the engine: each `FROM` and `COPY --from` naming an
/// image rather than an earlier stage. Refuses what would need a registry or a network (`FROM`
/// with a build argument, `ADD` of a URL), so a build never reaches outside the node.
pub fn base_images(dockerfile: &str) -> Result<Vec<String>, String> {
    let mut stages: Vec<String> = Vec::new();
    // How many FROMs came before: `COPY --from=N` names a stage only for N below it; any other
    // number is an image reference to the engine (a short id prefix).
    let mut froms = 0usize;
    let mut bases: Vec<String> = Vec::new();
    let mut logical = String::new();
    let mut instructions = Vec::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if logical.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            logical.push_str(head);
            logical.push(' ');
            continue;
        }
        if !trimmed.starts_with('#') {
            logical.push_str(trimmed);
        }
        instructions.push(std::mem::take(&mut logical));
    }
    if !logical.is_empty() {
        instructions.push(logical);
    }
    let add_base = |image: &str, stages: &[String], froms: usize, bases: &mut Vec<String>| {
        let lower = image.to_ascii_lowercase();
        if lower == "scratch"
            || stages.contains(&lower)
            || image.parse::<usize>().is_ok_and(|n| n < froms)
        {
            return Ok(());
        }
        if image.contains('$') {
            return Err(format!(
                "the Dockerfile names an image with a build argument ({image}): name a local image, e.g. paas-stack:bookworm"
            ));
        }
        if !bases.iter().any(|b| b == image) {
            bases.push(image.to_string());
        }
        Ok(())
    };
    for ins in &instructions {
        let mut words = ins.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        let args: Vec<&str> = words.collect();
        match keyword.to_ascii_uppercase().as_str() {
            "FROM" => {
                let rest: Vec<&str> = args
                    .iter()
                    .copied()
                    .filter(|a| !a.starts_with("--"))
                    .collect();
                let Some(image) = rest.first() else {
                    return Err("a FROM line names no image".into());
                };
                add_base(image, &stages, 0, &mut bases)?;
                froms += 1;
                if rest.len() >= 3 && rest[1].eq_ignore_ascii_case("as") {
                    stages.push(rest[2].to_ascii_lowercase());
                }
            }
            "COPY" | "ADD" => {
                for a in &args {
                    if let Some(from) = a.strip_prefix("--from=") {
                        add_base(from, &stages, froms, &mut bases)?;
                    }
                }
                let remote = args.iter().any(|a| {
                    let a = a.trim_matches(|c| c == '"' || c == '[' || c == ',');
                    a.starts_with("http://") || a.starts_with("https://") || a.starts_with("git@")
                });
                if keyword.eq_ignore_ascii_case("ADD") && remote {
                    return Err(
                        "ADD of a URL is refused: builds run without a network; put the file in the app folder"
                            .into(),
                    );
                }
            }
            _ => {}
        }
    }
    if bases.is_empty()
        && !instructions.iter().any(|i| {
            i.split_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("FROM"))
        })
    {
        return Err("the Dockerfile has no FROM line".into());
    }
    Ok(bases)
}

/// Refuses every base image that is not the stack image or one an operator allowed, by name
/// (issue 18). One message for all, whether or not the engine holds such an image, so a refusal
/// tells nothing about another tenant's images.
pub fn check_allowed(
    bases: &[String],
    stack_image: &str,
    allowed: &[String],
) -> Result<(), String> {
    let named = |s: &str| ImageName::parse(s).ok();
    // Every stack's run image is the platform's own, whichever the node calls its default.
    let stacks: Vec<_> = std::iter::once(stack_image.to_string())
        .chain(
            paas_common::stack::KNOWN
                .iter()
                .map(|k| paas_common::stack::run_image(k)),
        )
        .filter_map(|s| named(&s))
        .collect();
    for base in bases {
        let ok = named(base).is_some_and(|n| {
            stacks.contains(&n) || allowed.iter().any(|a| named(a).as_ref() == Some(&n))
        });
        if !ok {
            return Err(format!(
                "base image {base} is not allowed: a Dockerfile builds FROM the stack image ({stack_image}) or an image an operator allowed by name (paas allow-base-image)"
            ));
        }
    }
    Ok(())
}

/// `args` as one `/bin/sh -c` command line that runs exactly them (each word single-quoted
/// unless it is plainly safe), so an image's exec-form CMD can be shown and overridden as text.
pub fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The image's start command as text: ENTRYPOINT then CMD.
pub fn start_command(config: &bollard::models::ImageConfig) -> String {
    let mut argv = config.entrypoint.clone().unwrap_or_default();
    argv.extend(config.cmd.clone().unwrap_or_default());
    shell_join(&argv)
}

/// The port the app listens on: the image's exposed TCP port (8080 when it exposes that or
/// none; the lowest when it exposes several).
pub fn image_port(config: &bollard::models::ImageConfig) -> u16 {
    let mut ports: Vec<u16> = config
        .exposed_ports
        .as_ref()
        .map(|p| {
            p.keys()
                .filter_map(|k| {
                    let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
                    (proto == "tcp").then(|| port.parse().ok()).flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    ports.sort_unstable();
    if ports.is_empty() || ports.contains(&APP_PORT) {
        APP_PORT
    } else {
        ports[0]
    }
}

/// The user an instance of the image runs as: the image's own `USER` unless that is root (by
/// name or uid 0, for the user or its group) or unset, then the platform's unprivileged user.
pub fn run_user(image_user: Option<&str>) -> String {
    let u = image_user.unwrap_or("").trim();
    let (user, group) = u.split_once(':').unwrap_or((u, ""));
    let root = |s: &str| s == "root" || s.parse::<u32>() == Ok(0);
    if user.is_empty() || root(user) || root(group) {
        UNPRIVILEGED_USER.into()
    } else {
        u.into()
    }
}

/// The numeric `uid:gid` an image's `USER` means, given its `/etc/passwd` and `/etc/group`: a
/// name can map to uid 0, so only numbers decide. Root (uid or gid 0) or unset gives the
/// platform's unprivileged user; a name the image does not know is an error.
pub fn resolve_user(user: Option<&str>, passwd: &str, group: &str) -> Result<String, String> {
    let u = user.unwrap_or("").trim();
    if u.is_empty() {
        return Ok(UNPRIVILEGED_USER.into());
    }
    let (name, grp) = match u.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (u, None),
    };
    let entry = |file: &str, key: &str| -> Option<Vec<String>> {
        file.lines()
            .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && f[0] == key)
    };
    let by_uid = |uid: u32| -> Option<Vec<String>> {
        passwd
            .lines()
            .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[2].parse::<u32>() == Ok(uid))
    };
    let (uid, passwd_gid) = match name.parse::<u32>() {
        Ok(uid) => (uid, by_uid(uid).and_then(|f| f[3].parse::<u32>().ok())),
        Err(_) => {
            let f = entry(passwd, name)
                .filter(|f| f.len() >= 4)
                .ok_or_else(|| format!("USER {name} is not in the image's /etc/passwd"))?;
            let uid = f[2]
                .parse::<u32>()
                .map_err(|_| format!("USER {name} has no numeric uid in /etc/passwd"))?;
            (uid, f[3].parse::<u32>().ok())
        }
    };
    let gid = match grp.filter(|g| !g.is_empty()) {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entry(group, g)
                .and_then(|f| f[2].parse::<u32>().ok())
                .ok_or_else(|| format!("group {g} is not in the image's /etc/group"))?,
        },
        // The engine would use the user's primary group, or 0 when it has none.
        None => passwd_gid.unwrap_or(uid),
    };
    if uid == 0 || gid == 0 {
        return Ok(UNPRIVILEGED_USER.into());
    }
    Ok(format!("{uid}:{gid}"))
}

/// One file of an image, read from a created (never started) container; empty when absent.
async fn image_file(
    runtime: &Runtime,
    container: &str,
    path: &str,
) -> Result<String, StagingError> {
    let mut raw = Vec::new();
    let mut stream = runtime.docker().download_from_container(
        container,
        Some(bollard::container::DownloadFromContainerOptions { path }),
    );
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => raw.extend_from_slice(&c),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(String::new()),
            Err(e) => return Err(e.into()),
        }
    }
    let mut archive = tar::Archive::new(raw.as_slice());
    let mut text = String::new();
    if let Some(entry) = archive.entries()?.next() {
        entry?.take(1 << 20).read_to_string(&mut text)?;
    }
    Ok(text)
}

/// [`resolve_user`] with the image's own `/etc/passwd` and `/etc/group`.
async fn image_user(
    runtime: &Runtime,
    b: &BuildAssignment,
    image: &str,
    user: Option<&str>,
) -> Result<Result<String, String>, StagingError> {
    if user.is_none_or(|u| u.trim().is_empty()) {
        return Ok(Ok(UNPRIVILEGED_USER.into()));
    }
    let docker = runtime.docker();
    let config = bollard::container::Config {
        image: Some(image.to_string()),
        cmd: Some(vec!["true".to_string()]),
        network_disabled: Some(true),
        labels: Some(HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (
                labels::NODE.to_string(),
                runtime.settings().node_name.clone(),
            ),
            (labels::APP.to_string(), b.app.clone()),
            (crate::staging::LABEL_BUILD.to_string(), b.build_id.clone()),
        ])),
        ..Default::default()
    };
    let id = docker
        .create_container(
            None::<bollard::container::CreateContainerOptions<String>>,
            config,
        )
        .await?
        .id;
    let files = async {
        let passwd = image_file(runtime, &id, "/etc/passwd").await?;
        let group = image_file(runtime, &id, "/etc/group").await?;
        Ok::<_, StagingError>((passwd, group))
    }
    .await;
    let remove = bollard::container::RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    if let Err(e) = docker.remove_container(&id, Some(remove)).await {
        tracing::warn!(container = %id, error = %e, "could not remove a user lookup container");
    }
    let (passwd, group) = files?;
    Ok(resolve_user(user, &passwd, &group))
}

/// The `Dockerfile` at the top of a source tar.
fn read_dockerfile(source: &[u8]) -> std::io::Result<Option<String>> {
    let mut archive = tar::Archive::new(source);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let path = path.strip_prefix("./").unwrap_or(&path);
        if path == std::path::Path::new("Dockerfile") && entry.header().entry_type().is_file() {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// Sends `STG` lines of one build to the controller as they come.
struct Stg {
    client: Arc<ControllerClient>,
    build_id: String,
}

impl Stg {
    async fn send(&self, lines: Vec<String>, stream: &str) {
        if lines.is_empty() {
            return;
        }
        let batch = LogBatch {
            lines: lines
                .into_iter()
                .map(|message| AgentLogLine {
                    instance_id: self.build_id.clone(),
                    timestamp: Utc::now(),
                    source: "STG".into(),
                    stream: stream.into(),
                    message,
                })
                .collect(),
        };
        if let Err(e) = self.client.build_logs(&self.build_id, &batch).await {
            tracing::debug!(build = %self.build_id, error = %e, "could not send staging lines");
        }
    }

    async fn line(&self, line: impl Into<String>) {
        self.send(vec![line.into()], "out").await;
    }

    /// Says why the build failed and returns that result.
    async fn fail(&self, why: String) -> BuildResult {
        self.send(vec![why.clone()], "stderr").await;
        BuildResult {
            error: Some(why),
            ..Default::default()
        }
    }
}

/// Builds the source's Dockerfile and uploads the image as the droplet.
pub async fn build(
    runtime: &Runtime,
    client: &Arc<ControllerClient>,
    b: &BuildAssignment,
    source: bytes::Bytes,
) -> Result<BuildResult, StagingError> {
    let docker = runtime.docker();
    let stg = Stg {
        client: client.clone(),
        build_id: b.build_id.clone(),
    };
    let Some(text) = read_dockerfile(&source)? else {
        return Ok(stg
            .fail("the app has no Dockerfile at its top".into())
            .await);
    };
    let bases = match base_images(&text) {
        Ok(b) => b,
        Err(why) => return Ok(stg.fail(why).await),
    };
    let stack_image = &runtime.settings().stack_image;
    if let Err(why) = check_allowed(&bases, stack_image, &b.allowed_base_images) {
        return Ok(stg.fail(why).await);
    }
    for base in &bases {
        match docker.inspect_image(base).await {
            // The engine falls back to an id prefix when no image has the name: only an image
            // found under the name itself is the one that was allowed.
            Ok(img) if resolved_by_name(base, img.repo_tags.as_deref().unwrap_or_default()) => {}
            Ok(_) => {
                return Ok(stg
                    .fail(format!(
                        "base image {base} is not on node {}: a Dockerfile builds FROM local images only (e.g. {}), nothing is pulled",
                        runtime.settings().node_name,
                        runtime.settings().stack_image
                    ))
                    .await);
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                return Ok(stg
                    .fail(format!(
                        "base image {base} is not on node {}: a Dockerfile builds FROM local images only (e.g. {}), nothing is pulled",
                        runtime.settings().node_name,
                        runtime.settings().stack_image
                    ))
                    .await);
            }
            Err(e) => return Err(e.into()),
        }
    }
    stg.line(format!(
        "Building the Dockerfile on node {} from {}",
        runtime.settings().node_name,
        bases.join(", ")
    ))
    .await;
    let memory = b.memory_mb.saturating_mul(1024 * 1024);
    let options = BuildImageOptions::<String> {
        dockerfile: "Dockerfile".into(),
        rm: true,
        forcerm: true,
        pull: false,
        memory: Some(memory),
        memswap: Some(i64::try_from(memory).unwrap_or(i64::MAX)),
        // RUN steps reach nothing, like buildpacks.
        networkmode: "none".into(),
        labels: HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::IMAGE.to_string(), labels::IMAGE_DROPLET.to_string()),
            (labels::APP.to_string(), b.app.clone()),
        ]),
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(source));
    let deadline = tokio::time::sleep(Duration::from_secs(b.timeout_secs));
    tokio::pin!(deadline);
    let mut partial = String::new();
    let mut image_id: Option<String> = None;
    let mut error: Option<String> = None;
    loop {
        let item = tokio::select! {
            () = &mut deadline => {
                // Dropping the stream closes the request, which cancels the build on the engine.
                drop(stream);
                return Ok(stg
                    .fail(format!(
                        "staging exceeded its time limit of {} s",
                        b.timeout_secs
                    ))
                    .await);
            }
            item = stream.next() => item,
        };
        let info = match item {
            None => break,
            Some(Ok(info)) => info,
            Some(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
        };
        let mut lines = Vec::new();
        if let Some(s) = info.stream {
            partial.push_str(&s);
            while let Some(pos) = partial.find('\n') {
                let line: String = partial.drain(..=pos).collect();
                let line = line.trim_end();
                if let Some(id) = line.strip_prefix("Successfully built ") {
                    image_id.get_or_insert_with(|| id.trim().to_string());
                }
                if !line.is_empty() {
                    lines.push(line.to_string());
                }
            }
        }
        if let Some(s) = info.status {
            lines.push(s);
        }
        stg.send(lines, "stdout").await;
        if let Some(e) = info.error {
            error = Some(e);
        }
        if let Some(id) = info.aux.and_then(|a| a.id) {
            image_id = Some(id);
        }
    }
    if !partial.trim().is_empty() {
        stg.send(vec![partial.trim_end().to_string()], "stdout")
            .await;
    }
    if let Some(e) = error {
        return Ok(stg
            .fail(format!("the Dockerfile build failed: {}", e.trim()))
            .await);
    }
    let Some(image_id) = image_id else {
        return Ok(stg
            .fail("the Dockerfile build produced no image".into())
            .await);
    };
    let inspect = docker.inspect_image(&image_id).await?;
    let id = inspect.id.clone().unwrap_or(image_id);
    let config = inspect.config.unwrap_or_default();
    let port = image_port(&config);
    let command = start_command(&config);
    let user = match image_user(runtime, b, &id, config.user.as_deref()).await? {
        Ok(u) => u,
        Err(why) => return Ok(stg.fail(why).await),
    };
    stg.line(format!(
        "Built image {}: runs as {user}, listens on port {port}, command: {}",
        short(&id),
        if command.is_empty() {
            "(none: give one with -c)"
        } else {
            &command
        }
    ))
    .await;

    let limit = usize::try_from(b.disk_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let mut tar = Vec::new();
    let mut export = docker.export_image(&id);
    while let Some(chunk) = export.next().await {
        tar.extend_from_slice(&chunk?);
        if tar.len() > limit {
            return Ok(stg
                .fail(format!(
                    "the image is larger than the droplet limit of {} MB",
                    b.disk_mb
                ))
                .await);
        }
    }
    let size = tar.len();
    let up = client.upload_build_droplet(&b.build_id, tar).await?;
    stg.line(format!(
        "Stored the image as droplet {} ({} MB)",
        short(&up.sha256),
        size >> 20
    ))
    .await;
    let mut processes = BTreeMap::new();
    if !command.is_empty() {
        processes.insert("web".to_string(), command);
    }
    Ok(BuildResult {
        buildpack: Some("dockerfile".into()),
        droplet: Some(up.sha256),
        processes,
        error: None,
        image: Some(DropletImage { id, port, user }),
        dependencies_restored: false,
        layers_reused: false,
    })
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// Removes the images of collected droplets the controller lists, when they carry the platform's
/// image label and no container uses them (the engine refuses those; a later list retries).
/// `done` remembers the ones handled, so each costs one engine call.
pub async fn remove_collected(runtime: &Runtime, collected: &[String], done: &mut HashSet<String>) {
    let docker = runtime.docker();
    for id in collected {
        if done.contains(id) {
            continue;
        }
        let ours = match docker.inspect_image(id).await {
            Ok(i) => i.config.and_then(|c| c.labels).is_some_and(|l| {
                l.get(labels::IMAGE).map(String::as_str) == Some(labels::IMAGE_DROPLET)
            }),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                done.insert(id.clone());
                continue;
            }
            Err(e) => {
                tracing::warn!(image = %id, error = %e, "could not inspect a collected image");
                continue;
            }
        };
        if !ours {
            done.insert(id.clone());
            continue;
        }
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
        };
        match docker.remove_image(id, Some(options), None).await {
            Ok(_) => {
                tracing::info!(image = %id, "removed the image of a collected droplet");
                done.insert(id.clone());
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                done.insert(id.clone());
            }
            Err(e) => tracing::debug!(image = %id, error = %e, "collected image still in use"),
        }
    }
}

/// Whether an inspected image carries `base` among its tags (`alpine` is `alpine:latest`).
fn resolved_by_name(base: &str, repo_tags: &[String]) -> bool {
    let Ok(want) = ImageName::parse(base) else {
        return false;
    };
    repo_tags
        .iter()
        .any(|t| ImageName::parse(t).is_ok_and(|t| t == want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stack_and_allowed_names_are_built_on() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let stack = "paas-stack:bookworm";
        let allowed = v(&["alpine:3.20", "debian"]);
        assert!(check_allowed(&v(&["paas-stack:bookworm"]), stack, &allowed).is_ok());
        assert!(check_allowed(&v(&["alpine:3.20", "debian:latest"]), stack, &allowed).is_ok());
        for bad in [
            "b6",
            "sha256:b6",
            "paas-stack@sha256:00",
            "alpine",
            "ubuntu:24.04",
        ] {
            let e = check_allowed(&v(&[bad]), stack, &allowed).unwrap_err();
            assert!(e.contains("is not allowed"), "{bad}: {e}");
        }
        // A number beyond the stages is an image reference (an id prefix) to the engine.
        assert_eq!(
            base_images("FROM paas-stack:bookworm\nCOPY --from=0 /a /b\nCOPY --from=1 /a /b\n")
                .unwrap(),
            ["paas-stack:bookworm", "1"]
        );
        assert_eq!(base_images("FROM 12\n").unwrap(), ["12"]);
        assert!(resolved_by_name("alpine", &v(&["alpine:latest"])));
        assert!(!resolved_by_name("alpine", &v(&["other:1"])));
    }

    #[test]
    fn base_images_are_froms_that_are_not_stages() {
        let df = "# syntax comment\nFROM paas-stack:bookworm AS build\nRUN make \\\n  all\nFROM --platform=linux/amd64 build\nCOPY --from=build /a /b\nCOPY --from=0 /a /b\nCOPY --from=other:1 /x /y\nFROM scratch\n";
        assert_eq!(base_images(df).unwrap(), ["paas-stack:bookworm", "other:1"]);
        assert!(base_images("FROM $BASE\n")
            .unwrap_err()
            .contains("build argument"));
        assert!(base_images("FROM a\nADD https://example.com/x /x\n")
            .unwrap_err()
            .contains("without a network"));
        assert!(base_images("RUN true\n").unwrap_err().contains("no FROM"));
        assert_eq!(base_images("from Debian:12\n").unwrap(), ["Debian:12"]);
    }

    #[test]
    fn commands_quote_what_the_shell_would_change() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shell_join(&argv(&["python3", "/srv/app.py", "--port=8000"])),
            "python3 /srv/app.py --port=8000"
        );
        assert_eq!(
            shell_join(&argv(&["/bin/sh", "-c", "echo it's $HOME"])),
            r#"/bin/sh -c 'echo it'\''s $HOME'"#
        );
        assert_eq!(shell_join(&argv(&["a", ""])), "a ''");
    }

    #[test]
    fn root_or_no_user_runs_unprivileged() {
        for u in [
            None,
            Some(""),
            Some("root"),
            Some("0"),
            Some("0:0"),
            Some("app:root"),
            Some("1000:0"),
        ] {
            assert_eq!(run_user(u), UNPRIVILEGED_USER, "{u:?}");
        }
        assert_eq!(run_user(Some("app")), "app");
        assert_eq!(run_user(Some("1000:1000")), "1000:1000");
    }

    #[test]
    fn users_resolve_to_numbers_and_never_root() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\napp:x:1000:1001::/srv:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
        let group = "root:x:0:\napp:x:1001:\nstaff:x:50:\n";
        let r = |u: &str| resolve_user(Some(u), passwd, group);
        assert_eq!(
            resolve_user(None, passwd, group).unwrap(),
            UNPRIVILEGED_USER
        );
        assert_eq!(r("toor").unwrap(), UNPRIVILEGED_USER, "a name for uid 0");
        assert_eq!(r("root").unwrap(), UNPRIVILEGED_USER);
        assert_eq!(r("app").unwrap(), "1000:1001");
        assert_eq!(r("app:staff").unwrap(), "1000:50");
        assert_eq!(r("app:root").unwrap(), UNPRIVILEGED_USER, "group 0");
        assert_eq!(r("1000").unwrap(), "1000:1001", "the uid's primary group");
        assert_eq!(r("4242").unwrap(), "4242:4242", "not gid 0 when unknown");
        assert_eq!(r("4242:0").unwrap(), UNPRIVILEGED_USER);
        assert!(r("ghost")
            .unwrap_err()
            .contains("not in the image's /etc/passwd"));
        assert!(r("app:ghosts").unwrap_err().contains("/etc/group"));
    }

    #[test]
    fn the_exposed_port_or_8080() {
        let config = |ports: &[&str]| bollard::models::ImageConfig {
            exposed_ports: Some(
                ports
                    .iter()
                    .map(|p| (p.to_string(), HashMap::new()))
                    .collect(),
            ),
            ..Default::default()
        };
        assert_eq!(image_port(&bollard::models::ImageConfig::default()), 8080);
        assert_eq!(image_port(&config(&["8000/tcp"])), 8000);
        assert_eq!(image_port(&config(&["9000/tcp", "8080/tcp"])), 8080);
        assert_eq!(
            image_port(&config(&["53/udp", "9001/tcp", "9000/tcp"])),
            9000
        );
    }
}
