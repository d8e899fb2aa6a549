//! The web dashboard: server-rendered pages (askama templates in web/templates) with a little
//! hand-written JavaScript (web/static/app.js) for live state and actions. Pages authenticate with
//! a session cookie holding a login JWT (HttpOnly, SameSite=Strict, Secure behind TLS); actions
//! call the same `/v1` API as the CLI with that cookie plus the session's CSRF token, so the
//! dashboard can do nothing the API would not let the same user do.

mod charts;
mod pages;
mod session;

use actix_web::web;

pub use session::Session;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(pages::apps))
        .route("/login", web::get().to(session::login_form))
        .route("/login", web::post().to(session::login))
        .route("/logout", web::post().to(session::logout))
        .route("/apps/{name}", web::get().to(pages::app))
        .route("/apps/{name}/charts", web::get().to(pages::charts))
        .route("/nodes", web::get().to(pages::nodes))
        .route("/tokens", web::get().to(pages::tokens))
        .route("/spaces", web::get().to(pages::spaces))
        .route("/static/app.css", web::get().to(static_css))
        .route("/static/app.js", web::get().to(static_js));
}

/// HTML 404 for any other path outside `/v1`.
pub async fn not_found(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    pages::error_page(
        actix_web::http::StatusCode::NOT_FOUND,
        "Not found",
        &format!("There is no page at {}.", req.path()),
    )
}

async fn static_css() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=300"))
        .body(include_str!("../../../web/static/app.css"))
}

async fn static_js() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=300"))
        .body(include_str!("../../../web/static/app.js"))
}
