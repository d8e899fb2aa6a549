//! The built-in broker over the Open Service Broker API v2.17 at `/broker/v2/...` on the
//! controller (outside `/v1`: a broker's clients are platforms, which authenticate with HTTP
//! basic auth as the specification says, not with platform tokens). It also serves backups and restores of PostgreSQL instances
//! (`.../service_instances/{id}/backups`, `.../restore`), an extension outside the
//! specification. The username is
//! `PAAS_BUILTIN_BROKER_USERNAME` (default `broker`), the password
//! `PAAS_BUILTIN_BROKER_PASSWORD`, else one generated once into
//! `$PAAS_DATA_DIR/builtin-broker-password`. Every answer is the same [`BuiltinBroker`] the
//! platform calls in process.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::BuiltinBroker;
use crate::api::Ctx;
use crate::services::broker::{
    BindRequest, BrokerError, OperationResponse, ProvisionRequest, ServiceBroker, ServicePlan,
};

/// The file a generated password is kept in, under the data dir.
pub const PASSWORD_FILE: &str = "builtin-broker-password";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/broker/v2")
            .app_data(
                web::JsonConfig::default().error_handler(|err, _| {
                    osb_error(StatusCode::BAD_REQUEST, None, &err.to_string())
                }),
            )
            .route("/catalog", web::get().to(catalog))
            .route("/service_instances/{id}", web::put().to(provision))
            .route("/service_instances/{id}", web::delete().to(deprovision))
            .route(
                "/service_instances/{id}/last_operation",
                web::get().to(last_operation),
            )
            .route(
                "/service_instances/{id}/service_bindings/{binding}",
                web::put().to(bind),
            )
            .route(
                "/service_instances/{id}/service_bindings/{binding}",
                web::delete().to(unbind),
            )
            // Not OSB: backups of a PostgreSQL instance by its id, until the platform's
            // `/v1/services/{name}/backups` resolves names to ids.
            .route(
                "/service_instances/{id}/backups",
                web::post().to(start_backup),
            )
            .route(
                "/service_instances/{id}/backups",
                web::get().to(list_backups),
            )
            .route(
                "/service_instances/{id}/restore",
                web::post().to(start_restore),
            ),
    );
}

/// The broker's basic-auth credentials: from Settings, else generated once in the data dir.
pub fn credentials(settings: &crate::config::Settings) -> std::io::Result<(String, String)> {
    let password = match &settings.builtin_broker_password {
        Some(p) => p.expose().to_string(),
        None => crate::auth::load_or_create_secret(&settings.data_dir.join(PASSWORD_FILE), || {
            crate::auth::random_token(32)
        })?,
    };
    Ok((settings.builtin_broker_username.clone(), password))
}

/// An OSB error body `{error, description}`.
fn osb_error(status: StatusCode, error: Option<&str>, description: &str) -> actix_web::Error {
    let mut body = json!({ "description": description });
    if let Some(e) = error {
        body["error"] = e.into();
    }
    actix_web::error::InternalError::from_response(
        description.to_string(),
        HttpResponse::build(status).json(body),
    )
    .into()
}

fn broker_error(e: BrokerError) -> actix_web::Error {
    match e {
        BrokerError::Gone(what) => actix_web::error::InternalError::from_response(
            what,
            HttpResponse::Gone().json(json!({})),
        )
        .into(),
        BrokerError::Refused {
            status,
            error,
            description,
        } => osb_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error.as_deref(),
            &description,
        ),
        BrokerError::Unreachable(why) => osb_error(StatusCode::BAD_GATEWAY, None, &why),
    }
}

/// Checks basic auth and the API version header; the broker to answer with.
fn authorize(ctx: &Ctx, req: &HttpRequest) -> Result<BuiltinBroker, actix_web::Error> {
    if let Some(v) = req.headers().get("X-Broker-API-Version") {
        if !v.to_str().unwrap_or("").starts_with("2.") {
            return Err(osb_error(
                StatusCode::PRECONDITION_FAILED,
                None,
                "this broker speaks Open Service Broker API 2.x",
            ));
        }
    }
    let (user, password) = credentials(&ctx.settings)
        .map_err(|e| osb_error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()))?;
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let expected = format!("{user}:{password}");
    let ok =
        given.is_some_and(|g| crate::auth::sha256_hex(&g) == crate::auth::sha256_hex(&expected));
    if !ok {
        return Err(actix_web::error::InternalError::from_response(
            "unauthorized",
            HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Basic realm=\"paas builtin broker\""))
                .json(json!({ "description": "basic auth required" })),
        )
        .into());
    }
    Ok(BuiltinBroker::new(ctx.clone().into_inner()))
}

#[derive(Deserialize)]
struct Incomplete {
    #[serde(default)]
    accepts_incomplete: bool,
}

#[derive(Deserialize)]
struct PlanQuery {
    #[serde(default)]
    service_id: String,
    #[serde(default)]
    plan_id: String,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    accepts_incomplete: bool,
}

fn require_async(accepts_incomplete: bool) -> Result<(), actix_web::Error> {
    if accepts_incomplete {
        return Ok(());
    }
    Err(osb_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("AsyncRequired"),
        "this broker provisions and deprovisions asynchronously: pass accepts_incomplete=true",
    ))
}

fn operation(r: OperationResponse, done: StatusCode) -> HttpResponse {
    let status = if r.asynchronous {
        StatusCode::ACCEPTED
    } else {
        done
    };
    HttpResponse::build(status).json(r)
}

async fn catalog(ctx: Ctx, req: HttpRequest) -> actix_web::Result<HttpResponse> {
    let broker = authorize(&ctx, &req)?;
    let c = broker.catalog().await.map_err(broker_error)?;
    Ok(HttpResponse::Ok().json(c))
}

async fn provision(
    ctx: Ctx,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<Incomplete>,
    body: web::Json<ProvisionRequest>,
) -> actix_web::Result<HttpResponse> {
    let broker = authorize(&ctx, &req)?;
    require_async(q.accepts_incomplete)?;
    let r = broker.provision(&id, &body).await.map_err(broker_error)?;
    Ok(operation(r, StatusCode::OK))
}

async fn last_operation(
    ctx: Ctx,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<PlanQuery>,
) -> actix_web::Result<HttpResponse> {
    let broker = authorize(&ctx, &req)?;
    let plan = ServicePlan {
        service_id: q.service_id.clone(),
        plan_id: q.plan_id.clone(),
    };
    let op = broker
        .last_operation(&id, &plan, q.operation.as_deref())
        .await
        .map_err(broker_error)?;
    Ok(HttpResponse::Ok().json(op))
}

async fn deprovision(
    ctx: Ctx,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<PlanQuery>,
) -> actix_web::Result<HttpResponse> {
    let broker = authorize(&ctx, &req)?;
    require_async(q.accepts_incomplete)?;
    let plan = ServicePlan {
        service_id: q.service_id.clone(),
        plan_id: q.plan_id.clone(),
    };
    let r = broker.deprovision(&id, &plan).await.map_err(broker_error)?;
    Ok(operation(r, StatusCode::OK))
}

async fn bind(
    ctx: Ctx,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<BindRequest>,
) -> actix_web::Result<HttpResponse> {
    let broker = authorize(&ctx, &req)?;
    let (id, binding) = path.into_inner();
    let r = broker
        .bind(&id, &binding, &body)
        .await
        .map_err(broker_error)?;
    Ok(HttpResponse::Created().json(r))
}

async fn unbind(
    ctx: Ctx,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    q: web::Query<PlanQuery>,
) -> actix_web::Result<HttpResponse> {
    let broker = authorize(&ctx, &req)?;
    let (id, binding) = path.into_inner();
    let plan = ServicePlan {
        service_id: q.service_id.clone(),
        plan_id: q.plan_id.clone(),
    };
    broker
        .unbind(&id, &binding, &plan)
        .await
        .map_err(broker_error)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

fn backup_error(e: super::backup::BackupError) -> actix_web::Error {
    use super::backup::BackupError as E;
    let status = match &e {
        E::InstanceNotFound(_) | E::BackupNotFound(_) => StatusCode::NOT_FOUND,
        E::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        E::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    osb_error(status, None, &e.to_string())
}

async fn start_backup(
    ctx: Ctx,
    req: HttpRequest,
    id: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    authorize(&ctx, &req)?;
    let job = super::backup::backup(&ctx, &id)
        .await
        .map_err(backup_error)?;
    Ok(HttpResponse::Accepted().json(super::backup::to_wire(&job)))
}

async fn list_backups(
    ctx: Ctx,
    req: HttpRequest,
    id: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    authorize(&ctx, &req)?;
    let jobs = super::backup::jobs(&ctx, &id).await.map_err(backup_error)?;
    let list: Vec<_> = jobs.iter().map(super::backup::to_wire).collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn start_restore(
    ctx: Ctx,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<paas_common::api::RestoreRequest>,
) -> actix_web::Result<HttpResponse> {
    authorize(&ctx, &req)?;
    let job = super::backup::restore(&ctx, &id, &body.backup)
        .await
        .map_err(backup_error)?;
    Ok(HttpResponse::Accepted().json(super::backup::to_wire(&job)))
}
