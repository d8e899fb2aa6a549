//! The agent side of the API: register, heartbeat, assignment long-poll, droplet download, logs.
//! A node sees and reports only its own instances.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use paas_common::agent::{
    Assignments, Heartbeat, HeartbeatResponse, LogBatch, RegisterRequest, RegisterResponse,
};
use paas_common::api::LogLine;
use paas_common::logwire;
use paas_common::ErrorCode;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

use super::Ctx;
use crate::auth::{random_token, secure_eq, sha256_hex, AgentNode};
use crate::error::{ApiResult, Error};
use crate::store::{Event, NodeRecord};

const LONG_POLL: Duration = Duration::from_secs(25);

pub async fn register(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Json<RegisterRequest>,
) -> ApiResult<web::Json<RegisterResponse>> {
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !secure_eq(presented.trim(), &ctx.join_token) {
        return Err(Error::api(ErrorCode::Unauthorized, "invalid join token"));
    }
    let body = body.into_inner();
    let name_ok = !body.node_name.is_empty()
        && body.node_name.len() <= 63
        && body
            .node_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !name_ok {
        return Err(Error::api(
            ErrorCode::InvalidName,
            format!("invalid node name {:?}", body.node_name),
        ));
    }
    let token = random_token(48);
    let now = Utc::now();
    ctx.store
        .upsert_node(&NodeRecord {
            name: body.node_name.clone(),
            address: body.address.clone(),
            zone: body.zone,
            labels: body.labels,
            capacity: body.capacity,
            token_hash: sha256_hex(&token),
            state: "ready".into(),
            last_heartbeat: now,
            registered_at: now,
        })
        .await?;
    ctx.store
        .set_node_subnet(&body.node_name, body.subnet.as_deref())
        .await?;
    ctx.store
        .add_event(&Event {
            app_name: None,
            app_id: None,
            actor: format!("node:{}", body.node_name),
            kind: "node.register".into(),
            message: format!("node {} registered", body.node_name),
        })
        .await?;
    tracing::info!(node = %body.node_name, "node registered");
    ctx.converge.notify_one();
    Ok(web::Json(RegisterResponse {
        node_name: body.node_name,
        node_token: token,
        heartbeat_interval_secs: 2,
    }))
}

pub async fn heartbeat(
    ctx: Ctx,
    node: AgentNode,
    body: web::Json<Heartbeat>,
) -> ApiResult<web::Json<HeartbeatResponse>> {
    crate::control::nodes::heartbeat(&ctx, &node.name, &body).await?;
    Ok(web::Json(HeartbeatResponse {
        assignments_version: *ctx.assignments.borrow(),
    }))
}

#[derive(Deserialize)]
pub struct AssignmentQuery {
    pub after: Option<u64>,
}

pub async fn assignments(
    ctx: Ctx,
    node: AgentNode,
    q: web::Query<AssignmentQuery>,
) -> ApiResult<web::Json<Assignments>> {
    let mut rx = ctx.assignments.subscribe();
    if q.after == Some(*rx.borrow_and_update()) {
        tokio::select! {
            _ = tokio::time::timeout(LONG_POLL, rx.changed()) => {}
            _ = ctx.stopping.cancelled() => {}
        }
    }
    let version = *rx.borrow();
    Ok(web::Json(Assignments {
        version,
        instances: crate::control::nodes::assignments_for(&ctx, &node.name).await?,
        builds: ctx.builds.for_node(ctx.store.as_ref(), &node.name).await?,
        collected_images: crate::control::nodes::snapshot(&ctx)
            .await?
            .collected_images
            .clone(),
        tasks: crate::control::nodes::task_assignments_for(&ctx, &node.name).await?,
        services: crate::control::services::assignments_for(&ctx, &node.name).await?,
        network: ctx
            .network
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .for_node(&node.name),
    }))
}

pub async fn droplet(ctx: Ctx, node: AgentNode, sha: web::Path<String>) -> ApiResult<HttpResponse> {
    // Only droplets of instances assigned to this node.
    let assigned = crate::control::nodes::assignments_for(&ctx, &node.name)
        .await?
        .iter()
        .any(|a| a.droplet == *sha)
        || crate::control::nodes::task_assignments_for(&ctx, &node.name)
            .await?
            .iter()
            .any(|t| t.run.droplet == *sha);
    if !assigned {
        return Err(Error::api(
            ErrorCode::DropletNotFound,
            "no such droplet assigned to this node",
        ));
    }
    let path = ctx.blobs.path_async(&sha).await.map_err(|_| {
        Error::api(
            ErrorCode::DropletNotFound,
            format!("droplet {sha} not found"),
        )
    })?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(Error::internal)?;
    let len = file.metadata().await.map_err(Error::internal)?.len();
    let stream = tokio_util_stream(file);
    Ok(HttpResponse::Ok()
        .content_type("application/x-tar")
        .insert_header((actix_web::http::header::CONTENT_LENGTH, len))
        .streaming(stream))
}

fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<actix_web::web::Bytes, std::io::Error>> {
    futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(actix_web::web::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

/// `POST /v1/agent/logs`: a batch in the compact framing of [`paas_common::logwire`] (what agents
/// send), or a JSON [`LogBatch`].
pub async fn logs(
    ctx: Ctx,
    node: AgentNode,
    req: HttpRequest,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let compact = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == logwire::LOG_BATCH_CONTENT_TYPE.as_bytes());
    let json;
    let batch = if compact {
        logwire::decode_batch(&body)
            .map_err(|e| Error::api(ErrorCode::BadRequest, e.to_string()))?
    } else {
        json = serde_json::from_slice::<LogBatch>(&body)
            .map_err(|e| Error::api(ErrorCode::BadRequest, format!("invalid JSON body: {e}")))?;
        json.lines
            .iter()
            .map(|l| logwire::LogLineRef {
                instance_id: &l.instance_id,
                timestamp: l.timestamp,
                source: &l.source,
                stream: &l.stream,
                message: &l.message,
            })
            .collect()
    };
    let mut app_of: HashMap<&str, Option<String>> = HashMap::new();
    let mut lines = Vec::with_capacity(batch.len());
    for l in batch {
        if !app_of.contains_key(l.instance_id) {
            let mut app = ctx.store.app_of_instance(l.instance_id, &node.name).await?;
            if app.is_none() {
                // A task's lines: its id stands where an instance's would.
                app = ctx.store.app_of_task(l.instance_id, &node.name).await?;
            }
            app_of.insert(l.instance_id, app);
        }
        let Some(Some(app)) = app_of.get(l.instance_id) else {
            continue;
        };
        let source = if l.source == "CELL"
            || l.source.starts_with("APP/")
            || l.source.starts_with("TASK/")
        {
            l.source
        } else {
            "APP"
        };
        lines.push((
            app.clone(),
            LogLine {
                timestamp: l.timestamp,
                source: source.to_string(),
                stream: l.stream.to_string(),
                message: l.message.to_string(),
                id: 0,
            },
        ));
    }
    // Waits when the hub's writer is behind: the agent's request takes longer and its shipper
    // buffers, which is the backpressure we want.
    ctx.logs.publish_batch(lines).await;
    Ok(HttpResponse::NoContent().finish())
}
