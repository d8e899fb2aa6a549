//! Operator buildpacks (issue 3): `GET /v1/buildpacks` lists the built-ins and the added ones in
//! detection order; `POST /v1/buildpacks` (multipart `name` + `archive`, a zip holding
//! `bin/detect`, `bin/compile` and `bin/release`) adds one after the others; `DELETE
//! /v1/buildpacks/{name}` removes one. Adding and removing are operator-only (`authz::classify`).
//! The zip is checked like an app archive and stored in the blobstore as a tar; builds name the
//! added buildpacks and nodes fetch them from `GET /v1/agent/buildpacks/{sha256}`.

use actix_multipart::Multipart;
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use paas_common::api::{BuildpackInfo, BuildpackList};
use paas_common::ErrorCode;
use std::collections::HashSet;
use std::io::Write;

use super::Ctx;
use crate::archive::{Limits, Unpacked};
use crate::auth::{AgentNode, AuthUser};
use crate::error::{ApiResult, Error};
use crate::store::Event;

/// The buildpacks compiled into the agent, in the order `agent/buildpacks/stage.sh` tries them.
pub const BUILTIN: &[&str] = &["staticfile", "python", "node", "binary"];
const REQUIRED: &[&str] = &["bin/detect", "bin/compile", "bin/release"];
const MAX_BUILDPACK_MB: u64 = 64;

fn bad(msg: impl Into<String>) -> Error {
    Error::api(ErrorCode::BadRequest, msg)
}

pub async fn list(
    ctx: Ctx,
    _user: AuthUser,
    req: actix_web::HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = super::page::Page::from_request(&req)?;
    let out = all(&ctx).await?;
    let total = out.len() as u64;
    // Detection order is the list's order; the position is its key.
    let (buildpacks, next) = page.slice(out, |b| super::page::num_key(b.position.into()), false);
    Ok(super::page::respond(
        &req,
        &BuildpackList { buildpacks },
        next,
        Some(total),
    ))
}

/// Built-ins then added buildpacks, in detection order.
async fn all(ctx: &Ctx) -> ApiResult<Vec<BuildpackInfo>> {
    let mut out: Vec<BuildpackInfo> = BUILTIN
        .iter()
        .map(|n| BuildpackInfo {
            name: n.to_string(),
            position: 0,
            builtin: true,
            sha256: None,
            created_by: None,
            created_at: None,
        })
        .collect();
    out.extend(
        ctx.store
            .list_buildpacks()
            .await?
            .into_iter()
            .map(|b| BuildpackInfo {
                name: b.name,
                position: 0,
                builtin: false,
                sha256: Some(b.blob),
                created_by: Some(b.created_by),
                created_at: Some(b.created_at),
            }),
    );
    for (i, b) in out.iter_mut().enumerate() {
        b.position = i as u32 + 1;
    }
    Ok(out)
}

/// A buildpack name: what the stage driver can use as a folder name and a word in its list.
fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.starts_with('-');
    if !ok {
        return Err(Error::api(
            ErrorCode::InvalidName,
            format!("buildpack name {name:?}: use 1-63 of a-z, 0-9, - and _"),
        ));
    }
    if BUILTIN.contains(&name) {
        return Err(Error::api(
            ErrorCode::Conflict,
            format!("{name:?} is a built-in buildpack"),
        ));
    }
    Ok(())
}

pub async fn create(ctx: Ctx, user: AuthUser, mut payload: Multipart) -> ApiResult<HttpResponse> {
    let max = MAX_BUILDPACK_MB * 1024 * 1024;
    let mut name = None;
    let mut zip = None;
    while let Some(field) = payload.next().await {
        let mut field = field.map_err(|e| bad(format!("malformed multipart body: {e}")))?;
        match field.name().unwrap_or_default() {
            "archive" => {
                let mut w = ctx.blobs.writer()?;
                while let Some(chunk) = field.next().await {
                    let chunk = chunk.map_err(|e| bad(format!("upload interrupted: {e}")))?;
                    if w.size() + chunk.len() as u64 > max {
                        return Err(Error::api(
                            ErrorCode::PayloadTooLarge,
                            format!("a buildpack may be at most {MAX_BUILDPACK_MB} MB"),
                        ));
                    }
                    w.write_all(&chunk).map_err(Error::internal)?;
                }
                w.flush().map_err(Error::internal)?;
                zip = Some(w);
            }
            "name" => {
                let mut text = Vec::new();
                while let Some(chunk) = field.next().await {
                    text.extend_from_slice(
                        &chunk.map_err(|e| bad(format!("upload interrupted: {e}")))?,
                    );
                    if text.len() > 256 {
                        return Err(bad("field \"name\" is too long"));
                    }
                }
                name = Some(String::from_utf8_lossy(&text).trim().to_string());
            }
            other => {
                return Err(bad(format!(
                    "unknown form field {other:?}: send `name` and `archive`"
                )))
            }
        }
    }
    let name = name.ok_or_else(|| bad("missing the `name` field"))?;
    check_name(&name)?;
    let zip = zip.ok_or_else(|| bad("missing the `archive` field (a zip of the buildpack)"))?;
    let limits = Limits {
        max_entries: ctx.settings.max_archive_entries,
        max_unpacked_bytes: ctx.settings.max_unpacked_mb * 1024 * 1024,
    };
    // Checked like an app archive (paths, links, entry count, unpacked size), then stored as a tar.
    let blobs = ctx.blobs.clone();
    let (sha, _) = web::block(move || {
        let mut out = blobs.writer()?;
        let mut found = Unpacked::default();
        let mut seen: HashSet<String> = HashSet::new();
        let checked = {
            let mut tar = tar::Builder::new(&mut out);
            let mut dirs = HashSet::new();
            crate::archive::append_zip(zip.path(), &limits, &mut tar, &mut dirs, &mut found, &mut |n, _, _, _| {
                seen.insert(n.to_string());
                Ok(())
            })
            .and_then(|()| tar.finish().map_err(Into::into))
        };
        if let Err(e) = checked {
            return Err(if e.is_client_error() { Error::api(ErrorCode::InvalidArchive, e.to_string()) } else { Error::internal(e) });
        }
        let missing: Vec<&str> = REQUIRED.iter().copied().filter(|r| !seen.contains(*r)).collect();
        if !missing.is_empty() {
            return Err(Error::api(
                ErrorCode::InvalidArchive,
                format!("a buildpack needs bin/detect, bin/compile and bin/release at its top; missing: {}", missing.join(", ")),
            ));
        }
        Ok(blobs.commit(out)?)
    })
    .await
    .map_err(Error::internal)??;
    let ev = Event {
        app_name: None,
        app_id: None,
        actor: user.actor.clone(),
        kind: "buildpack.create".into(),
        message: format!("{} added buildpack {name} ({})", user.username, &sha[..12]),
    };
    ctx.store
        .add_buildpack(&name, &sha, &user.username, &ev)
        .await?;
    tracing::info!(buildpack = %name, sha = %sha, by = %user.username, "buildpack added");
    let added = all(&ctx).await?.into_iter().find(|b| b.name == name);
    Ok(HttpResponse::Created().json(added))
}

pub async fn delete(ctx: Ctx, user: AuthUser, name: web::Path<String>) -> ApiResult<HttpResponse> {
    if BUILTIN.contains(&name.as_str()) {
        return Err(Error::api(
            ErrorCode::Conflict,
            format!("{name:?} is a built-in buildpack and cannot be deleted"),
        ));
    }
    let ev = Event {
        app_name: None,
        app_id: None,
        actor: user.actor.clone(),
        kind: "buildpack.delete".into(),
        message: format!("{} deleted buildpack {name}", user.username),
    };
    ctx.store
        .delete_buildpack(&name, &ev)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound(m) => Error::api(ErrorCode::NotFound, m),
            e => e.into(),
        })?;
    crate::droplets::collect_soon(&ctx);
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /v1/agent/buildpacks/{sha256}`: the tar of an added buildpack, for a node's builds.
pub async fn agent_fetch(
    ctx: Ctx,
    _node: AgentNode,
    sha: web::Path<String>,
) -> ApiResult<HttpResponse> {
    if !ctx
        .store
        .list_buildpacks()
        .await?
        .iter()
        .any(|b| b.blob == *sha)
    {
        return Err(Error::api(ErrorCode::NotFound, "no such buildpack"));
    }
    let path = ctx
        .blobs
        .path(&sha)
        .map_err(|_| Error::api(ErrorCode::NotFound, "buildpack blob missing"))?;
    let bytes = tokio::fs::read(&path).await.map_err(Error::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/x-tar")
        .body(bytes))
}
