//! Authorization, in one place: a middleware on `/v1` resolves the caller (login JWT or API token)
//! into a [`Principal`], decides from the method and path what the request needs (public, agent,
//! any user, a role in the app's space, operator), and refuses with 401/403 before any handler
//! runs. Handlers only see callers that may do what they ask.
//!
//! Roles per space: viewer (read), developer (read + deploy), admin (everything in the space).
//! Operators manage nodes, buildpacks, users and spaces, and act as admin everywhere. An API token
//! is capped by its scope (read -> viewer, deploy -> developer, admin -> the owner's roles) and may
//! be restricted to one app.

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use chrono::Utc;
use paas_common::ErrorCode;
use std::collections::HashMap;

use crate::auth::{bearer, sha256_hex};
use crate::error::Error;
use crate::state::AppCtx;

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
    pub app: Option<String>,
}

/// Who is calling, and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub operator: bool,
    /// Space id -> role.
    pub roles: HashMap<String, Role>,
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
    pub fn can_see(&self, app_name: &str, space_id: Option<&str>) -> bool {
        let app_ok = self
            .token
            .as_ref()
            .and_then(|t| t.app.as_deref())
            .is_none_or(|a| a == app_name);
        app_ok && space_id.is_some_and(|s| self.role_in(s).is_some())
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

/// What a request needs, from its method and path.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    Public,
    /// Agent endpoints check the node credential themselves.
    Agent,
    Authenticated,
    /// A role in the app's space; `creates` when the request may create the app (push).
    App {
        name: String,
        min: Role,
        creates: bool,
    },
    Operator,
    /// Managing one's own API tokens: a login, or an admin-scoped token.
    OwnTokens,
}

fn classify(method: &actix_web::http::Method, path: &str) -> Need {
    let read = method == actix_web::http::Method::GET || method == actix_web::http::Method::HEAD;
    let rest = path.strip_prefix("/v1").unwrap_or(path);
    let segs: Vec<&str> = rest
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        // The refresh token in the body is the credential of refresh and logout.
        ["auth", "login" | "refresh" | "logout"] => Need::Public,
        ["admin", ..] => Need::Operator,
        // The API description: CI tools fetch it before they have a token.
        ["openapi.json"] if read => Need::Public,
        // Agents and standalone routers authenticate with their own credentials.
        ["agent", ..] | ["router", ..] => Need::Agent,
        // Incremental upload: any user asks which of their files the controller holds.
        ["resources", "match"] => Need::Authenticated,
        ["apps"] if read => Need::Authenticated,
        // Everyone sees their own events; operators see all (the handler filters).
        ["events"] if read => Need::Authenticated,
        ["apps", name, tail @ ..] => Need::App {
            name: (*name).to_string(),
            min: if read { Role::Viewer } else { Role::Developer },
            creates: !read && tail == ["push"],
        },
        ["tokens", ..] => Need::OwnTokens,
        ["spaces"] if read => Need::Authenticated,
        ["nodes", ..] | ["buildpacks", ..] if read => Need::Authenticated,
        _ if read && !matches!(segs.first(), Some(&"users")) => Need::Authenticated,
        _ => Need::Operator,
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
        })
    } else {
        None
    };
    let user = ctx
        .store
        .user_by_name(&claims.sub)
        .await?
        .ok_or_else(unauthorized)?;
    let roles = ctx
        .store
        .user_roles(&user.id)
        .await?
        .into_iter()
        .filter_map(|(space, role)| Role::parse(&role).map(|r| (space, r)))
        .collect();
    Ok(Principal {
        user_id: user.id,
        username: user.username,
        operator: user.operator,
        roles,
        token: grant,
    })
}

/// The space named by the `X-Paas-Space` header, or the default one.
pub async fn target_space(
    ctx: &AppCtx,
    req: &HttpRequest,
) -> Result<crate::store::SpaceRecord, Error> {
    let named = req
        .headers()
        .get(SPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let (org, space) = match named {
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

/// The `/v1` authorization middleware.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let need = classify(req.method(), req.path());
    if matches!(need, Need::Public | Need::Agent) {
        return next.call(req).await;
    }
    let ctx = req
        .app_data::<web::Data<AppCtx>>()
        .cloned()
        .ok_or_else(|| Error::internal("application state missing"))?;
    let token = match bearer(req.request()) {
        Some(t) => t,
        // The dashboard calls the API with its session cookie; then every change must carry the
        // session's CSRF token, which a cross-site page cannot read.
        None => session_token(&ctx, req.request())?,
    };
    let principal = resolve(&ctx, &token).await?;

    // An app created by this request goes into the caller's target space once the handler made it.
    let mut adopt_into: Option<(String, String)> = None;
    match &need {
        Need::Public | Need::Agent | Need::Authenticated => {}
        Need::Operator => {
            if !principal.is_operator() {
                return Err(forbidden("this needs an operator").into());
            }
        }
        Need::OwnTokens => {
            if principal
                .token
                .as_ref()
                .is_some_and(|t| t.scope != Scope::Admin || t.app.is_some())
            {
                return Err(forbidden(
                    "API tokens can only be managed with a login or an admin token",
                )
                .into());
            }
        }
        Need::App { name, min, creates } => {
            if let Some(only) = principal.token.as_ref().and_then(|t| t.app.as_deref()) {
                if only != name {
                    return Err(forbidden(&format!("this token is for app {only:?} only")).into());
                }
            }
            let space = match ctx.store.app_by_name(name).await.map_err(Error::from)? {
                Some(app) => ctx.store.app_space(&app.id).await.map_err(Error::from)?,
                None if *creates => {
                    let space = target_space(&ctx, req.request()).await?;
                    adopt_into = Some((name.clone(), space.id.clone()));
                    Some(space.id)
                }
                // The handler answers app_not_found.
                None => None,
            };
            if let Some(space) = space {
                match principal.role_in(&space) {
                    Some(role) if role >= *min => {}
                    Some(role) => {
                        return Err(forbidden(&format!(
                            "a {} cannot change apps in this space",
                            role.as_str()
                        ))
                        .into())
                    }
                    None => return Err(forbidden("you have no role in this app's space").into()),
                }
            }
        }
    }
    req.extensions_mut().insert(principal);
    let res = next.call(req).await?;
    if let Some((name, space)) = adopt_into {
        if res.status().is_success() {
            if let Some(app) = ctx.store.app_by_name(&name).await.map_err(Error::from)? {
                if ctx
                    .store
                    .app_space(&app.id)
                    .await
                    .map_err(Error::from)?
                    .is_none()
                {
                    ctx.store
                        .set_app_space(&app.id, &space)
                        .await
                        .map_err(Error::from)?;
                }
            }
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    #[test]
    fn classifies_routes() {
        assert_eq!(classify(&Method::POST, "/v1/auth/login"), Need::Public);
        assert_eq!(classify(&Method::POST, "/v1/auth/refresh"), Need::Public);
        assert_eq!(classify(&Method::POST, "/v1/auth/logout"), Need::Public);
        assert_eq!(classify(&Method::GET, "/v1/admin/keys"), Need::Operator);
        assert_eq!(
            classify(&Method::POST, "/v1/admin/keys/rotate"),
            Need::Operator
        );
        assert_eq!(classify(&Method::GET, "/v1/events"), Need::Authenticated);
        assert_eq!(classify(&Method::DELETE, "/v1/events"), Need::Operator);
        assert_eq!(classify(&Method::POST, "/v1/agent/heartbeat"), Need::Agent);
        assert_eq!(classify(&Method::GET, "/v1/router/table"), Need::Agent);
        assert_eq!(
            classify(&Method::POST, "/v1/resources/match"),
            Need::Authenticated
        );
        assert_eq!(classify(&Method::GET, "/v1/apps"), Need::Authenticated);
        assert_eq!(
            classify(&Method::POST, "/v1/apps/web/push"),
            Need::App {
                name: "web".into(),
                min: Role::Developer,
                creates: true
            }
        );
        assert_eq!(
            classify(&Method::GET, "/v1/apps/web/logs"),
            Need::App {
                name: "web".into(),
                min: Role::Viewer,
                creates: false
            }
        );
        assert_eq!(
            classify(&Method::DELETE, "/v1/apps/web"),
            Need::App {
                name: "web".into(),
                min: Role::Developer,
                creates: false
            }
        );
        assert_eq!(
            classify(&Method::POST, "/v1/nodes/n1/drain"),
            Need::Operator
        );
        assert_eq!(classify(&Method::GET, "/v1/nodes"), Need::Authenticated);
        assert_eq!(classify(&Method::GET, "/v1/users"), Need::Operator);
        assert_eq!(classify(&Method::POST, "/v1/users"), Need::Operator);
        assert_eq!(classify(&Method::POST, "/v1/tokens"), Need::OwnTokens);
        assert_eq!(classify(&Method::POST, "/v1/something-new"), Need::Operator);
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
            token: token.map(|(scope, app)| TokenGrant {
                id: "t".into(),
                name: "ci".into(),
                scope,
                app: app.map(str::to_string),
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
        assert!(p.can_see("a", Some("s1")));
        assert!(!p.can_see("b", Some("s1")));
        assert!(!principal(false, Some(Role::Developer), None).can_see("a", Some("s2")));
    }
}
