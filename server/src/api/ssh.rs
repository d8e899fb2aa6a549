//! `paas ssh` (issue 21): the client's WebSocket (`GET /v1/apps/{name}/ssh`), the node's
//! long-poll for sessions and dial-back, the splice of the two, and the app and space settings
//! that turn ssh off. Protocol: `paas_common::ssh`; rendezvous: `crate::ssh`.

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::AggregatedMessage;
use futures_util::StreamExt;
use paas_common::api::{AppState, InstanceState};
use paas_common::ssh::{Control, SessionOffer, SessionOffers, SshQuery, SshSetting, SshStatus};
use paas_common::ErrorCode;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use super::Ctx;
use crate::auth::{AgentNode, AuthUser};
use crate::authz::{Admin, AppAccess, Developer, Principal, Role, Viewer};
use crate::error::{ApiResult, Error};
use crate::ssh::{FromNode, NodeLeg};
use crate::store::{AppRecord, Event, InstanceRecord};

const LONG_POLL: Duration = Duration::from_secs(25);
/// How often a node's long-poll looks for offers other controllers relayed.
const RELAY_POLL: Duration = Duration::from_millis(250);
/// Data frames are small (a terminal's output); a megabyte leaves room for a burst.
const MAX_FRAME: usize = 1 << 20;

/// `GET /v1/apps/{name}/ssh`: a shell or one command in an instance, over a WebSocket. Refused
/// before the upgrade, with the usual JSON error, when the caller is not a developer of the
/// app's space, ssh is off, no such instance runs or its node does not take the session up.
#[utoipa::path(get, path = "/v1/apps/{name}/ssh", tag = "ssh", summary = "Open an ssh session (WebSocket upgrade; protocol in paas_common::ssh)", params(("name" = String, Path, description = "The app's name"), SshQuery), responses((status = 101, description = "Switching to the session's WebSocket"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn open(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Payload,
    user: AuthUser,
    app: AppAccess<Developer>,
    q: web::Query<SshQuery>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    let q = q.into_inner();
    let (app_on, space_on) = ctx.store.ssh_settings(&app.id, &app.space_id).await?;
    if !(app_on && space_on) {
        let which = if app_on { "its space" } else { "the app" };
        return Err(Error::api(
            ErrorCode::SshDisabled,
            format!("ssh to {} is disabled for {which}", app.name),
        ));
    }
    let process = q.process.clone().unwrap_or_else(|| "web".into());
    let inst = instance_for(&ctx, &app, &process, q.index).await?;
    let node = inst.node_name.clone().unwrap_or_default();
    let session_id = uuid::Uuid::new_v4().to_string();
    let dial = ctx
        .settings
        .advertise_url
        .as_deref()
        .map(|u| format!("{}/v1/agent/ssh/{session_id}", u.trim_end_matches('/')));
    let offer = SessionOffer {
        session_id: session_id.clone(),
        instance_id: inst.id.clone(),
        dial,
        command: q.command.clone(),
        tty: q.tty,
        cols: q.cols,
        rows: q.rows,
    };
    let relayed = ctx.store.shared().then(|| serde_json::to_string(&offer));
    let leg = ctx.ssh.offer(&node, offer);
    if let Some(json) = relayed {
        let json = json.map_err(Error::internal)?;
        ctx.store.add_ssh_offer(&session_id, &node, &json).await?;
    }
    let pickup = Duration::from_secs(paas_common::ssh::PICKUP_TIMEOUT_SECS);
    let leg = match tokio::time::timeout(pickup, leg).await {
        Ok(Ok(leg)) => leg,
        _ => {
            ctx.ssh.cancel(&session_id);
            if let Err(e) = ctx.store.delete_ssh_offer(&session_id).await {
                tracing::warn!(error = %e, "cannot withdraw an ssh offer");
            }
            return Err(Error::api(
                ErrorCode::SshUnavailable,
                format!(
                    "node {node} did not take up the ssh session within {} s; is its agent running?",
                    pickup.as_secs()
                ),
            ));
        }
    };
    let (resp, client, stream) = match actix_ws::handle(&req, body) {
        Ok(x) => x,
        Err(e) => {
            let _ = leg.session.close(None).await;
            return Err(Error::api(
                ErrorCode::BadRequest,
                format!("expected a WebSocket upgrade: {e}"),
            ));
        }
    };
    let what = format!("{process}/{} (instance {})", q.index, inst.id);
    let mode = match (&q.command, q.tty) {
        (Some(_), true) => "a command with a terminal",
        (Some(_), false) => "a command",
        (None, _) => "a shell",
    };
    ctx.store
        .add_event(&Event {
            app_name: Some(app.name.clone()),
            app_id: Some(app.id.clone()),
            actor: user.actor.clone(),
            kind: "app.ssh".into(),
            message: format!("ssh session to {what} started ({mode}) by {}", user.actor),
        })
        .await?;
    tracing::info!(app = %app.name, instance = %inst.id, actor = %user.actor, "ssh session started");
    let audit = Audit {
        app,
        actor: user.actor,
        what,
    };
    actix_web::rt::spawn(splice(ctx.clone(), client, stream, leg, audit));
    Ok(resp)
}

/// The running instance `process`/`index` of the app with its node and container: the current
/// revision's when a rolling change runs two.
async fn instance_for(
    ctx: &Ctx,
    app: &AppRecord,
    process: &str,
    index: u32,
) -> ApiResult<InstanceRecord> {
    let mut found: Vec<InstanceRecord> = ctx
        .store
        .app_instances(&app.id)
        .await?
        .into_iter()
        .filter(|i| {
            i.process_type == process
                && i.index == index
                && matches!(i.state, InstanceState::Running | InstanceState::Starting)
                && i.node_name.is_some()
                && i.container_id.is_some()
        })
        .collect();
    found.sort_by_key(|i| {
        (
            Some(i.revision) == app.current_revision,
            i.state == InstanceState::Running,
            i.created_at,
        )
    });
    if let Some(i) = found.pop() {
        return Ok(i);
    }
    if app.state == AppState::Stopped {
        return Err(Error::api(
            ErrorCode::AppStopped,
            format!("app {} is stopped; start it first", app.name),
        ));
    }
    Err(Error::api(
        ErrorCode::InstanceNotFound,
        format!("app {} has no running instance {process}/{index}", app.name),
    ))
}

struct Audit {
    app: AppRecord,
    actor: String,
    what: String,
}

/// Copies frames both ways until either side closes, then records how the session ended.
async fn splice(
    ctx: Ctx,
    mut client: actix_ws::Session,
    stream: actix_ws::MessageStream,
    mut node: NodeLeg,
    audit: Audit,
) {
    let started = Instant::now();
    let mut stream = stream
        .max_frame_size(MAX_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME);
    let mut exit = None;
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(AggregatedMessage::Binary(b))) => {
                    if node.session.binary(b).await.is_err() {
                        break;
                    }
                }
                Some(Ok(AggregatedMessage::Text(t))) => {
                    if node.session.text(t.to_string()).await.is_err() {
                        break;
                    }
                }
                Some(Ok(AggregatedMessage::Ping(p))) => {
                    let _ = client.pong(&p).await;
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Ok(AggregatedMessage::Close(_)) | Err(_)) | None => break,
            },
            m = node.rx.recv() => match m {
                Some(FromNode::Binary(b)) => {
                    if client.binary(b).await.is_err() {
                        break;
                    }
                }
                Some(FromNode::Text(t)) => {
                    if let Some(Control::Exit { code }) = Control::parse(&t) {
                        exit = Some(code);
                    }
                    if client.text(t).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            () = ctx.stopping.cancelled() => break,
        }
    }
    let _ = node.session.close(None).await;
    let _ = client.close(None).await;
    let secs = started.elapsed().as_secs_f64();
    let how = match exit {
        Some(code) => format!("exit code {code}"),
        None => "no exit code (closed)".into(),
    };
    let event = Event {
        app_name: Some(audit.app.name.clone()),
        app_id: Some(audit.app.id.clone()),
        actor: audit.actor.clone(),
        kind: "app.ssh".into(),
        message: format!(
            "ssh session to {} by {} ended after {secs:.1} s, {how}",
            audit.what, audit.actor
        ),
    };
    if let Err(e) = ctx.store.add_event(&event).await {
        tracing::warn!(error = %e, "cannot record the end of an ssh session");
    }
    tracing::info!(app = %audit.app.name, duration_s = secs, exit = ?exit, "ssh session ended");
}

/// `GET /v1/agent/sessions`: the ssh sessions waiting for the calling node (long-poll).
pub async fn agent_sessions(ctx: Ctx, node: AgentNode) -> ApiResult<web::Json<SessionOffers>> {
    let sessions = if ctx.store.shared() {
        relayed_offers(&ctx, &node.name).await?
    } else {
        ctx.ssh
            .wait_offers(&node.name, LONG_POLL, &ctx.stopping)
            .await
    };
    Ok(web::Json(SessionOffers { sessions }))
}

/// Several controllers: the offers for `node` made on any of them, from the database; this
/// controller's own wake the poll at once, the others' are seen within [`RELAY_POLL`].
async fn relayed_offers(ctx: &Ctx, node: &str) -> ApiResult<Vec<SessionOffer>> {
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    let mut woken = ctx.ssh.subscribe();
    loop {
        woken.borrow_and_update();
        let offers = ctx.store.take_ssh_offers(node).await?;
        if !offers.is_empty() {
            return offers
                .iter()
                .map(|o| serde_json::from_str(o).map_err(Error::internal))
                .collect();
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Vec::new());
        }
        tokio::select! {
            _ = tokio::time::timeout(RELAY_POLL, woken.changed()) => {}
            () = ctx.stopping.cancelled() => return Ok(Vec::new()),
        }
    }
}

/// `GET /v1/agent/ssh/{id}`: the node's WebSocket for a session it was offered.
pub async fn agent_dial(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Payload,
    node: AgentNode,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    let tx = ctx.ssh.claim(&node.name, &id).ok_or_else(|| {
        Error::api(
            ErrorCode::NotFound,
            "no such ssh session waiting for this node",
        )
    })?;
    let (resp, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        Error::api(
            ErrorCode::BadRequest,
            format!("expected a WebSocket upgrade: {e}"),
        )
    })?;
    let (ftx, frx) = mpsc::channel(64);
    let mut pong = session.clone();
    // actix's stream is bound to this worker thread; the client's handler may run on another.
    actix_web::rt::spawn(async move {
        let mut stream = stream
            .max_frame_size(MAX_FRAME)
            .aggregate_continuations()
            .max_continuation_size(MAX_FRAME);
        while let Some(m) = stream.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "an ssh node socket ended with an error");
                    break;
                }
            };
            let sent = match m {
                AggregatedMessage::Binary(b) => ftx.send(FromNode::Binary(b)).await,
                AggregatedMessage::Text(t) => ftx.send(FromNode::Text(t.to_string())).await,
                AggregatedMessage::Ping(p) => {
                    let _ = pong.pong(&p).await;
                    Ok(())
                }
                AggregatedMessage::Pong(_) => Ok(()),
                AggregatedMessage::Close(_) => break,
            };
            if sent.is_err() {
                break;
            }
        }
    });
    if tx.send(NodeLeg { session, rx: frx }).is_err() {
        return Err(Error::api(
            ErrorCode::NotFound,
            "the ssh client went away before the node answered",
        ));
    }
    Ok(resp)
}

/// The body of a settings change, read only once the caller passed the role check (a malformed
/// body must not tell a caller without the role more than a refusal does).
fn setting(body: &[u8]) -> ApiResult<SshSetting> {
    serde_json::from_slice(body)
        .map_err(|e| Error::api(ErrorCode::BadRequest, format!("invalid JSON body: {e}")))
}

fn status(app_on: bool, space_on: bool) -> SshStatus {
    SshStatus {
        enabled: app_on && space_on,
        app_enabled: app_on,
        space_allowed: space_on,
    }
}

/// `GET /v1/apps/{name}/ssh-enabled`.
#[utoipa::path(get, path = "/v1/apps/{name}/ssh-enabled", tag = "ssh", summary = "Whether ssh to the app is allowed (app and space settings)", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::ssh::SshStatus), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn get_app(ctx: Ctx, app: AppAccess<Viewer>) -> ApiResult<web::Json<SshStatus>> {
    let app = app.into_app();
    let (a, s) = ctx.store.ssh_settings(&app.id, &app.space_id).await?;
    Ok(web::Json(status(a, s)))
}

/// `PUT /v1/apps/{name}/ssh-enabled` (`paas enable-ssh` / `disable-ssh`): space admins
/// (managers) and operators.
#[utoipa::path(put, path = "/v1/apps/{name}/ssh-enabled", tag = "ssh", summary = "Allow or forbid ssh to the app (space admins, operators)", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::ssh::SshSetting, responses((status = 200, body = paas_common::ssh::SshStatus), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn set_app(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Admin>,
    body: web::Bytes,
) -> ApiResult<web::Json<SshStatus>> {
    let app = app.into_app();
    let enabled = setting(&body)?.enabled;
    let event = Event {
        app_name: Some(app.name.clone()),
        app_id: Some(app.id.clone()),
        actor: user.actor.clone(),
        kind: "app.ssh_setting".into(),
        message: format!(
            "{} ssh to {}",
            if enabled { "enabled" } else { "disabled" },
            app.name
        ),
    };
    ctx.store.set_app_ssh(&app.id, enabled, &event).await?;
    let (a, s) = ctx.store.ssh_settings(&app.id, &app.space_id).await?;
    Ok(web::Json(status(a, s)))
}

/// `GET /v1/spaces/{org}/{space}/ssh-allowed`.
#[utoipa::path(get, path = "/v1/spaces/{org}/{space}/ssh-allowed", tag = "ssh", summary = "Whether ssh is allowed in the space", params(("org" = String, Path, description = "Organization"), ("space" = String, Path, description = "Space")), responses((status = 200, body = paas_common::ssh::SshSetting), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn get_space(
    ctx: Ctx,
    who: Principal,
    path: web::Path<(String, String)>,
) -> ApiResult<web::Json<SshSetting>> {
    let (org, name) = path.into_inner();
    let space = super::tenancy::readable_space(&ctx, &who, &org, &name).await?;
    let (_, allowed) = ctx.store.ssh_settings("", &space.id).await?;
    Ok(web::Json(SshSetting { enabled: allowed }))
}

/// `PUT /v1/spaces/{org}/{space}/ssh-allowed` (`paas allow-space-ssh` / `disallow-space-ssh`):
/// operators, the org's managers and the space's admins.
#[utoipa::path(put, path = "/v1/spaces/{org}/{space}/ssh-allowed", tag = "ssh", summary = "Allow or forbid ssh in a space (operators, org managers, space admins)", params(("org" = String, Path, description = "Organization"), ("space" = String, Path, description = "Space")), request_body = paas_common::ssh::SshSetting, responses((status = 200, body = paas_common::ssh::SshSetting), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn set_space(
    ctx: Ctx,
    who: Principal,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult<web::Json<SshSetting>> {
    let (org, name) = path.into_inner();
    let space = super::tenancy::readable_space(&ctx, &who, &org, &name).await?;
    let admin = who.manages_org(&org)
        || (who.token.as_ref().is_none_or(|t| t.app.is_none())
            && who.role_in(&space.id) == Some(Role::Admin));
    if !admin {
        return Err(Error::api(
            ErrorCode::Forbidden,
            format!("not allowed: only an operator, an org manager or a space admin of {org}/{name} changes its ssh setting"),
        ));
    }
    let allowed = setting(&body)?.enabled;
    let event = Event {
        app_name: None,
        app_id: None,
        actor: who.actor(),
        kind: "space.ssh_setting".into(),
        message: format!(
            "{} ssh in space {org}/{name}",
            if allowed { "allowed" } else { "disallowed" }
        ),
    };
    ctx.store.set_space_ssh(&space.id, allowed, &event).await?;
    Ok(web::Json(SshSetting { enabled: allowed }))
}
