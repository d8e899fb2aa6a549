//! Authorization, in two halves that cannot disagree. A middleware on `/v1` resolves the caller
//! (login JWT, API token or session cookie) into a [`Principal`] and classifies the request by the
//! route it will reach (public, agent, any user, an app route, operator, own tokens); a route it
//! does not know is refused. For app routes the decision is made after routing by [`AppAccess`]
//! (and [`PushTarget`] for a push): an extractor that reads the matched, decoded `{name}`,
//! resolves the app in the caller's reach, checks the role and hands the handler the record it
//! checked. An app outside the caller's reach is answered as one that does not exist.
//!
//! Roles per space: viewer (read), developer (read + deploy), admin (everything in the space).
//! Operators manage nodes, buildpacks, base images, users and spaces, and act as admin
//! everywhere. An API token is capped by its scope (read -> viewer, deploy -> developer, admin ->
//! the owner's roles) and may be restricted to one app.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use chrono::Utc;
use paas_common::domain::AppName;
use paas_common::ErrorCode;
use std::collections::HashMap;
use std::marker::PhantomData;

use crate::auth::{bearer, sha256_hex};
use crate::error::Error;
use crate::state::AppCtx;
use crate::store::AppRecord;

/// Org roles, as Cloud Foundry's: a manager is admin in every space of the org and may make
/// spaces and give roles there; an auditor reads every space of the org.
pub const ORG_MANAGER: &str = "manager";
pub const ORG_AUDITOR: &str = "auditor";

/// The space a push creates its app in when the caller names none.
pub const DEFAULT_ORG: &str = "default";
pub const DEFAULT_SPACE: &str = "default";
/// Request header naming the target space, `ORG/SPACE` (the CLI's `paas target`).
pub const SPACE_HEADER: &str = "x-paas-space";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Developer,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "developer" => Some(Role::Developer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }
}

/// What an API token may do at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Deploy,
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "deploy" => Some(Scope::Deploy),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    fn cap(self) -> Role {
        match self {
            Scope::Read => Role::Viewer,
            Scope::Deploy => Role::Developer,
            Scope::Admin => Role::Admin,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub id: String,
    /// The name its owner gave it, shown in the events of what it did.
    pub name: String,
    pub scope: Scope,
    /// The one app the token may act on, by name as it was made for.
    pub app: Option<String>,
    /// That app's id when it existed and was in reach when the token was made: then only that
    /// app, not a later one of the same name elsewhere.
    pub app_id: Option<String>,
}

impl TokenGrant {
    /// Whether the token's app restriction lets it act on `app`.
    pub fn allows(&self, app: &AppRecord) -> bool {
        self.app.as_deref().is_none_or(|n| n == app.name)
            && self.app_id.as_deref().is_none_or(|id| id == app.id)
    }
}

/// Who is calling, and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub operator: bool,
    /// Space id -> role, org roles included (an org manager is admin in each of its spaces).
    pub roles: HashMap<String, Role>,
    /// Orgs the caller manages (Cloud Foundry's org manager): it makes spaces and gives roles
    /// there.
    pub managed_orgs: std::collections::HashSet<String>,
    /// Set when the caller used an API token rather than a login.
    pub token: Option<TokenGrant>,
}

impl Principal {
    /// Who did it, for events: the user, and the API token when one was used, so an audit trail
    /// tells a CI deploy from a person's.
    pub fn actor(&self) -> String {
        match &self.token {
            Some(t) => actor_with_token(&self.username, &t.name),
            None => self.username.clone(),
        }
    }

    /// The role the caller holds in a space, after its token's scope caps it.
    pub fn role_in(&self, space_id: &str) -> Option<Role> {
        let role = if self.operator {
            Some(Role::Admin)
        } else {
            self.roles.get(space_id).copied()
        }?;
        Some(match &self.token {
            Some(t) => role.min(t.scope.cap()),
            None => role,
        })
    }

    /// Whether the caller may see an app at all (for lists).
    pub fn can_see(&self, app: &AppRecord) -> bool {
        self.token.as_ref().is_none_or(|t| t.allows(app)) && self.role_in(&app.space_id).is_some()
    }

    /// Whether the caller may make spaces and give roles in `org`: an operator, or a manager of
    /// the org through a login or an unrestricted admin token.
    pub fn manages_org(&self, org: &str) -> bool {
        self.is_operator() || (self.unrestricted_admin() && self.managed_orgs.contains(org))
    }

    fn unrestricted_admin(&self) -> bool {
        self.token
            .as_ref()
            .is_none_or(|t| t.scope == Scope::Admin && t.app.is_none())
    }

    /// Platform-wide administration: operators, through a login or an unrestricted admin token.
    pub fn is_operator(&self) -> bool {
        self.operator
            && self
                .token
                .as_ref()
                .is_none_or(|t| t.scope == Scope::Admin && t.app.is_none())
    }
}

impl FromRequest for Principal {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(req.extensions().get::<Principal>().cloned().ok_or_else(|| {
            Error::api(
                ErrorCode::Unauthorized,
                "missing bearer token; log in first",
            )
        }))
    }
}

/// The actor of events caused through an API token: `USER (token NAME)`.
pub fn actor_with_token(username: &str, token_name: &str) -> String {
    format!("{username} (token {token_name})")
}

/// What a request needs, from its method and the route it will be routed to. This is the coarse
/// half of authorization: the app-level half is [`AppAccess`] / [`PushTarget`], which decide on
/// the matched, decoded `{name}` the handler acts on.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    Public,
    /// Agent endpoints check the node credential themselves.
    Agent,
    Authenticated,
    /// A route on one app: resolved and checked here before any body is read, then confirmed
    /// by the handler's [`AppAccess`] / [`PushTarget`] on the handler's own `{name}`.
    App {
        push: bool,
    },
    Operator,
    /// Spaces and roles: operators, and org managers (the handler checks the org).
    OrgManager,
    /// Managing one's own API tokens: a login, or an admin-scoped token.
    OwnTokens,
    /// A route this table does not know: refused, whoever asks.
    Unknown,
}

/// Classifies the path actix routes on (percent-decoded except `%2F`, `%25` and `%2B`), split
/// exactly as the router splits it, so the class is that of the route the request reaches: an
/// encoded `%61dmin` is `admin` here too, and an empty segment or trailing slash matches no route
/// here as it matches none there.
fn classify(method: &actix_web::http::Method, path: &str) -> Need {
    use actix_web::http::Method;
    let read = method == Method::GET || method == Method::HEAD;
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Need::Unknown;
    };
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Need::Unknown;
    }
    let m = method.clone();
    match (segs.as_slice(), m) {
        // The refresh token in the body is the credential of refresh and logout.
        (["auth", "login" | "refresh" | "logout"], Method::POST) => Need::Public,
        // The API description: CI tools fetch it before they have a token.
        (["openapi.json"], _) if read => Need::Public,
        // Which controller leads: load balancers and operators ask without a token.
        (["info"], _) if read => Need::Public,
        // Agents and standalone routers authenticate with their own credentials.
        (["agent", ..] | ["router", ..], _) => Need::Agent,
        (["admin", "keys"], _) if read => Need::Operator,
        (["admin", "keys", "rotate"], Method::POST) => Need::Operator,
        // The platform CA of instance identity (issue 25): public material any user may pin.
        (["instance-identity", "ca.pem"], _) if read => Need::Authenticated,
        // Incremental upload: any user asks which of their files the controller holds.
        (["resources", "match"], Method::POST) => Need::Authenticated,
        // Lists: the handlers show only what the caller's roles reach.
        (["nodes", "metrics"], _) if read => Need::Operator,
        (
            ["apps"]
            | ["events"]
            | ["spaces"]
            | ["routes"]
            | ["nodes"]
            | ["buildpacks"]
            | ["domains"],
            _,
        ) if read => Need::Authenticated,
        // The handlers check the role in the domain's space (issue 22).
        (["domains"], Method::POST) => Need::Authenticated,
        (["domains", _], Method::DELETE) => Need::Authenticated,
        (["domains", _, "certificate"], Method::PUT) => Need::Authenticated,
        (["domains", _, "acme"], Method::PUT) => Need::Authenticated,
        // Network policies (issue 25): the handlers check a developer of both apps' spaces
        // (a change) or a role in either (the list).
        (["network-policies"], Method::GET | Method::HEAD | Method::POST) => Need::Authenticated,
        (["network-policies", _], Method::DELETE) => Need::Authenticated,
        // Services (issue 22): brokers are the operators'; the marketplace and instances are the
        // target space's, checked by the handlers (a role there reads, a developer changes).
        (["service-brokers"], Method::GET | Method::HEAD | Method::POST) => Need::Operator,
        (["service-brokers", _], Method::DELETE) => Need::Operator,
        (["marketplace"], _) if read => Need::Authenticated,
        (["services"], Method::GET | Method::HEAD | Method::POST) => Need::Authenticated,
        (["services", _], Method::GET | Method::HEAD | Method::PATCH | Method::DELETE) => {
            Need::Authenticated
        }
        (["services", _, "backups"], Method::GET | Method::HEAD | Method::POST) => {
            Need::Authenticated
        }
        (["services", _, "restore"], Method::POST) => Need::Authenticated,
        (["apps", _, "bindings"], Method::GET | Method::HEAD | Method::POST) => {
            Need::App { push: false }
        }
        (["apps", _, "bindings", _], Method::DELETE) => Need::App { push: false },
        (["apps", _], Method::GET | Method::HEAD | Method::PATCH | Method::DELETE) => {
            Need::App { push: false }
        }
        (["apps", _, "push"], Method::POST) => Need::App { push: true },
        (["apps", _, "rollback" | "restart" | "stop" | "start"], Method::POST) => {
            Need::App { push: false }
        }
        (["apps", _, "logs" | "events" | "revisions" | "metrics"], _) if read => {
            Need::App { push: false }
        }
        (["apps", _, "logs", "stream"], _) if read => Need::App { push: false },
        (["apps", _, "env"], _) if read => Need::App { push: false },
        (["apps", _, "env"], Method::PATCH) => Need::App { push: false },
        (["apps", _, "routes" | "log-drains"], _) if read => Need::App { push: false },
        (["apps", _, "routes" | "log-drains"], Method::POST | Method::DELETE) => {
            Need::App { push: false }
        }
        (["apps", _, "instances", _, "restart"], Method::POST) => Need::App { push: false },
        // A WebSocket upgrade; the handler needs a developer and checks the ssh settings.
        (["apps", _, "ssh"], Method::GET) => Need::App { push: false },
        (["apps", _, "ssh-enabled"], _) if read => Need::App { push: false },
        (["apps", _, "ssh-enabled"], Method::PUT) => Need::App { push: false },
        // The handlers check the role in that space (read) and admin or org manager (write).
        (["spaces", _, _, "ssh-allowed"], _) if read => Need::Authenticated,
        (["spaces", _, _, "ssh-allowed"], Method::PUT) => Need::Authenticated,
        (["apps", _, "tasks"] | ["apps", _, "tasks", _], _) if read => Need::App { push: false },
        (["apps", _, "tasks"], Method::POST) => Need::App { push: false },
        (["apps", _, "tasks", _, "cancel"], Method::POST) => Need::App { push: false },
        (["apps", _, "deployment"], _) if read => Need::App { push: false },
        (["apps", _, "deployment", "continue" | "cancel"], Method::POST) => {
            Need::App { push: false }
        }
        (["apps", _, "cron"], _) if read => Need::App { push: false },
        (["apps", _, "cron"], Method::POST) => Need::App { push: false },
        (["apps", _, "cron", _], Method::DELETE) => Need::App { push: false },
        (["apps", _, "autoscale"], _) if read => Need::App { push: false },
        (["apps", _, "autoscale"], Method::PUT | Method::DELETE) => Need::App { push: false },
        (["tokens"], Method::GET | Method::POST) => Need::OwnTokens,
        (["tokens", _], Method::DELETE) => Need::OwnTokens,
        (["users"], Method::GET | Method::POST) => Need::Operator,
        (["users", _, "roles"], Method::PUT) => Need::OrgManager,
        (["spaces"], Method::POST) => Need::OrgManager,
        // The handlers check the role in that space (read) and the org (write).
        (["spaces", _, _, "quota"], _) if read => Need::Authenticated,
        (["spaces", _, _, "quota"], Method::PUT) => Need::OrgManager,
        // `paas apply` (issue 25): the handler needs a developer of that space.
        (["spaces", _, _, "apply"], Method::POST) => Need::Authenticated,
        (["nodes", _, "drain"], Method::POST) => Need::Operator,
        (["buildpacks"], Method::POST) => Need::Operator,
        (["buildpacks", _], Method::DELETE) => Need::Operator,
        (["base-images"], Method::GET | Method::HEAD | Method::POST) => Need::Operator,
        (["base-images", _], Method::DELETE) => Need::Operator,
        _ => Need::Unknown,
    }
}

pub async fn resolve(ctx: &AppCtx, token: &str) -> Result<Principal, Error> {
    let unauthorized = || {
        Error::api(
            ErrorCode::Unauthorized,
            "invalid or expired token; log in again",
        )
    };
    let claims = ctx.keys.verify(token).map_err(|e| {
        tracing::debug!(error = %e, "token refused");
        unauthorized()
    })?;
    let grant = if claims.typ.as_deref() == Some("ci") {
        let rec = ctx
            .store
            .token(&claims.jti)
            .await?
            .ok_or_else(unauthorized)?;
        if rec.revoked_at.is_some() {
            return Err(Error::api(
                ErrorCode::Unauthorized,
                "this API token was revoked",
            ));
        }
        if rec.expires_at < Utc::now() || rec.token_hash != sha256_hex(token) {
            return Err(unauthorized());
        }
        let scope = Scope::parse(&rec.scope).ok_or_else(unauthorized)?;
        ctx.store.touch_token(&rec.id, Utc::now()).await?;
        Some(TokenGrant {
            id: rec.id,
            name: rec.name,
            scope,
            app: rec.app_name,
            app_id: rec.app_id,
        })
    } else {
        None
    };
    let user = ctx
        .store
        .user_by_name(&claims.sub)
        .await?
        .ok_or_else(unauthorized)?;
    let mut roles: HashMap<String, Role> = ctx
        .store
        .user_roles(&user.id)
        .await?
        .into_iter()
        .filter_map(|(space, role)| Role::parse(&role).map(|r| (space, r)))
        .collect();
    // Org roles reach every space of the org, those made later too: expanded on each request.
    let org_roles: HashMap<String, String> = ctx
        .store
        .user_org_roles(&user.id)
        .await?
        .into_iter()
        .collect();
    let mut managed_orgs = std::collections::HashSet::new();
    if !org_roles.is_empty() {
        for s in ctx.store.list_spaces().await? {
            let derived = match org_roles.get(&s.org).map(String::as_str) {
                Some(ORG_MANAGER) => Role::Admin,
                Some(ORG_AUDITOR) => Role::Viewer,
                _ => continue,
            };
            let r = roles.entry(s.id).or_insert(derived);
            *r = (*r).max(derived);
        }
        managed_orgs = org_roles
            .into_iter()
            .filter(|(_, r)| r == ORG_MANAGER)
            .map(|(o, _)| o)
            .collect();
    }
    Ok(Principal {
        user_id: user.id,
        username: user.username,
        operator: user.operator,
        roles,
        managed_orgs,
        token: grant,
    })
}

/// The space named by the `X-Paas-Space` header, or the default one.
/// The space a request names: the `X-Paas-Space` header, else a `space` query parameter (what
/// a browser's EventSource can send), `ORG/SPACE`.
fn space_named(req: &HttpRequest) -> Option<String> {
    let header = req
        .headers()
        .get(SPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    header.or_else(|| {
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(k, _)| k == "space")
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

pub async fn target_space(
    ctx: &AppCtx,
    req: &HttpRequest,
) -> Result<crate::store::SpaceRecord, Error> {
    let named = space_named(req);
    let (org, space) = match named.as_deref() {
        Some(s) => s.split_once('/').ok_or_else(|| {
            Error::api(
                ErrorCode::BadRequest,
                format!("space {s:?} must be ORG/SPACE"),
            )
        })?,
        None => (DEFAULT_ORG, DEFAULT_SPACE),
    };
    ctx.store.space(org, space, false).await?.ok_or_else(|| {
        Error::api(
            ErrorCode::SpaceNotFound,
            format!("space {org}/{space} not found"),
        )
    })
}

/// Name of the dashboard's session cookie (HttpOnly, SameSite=Strict; it holds a login JWT).
pub const SESSION_COOKIE: &str = "paas_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The login JWT in the session cookie, checked for CSRF on requests that change something.
fn session_token(ctx: &AppCtx, req: &HttpRequest) -> Result<String, Error> {
    let missing = || {
        Error::api(
            ErrorCode::Unauthorized,
            "missing bearer token; log in first",
        )
    };
    let token = req
        .cookie(SESSION_COOKIE)
        .map(|c| c.value().to_string())
        .ok_or_else(missing)?;
    let claims = ctx.keys.verify(&token).map_err(|_| missing())?;
    if claims.typ.is_some() {
        return Err(missing());
    }
    let safe = req.method() == actix_web::http::Method::GET
        || req.method() == actix_web::http::Method::HEAD;
    if !safe {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !crate::auth::secure_eq(sent, &ctx.keys.csrf_token(&claims.jti)) {
            return Err(Error::api(
                ErrorCode::Forbidden,
                "missing or wrong CSRF token; reload the page",
            ));
        }
    }
    Ok(token)
}

fn forbidden(what: &str) -> Error {
    Error::api(ErrorCode::Forbidden, format!("not allowed: {what}"))
}

fn app_not_found(name: &str) -> Error {
    Error::api(ErrorCode::AppNotFound, format!("app {name:?} not found"))
}

/// Set by [`AppAccess`] and [`PushTarget`] when they ran, so the middleware can refuse an app
/// route whose handler forgot to take one.
#[derive(Clone, Copy)]
struct AppChecked;

fn ctx_of(req: &HttpRequest) -> Result<web::Data<AppCtx>, Error> {
    req.app_data::<web::Data<AppCtx>>()
        .cloned()
        .ok_or_else(|| Error::internal("application state missing"))
}

fn count_denied(ctx: &AppCtx, e: &Error) {
    let code = e.wire().code;
    if matches!(
        code.as_str(),
        "unauthorized"
            | "forbidden"
            | "app_not_found"
            | "space_not_found"
            | "not_found"
            | "app_name_taken"
    ) {
        ctx.metrics.authz_denied(&code);
    }
}

/// The `/v1` authorization middleware: authentication, the coarse classes (public, agent,
/// operator, own tokens), and for app routes the resolution of the app in the caller's reach,
/// which the handler's [`AppAccess`] / [`PushTarget`] confirm on the handler's own `{name}`.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let ctx = ctx_of(req.request())?;
    let need = classify(req.method(), req.match_info().get_ref().path());
    let denied = |e: Error| -> actix_web::Error {
        count_denied(&ctx, &e);
        e.into()
    };
    if matches!(need, Need::Public | Need::Agent) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let token = match bearer(req.request()) {
        Some(t) => t,
        // The dashboard calls the API with its session cookie; then every change must carry the
        // session's CSRF token, which a cross-site page cannot read.
        None => session_token(&ctx, req.request()).map_err(denied)?,
    };
    let principal = resolve(&ctx, &token).await.map_err(denied)?;
    match &need {
        Need::Public | Need::Agent | Need::Authenticated => {}
        // Decided before the handler's other extractors run (they are polled together, and a
        // body error must not answer before the app check does).
        Need::App { push } => {
            let name = app_segment(req.match_info().get_ref().path());
            let resolved = if *push {
                push_target(&ctx, req.request(), &principal, &name)
                    .await
                    .map(Resolved::Push)
            } else {
                resolve_app(&ctx, req.request(), &principal, &name)
                    .await
                    .map(Resolved::App)
            }
            .map_err(denied)?;
            req.extensions_mut().insert(resolved);
        }
        Need::Unknown => {
            return Err(denied(Error::api(
                ErrorCode::NotFound,
                "no such API endpoint",
            )))
        }
        Need::Operator => {
            if !principal.is_operator() {
                return Err(denied(forbidden("this needs an operator")));
            }
        }
        Need::OrgManager => {
            let manages_some = principal.unrestricted_admin() && !principal.managed_orgs.is_empty();
            if !(principal.is_operator() || manages_some) {
                return Err(denied(forbidden(
                    "this needs an operator or an org manager",
                )));
            }
        }
        Need::OwnTokens => {
            if principal
                .token
                .as_ref()
                .is_some_and(|t| t.scope != Scope::Admin || t.app.is_some())
            {
                return Err(denied(forbidden(
                    "API tokens can only be managed with a login or an admin token",
                )));
            }
        }
    }
    req.extensions_mut().insert(principal);
    let res = next.call(req).await?;
    if matches!(need, Need::App { .. })
        && res.status().is_success()
        && res.request().extensions().get::<AppChecked>().is_none()
    {
        // Fail closed: an app route whose handler decided nothing about the app answers nothing.
        tracing::error!(path = %res.request().path(), "app route without an app check");
        let (req, _) = res.into_parts();
        let e = Error::internal("app route without an app check");
        return Ok(ServiceResponse::new(req, e.error_response()).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

/// The minimum role a handler needs on its app.
pub trait MinRole {
    const ROLE: Role;
}

/// Reading an app: its detail, logs, events, env (secrets masked), routes, drains, revisions.
pub enum Viewer {}
impl MinRole for Viewer {
    const ROLE: Role = Role::Viewer;
}

/// Changing an app: deploy, scale, env, routes, drains, restart, delete.
pub enum Developer {}
impl MinRole for Developer {
    const ROLE: Role = Role::Developer;
}

/// Settings only a space's admins (managers) and operators change: whether ssh is allowed.
pub enum Admin {}
impl MinRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// An app the caller reaches, as the middleware resolved it.
#[derive(Clone)]
pub struct ReachedApp {
    /// The decoded name it was resolved by.
    name: String,
    app: AppRecord,
    space_id: String,
    role: Role,
}

/// What the middleware resolved for an app route, for the handler's extractor to confirm.
#[derive(Clone)]
enum Resolved {
    App(ReachedApp),
    Push(PushTarget),
}

/// The app segment of an app route's routing path, decoded as `web::Path` decodes parameters.
fn app_segment(routing_path: &str) -> String {
    let seg = routing_path
        .strip_prefix("/v1/apps/")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default();
    percent_decode(seg)
}

/// Full percent-decoding (what actix's path deserializer does to a parameter); a malformed
/// escape stays as it is, and bytes that are not UTF-8 are replaced.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The app `name` in the caller's reach with the caller's role in its space. Anything outside
/// the reach (no such app, another space, a token for another app, a spelling that is not a
/// name) is the same 404.
async fn resolve_app(
    ctx: &AppCtx,
    req: &HttpRequest,
    principal: &Principal,
    raw: &str,
) -> Result<ReachedApp, Error> {
    // Every spelling is parsed by the same rules; one that is not a name names no app.
    let name = AppName::parse(raw).map_err(|_| app_not_found(raw))?;
    let (app, role) = match find_reachable(ctx, req, principal, &name).await? {
        Found::One(app, role) => (app, role),
        Found::None => return Err(app_not_found(name.as_str())),
        Found::Several(spaces) => return Err(ambiguous(&name, &spaces)),
    };
    Ok(ReachedApp {
        name: raw.to_string(),
        space_id: app.space_id.clone(),
        app,
        role,
    })
}

/// What a name finds among the apps the caller reaches.
enum Found {
    None,
    One(AppRecord, Role),
    /// `ORG/SPACE` of each app of that name in reach, when the request named no space.
    Several(Vec<String>),
}

/// The app `name` the caller means, as in Cloud Foundry where the target space selects which
/// `web` you mean: the one in the space the request names (`X-Paas-Space`, `paas target`); with
/// none named, the one app of that name the caller's roles reach. Apps out of reach are not
/// looked at, so the answer is the same whether or not another space has such an app.
async fn find_reachable(
    ctx: &AppCtx,
    req: &HttpRequest,
    principal: &Principal,
    name: &AppName,
) -> Result<Found, Error> {
    let in_reach = |app: AppRecord| {
        let allowed = principal.token.as_ref().is_none_or(|t| t.allows(&app));
        let role = principal.role_in(&app.space_id).filter(|_| allowed)?;
        Some((app, role))
    };
    if explicit_space(req) {
        let Some(space) = named_space(ctx, req, principal).await? else {
            return Ok(Found::None);
        };
        let app = ctx.store.app_in_space(&space.id, name.as_str()).await?;
        return Ok(match app.and_then(in_reach) {
            Some((app, role)) => Found::One(app, role),
            None => Found::None,
        });
    }
    let mut found: Vec<(AppRecord, Role)> = ctx
        .store
        .apps_named(name.as_str())
        .await?
        .into_iter()
        .filter_map(in_reach)
        .collect();
    match found.len() {
        0 => Ok(Found::None),
        1 => {
            let (app, role) = found.remove(0);
            Ok(Found::One(app, role))
        }
        _ => {
            let spaces = ctx.store.list_spaces().await?;
            Ok(Found::Several(
                found
                    .iter()
                    .filter_map(|(a, _)| spaces.iter().find(|s| s.id == a.space_id))
                    .map(|s| format!("{}/{}", s.org, s.name))
                    .collect(),
            ))
        }
    }
}

/// The app `name` the caller means and reaches, as app routes resolve it (`None` when there is
/// none in reach; an error when several spaces have one and the request names none).
pub async fn reachable_app(
    ctx: &AppCtx,
    req: &HttpRequest,
    principal: &Principal,
    name: &AppName,
) -> Result<Option<(AppRecord, Role)>, Error> {
    match find_reachable(ctx, req, principal, name).await? {
        Found::None => Ok(None),
        Found::One(app, role) => Ok(Some((app, role))),
        Found::Several(spaces) => Err(ambiguous(name, &spaces)),
    }
}

fn ambiguous(name: &AppName, spaces: &[String]) -> Error {
    Error::api(
        ErrorCode::AmbiguousApp,
        format!(
            "there is an app {name} in each of {}: name the space (paas target ORG/SPACE, or the X-Paas-Space header)",
            spaces.join(", ")
        ),
    )
}

/// The space the request names, when the caller has a role there; a space out of reach is
/// answered like a missing one.
async fn named_space(
    ctx: &AppCtx,
    req: &HttpRequest,
    principal: &Principal,
) -> Result<Option<crate::store::SpaceRecord>, Error> {
    match target_space(ctx, req).await {
        Ok(space) if principal.role_in(&space.id).is_some() => Ok(Some(space)),
        Ok(_) => Ok(None),
        Err(e) if e.wire().code == ErrorCode::SpaceNotFound.as_str() => Ok(None),
        Err(e) => Err(e),
    }
}

fn name_param(req: &HttpRequest) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct P {
        name: String,
    }
    web::Path::<P>::extract(req)
        .into_inner()
        .ok()
        .map(|p| p.into_inner().name)
}

/// The resolution for this request, if it was made for the very name the handler is given.
fn resolved_for_handler(req: &HttpRequest) -> Result<Resolved, Error> {
    req.extensions_mut().insert(AppChecked);
    let resolved = req.extensions().get::<Resolved>().cloned();
    let param = name_param(req);
    let resolved_name = match &resolved {
        Some(Resolved::App(r)) => Some(r.name.clone()),
        Some(Resolved::Push(t)) => Some(t.raw_name.clone()),
        None => None,
    };
    match (resolved, param) {
        (Some(r), Some(p)) if resolved_name.as_deref() == Some(p.as_str()) => Ok(r),
        // Never act on a name other than the one authorized (or on none).
        (_, p) => {
            tracing::error!(param = ?p, resolved = ?resolved_name, "app route resolved for another name");
            Err(app_not_found(p.as_deref().unwrap_or_default()))
        }
    }
}

/// The app named by the matched `{name}` of the route, in the caller's reach, with the caller's
/// role in its space at least `R`. A handler that takes one acts on exactly the app that was
/// authorized. An app the caller cannot reach (another space, a token for another app) is
/// answered like one that does not exist: 404 `app_not_found`.
pub struct AppAccess<R> {
    pub app: AppRecord,
    pub space_id: String,
    /// The caller's role in the app's space (after its token's scope).
    pub role: Role,
    _min: PhantomData<fn() -> R>,
}

impl<R> AppAccess<R> {
    pub fn into_app(self) -> AppRecord {
        self.app
    }
}

fn app_access<R: MinRole>(req: &HttpRequest) -> Result<AppAccess<R>, Error> {
    let Resolved::App(r) = resolved_for_handler(req)? else {
        return Err(Error::internal("an app handler on a push route"));
    };
    if r.role < R::ROLE {
        return Err(forbidden(&format!(
            "a {} cannot change apps in this space",
            r.role.as_str()
        )));
    }
    Ok(AppAccess {
        app: r.app,
        space_id: r.space_id,
        role: r.role,
        _min: PhantomData,
    })
}

impl<R: MinRole> FromRequest for AppAccess<R> {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let res = app_access::<R>(req);
        if let (Err(e), Ok(ctx)) = (&res, ctx_of(req)) {
            count_denied(ctx.get_ref(), e);
        }
        std::future::ready(res)
    }
}

/// Where a push goes: the app of that name when the caller may deploy it, or a new app in the
/// caller's target space (`X-Paas-Space`, default `default/default`) when the caller is a
/// developer there. App names are platform-wide, so a name another space holds is
/// `app_name_taken`.
#[derive(Clone)]
pub struct PushTarget {
    pub name: AppName,
    pub space_id: String,
    raw_name: String,
}

fn explicit_space(req: &HttpRequest) -> bool {
    space_named(req).is_some()
}

async fn push_target(
    ctx: &AppCtx,
    req: &HttpRequest,
    principal: &Principal,
    raw: &str,
) -> Result<PushTarget, Error> {
    let name = AppName::parse(raw).map_err(|m| Error::api(ErrorCode::InvalidName, m))?;
    if principal
        .token
        .as_ref()
        .and_then(|t| t.app.as_deref())
        .is_some_and(|only| only != name.as_str())
    {
        return Err(app_not_found(name.as_str()));
    }
    let need_developer = |role: Option<Role>, space: &str| match role {
        Some(r) if r >= Role::Developer => Ok(()),
        Some(r) => Err(forbidden(&format!(
            "a {} cannot push to space {space}",
            r.as_str()
        ))),
        None => Err(Error::api(
            ErrorCode::SpaceNotFound,
            format!("space {space} not found"),
        )),
    };
    // An app of that name in reach (in the named space, or the only one) is pushed to; else a
    // new app is made in the target space (the default space when none is named).
    match find_reachable(ctx, req, principal, &name).await? {
        Found::One(app, role) => {
            need_developer(Some(role), "of this app")?;
            return Ok(PushTarget {
                name,
                space_id: app.space_id,
                raw_name: raw.to_string(),
            });
        }
        Found::Several(spaces) => return Err(ambiguous(&name, &spaces)),
        Found::None => {}
    }
    let space = target_space(ctx, req).await?;
    let label = format!("{}/{}", space.org, space.name);
    need_developer(principal.role_in(&space.id), &label)?;
    if let Some(t) = principal.token.as_ref().filter(|t| t.app_id.is_some()) {
        // A token made for one existing app does not create another of its name.
        tracing::debug!(token = %t.name, "app token for an app that is gone");
        return Err(app_not_found(name.as_str()));
    }
    Ok(PushTarget {
        name,
        space_id: space.id,
        raw_name: raw.to_string(),
    })
}

impl FromRequest for PushTarget {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let res = match resolved_for_handler(req) {
            Ok(Resolved::Push(t)) => Ok(t),
            Ok(Resolved::App(_)) => Err(Error::internal("a push handler on an app route")),
            Err(e) => Err(e),
        };
        std::future::ready(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    #[test]
    fn classifies_routes() {
        use Need::*;
        let c = |m: Method, p: &str| classify(&m, p);
        assert_eq!(c(Method::POST, "/v1/auth/login"), Public);
        assert_eq!(c(Method::POST, "/v1/auth/refresh"), Public);
        assert_eq!(c(Method::POST, "/v1/auth/logout"), Public);
        assert_eq!(c(Method::GET, "/v1/openapi.json"), Public);
        assert_eq!(c(Method::GET, "/v1/info"), Public);
        assert_eq!(c(Method::GET, "/v1/domains"), Authenticated);
        assert_eq!(c(Method::POST, "/v1/domains"), Authenticated);
        assert_eq!(c(Method::DELETE, "/v1/domains/example.com"), Authenticated);
        assert_eq!(
            c(Method::PUT, "/v1/domains/example.com/certificate"),
            Authenticated
        );
        assert_eq!(
            c(Method::PUT, "/v1/domains/example.com/acme"),
            Authenticated
        );
        assert_eq!(c(Method::DELETE, "/v1/domains"), Unknown);
        assert_eq!(c(Method::GET, "/v1/service-brokers"), Operator);
        assert_eq!(c(Method::POST, "/v1/service-brokers"), Operator);
        assert_eq!(c(Method::DELETE, "/v1/service-brokers/b"), Operator);
        assert_eq!(c(Method::GET, "/v1/marketplace"), Authenticated);
        assert_eq!(c(Method::POST, "/v1/services"), Authenticated);
        assert_eq!(c(Method::PATCH, "/v1/services/db"), Authenticated);
        assert_eq!(c(Method::PUT, "/v1/services/db"), Unknown);
        assert_eq!(
            c(Method::POST, "/v1/apps/web/bindings"),
            App { push: false }
        );
        assert_eq!(
            c(Method::DELETE, "/v1/apps/web/bindings/db"),
            App { push: false }
        );
        assert_eq!(c(Method::GET, "/v1/admin/keys"), Operator);
        assert_eq!(c(Method::POST, "/v1/admin/keys/rotate"), Operator);
        assert_eq!(c(Method::GET, "/v1/events"), Authenticated);
        assert_eq!(c(Method::DELETE, "/v1/events"), Unknown);
        assert_eq!(c(Method::POST, "/v1/agent/heartbeat"), Agent);
        assert_eq!(c(Method::POST, "/v1/agent/instances/i1/identity"), Agent);
        assert_eq!(
            c(Method::GET, "/v1/instance-identity/ca.pem"),
            Authenticated
        );
        assert_eq!(c(Method::POST, "/v1/instance-identity/ca.pem"), Unknown);
        assert_eq!(c(Method::GET, "/v1/router/table"), Agent);
        assert_eq!(c(Method::POST, "/v1/resources/match"), Authenticated);
        assert_eq!(c(Method::GET, "/v1/apps"), Authenticated);
        assert_eq!(c(Method::GET, "/v1/routes"), Authenticated);
        assert_eq!(c(Method::POST, "/v1/apps/web/push"), App { push: true });
        assert_eq!(c(Method::GET, "/v1/apps/web/logs"), App { push: false });
        assert_eq!(
            c(Method::GET, "/v1/apps/web/logs/stream"),
            App { push: false }
        );
        assert_eq!(c(Method::DELETE, "/v1/apps/web"), App { push: false });
        assert_eq!(
            c(Method::POST, "/v1/apps/web/instances/0/restart"),
            App { push: false }
        );
        assert_eq!(c(Method::PUT, "/v1/apps/web/env"), Unknown);
        assert_eq!(c(Method::POST, "/v1/apps/web/tasks"), App { push: false });
        assert_eq!(c(Method::GET, "/v1/apps/web/tasks/3"), App { push: false });
        assert_eq!(
            c(Method::POST, "/v1/apps/web/tasks/3/cancel"),
            App { push: false }
        );
        assert_eq!(c(Method::DELETE, "/v1/apps/web/tasks/3"), Unknown);
        assert_eq!(c(Method::POST, "/v1/nodes/n1/drain"), Operator);
        assert_eq!(c(Method::GET, "/v1/nodes"), Authenticated);
        assert_eq!(c(Method::GET, "/v1/nodes/metrics"), Operator);
        assert_eq!(c(Method::GET, "/v1/users"), Operator);
        assert_eq!(c(Method::POST, "/v1/users"), Operator);
        assert_eq!(c(Method::POST, "/v1/tokens"), OwnTokens);
        assert_eq!(c(Method::GET, "/v1/spaces/o/s/quota"), Authenticated);
        assert_eq!(c(Method::PUT, "/v1/spaces/o/s/quota"), OrgManager);
        assert_eq!(c(Method::DELETE, "/v1/spaces/o/s/quota"), Unknown);
        assert_eq!(c(Method::GET, "/v1/base-images"), Operator);
        assert_eq!(c(Method::DELETE, "/v1/base-images/alpine"), Operator);
        assert_eq!(c(Method::POST, "/v1/something-new"), Unknown);
        assert_eq!(c(Method::GET, "/v1/something-new"), Unknown);
        // Spellings the router would not match are not guessed at either.
        assert_eq!(c(Method::GET, "/v1/apps/web/"), Unknown);
        assert_eq!(c(Method::GET, "/v1//apps/web"), Unknown);
        assert_eq!(c(Method::GET, "/v1/apps//env"), Unknown);
        assert_eq!(c(Method::GET, "/v2/apps"), Unknown);
    }

    #[test]
    fn app_segments_decode_like_path_parameters() {
        let seg = |raw: &str| {
            let uri: actix_web::http::Uri = raw.parse().unwrap();
            app_segment(actix_web::dev::Url::new(uri).path())
        };
        assert_eq!(seg("/v1/apps/sh%6Fp/env"), "shop");
        assert_eq!(seg("/v1/apps/sh%6fp"), "shop");
        assert_eq!(seg("/v1/apps/a%2Fb/env"), "a/b");
        assert_eq!(seg("/v1/apps/a%25"), "a%");
        assert_eq!(seg("/v1/apps/bad%zz"), "bad%zz");
        assert_eq!(seg("/v1/apps/end%6"), "end%6");
    }

    /// The middleware classifies the path actix routes on: `%61dmin` must be `admin`.
    #[test]
    fn classifies_the_decoded_path() {
        let uri: actix_web::http::Uri = "/v1/%61dmin/keys".parse().unwrap();
        let url = actix_web::dev::Url::new(uri);
        assert_eq!(classify(&Method::GET, url.path()), Need::Operator);
        let uri: actix_web::http::Uri = "/v1/us%65rs".parse().unwrap();
        let url = actix_web::dev::Url::new(uri);
        assert_eq!(classify(&Method::GET, url.path()), Need::Operator);
    }

    fn principal(
        operator: bool,
        role: Option<Role>,
        token: Option<(Scope, Option<&str>)>,
    ) -> Principal {
        Principal {
            user_id: "u".into(),
            username: "u".into(),
            operator,
            roles: role
                .map(|r| HashMap::from([("s1".to_string(), r)]))
                .unwrap_or_default(),
            managed_orgs: Default::default(),
            token: token.map(|(scope, app)| TokenGrant {
                id: "t".into(),
                name: "ci".into(),
                scope,
                app: app.map(str::to_string),
                app_id: None,
            }),
        }
    }

    #[test]
    fn roles_are_capped_by_token_scope() {
        assert_eq!(
            principal(false, Some(Role::Admin), None).role_in("s1"),
            Some(Role::Admin)
        );
        assert_eq!(
            principal(false, Some(Role::Admin), Some((Scope::Read, None))).role_in("s1"),
            Some(Role::Viewer)
        );
        assert_eq!(
            principal(false, Some(Role::Admin), Some((Scope::Deploy, None))).role_in("s1"),
            Some(Role::Developer)
        );
        assert_eq!(
            principal(false, Some(Role::Viewer), Some((Scope::Admin, None))).role_in("s1"),
            Some(Role::Viewer)
        );
        assert_eq!(principal(false, None, None).role_in("s1"), None);
        assert_eq!(principal(true, None, None).role_in("s2"), Some(Role::Admin));
        assert!(principal(true, None, None).is_operator());
        assert!(!principal(true, None, Some((Scope::Deploy, None))).is_operator());
        assert!(!principal(true, None, Some((Scope::Admin, Some("a")))).is_operator());
    }

    #[test]
    fn app_tokens_see_one_app() {
        let p = principal(
            false,
            Some(Role::Developer),
            Some((Scope::Deploy, Some("a"))),
        );
        let app = |name: &str, space: &str| AppRecord {
            id: format!("id-{name}-{space}"),
            name: name.into(),
            state: paas_common::api::AppState::Started,
            desired_instances: 1,
            memory_mb: 256,
            disk_mb: 1024,
            current_revision: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            space_id: space.into(),
            host: Some(name.into()),
        };
        assert!(p.can_see(&app("a", "s1")));
        assert!(!p.can_see(&app("b", "s1")));
        assert!(!principal(false, Some(Role::Developer), None).can_see(&app("a", "s2")));
        // A token made for one app of that name does not reach a later one elsewhere.
        let mut pinned = p.clone();
        if let Some(t) = pinned.token.as_mut() {
            t.app_id = Some("id-a-s1".into());
        }
        assert!(pinned.can_see(&app("a", "s1")));
        let mut other = app("a", "s1");
        other.id = "another".into();
        assert!(!pinned.can_see(&other));
    }
}
