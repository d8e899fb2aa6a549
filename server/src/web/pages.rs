//! The dashboard's pages. Each handler reads through the store with the viewer's rights (the same
//! checks as the API: apps of spaces the user has a role in), renders a template, and leaves
//! changes to the API, which the page's script calls.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::{DateTime, Utc};
use paas_common::api::InstanceState;
use std::collections::HashMap;

use super::session::{to_login, Session};
use crate::api::page::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::authz::Role;
use crate::state::AppCtx;
use crate::store::AppRecord;

/// "3s", "5m", "2h", "4d".
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn internal(e: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %e, "dashboard page failed");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The error was logged on the controller. Please try again.",
    )
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

/// An error page in the dashboard's style; never a stack trace.
/// `ORG/SPACE` of every space, by space id.
async fn space_labels(ctx: &AppCtx) -> Result<HashMap<String, String>, crate::store::StoreError> {
    Ok(ctx
        .store
        .list_spaces()
        .await?
        .into_iter()
        .map(|s| (s.id, format!("{}/{}", s.org, s.name)))
        .collect())
}

pub fn error_page(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    let html = ErrorPage {
        status: status.as_u16(),
        title,
        message,
    }
    .render()
    .unwrap_or_else(|_| format!("{} {title}", status.as_u16()));
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(html)
}

fn html(page: impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .insert_header(("x-frame-options", "DENY"))
            .insert_header(("content-security-policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"))
            .body(body),
        Err(e) => internal(e),
    }
}

/// What every page's layout shows.
pub struct Layout {
    pub user: String,
    pub operator: bool,
    pub csrf: String,
    pub section: &'static str,
}

impl Layout {
    fn of(s: &Session, section: &'static str) -> Self {
        Layout {
            user: s.principal.username.clone(),
            operator: s.principal.is_operator(),
            csrf: s.csrf.clone(),
            section,
        }
    }
}

pub struct AppRow {
    pub name: String,
    /// `ORG/SPACE`: names are unique per space, so links carry it.
    pub space: String,
    /// What is wrong, in words (crash loop, unplaceable, more running than desired, a node that
    /// stopped reporting); empty when nothing is.
    pub problems: Vec<String>,
    pub state: String,
    pub running: u32,
    pub desired: u32,
    pub revision: String,
    pub url: String,
    pub updated: String,
    pub memory_mb: u64,
}

/// One limit of a space's quota beside what the space uses, for the dashboard.
pub struct QuotaRow {
    pub what: &'static str,
    pub used: u64,
    /// `None`: unlimited.
    pub limit: Option<u64>,
    pub unit: &'static str,
}

impl QuotaRow {
    pub fn over(&self) -> bool {
        self.limit.is_some_and(|l| self.used > l)
    }

    /// For the `<meter>`: the limit, or the usage when unlimited (a full bar then says nothing).
    pub fn max(&self) -> u64 {
        self.limit.unwrap_or(self.used).max(1)
    }
}

/// The quota of a space with its usage, one row per limit.
async fn quota_rows(
    ctx: &AppCtx,
    space_id: &str,
) -> Result<Vec<QuotaRow>, crate::store::StoreError> {
    let q = ctx.store.space_quota(space_id).await?;
    let (u, _) = crate::deploy::quota::usage(ctx, space_id).await?;
    Ok(vec![
        QuotaRow {
            what: "memory",
            used: u.memory_mb,
            limit: q.memory_mb,
            unit: " MB",
        },
        QuotaRow {
            what: "instances",
            used: u.instances,
            limit: q.instances,
            unit: "",
        },
        QuotaRow {
            what: "apps",
            used: u.apps,
            limit: q.apps,
            unit: "",
        },
        QuotaRow {
            what: "routes",
            used: u.routes,
            limit: q.routes,
            unit: "",
        },
    ])
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    layout: Layout,
    apps: Vec<AppRow>,
    can_deploy: bool,
    /// The spaces in reach, for the switcher, and the one shown (`""`: all).
    spaces: Vec<String>,
    space: String,
    /// The quota and usage of the space shown (empty: all spaces are shown).
    quota: Vec<QuotaRow>,
    /// Apps shown on every page together, and where this page starts in them (1-based).
    total: usize,
    first: usize,
    /// The link to the next page (`?after=` its last app), when there is one; whether this is
    /// a later page (a link back to the first).
    next: Option<String>,
    later: bool,
}

/// Apps per page of the dashboard's list by default (`?limit=` as the API's, up to its
/// [`MAX_LIMIT`]): at 1,000 apps the whole list (every app's instance rows read, a 500 KB page)
/// took half a second.
const APPS_PAGE: usize = DEFAULT_LIMIT;

/// What looks wrong with an app, from its instances and their nodes.
fn problems(
    app: &AppRecord,
    instances: &[&crate::store::InstanceRecord],
    lost_nodes: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    let crashing = instances
        .iter()
        .filter(|i| i.state == InstanceState::Crashed)
        .count();
    let gave_up = instances
        .iter()
        .filter(|i| paas_common::agent::gave_up(i.state, i.last_exit.as_deref()))
        .count();
    if gave_up > 0 {
        out.push(format!("crash loop: {gave_up} instance(s) gave up"));
    } else if crashing > 0 {
        out.push(format!("crashing: {crashing} instance(s)"));
    }
    if let Some(why) = instances.iter().find_map(|i| {
        i.placement_error
            .as_deref()
            .filter(|_| i.node_name.is_none())
    }) {
        out.push(format!("not placed: {why}"));
    }
    let web_running = instances
        .iter()
        .filter(|i| i.process_type == "web" && i.state == InstanceState::Running)
        .count() as u32;
    if app.state == paas_common::api::AppState::Started && web_running > app.desired_instances {
        out.push(format!(
            "{web_running} web instances running, {} desired",
            app.desired_instances
        ));
    }
    for n in lost_nodes {
        if instances.iter().any(|i| i.node_name.as_deref() == Some(n)) {
            out.push(format!("node {n} stopped reporting"));
        }
    }
    out
}

macro_rules! session_or_login {
    ($ctx:expr, $req:expr) => {
        match Session::of(&$ctx, &$req).await {
            Some(s) => s,
            None => return to_login(&$req),
        }
    };
}

/// The apps page's rows, the spaces in reach, the quota of the space shown, and the paging.
type AppsData = (Vec<AppRow>, Vec<String>, Vec<QuotaRow>, Paging);

/// Where a page of the apps list sits in the whole list.
struct Paging {
    total: usize,
    first: usize,
    next: Option<String>,
}

pub async fn apps(ctx: web::Data<AppCtx>, req: HttpRequest) -> HttpResponse {
    let s = session_or_login!(ctx, req);
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (wanted, after) = (param("space"), param("after"));
    // `limit` as the API's: 1 to `MAX_LIMIT` apps per page.
    let limit = param("limit")
        .parse::<usize>()
        .map_or(APPS_PAGE, |l| l.clamp(1, MAX_LIMIT));
    let result: Result<AppsData, crate::store::StoreError> = async {
        let now = Utc::now();
        let lost: Vec<String> = ctx
            .store
            .list_nodes()
            .await?
            .into_iter()
            .filter(|n| n.state == "lost")
            .map(|n| n.name)
            .collect();
        let spaces = space_labels(&ctx).await?;
        let mut reach: Vec<String> = spaces
            .iter()
            .filter(|(id, _)| s.principal.role_in(id).is_some())
            .map(|(_, label)| label.clone())
            .collect();
        reach.sort();
        // Sorted by name (the store's order), so `after` pages like the API's page token.
        let visible: Vec<AppRecord> = ctx
            .store
            .list_apps()
            .await?
            .into_iter()
            .filter(|a| {
                s.principal.can_see(a)
                    && (wanted.is_empty() || spaces.get(&a.space_id).is_some_and(|l| *l == wanted))
            })
            .collect();
        let total = visible.len();
        let skip = if after.is_empty() {
            0
        } else {
            visible.partition_point(|a| a.name.as_str() <= after.as_str())
        };
        let more = total > skip + limit;
        let mut rows = Vec::new();
        // Only the shown apps' instance rows: one indexed read each, not every row.
        for a in visible.into_iter().skip(skip).take(limit) {
            let instances = ctx.store.app_instances(&a.id).await?;
            let mine: Vec<&crate::store::InstanceRecord> = instances.iter().collect();
            let running = mine
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .count() as u32;
            rows.push(AppRow {
                problems: problems(&a, &mine, &lost),
                space: spaces.get(&a.space_id).cloned().unwrap_or_default(),
                running,
                url: ctx.app_url(&a),
                state: a.state.as_str().to_string(),
                desired: a.desired_instances,
                revision: a.current_revision.map_or("-".into(), |r| r.to_string()),
                updated: ago(a.updated_at, now),
                memory_mb: a.memory_mb,
                name: a.name,
            });
        }
        let next = match rows.last() {
            Some(last) if more => {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                if !wanted.is_empty() {
                    q.append_pair("space", &wanted);
                }
                if limit != APPS_PAGE {
                    q.append_pair("limit", &limit.to_string());
                }
                q.append_pair("after", &last.name);
                Some(format!("/?{}", q.finish()))
            }
            _ => None,
        };
        let quota = match spaces
            .iter()
            .find(|(id, label)| **label == wanted && s.principal.role_in(id).is_some())
        {
            Some((id, _)) => quota_rows(&ctx, id).await?,
            None => Vec::new(),
        };
        let paging = Paging {
            total,
            first: skip + 1,
            next,
        };
        Ok((rows, reach, quota, paging))
    }
    .await;
    match result {
        Ok((apps, spaces, quota, paging)) => {
            let can_deploy = s.principal.is_operator()
                || s.principal.roles.values().any(|r| *r >= Role::Developer);
            html(AppsPage {
                layout: Layout::of(&s, "apps"),
                apps,
                can_deploy,
                spaces,
                space: wanted,
                quota,
                total: paging.total,
                first: paging.first,
                next: paging.next,
                later: !after.is_empty(),
            })
        }
        Err(e) => internal(e),
    }
}

pub struct InstanceRow {
    pub process: String,
    pub index: u32,
    pub cpu: String,
    pub memory: String,
    pub state: String,
    pub node: String,
    pub address: String,
    pub restarts: u32,
    pub since: String,
    pub last_exit: String,
}

/// One process type on the app page: what it runs and how many of its instances do.
pub struct ProcessRow {
    pub process_type: String,
    pub command: String,
    pub running: u32,
    pub desired: u32,
    pub memory_mb: u64,
    pub health_check: String,
}

/// One entry of the app page's timeline: an event, or the making of a revision (which a
/// developer can roll back to from there).
pub struct EventRow {
    pub time: String,
    /// RFC 3339, for `<time datetime>` and the tooltip.
    pub at: String,
    pub actor: String,
    pub kind: String,
    pub message: String,
    /// The revision this entry made, when rolling back to it is possible (not current, its
    /// droplet kept, and the viewer may deploy).
    pub rollback: Option<i64>,
}

pub struct LogRow {
    pub time: String,
    pub source: String,
    pub message: String,
}

/// A one-off task (or release phase) on the app page (issue 21).
pub struct TaskRow {
    pub id: u64,
    pub name: String,
    pub kind: String,
    pub command: String,
    pub state: String,
    pub exit: String,
    pub node: String,
    pub created: String,
}

/// A cron entry on the app page, with its last and next runs.
pub struct CronRow {
    pub id: u64,
    pub schedule: String,
    pub command: String,
    pub last: String,
    pub next: String,
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    layout: Layout,
    app: AppRow,
    command: String,
    detected: String,
    processes: Vec<ProcessRow>,
    instances: Vec<InstanceRow>,
    events: Vec<EventRow>,
    logs: Vec<LogRow>,
    /// The newest tasks first (at most 20), and the cron entries.
    tasks: Vec<TaskRow>,
    crons: Vec<CronRow>,
    can_write: bool,
    /// The charts, drawn on the server (`web::charts`).
    charts: String,
    /// The chart window (`1h`, `1d`, ...).
    window: String,
    windows: Vec<WindowLink>,
}

struct WindowLink {
    name: &'static str,
    current: bool,
}

/// The app a page names (`/apps/{name}?space=ORG/SPACE`) among those the session reaches, with
/// the `ORG/SPACE` label of every space; or the error page to answer.
async fn page_app(
    ctx: &AppCtx,
    s: &Session,
    req: &HttpRequest,
    name: &str,
) -> Result<(AppRecord, HashMap<String, String>), HttpResponse> {
    let not_found = || {
        error_page(
            StatusCode::NOT_FOUND,
            "App not found",
            &format!("There is no app named {name:?} that you can see."),
        )
    };
    // Names are unique per space: `?space=ORG/SPACE` picks one when several spaces in reach
    // have an app of this name.
    let wanted = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "space")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    let (apps, spaces) = match async {
        Ok::<_, crate::store::StoreError>((
            ctx.store.apps_named(name).await?,
            space_labels(ctx).await?,
        ))
    }
    .await
    {
        Ok(v) => v,
        Err(e) => return Err(internal(e)),
    };
    let mut apps: Vec<_> = apps
        .into_iter()
        .filter(|a| s.principal.can_see(a))
        .filter(|a| wanted.is_none() || spaces.get(&a.space_id) == wanted.as_ref())
        .collect();
    match apps.len() {
        0 => Err(not_found()),
        1 => Ok((apps.remove(0), spaces)),
        _ => Err(error_page(
            StatusCode::CONFLICT,
            "Which app?",
            &format!(
                "There is an app named {name:?} in each of {}: open it from the list of apps.",
                apps.iter()
                    .filter_map(|a| spaces.get(&a.space_id).cloned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The chart window a page asks for (`?window=1h`), an hour by default.
fn chart_window(req: &HttpRequest) -> (i64, String) {
    let w = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "window")
        .map(|(_, v)| v.into_owned())
        .filter(|w| crate::timeseries::parse_window(w).is_some())
        .unwrap_or_else(|| "1h".into());
    (crate::timeseries::parse_window(&w).unwrap_or(3600), w)
}

/// `GET /apps/{name}/charts`: the app page's charts alone, for its live refresh.
pub async fn charts(
    ctx: web::Data<AppCtx>,
    req: HttpRequest,
    name: web::Path<String>,
) -> HttpResponse {
    let s = session_or_login!(ctx, req);
    let (app, _) = match page_app(&ctx, &s, &req, &name).await {
        Ok(v) => v,
        Err(page) => return page,
    };
    let (secs, _) = chart_window(&req);
    match crate::timeseries::window(&ctx, &app.id, secs).await {
        Ok(m) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .body(super::charts::render(&m, secs, Utc::now())),
        Err(e) => internal(e),
    }
}

pub async fn app(
    ctx: web::Data<AppCtx>,
    req: HttpRequest,
    name: web::Path<String>,
) -> HttpResponse {
    let s = session_or_login!(ctx, req);
    let (app, spaces) = match page_app(&ctx, &s, &req, &name).await {
        Ok(v) => v,
        Err(page) => return page,
    };
    let (window_secs, window) = chart_window(&req);
    let space_label = spaces.get(&app.space_id).cloned().unwrap_or_default();
    let can_write = s
        .principal
        .role_in(&app.space_id)
        .is_some_and(|r| r >= Role::Developer);
    let result: Result<AppPage, crate::store::StoreError> = async {
        let now = Utc::now();
        let nodes: HashMap<String, String> = ctx
            .store
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| (n.name, n.address))
            .collect();
        let usage = crate::control::usage::app_usage(&ctx, &app.id).await?;
        let rev = match app.current_revision {
            Some(n) => ctx.store.revision(&app.id, n).await?,
            None => None,
        };
        let instances = ctx
            .store
            .app_instances(&app.id)
            .await?
            .into_iter()
            .map(|i| InstanceRow {
                cpu: usage
                    .get(&i.id)
                    .map_or("-".into(), |u| format!("{:.1}%", u.cpu_percent)),
                memory: usage.get(&i.id).map_or("-".into(), |u| {
                    format!(
                        "{}M / {}M",
                        u.memory_bytes / (1 << 20),
                        u.memory_limit_bytes / (1 << 20)
                    )
                }),
                process: i.process_type.clone(),
                index: i.index,
                state: i.state.as_str().to_string(),
                address: match (i.host_port, i.node_name.as_ref().and_then(|n| nodes.get(n))) {
                    (Some(p), Some(a)) => format!("{a}:{p}"),
                    _ => "-".into(),
                },
                node: i.node_name.unwrap_or_else(|| "-".into()),
                restarts: i.restarts,
                since: ago(i.since, now),
                last_exit: if i.state == InstanceState::Running && !i.ready {
                    "not ready: out of the routes until its readiness check passes".into()
                } else {
                    i.last_exit.or(i.placement_error).unwrap_or_default()
                },
            })
            .collect::<Vec<_>>();
        let running_of = |t: &str| {
            instances
                .iter()
                .filter(|i| i.process == t && i.state == "running")
                .count() as u32
        };
        // The app's own count is web's: workers have their own row in the processes table.
        let running = running_of("web");
        let processes = crate::control::desired::DesiredState::of_app(ctx.store.as_ref(), &app)
            .await?
            .map(|d| d.infos())
            .unwrap_or_default()
            .into_iter()
            .map(|p| ProcessRow {
                running: running_of(&p.process_type),
                desired: if app.state == paas_common::api::AppState::Stopped {
                    0
                } else {
                    p.instances
                },
                process_type: p.process_type,
                command: p.command,
                memory_mb: p.memory_mb,
                health_check: p.health_check,
            })
            .collect();
        let mut timeline: Vec<(DateTime<Utc>, EventRow)> = ctx
            .store
            .recent_events(&app.id, 30)
            .await?
            .into_iter()
            .map(|(t, e)| {
                let row = EventRow {
                    time: ago(t, now),
                    at: t.to_rfc3339(),
                    actor: e.actor,
                    kind: e.kind,
                    message: e.message,
                    rollback: None,
                };
                (t, row)
            })
            .collect();
        for r in ctx.store.app_revisions(&app.id).await? {
            let current = app.current_revision == Some(r.number);
            let rollback =
                (can_write && !current && ctx.blobs.exists(&r.droplet)).then_some(r.number);
            timeline.push((
                r.created_at,
                EventRow {
                    time: ago(r.created_at, now),
                    at: r.created_at.to_rfc3339(),
                    actor: if r.created_by.is_empty() {
                        "-".into()
                    } else {
                        r.created_by
                    },
                    kind: format!(
                        "revision {}{}",
                        r.number,
                        if current { " (current)" } else { "" }
                    ),
                    message: r.description,
                    rollback,
                },
            ));
        }
        timeline.sort_by_key(|e| std::cmp::Reverse(e.0));
        let events: Vec<EventRow> = timeline.into_iter().map(|(_, e)| e).take(50).collect();
        let logs = ctx
            .store
            .recent_logs(&app.id, 100)
            .await?
            .into_iter()
            .map(|l| LogRow {
                time: l.timestamp.format("%H:%M:%S%.3f").to_string(),
                source: l.source,
                message: l.message,
            })
            .collect();
        let mut tasks = ctx.store.app_tasks(&app.id).await?;
        tasks.sort_by_key(|t| std::cmp::Reverse(t.sequence));
        let tasks = tasks
            .into_iter()
            .take(20)
            .map(|t| TaskRow {
                id: t.sequence,
                name: t.name,
                kind: t.kind,
                command: t.command,
                state: t.state.as_str().to_string(),
                exit: match (t.exit_code, t.reason) {
                    (Some(c), Some(r)) => format!("{c}: {r}"),
                    (Some(c), None) => c.to_string(),
                    (None, Some(r)) => r,
                    (None, None) => String::new(),
                },
                node: t.node_name.unwrap_or_default(),
                created: ago(t.created_at, now),
            })
            .collect();
        let crons = ctx
            .store
            .app_crons(&app.id)
            .await?
            .into_iter()
            .map(|c| CronRow {
                id: c.sequence,
                schedule: c.schedule,
                command: c.command,
                last: c.last_run_at.map_or("never".into(), |t| ago(t, now)),
                next: c.next_run_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            })
            .collect();
        Ok(AppPage {
            layout: Layout::of(&s, "apps"),
            tasks,
            crons,
            command: rev.as_ref().map(|r| r.command.clone()).unwrap_or_default(),
            detected: rev.as_ref().map(|r| r.detected.clone()).unwrap_or_default(),
            app: AppRow {
                name: app.name.clone(),
                space: space_label.clone(),
                problems: Vec::new(),
                state: app.state.as_str().to_string(),
                running,
                desired: app.desired_instances,
                revision: app.current_revision.map_or("-".into(), |r| r.to_string()),
                url: ctx.app_url(&app),
                updated: ago(app.updated_at, now),
                memory_mb: app.memory_mb,
            },
            processes,
            instances,
            events,
            logs,
            can_write,
            charts: super::charts::render(
                &crate::timeseries::window(&ctx, &app.id, window_secs).await?,
                window_secs,
                now,
            ),
            windows: ["15m", "1h", "6h", "1d", "7d"]
                .into_iter()
                .map(|w| WindowLink {
                    name: w,
                    current: w == window,
                })
                .collect(),
            window: window.clone(),
        })
    }
    .await;
    match result {
        Ok(page) => html(page),
        Err(e) => internal(e),
    }
}

pub struct NodeRow {
    pub name: String,
    pub zone: String,
    pub state: String,
    pub address: String,
    pub labels: String,
    pub memory_used_mb: u64,
    pub memory_mb: u64,
    pub memory_pct: u64,
    pub disk_used_mb: u64,
    pub disk_mb: u64,
    pub instances: u32,
    pub slots: u32,
    /// Placed here and not yet running.
    pub starting: u32,
    pub heartbeat: String,
    /// Lost, or silent for longer than the controller's grace: what it runs is unknown.
    pub silent: bool,
    pub placed: Vec<PlacedRow>,
}

/// One instance on a node, as the nodes page lists it.
pub struct PlacedRow {
    pub app: String,
    /// `ORG/SPACE`, for the link to the app page.
    pub space: String,
    pub process: String,
    pub index: u32,
    pub state: String,
    pub retiring: bool,
}

#[derive(Template)]
#[template(path = "nodes.html")]
struct NodesPage {
    layout: Layout,
    nodes: Vec<NodeRow>,
    grace_secs: u64,
    /// Operators: each node's health over the window, as SVG charts (empty for others).
    health: String,
    window: String,
    windows: Vec<WindowLink>,
}

/// Whether a node has stopped reporting: the controller marked it lost, or its last heartbeat
/// is older than the grace after which it will.
fn silent(state: &str, last_heartbeat: DateTime<Utc>, now: DateTime<Utc>, grace: u64) -> bool {
    state == "lost" || (now - last_heartbeat).num_seconds() > grace as i64
}

pub async fn nodes(ctx: web::Data<AppCtx>, req: HttpRequest) -> HttpResponse {
    let s = session_or_login!(ctx, req);
    let grace = ctx.settings.node_grace_secs;
    let result: Result<Vec<NodeRow>, crate::store::StoreError> = async {
        let now = Utc::now();
        let used = crate::control::convergence::node_reservations(ctx.store.as_ref()).await?;
        let spaces = space_labels(&ctx).await?;
        // Only apps the viewer may see are named: the page is open to every user.
        let apps: HashMap<String, AppRecord> = ctx
            .store
            .list_apps()
            .await?
            .into_iter()
            .filter(|a| s.principal.can_see(a))
            .map(|a| (a.id.clone(), a))
            .collect();
        let retiring = ctx.store.retiring_instances().await?;
        let mut placed: HashMap<String, Vec<PlacedRow>> = HashMap::new();
        for i in ctx.store.list_instances().await? {
            let (Some(node), Some(app)) = (i.node_name.clone(), apps.get(&i.app_id)) else {
                continue;
            };
            placed.entry(node).or_default().push(PlacedRow {
                app: app.name.clone(),
                space: spaces.get(&app.space_id).cloned().unwrap_or_default(),
                process: i.process_type.clone(),
                index: i.index,
                state: i.state.as_str().to_string(),
                retiring: retiring.contains(&i.id),
            });
        }
        for list in placed.values_mut() {
            list.sort_by(|a, b| (&a.app, &a.process, a.index).cmp(&(&b.app, &b.process, b.index)));
        }
        Ok(ctx
            .store
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| {
                let v = used.get(&n.name);
                let mem = v.map_or(0, |v| v.used_memory_mb);
                NodeRow {
                    memory_pct: (mem * 100)
                        .checked_div(n.capacity.memory_mb)
                        .unwrap_or(0)
                        .min(100),
                    silent: silent(&n.state, n.last_heartbeat, now, grace),
                    placed: placed.remove(&n.name).unwrap_or_default(),
                    labels: n
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    zone: n.zone,
                    state: n.state,
                    address: n.address,
                    memory_used_mb: mem,
                    memory_mb: n.capacity.memory_mb,
                    disk_used_mb: v.map_or(0, |v| v.used_disk_mb),
                    disk_mb: n.capacity.disk_mb,
                    instances: v.map_or(0, |v| v.used_slots),
                    starting: v.map_or(0, |v| v.starting),
                    slots: n.capacity.instance_slots,
                    heartbeat: ago(n.last_heartbeat, now),
                    name: n.name,
                }
            })
            .collect())
    }
    .await;
    // Node health over time is the operators' business, as draining is.
    let (secs, window) = chart_window(&req);
    let (secs, window) = if secs > crate::timeseries::NODE_RETENTION_SECS {
        (3600, "1h".to_string())
    } else {
        (secs, window)
    };
    let health = if s.principal.is_operator() {
        match crate::timeseries::node_window(&ctx, secs).await {
            Ok(m) => super::charts::render_nodes(&m, secs, Utc::now()),
            Err(e) => return internal(e),
        }
    } else {
        String::new()
    };
    match result {
        Ok(nodes) => html(NodesPage {
            layout: Layout::of(&s, "nodes"),
            nodes,
            grace_secs: grace,
            health,
            windows: ["1h", "6h", "1d"]
                .into_iter()
                .map(|w| WindowLink {
                    name: w,
                    current: w == window,
                })
                .collect(),
            window,
        }),
        Err(e) => internal(e),
    }
}

pub struct MemberRow {
    pub username: String,
    pub role: String,
}

pub struct SpaceMembers {
    /// `ORG/SPACE`.
    pub label: String,
    pub members: Vec<MemberRow>,
    pub quota: Vec<QuotaRow>,
}

#[derive(Template)]
#[template(path = "spaces.html")]
struct SpacesPage {
    layout: Layout,
    spaces: Vec<SpaceMembers>,
    operators: Vec<String>,
}

/// `GET /spaces`: who holds which role in each space the viewer administers (a space admin, a
/// manager of its org, an operator). Others see no space here: membership is the admins' business.
pub async fn spaces(ctx: web::Data<AppCtx>, req: HttpRequest) -> HttpResponse {
    let s = session_or_login!(ctx, req);
    let result: Result<(Vec<SpaceMembers>, Vec<String>), crate::store::StoreError> = async {
        let mut spaces: Vec<SpaceMembers> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut all = ctx.store.list_spaces().await?;
        all.sort_by(|a, b| (&a.org, &a.name).cmp(&(&b.org, &b.name)));
        for sp in all {
            if s.principal.manages_org(&sp.org) || s.principal.role_in(&sp.id) == Some(Role::Admin)
            {
                index.insert(sp.id.clone(), spaces.len());
                spaces.push(SpaceMembers {
                    label: format!("{}/{}", sp.org, sp.name),
                    members: Vec::new(),
                    quota: quota_rows(&ctx, &sp.id).await?,
                });
            }
        }
        let mut operators = Vec::new();
        if !spaces.is_empty() {
            for u in ctx.store.list_users().await? {
                if u.operator {
                    operators.push(u.username.clone());
                }
                for (space_id, role) in ctx.store.user_roles(&u.id).await? {
                    if let Some(&i) = index.get(&space_id) {
                        spaces[i].members.push(MemberRow {
                            username: u.username.clone(),
                            role,
                        });
                    }
                }
            }
        }
        for sp in &mut spaces {
            sp.members.sort_by(|a, b| a.username.cmp(&b.username));
        }
        operators.sort();
        Ok((spaces, operators))
    }
    .await;
    match result {
        Ok((spaces, operators)) => html(SpacesPage {
            layout: Layout::of(&s, "spaces"),
            spaces,
            operators,
        }),
        Err(e) => internal(e),
    }
}

pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub app: String,
    pub expires: String,
    pub last_used: String,
    pub revoked: bool,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenRow>,
}

pub async fn tokens(ctx: web::Data<AppCtx>, req: HttpRequest) -> HttpResponse {
    let s = session_or_login!(ctx, req);
    match ctx.store.list_tokens(&s.principal.user_id).await {
        Ok(list) => {
            let tokens = list
                .into_iter()
                .map(|t| TokenRow {
                    id: t.id,
                    name: t.name,
                    scope: t.scope,
                    app: t.app_name.unwrap_or_else(|| "-".into()),
                    expires: t.expires_at.format("%Y-%m-%d").to_string(),
                    last_used: t
                        .last_used_at
                        .map_or("never".into(), |d| d.format("%Y-%m-%d %H:%M").to_string()),
                    revoked: t.revoked_at.is_some(),
                })
                .collect();
            html(TokensPage {
                layout: Layout::of(&s, "tokens"),
                tokens,
            })
        }
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_render_without_details() {
        let res = error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no page at /x.",
        );
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn app_page_lists_each_process_type() {
        let row = |t: &str, cmd: &str, running, desired, check: &str| ProcessRow {
            process_type: t.into(),
            command: cmd.into(),
            running,
            desired,
            memory_mb: 128,
            health_check: check.into(),
        };
        let page = AppPage {
            layout: Layout {
                user: "admin".into(),
                operator: true,
                csrf: "c".into(),
                section: "apps",
            },
            app: AppRow {
                name: "shop".into(),
                space: "default/default".into(),
                problems: Vec::new(),
                state: "started".into(),
                running: 2,
                desired: 2,
                revision: "3".into(),
                url: "http://shop.localhost".into(),
                updated: "1m".into(),
                memory_mb: 128,
            },
            command: "python3 app.py".into(),
            detected: "python".into(),
            tasks: vec![TaskRow {
                id: 4,
                name: "migrate".into(),
                kind: "release".into(),
                command: "python3 manage.py migrate".into(),
                state: "FAILED".into(),
                exit: "7: exited with code 7".into(),
                node: "n1".into(),
                created: "2m".into(),
            }],
            crons: vec![CronRow {
                id: 1,
                schedule: "*/5 * * * *".into(),
                command: "python3 report.py".into(),
                last: "never".into(),
                next: "2026-12-06 16:00:00 UTC".into(),
            }],
            processes: vec![
                row("web", "python3 app.py", 2, 2, "http /health"),
                row("worker", "python3 <work>.py", 0, 1, "process"),
            ],
            instances: Vec::new(),
            events: Vec::new(),
            logs: Vec::new(),
            can_write: false,
            charts: String::new(),
            window: "1h".into(),
            windows: Vec::new(),
        };
        let html = page.render().unwrap();
        assert!(
            html.contains(r#"<tr data-process="worker"><td>worker</td><td><code>python3 &lt;work&gt;.py</code></td><td>0/1 running</td><td>128M</td><td>process</td></tr>"#),
            "{html}"
        );
        assert!(html.contains("2/2 running</td><td>128M</td><td>http /health</td>"));
        // Tasks with their state and exit; the release phase says what it is; cron's next run.
        assert!(
            html.contains("migrate <span class=\"muted\">(release phase)</span>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"state state-failed\">FAILED</span></td><td>7: exited with code 7</td>"), "{html}");
        assert!(html.contains("<td><code>*/5 * * * *</code></td><td><code>python3 report.py</code></td><td>never</td><td>2026-12-06 16:00:00 UTC</td>"), "{html}");
    }

    #[test]
    fn a_node_is_silent_once_lost_or_past_its_grace() {
        let now = Utc::now();
        let at = |s| now - chrono::Duration::seconds(s);
        assert!(!silent("ready", at(3), now, 10));
        assert!(silent("ready", at(11), now, 10));
        assert!(silent("lost", at(1), now, 10));
    }

    #[test]
    fn ages() {
        let now = Utc::now();
        assert_eq!(ago(now - chrono::Duration::seconds(5), now), "5s");
        assert_eq!(ago(now - chrono::Duration::minutes(5), now), "5m");
        assert_eq!(ago(now - chrono::Duration::hours(3), now), "3h");
        assert_eq!(ago(now - chrono::Duration::days(2), now), "2d");
    }
}
