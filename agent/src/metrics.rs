//! The agent's Prometheus text at `GET /metrics` on `PAAS_METRICS_LISTEN` (off by default; the
//! bound address is logged). A tiny blocking server on its own thread: a scrape every few seconds
//! does not deserve an async stack.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::logs::ShipCounters;

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {listen}: {cause}")]
pub struct MetricsError {
    listen: String,
    cause: String,
}

/// The exposition of the log counters.
pub fn render(c: &ShipCounters) -> String {
    let mut r = Registry::with_prefix("paas_agent_log");
    let v = |a: &std::sync::atomic::AtomicU64| ConstCounter::new(a.load(Ordering::Relaxed));
    r.register("lines_read", "App log lines read from containers", v(&c.lines_read));
    r.register("lines_rate_limited", "App log lines dropped by the per-app rate limit", v(&c.lines_rate_limited));
    r.register("lines_shipped", "Log lines the controller accepted", v(&c.lines_shipped));
    r.register("lines_buffer_dropped", "Log lines dropped because the controller was unreachable too long", v(&c.lines_buffer_dropped));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &r) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

/// Binds `listen` and serves on a thread for the life of the process.
pub async fn serve(listen: &str, counters: Arc<ShipCounters>) -> Result<(), MetricsError> {
    let err = |cause: String| MetricsError { listen: listen.to_string(), cause };
    let server = tiny_http::Server::http(listen).map_err(|e| err(e.to_string()))?;
    let addr = server.server_addr().to_ip().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(addr = %addr, "agent metrics listening");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let resp = if req.url() == "/metrics" {
                    tiny_http::Response::from_string(render(&counters))
                } else {
                    tiny_http::Response::from_string("not found").with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        })
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}
