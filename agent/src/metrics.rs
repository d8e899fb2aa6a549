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
    r.register(
        "lines_read",
        "App log lines read from containers",
        v(&c.lines_read),
    );
    r.register(
        "lines_rate_limited",
        "App log lines dropped by the per-app rate limit",
        v(&c.lines_rate_limited),
    );
    r.register(
        "lines_shipped",
        "Log lines the controller accepted",
        v(&c.lines_shipped),
    );
    r.register(
        "lines_buffer_dropped",
        "Log lines dropped because the controller was unreachable too long",
        v(&c.lines_buffer_dropped),
    );
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &r) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

/// Binds `listen` and serves on a thread for the life of the process.
pub async fn serve(listen: &str, counters: Arc<ShipCounters>) -> Result<(), MetricsError> {
    let err = |cause: String| MetricsError {
        listen: listen.to_string(),
        cause,
    };
    let server = tiny_http::Server::http(listen).map_err(|e| err(e.to_string()))?;
    let addr = server
        .server_addr()
        .to_ip()
        .map(|a| a.to_string())
        .unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_log_counters() {
        let c = ShipCounters::default();
        c.lines_shipped.store(42, Ordering::Relaxed);
        c.lines_rate_limited.store(7, Ordering::Relaxed);
        let text = render(&c);
        assert!(
            text.contains("paas_agent_log_lines_shipped_total 42"),
            "{text}"
        );
        assert!(
            text.contains("paas_agent_log_lines_rate_limited_total 7"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let c = Arc::new(ShipCounters::default());
        c.lines_read.store(5, Ordering::Relaxed);
        // Find a free port, then serve on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        serve(&format!("127.0.0.1:{port}"), c).await.unwrap();
        let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("paas_agent_log_lines_read_total 5"), "{body}");
        let missing = reqwest::get(format!("http://127.0.0.1:{port}/other"))
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    }
}
