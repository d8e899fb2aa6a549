//! Router counters: plain atomics bumped on the hot path, read by whoever exports them
//! (`/metrics` is issue 6's; [`RouterStats::snapshot`] is the seam).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct RouterStats {
    /// Requests that reached the proxy (app hosts only).
    pub requests: AtomicU64,
    pub responses_2xx: AtomicU64,
    pub responses_3xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    /// Attempts repeated on another instance after a refused connection or a failed idempotent send.
    pub retries: AtomicU64,
    /// Requests that waited for a ready instance (none was in the table on arrival).
    pub waited_for_instance: AtomicU64,
    /// Errors the router itself answered (502/503/504 with `X-Paas-Router-Error`).
    pub router_errors: AtomicU64,
    /// Upgraded connections tunnelled (WebSocket or any other protocol; the metric keeps its
    /// first name).
    pub websockets: AtomicU64,
    /// RTR lines dropped because the access-log queue was full (SQLite slower than traffic).
    pub access_log_dropped: AtomicU64,
}

impl RouterStats {
    pub fn count_status(&self, status: u16) {
        let c = match status {
            200..=299 => &self.responses_2xx,
            300..=399 => &self.responses_3xx,
            400..=499 => &self.responses_4xx,
            _ => &self.responses_5xx,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (name, value) pairs, for an exporter.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("router_requests_total", get(&self.requests)),
            ("router_responses_2xx_total", get(&self.responses_2xx)),
            ("router_responses_3xx_total", get(&self.responses_3xx)),
            ("router_responses_4xx_total", get(&self.responses_4xx)),
            ("router_responses_5xx_total", get(&self.responses_5xx)),
            ("router_retries_total", get(&self.retries)),
            (
                "router_waited_for_instance_total",
                get(&self.waited_for_instance),
            ),
            ("router_errors_total", get(&self.router_errors)),
            ("router_websockets_total", get(&self.websockets)),
            (
                "router_access_log_dropped_total",
                get(&self.access_log_dropped),
            ),
        ]
    }
}
