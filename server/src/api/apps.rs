use actix_multipart::Multipart;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use paas_common::api::{
    AppDetail, AppList, AppSummary, EventInfo, EventList, InstanceInfo, InstanceState, RevisionInfo,
};
use paas_common::domain::parse_memory_mb;
use paas_common::ErrorCode;
use std::io::Write;

use super::page::{self, Page};
use super::Ctx;
use crate::archive::Limits;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer, PushTarget, Viewer};
use crate::error::{ApiResult, Error};
use crate::staging;
use crate::store::{AppRecord, EventFilter};

/// The app by id, re-read (after a change, or while following one).
pub(crate) async fn find_app(ctx: &Ctx, id: &str) -> ApiResult<AppRecord> {
    ctx.store
        .app_by_id(id)
        .await?
        .ok_or_else(|| Error::api(ErrorCode::AppNotFound, "the app was deleted"))
}

pub(crate) async fn detail(ctx: &Ctx, app: &AppRecord) -> ApiResult<AppDetail> {
    let revision = match app.current_revision {
        Some(n) => ctx.store.revision(&app.id, n).await?.map(|r| RevisionInfo {
            number: r.number,
            droplet: r.droplet,
            command: r.command,
            detected: r.detected,
            created_at: r.created_at,
            sidecars: r.sidecars,
        }),
        None => None,
    };
    let nodes: std::collections::HashMap<String, String> = ctx
        .store
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| (n.name, n.address))
        .collect();
    let mut usage = crate::control::usage::app_usage(ctx, &app.id).await?;
    let retiring = ctx.store.retiring_instances().await?;
    let mut ips = ctx.store.instance_ips().await?;
    let instances = ctx
        .store
        .app_instances(&app.id)
        .await?
        .into_iter()
        .map(|i| InstanceInfo {
            index: i.index,
            revision: Some(i.revision),
            state: i.state,
            address: match (i.host_port, i.node_name.as_ref().and_then(|n| nodes.get(n))) {
                (Some(port), Some(addr)) => Some(format!("{addr}:{port}")),
                _ => None,
            },
            ip: ips.remove(&i.id),
            node: i.node_name,
            restarts: i.restarts,
            last_exit: i.last_exit,
            placement_error: i.placement_error,
            since: Some(i.since),
            // Only a running instance's sample means anything.
            usage: usage
                .remove(&i.id)
                .filter(|_| i.state == InstanceState::Running),
            process_type: i.process_type,
            ready: i.state == InstanceState::Running && i.ready,
            retiring: retiring.contains(&i.id),
        })
        .collect();
    let lifecycle = ctx
        .store
        .app_lifecycles()
        .await?
        .remove(&app.id)
        .unwrap_or_default();
    let processes = super::processes::infos(ctx, app).await?;
    let push_settings = ctx.store.app_push_settings(&app.id).await?;
    Ok(AppDetail {
        name: app.name.clone(),
        state: app.state,
        url: ctx.app_url(app),
        desired_instances: app.desired_instances,
        memory_mb: app.memory_mb,
        revision,
        instances,
        created_at: app.created_at,
        updated_at: app.updated_at,
        processes,
        placement_labels: lifecycle.placement_labels,
        log_rate_limit_bytes: lifecycle.log_rate_limit_bytes,
        // An app no push has given a stack since stacks were kept stages on the default next.
        stack: crate::deploy::push::stored_stack(&push_settings)
            .unwrap_or(paas_common::stack::DEFAULT)
            .to_string(),
        services: super::services::bound_names(ctx, &app.id).await?,
    })
}

#[utoipa::path(get, path = "/v1/apps", tag = "apps", summary = "The apps the caller can see", params(crate::api::page::PageParams), responses((status = 200, body = paas_common::api::AppList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(
    ctx: Ctx,
    who: crate::authz::Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let mut apps: Vec<_> = ctx
        .store
        .list_apps()
        .await?
        .into_iter()
        .filter(|a| who.can_see(a))
        .collect();
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    let total = apps.len() as u64;
    let (apps, next) = page.slice(apps, |a| a.name.clone(), false);
    // Counted by the database: decoding every instance row for one page of apps was most of
    // this request's time at 10,000 rows.
    let running = ctx.store.running_counts().await?;
    let apps = apps
        .into_iter()
        .map(|a| AppSummary {
            running_instances: running.get(&a.id).copied().unwrap_or(0),
            url: ctx.app_url(&a),
            name: a.name,
            state: a.state,
            desired_instances: a.desired_instances,
            memory_mb: a.memory_mb,
            revision: a.current_revision,
            updated_at: a.updated_at,
        })
        .collect();
    Ok(page::respond(&req, &AppList { apps }, next, Some(total)))
}

#[utoipa::path(get, path = "/v1/apps/{name}", tag = "apps", summary = "One app with its instances", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::api::AppDetail), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn get(ctx: Ctx, app: AppAccess<Viewer>) -> ApiResult<web::Json<AppDetail>> {
    let app = app.into_app();
    Ok(web::Json(detail(&ctx, &app).await?))
}

#[utoipa::path(delete, path = "/v1/apps/{name}", tag = "apps", summary = "Delete an app, its instances and routes", params(("name" = String, Path, description = "The app's name")), responses((status = 204, description = "Deleted"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn delete(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    crate::deploy::delete_app(&ctx, &crate::deploy::Actor::from(&user), &app).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/apps/{name}/events", tag = "events", summary = "The app's audit events", params(crate::api::page::PageParams, ("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::api::EventList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn events(ctx: Ctx, app: AppAccess<Viewer>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let app = app.into_app();
    let filter = EventFilter {
        since_id: ctx.store.app_created_event(&app.id).await?,
        app_id: Some(app.id.clone()),
        actor: None,
    };
    event_page(&ctx, &req, &page, &filter).await
}

/// One page of events, oldest first (an audit trail reads forward); the cursor is the last
/// event's id.
pub(crate) async fn event_page(
    ctx: &Ctx,
    req: &HttpRequest,
    page: &Page,
    filter: &EventFilter,
) -> ApiResult<HttpResponse> {
    let after = match &page.after {
        Some(k) => Some(k.parse::<i64>().map_err(|_| {
            Error::api(
                ErrorCode::InvalidPageToken,
                "page_token is not from an event list",
            )
        })?),
        None => None,
    };
    // One more than a page tells whether there is a next one.
    let mut rows = ctx
        .store
        .list_events(filter, after, page.limit as i64 + 1)
        .await?;
    let next = (rows.len() > page.limit).then(|| {
        rows.truncate(page.limit);
        rows.last().map(|r| r.id.to_string()).unwrap_or_default()
    });
    let total = ctx.store.count_events(filter).await?;
    let events = rows
        .into_iter()
        .map(|r| EventInfo {
            time: r.time,
            actor: r.event.actor,
            kind: r.event.kind,
            message: r.event.message,
            app: r.event.app_name,
        })
        .collect();
    Ok(page::respond(req, &EventList { events }, next, Some(total)))
}

/// `GET /v1/events`: every event for operators (optionally `?actor=USER`), else the caller's
/// own (logins, token use, their changes to any app).
#[utoipa::path(get, path = "/v1/events", tag = "events", summary = "Platform events: all for operators (filter with `actor`), else the caller's own", params(crate::api::page::PageParams, ("actor" = Option<String>, Query, description = "Operators: only this user's events")), responses((status = 200, body = paas_common::api::EventList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn all_events(
    ctx: Ctx,
    who: crate::authz::Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let asked = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "actor")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    let actor = if who.is_operator() {
        asked
    } else {
        Some(who.username.clone())
    };
    let filter = EventFilter {
        app_id: None,
        actor,
        since_id: None,
    };
    event_page(&ctx, &req, &page, &filter).await
}

/// `POST /v1/apps/{name}/push`: multipart with the zip as `archive` and optional text fields
/// `instances`, `memory_mb` (or `memory`, e.g. "256M") and `command`. Creates the app if needed,
/// stores the package, stages it into a droplet, makes a new revision and starts it.
#[utoipa::path(post, path = "/v1/apps/{name}/push", tag = "apps", summary = "Single-request deploy: the zip as multipart field `archive`", description = "With `Accept: application/x-ndjson` the answer (200) streams one JSON line per step (`PushProgress`: upload, archive, live STG lines, droplet, revision, instances) and ends with a `result` line whose `status` is `succeeded` or `failed` with a stable `code`. Errors found before the stream starts (authorization, a bad or too large archive, not an app) are the usual 4xx JSON. Without that header: 201 with the app once the revision is made.", params(("name" = String, Path, description = "The app's name"), ("Accept" = Option<String>, Header, description = "`application/x-ndjson` for the streamed answer")), request_body(content = crate::api::openapi::PushForm, content_type = "multipart/form-data"), responses((status = 201, body = paas_common::api::AppDetail), (status = 200, description = "The streamed push (newline-delimited JSON, last line `type: result`)", content_type = "application/x-ndjson", body = paas_common::api::PushProgress), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn push(
    ctx: Ctx,
    user: AuthUser,
    target: PushTarget,
    req: HttpRequest,
    mut payload: Multipart,
) -> ApiResult<HttpResponse> {
    // The push's `upload` phase starts here (issue 24): the body is read below.
    let received = std::time::Instant::now();
    let name = target.name;
    let max_upload = ctx.settings.max_upload_mb * 1024 * 1024;
    let too_large = || {
        Error::api(
            ErrorCode::PayloadTooLarge,
            format!(
                "the upload is larger than {} MB",
                ctx.settings.max_upload_mb
            ),
        )
    };
    // Refuse an announced oversize body before reading a byte of it.
    let announced = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max_upload + 64 * 1024) {
        return Err(too_large());
    }

    let mut package = None;
    let mut instances: Option<u32> = None;
    let mut memory_mb: Option<u64> = None;
    let mut command: Option<String> = None;
    // Issue 3: manifest settings; stored now, acted on by later work where noted in PushSettings.
    let mut extra = paas_common::api::PushSettings::default();
    let mut resources: Vec<paas_common::api::PushResource> = Vec::new();
    while let Some(field) = payload.next().await {
        let mut field = field.map_err(|e| {
            Error::api(
                ErrorCode::BadRequest,
                format!("malformed multipart body: {e}"),
            )
        })?;
        let fname = field.name().unwrap_or_default().to_string();
        if fname == "archive" {
            let mut w = ctx.blobs.writer()?;
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(|e| {
                    Error::api(ErrorCode::BadRequest, format!("upload interrupted: {e}"))
                })?;
                if w.size() + chunk.len() as u64 > max_upload {
                    return Err(too_large());
                }
                w.write_all(&chunk).map_err(Error::internal)?;
            }
            package = Some(w);
        } else {
            let mut text = Vec::new();
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(|e| {
                    Error::api(ErrorCode::BadRequest, format!("upload interrupted: {e}"))
                })?;
                text.extend_from_slice(&chunk);
                // The incremental upload's file list can be long; every other field is short.
                let max_text = if fname == "resources" {
                    32 << 20
                } else {
                    64 << 10
                };
                if text.len() > max_text {
                    return Err(Error::api(
                        ErrorCode::BadRequest,
                        format!("field {fname:?} is too long"),
                    ));
                }
            }
            let text = String::from_utf8(text).map_err(|_| {
                Error::api(
                    ErrorCode::BadRequest,
                    format!("field {fname:?} is not UTF-8"),
                )
            })?;
            let text = text.trim().to_string();
            if text.is_empty() {
                continue;
            }
            match fname.as_str() {
                "instances" => {
                    let n: u32 = text.parse().map_err(|_| {
                        Error::api(
                            ErrorCode::BadRequest,
                            format!("instances must be a whole number from 0 to 100, not {text:?}"),
                        )
                    })?;
                    if n > 100 {
                        return Err(Error::api(
                            ErrorCode::BadRequest,
                            "instances must be from 0 to 100",
                        ));
                    }
                    instances = Some(n);
                }
                "memory_mb" | "memory" => {
                    memory_mb = Some(
                        parse_memory_mb(&text).map_err(|m| Error::api(ErrorCode::BadRequest, m))?,
                    );
                }
                "command" => command = Some(text),
                "resources" => {
                    resources = serde_json::from_str(&text).map_err(|e| {
                        Error::api(ErrorCode::BadRequest, format!("field \"resources\": {e}"))
                    })?;
                }
                "env" | "disk_mb" | "disk_quota" | "buildpacks" | "routes" | "services"
                | "health" | "processes" | "placement_labels" | "log_rate_limit" | "hostname"
                | "random_route" | "no_route" | "stack" | "no_cache" | "dockerfile"
                | "no_start" | "strategy" | "sidecars" => {
                    super::push_settings::apply_field(&mut extra, &fname, &text)?;
                }
                other => {
                    return Err(Error::api(
                        ErrorCode::BadRequest,
                        format!("unknown form field {other:?}"),
                    ));
                }
            }
        }
    }
    let package = package.ok_or_else(|| {
        Error::api(
            ErrorCode::BadRequest,
            "missing the `archive` field (a zip of the app)",
        )
    })?;
    let package_size = package.size();

    // Check and stage off the async workers: unzipping is blocking work.
    let mut package = package;
    package.flush().map_err(Error::internal)?;
    let limits = Limits {
        max_entries: ctx.settings.max_archive_entries,
        max_unpacked_bytes: ctx.settings.max_unpacked_mb * 1024 * 1024,
    };
    // Files left out of the zip must be ones this user uploaded before: a match never crosses
    // tenants, and a guessed digest of someone else's file gets nothing.
    if !resources.is_empty() {
        let wanted: Vec<(String, u64)> = resources
            .iter()
            .map(|r| (r.sha256.clone(), r.size))
            .collect();
        let known: std::collections::HashSet<String> = ctx
            .store
            .known_files(&user.username, &wanted)
            .await?
            .into_iter()
            .collect();
        if let Some(r) = resources.iter().find(|r| !known.contains(&r.sha256)) {
            return Err(Error::api(
                ErrorCode::InvalidArchive,
                format!("{} was left out of the upload but the server does not hold it for you: push again", r.path),
            ));
        }
    }
    let blobs = ctx.blobs.clone();
    let cmd = command.clone();
    let (package, droplet_w, unpacked, staged) = web::block(move || {
        let mut droplet = blobs.writer()?;
        let unpacked = crate::resources::build_source_tar(
            package.path(),
            &resources,
            &limits,
            &blobs,
            &mut droplet,
        );
        Ok::<_, Error>((package, droplet, unpacked, cmd))
    })
    .await
    .map_err(Error::internal)??;
    let (unpacked, cached, tree) = match unpacked {
        Ok(src) => (Ok(src.unpacked), src.cached, src.tree),
        Err(e) => (Err(e), Vec::new(), String::new()),
    };
    ctx.store.remember_files(&user.username, &cached).await?;
    let unpacked = unpacked.map_err(|e| {
        if e.is_client_error() {
            Error::api(ErrorCode::InvalidArchive, e.to_string())
        } else {
            Error::internal(e)
        }
    })?;
    // Buildpacks unless the push asks for the Dockerfile or no buildpack would detect the app
    // (Cloud Foundry's order); an app nothing can build is refused here, before staging.
    let added_buildpacks = !ctx.store.list_buildpacks().await?.is_empty();
    let choice = staging::choose_build(
        &unpacked.top_level,
        &extra.buildpacks,
        extra.dockerfile,
        added_buildpacks,
    )
    .map_err(|e| match e {
        staging::StagingError::NotAnApp | staging::StagingError::Unsupported(_) => {
            Error::api(ErrorCode::NotAnApp, e.to_string())
        }
        other => Error::api(ErrorCode::BadRequest, other.to_string()),
    })?;
    let dockerfile = choice.dockerfile;
    let staged = match staging::detect(
        unpacked.procfile.as_deref(),
        &unpacked.top_level,
        staged.as_deref(),
    ) {
        _ if dockerfile => staging::Staged {
            detected: "dockerfile".into(),
            command: String::new(),
        },
        Ok(s) => s,
        // A buildpack named by the user decides for itself on the node.
        Err(_) if !extra.buildpacks.is_empty() => staging::Staged {
            detected: extra.buildpacks[0].clone(),
            command: String::new(),
        },
        // An operator-added buildpack may detect what the built-ins do not: the node decides.
        Err(_) if added_buildpacks => staging::Staged {
            detected: "(added buildpacks)".into(),
            command: String::new(),
        },
        Err(e) => return Err(Error::api(ErrorCode::NotAnApp, e.to_string())),
    };

    // Durable blobs first, then the rows that name them.
    let blobs = ctx.blobs.clone();
    let ((package_sha, _), (droplet_sha, droplet_size)) =
        web::block(move || Ok::<_, Error>((blobs.commit(package)?, blobs.commit(droplet_w)?)))
            .await
            .map_err(Error::internal)??;

    let prep = crate::deploy::push::Prepared {
        name,
        space_id: target.space_id,
        package_sha,
        package_size,
        droplet_sha,
        droplet_size,
        unpacked,
        tree,
        extra,
        instances,
        memory_mb,
        command,
        staged,
        dockerfile,
        build_choice: choice.why,
    };
    if !super::push_stream::wanted(&req) {
        let app = crate::deploy::push::deploy(
            &ctx,
            &crate::deploy::Actor::from(&user),
            prep,
            &crate::deploy::push::Progress::none(),
        )
        .await?;
        return Ok(HttpResponse::Created().json(detail(&ctx, &app).await?));
    }
    // The stream answers before the deploy runs: the app must exist by then, so that a new app
    // is adopted into the caller's space when this answer succeeds (see `authz`). A manifest
    // route the space may not map, or a service it does not have, refuses the push before that.
    crate::deploy::push::check_manifest_routes(
        &ctx,
        &prep.space_id,
        &prep.name,
        &prep.extra.routes,
    )
    .await?;
    // So does a manifest service the space does not have (issue 22).
    crate::deploy::services::check_manifest_services(&ctx, &prep.space_id, &prep.extra.services)
        .await?;
    let app = crate::deploy::find_or_create_app(
        &ctx,
        &crate::deploy::Actor::from(&user),
        &prep.name,
        &prep.space_id,
        &(&prep.extra).into(),
    )
    .await?;
    // From here on the answer is a stream: errors become its last line.
    Ok(super::push_stream::respond(
        ctx, user, prep, app.id, received,
    ))
}
