//! The web dashboard, server-rendered with askama from templates in web/templates. Static assets
//! are compiled into the binary so a deployment is one file.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use crate::error::{ApiResult, Error};
use crate::state::AppCtx;

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    apps: usize,
    nodes: usize,
    ready_nodes: usize,
    apps_domain: String,
    port_suffix: String,
    api_url: String,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index)).route("/static/app.css", web::get().to(css));
}

async fn index(ctx: web::Data<AppCtx>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let nodes = ctx.store.list_nodes().await?;
    let conn = req.connection_info().clone();
    let page = IndexPage {
        apps: ctx.store.list_apps().await?.len(),
        nodes: nodes.len(),
        ready_nodes: nodes.iter().filter(|n| n.state == "ready").count(),
        apps_domain: ctx.settings.apps_domain.clone(),
        port_suffix: if ctx.public_port == 80 { String::new() } else { format!(":{}", ctx.public_port) },
        api_url: format!("{}://{}", conn.scheme(), conn.host()),
    };
    let html = page.render().map_err(Error::internal)?;
    Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html))
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=3600"))
        .body(include_str!("../../web/static/app.css"))
}
