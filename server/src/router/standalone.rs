//! `paas-server router`: the router alone, for scale-out. It serves every Host on its listener
//! with the same listener and proxy as the controller's, follows the controller's route table by long-polling
//! `GET /v1/router/table?after=VERSION` (join token as bearer), and keeps serving the last table it
//! had while the controller is unreachable. `PAAS_CONTROLLER` may list several controllers
//! (comma-separated): the router stays with the one that answers and moves on to the next when it
//! stops answering. A version from one controller never equals another's (each starts its count
//! at its start time), so the first poll after a switch returns the new controller's whole table. The table is also saved to
//! `$PAAS_DATA_DIR/router-table.json` (temp + rename), so a router restarted during a controller
//! outage serves the last known routes too. RTR lines go to the controller in batches
//! (`POST /v1/router/logs`); while the controller is down they are dropped (counted).

use anyhow::Context;
use paas_common::api::LogLine;
use paas_common::route::{RouterLogLine, RouterLogs, RouterTable};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::access_log::{self, Sink};
use super::{RouteTable, Router};
use crate::config::Settings;

/// Longer than the controller's 25 s hold, so a quiet long-poll is not mistaken for an outage.
const POLL_TIMEOUT: Duration = Duration::from_secs(35);

/// A controller that accepts no connection within this is skipped for the next one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

struct Controller {
    http: reqwest::Client,
    /// Base URLs in the configured order; `current` indexes the one that answered last.
    bases: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
    token: String,
}

impl Controller {
    fn new(list: &str, token: String) -> anyhow::Result<Self> {
        let bases: Vec<String> = list
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        anyhow::ensure!(!bases.is_empty(), "PAAS_CONTROLLER names no controller");
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build()?,
            bases,
            current: Default::default(),
            token,
        })
    }

    fn base(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    /// The table from the current controller or, if it fails, from the next ones in turn; the
    /// first that answers becomes current. Only when none answers is this an error.
    async fn table(&self, after: Option<u64>) -> anyhow::Result<RouterTable> {
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut last = None;
        for k in 0..self.bases.len() {
            let i = (start + k) % self.bases.len();
            let base = &self.bases[i];
            match self.table_from(base, after).await {
                Ok(t) => {
                    if i != start % self.bases.len() {
                        tracing::info!(controller = %base, "following another controller");
                        self.current.store(i, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(t);
                }
                Err(e) => {
                    tracing::debug!(controller = %base, error = %e, "controller did not answer");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no controller")))
    }

    async fn table_from(&self, base: &str, after: Option<u64>) -> anyhow::Result<RouterTable> {
        let mut rb = self
            .http
            .get(format!("{base}/v1/router/table"))
            .bearer_auth(&self.token)
            .timeout(POLL_TIMEOUT);
        if let Some(v) = after {
            rb = rb.query(&[("after", v)]);
        }
        let res = rb.send().await?;
        let status = res.status();
        if !status.is_success() {
            anyhow::bail!(
                "controller answered {status}: {}",
                res.text().await.unwrap_or_default()
            );
        }
        Ok(res.json().await?)
    }
}

#[async_trait::async_trait]
impl Sink for Arc<Controller> {
    async fn write(&self, lines: Vec<(String, LogLine)>) -> Result<(), String> {
        let body = RouterLogs {
            lines: lines
                .into_iter()
                .map(|(app, line)| RouterLogLine { app, line })
                .collect(),
        };
        let res = self
            .http
            .post(format!("{}/v1/router/logs", self.base()))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("controller answered {}", res.status()));
        }
        Ok(())
    }
}

fn save(path: &Path, table: &RouterTable) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(table)?)?;
    std::fs::rename(&tmp, path)
}

/// Follows the controller's table forever; errors only delay the next attempt.
async fn follow(
    table: Arc<RouteTable>,
    ctl: Arc<Controller>,
    saved: PathBuf,
    mut version: Option<u64>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match ctl.table(version).await {
            Ok(t) => {
                backoff = Duration::from_millis(200);
                if Some(t.version) != version {
                    tracing::info!(
                        version = t.version,
                        routes = t.routes.len(),
                        "route table updated from the controller"
                    );
                    version = Some(t.version);
                    if let Err(e) = save(&saved, &t) {
                        tracing::warn!(error = %e, "saving the route table failed");
                    }
                    table.replace(t);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach any controller; serving the last route table");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let token = match (&settings.join_token, &settings.join_token_file) {
        (Some(t), _) if !t.expose().is_empty() => t.expose().trim().to_string(),
        (_, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?.trim().to_string()
        }
        _ => anyhow::bail!("the router needs PAAS_JOIN_TOKEN or PAAS_JOIN_TOKEN_FILE (the controller's join token)"),
    };
    let ctl = Arc::new(Controller::new(&settings.controller, token)?);
    let table = Arc::new(RouteTable::default());
    let saved = settings.data_dir.join("router-table.json");
    let mut version = None;
    if let Ok(bytes) = std::fs::read(&saved) {
        match serde_json::from_slice::<RouterTable>(&bytes) {
            Ok(t) => {
                tracing::info!(
                    version = t.version,
                    "serving the saved route table until the controller answers"
                );
                version = Some(t.version);
                table.replace(t);
            }
            Err(e) => tracing::warn!(error = %e, "ignoring an unreadable saved route table"),
        }
    }

    let listener = TcpListener::bind(&settings.listen)
        .with_context(|| format!("binding {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let tmp = settings.data_dir.join("listen-addr.tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, settings.data_dir.join("listen-addr"))?;

    tokio::spawn(follow(table.clone(), ctl.clone(), saved, version));
    let access_log = tokio::spawn(access_log::run(table.clone(), ctl));
    let tls = super::tls::bind(&settings, table.clone())?;
    if let Some((_, certs)) = &tls {
        tokio::spawn(certs.clone().watch());
    }
    let front = Arc::new(super::server::Front {
        router: Arc::new(
            Router::new(table.clone(), &settings).with_https_port(
                tls.as_ref()
                    .and_then(|(l, _)| l.local_addr().ok())
                    .map(|a| a.port()),
            ),
        ),
        api: None,
        settings: settings.clone(),
    });
    let mut front = super::server::start(front, listener, tls)?;
    tracing::info!(%addr, "paas router listening");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let why = tokio::select! {
        why = front.died() => anyhow::bail!("listener stopped: {why:?}"),
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
    };
    // As the controller's listener: refuse new connections, let requests in flight finish, then
    // send their RTR lines.
    let grace = std::time::Duration::from_secs(settings.router_drain_secs);
    tracing::info!(
        ?grace,
        "{why}; stopping: no new connections, finishing requests in flight"
    );
    crate::startup::second_signal_exits(term);
    front.shutdown(grace).await;
    table.access_log.close();
    let _ = tokio::time::timeout(crate::startup::FLUSH_TIMEOUT, access_log).await;
    tracing::info!("stopped");
    Ok(())
}
