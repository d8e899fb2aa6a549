//! Dashboard sessions: the login form (with a double-submit CSRF cookie, so a cross-site page
//! cannot log a victim in as someone else), the session cookie, logout, and [`Session`], which
//! pages use to know who is looking.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::auth::{random_token, secure_eq};
use crate::authz::{self, Principal, SESSION_COOKIE};
use crate::state::AppCtx;
use crate::store::Event;

const LOGIN_CSRF_COOKIE: &str = "paas_login_csrf";

/// Who is looking at a page, and the CSRF token their scripts and forms must send.
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
}

impl Session {
    /// The session of this request, if its cookie holds a valid login.
    pub async fn of(ctx: &AppCtx, req: &HttpRequest) -> Option<Session> {
        let token = req.cookie(SESSION_COOKIE)?.value().to_string();
        let claims = ctx.keys.verify(&token).ok()?;
        if claims.typ.is_some() {
            return None;
        }
        let principal = authz::resolve(ctx, &token).await.ok()?;
        Some(Session {
            principal,
            csrf: ctx.keys.csrf_token(&claims.jti),
        })
    }
}

fn secure(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// Where to send someone who must log in first.
pub fn to_login(req: &HttpRequest) -> HttpResponse {
    let next = req.uri().path_and_query().map_or("/", |p| p.as_str());
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/login?next={}", urlencode(next))))
        .finish()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Only local paths, so the login form cannot be used to redirect elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".into(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    next: &'a str,
    error: Option<&'a str>,
    username: &'a str,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn render_login(
    req: &HttpRequest,
    status: actix_web::http::StatusCode,
    next: &str,
    error: Option<&str>,
    username: &str,
) -> HttpResponse {
    let csrf = random_token(32);
    let page = LoginPage {
        csrf: &csrf,
        next,
        error,
        username,
    };
    match page.render() {
        Ok(html) => HttpResponse::build(status)
            .cookie(
                Cookie::build(LOGIN_CSRF_COOKIE, csrf.clone())
                    .path("/login")
                    .http_only(true)
                    .same_site(SameSite::Strict)
                    .secure(secure(req))
                    .finish(),
            )
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(e) => super::pages::internal(e),
    }
}

pub async fn login_form(req: HttpRequest, q: web::Query<NextQuery>) -> HttpResponse {
    render_login(
        &req,
        actix_web::http::StatusCode::OK,
        &safe_next(q.next.as_deref()),
        None,
        "",
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

pub async fn login(
    ctx: web::Data<AppCtx>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let next = safe_next(form.next.as_deref());
    let cookie = req
        .cookie(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    if cookie.is_empty() || !secure_eq(&cookie, &form.csrf) {
        return render_login(
            &req,
            actix_web::http::StatusCode::FORBIDDEN,
            &next,
            Some("The form expired; please try again."),
            &form.username,
        );
    }
    match crate::api::auth::check_credentials(&ctx, &req, &form.username, &form.password).await {
        Ok(()) => {}
        Err(crate::error::Error::Api {
            code: paas_common::ErrorCode::TooManyRequests,
            message,
        }) => {
            return render_login(
                &req,
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                &next,
                Some(&message),
                &form.username,
            );
        }
        Err(crate::error::Error::Api {
            code: paas_common::ErrorCode::InvalidCredentials,
            ..
        }) => {
            return render_login(
                &req,
                actix_web::http::StatusCode::UNAUTHORIZED,
                &next,
                Some("Wrong username or password."),
                &form.username,
            );
        }
        Err(e) => return super::pages::internal(e),
    }
    let Ok((token, _)) = ctx.keys.issue(&form.username) else {
        return super::pages::internal("cannot issue a session");
    };
    let _ = ctx
        .store
        .add_event(&Event {
            app_name: None,
            app_id: None,
            actor: form.username.clone(),
            kind: "login".into(),
            message: "logged in to the dashboard".into(),
        })
        .await;
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next))
        .cookie(
            Cookie::build(SESSION_COOKIE, token)
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(secure(&req))
                .max_age(CookieDuration::seconds(ctx.settings.token_ttl_secs as i64))
                .finish(),
        )
        .cookie(
            Cookie::build(LOGIN_CSRF_COOKIE, "")
                .path("/login")
                .max_age(CookieDuration::ZERO)
                .finish(),
        )
        .finish()
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(
    ctx: web::Data<AppCtx>,
    req: HttpRequest,
    form: web::Form<LogoutForm>,
) -> HttpResponse {
    if let Some(s) = Session::of(&ctx, &req).await {
        if !secure_eq(&s.csrf, &form.csrf) {
            return super::pages::error_page(
                actix_web::http::StatusCode::FORBIDDEN,
                "Forbidden",
                "The form expired; reload the page.",
            );
        }
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .cookie(
            Cookie::build(SESSION_COOKIE, "")
                .path("/")
                .max_age(CookieDuration::ZERO)
                .finish(),
        )
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_local() {
        assert_eq!(safe_next(Some("/apps/x")), "/apps/x");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
