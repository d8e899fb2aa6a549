//! Log drains: per app, the controller forwards every line the hub publishes to an external sink,
//! `syslog://host:port` (RFC 5424 over TCP, octet-counted frames as in RFC 6587) or `http://...`
//! / `https://...` (POST of JSON lines, one [`LogLine`] per line with its `app`; TLS by rustls
//! with the public roots plus the operator's `drain_ca_file`). The drain list lives in the
//! store; one task per drain subscribes to its app's live feed. A sink that is down is retried
//! with backoff; lines the sink could not take while the feed ran ahead are counted and logged.

use crate::error::error_chain;
use paas_common::api::LogLine;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::state::AppCtx;

/// How often the drain list is re-read; a new drain starts within this.
const RELOAD: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
const HTTP_BATCH: usize = 500;

/// A parsed drain URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainTarget {
    Syslog { addr: String },
    Http { url: String },
}

/// Validates a drain URL at the API edge.
pub fn parse_drain(url: &str) -> Result<DrainTarget, String> {
    if let Some(rest) = url.strip_prefix("syslog://") {
        let addr = rest.trim_end_matches('/');
        let ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(format!("a syslog drain is syslog://host:port, not {url:?}"));
        }
        return Ok(DrainTarget::Syslog {
            addr: addr.to_string(),
        });
    }
    for scheme in ["http://", "https://"] {
        if url.starts_with(scheme) && url.len() > scheme.len() {
            return Ok(DrainTarget::Http {
                url: url.to_string(),
            });
        }
    }
    Err(format!(
        "a drain URL is syslog://host:port or http(s)://host[:port]/path, not {url:?}"
    ))
}

/// One RFC 5424 message: facility user, severity info for stdout and error for stderr; the
/// source goes in PROCID as Cloud Foundry does (`[APP/web/0]`).
pub fn syslog_frame(app: &str, l: &LogLine) -> Vec<u8> {
    let pri = if l.stream == "stderr" { 8 + 3 } else { 8 + 6 };
    let ts = l
        .timestamp
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // APP-NAME holds no spaces (RFC 5424): a display name goes as its route host label.
    let app = if app.contains(' ') {
        std::borrow::Cow::Owned(paas_common::domain::host_label(app))
    } else {
        std::borrow::Cow::Borrowed(app)
    };
    let msg = format!("<{pri}>1 {ts} paas {app} [{}] - - {}", l.source, l.message);
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

/// The HTTP(S) client every drain shares: public roots plus the operator's extra CA, if any.
fn http_client(ca_file: Option<&std::path::Path>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    if let Some(path) = ca_file {
        match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string()))
        {
            Ok(cert) => builder = builder.add_root_certificate(cert),
            // Drains to public sinks still work; the operator sees why the private one fails.
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the drain CA file")
            }
        }
    }
    builder.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot build the drain HTTP client; using the default");
        reqwest::Client::new()
    })
}

pub async fn run(ctx: Arc<AppCtx>) {
    let http = http_client(ctx.settings.drain_ca_file.as_deref());
    let mut running: HashMap<(String, String), JoinHandle<()>> = HashMap::new();
    loop {
        let listed = async {
            let names: std::collections::HashMap<String, String> = ctx
                .store
                .list_apps()
                .await?
                .into_iter()
                .map(|a| (a.id, a.name))
                .collect();
            Ok::<_, crate::store::StoreError>((ctx.store.list_log_drains().await?, names))
        };
        match listed.await {
            Ok((list, names)) => {
                let want: HashSet<(String, String)> = list.into_iter().collect();
                running.retain(|k, h| {
                    let keep = want.contains(k) && !h.is_finished();
                    if !keep {
                        h.abort();
                    }
                    keep
                });
                for (app, url) in want {
                    if running.contains_key(&(app.clone(), url.clone())) {
                        continue;
                    }
                    let Ok(target) = parse_drain(&url) else {
                        tracing::warn!(app = %app, url = %url, "ignoring an invalid drain");
                        continue;
                    };
                    // Lines are keyed by the app's id; the sink sees its name.
                    let Some(name) = names.get(&app).cloned() else {
                        continue;
                    };
                    let live = ctx.logs.subscribe_local(&app).await;
                    tracing::info!(app = %name, url = %url, "log drain started");
                    let h = tokio::spawn(forward(http.clone(), name, target, live));
                    running.insert((app, url), h);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read log drains"),
        }
        tokio::time::sleep(RELOAD).await;
    }
}

async fn forward(
    http: reqwest::Client,
    app: String,
    target: DrainTarget,
    mut live: broadcast::Receiver<Arc<LogLine>>,
) {
    let mut conn: Option<TcpStream> = None;
    let mut retry = Duration::from_millis(200);
    let mut pending: Vec<Arc<LogLine>> = Vec::new();
    loop {
        if pending.is_empty() {
            match live.recv().await {
                Ok(l) => pending.push(l),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(app = %app, dropped = n, "log drain fell behind; lines skipped");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
            while pending.len() < HTTP_BATCH {
                match live.try_recv() {
                    Ok(l) => pending.push(l),
                    Err(_) => break,
                }
            }
        }
        let result = match &target {
            DrainTarget::Syslog { addr } => send_syslog(&mut conn, addr, &app, &pending).await,
            DrainTarget::Http { url } => send_http(&http, url, &app, &pending).await,
        };
        match result {
            Ok(()) => {
                pending.clear();
                retry = Duration::from_millis(200);
            }
            Err(e) => {
                tracing::warn!(app = %app, error = %e, retry_in_ms = retry.as_millis() as u64, "log drain unreachable");
                conn = None;
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

async fn send_syslog(
    conn: &mut Option<TcpStream>,
    addr: &str,
    app: &str,
    lines: &[Arc<LogLine>],
) -> Result<(), String> {
    if conn.is_none() {
        *conn = Some(TcpStream::connect(addr).await.map_err(|e| e.to_string())?);
    }
    let Some(c) = conn.as_mut() else {
        return Err("not connected".into());
    };
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(&syslog_frame(app, l));
    }
    c.write_all(&buf).await.map_err(|e| e.to_string())?;
    c.flush().await.map_err(|e| e.to_string())
}

async fn send_http(
    http: &reqwest::Client,
    url: &str,
    app: &str,
    lines: &[Arc<LogLine>],
) -> Result<(), String> {
    let mut body = String::new();
    for l in lines {
        let mut v = serde_json::to_value(&**l).map_err(|e| e.to_string())?;
        v["app"] = serde_json::Value::String(app.to_string());
        body.push_str(&v.to_string());
        body.push('\n');
    }
    let resp = http
        .post(url)
        .header("Content-Type", "application/x-ndjson")
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    if !resp.status().is_success() {
        return Err(format!("sink answered {}", resp.status()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_drain_urls() {
        assert_eq!(
            parse_drain("syslog://logs.example:514").unwrap(),
            DrainTarget::Syslog {
                addr: "logs.example:514".into()
            }
        );
        assert!(matches!(
            parse_drain("http://127.0.0.1:9000/in"),
            Ok(DrainTarget::Http { .. })
        ));
        assert!(matches!(
            parse_drain("https://logs.example/in"),
            Ok(DrainTarget::Http { .. })
        ));
        assert!(parse_drain("https://").is_err());
        assert!(parse_drain("syslog://nohost").is_err());
        assert!(parse_drain("syslog://h:0").is_err());
        assert!(parse_drain("ftp://x").is_err());
    }

    #[test]
    fn syslog_frames_are_octet_counted_rfc5424() {
        let l = LogLine {
            timestamp: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            source: "APP/web/0".into(),
            stream: "stderr".into(),
            message: "boom".into(),
            id: 7,
        };
        let f = String::from_utf8(syslog_frame("shop", &l)).unwrap();
        let (len, msg) = f.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert_eq!(
            msg,
            "<11>1 2026-01-02T03:04:05.000000Z paas shop [APP/web/0] - - boom"
        );
        let f = String::from_utf8(syslog_frame("My Shop", &l)).unwrap();
        assert!(f.contains(" paas my-shop [APP/web/0] "), "{f}");
    }
    use chrono::Utc;
}
