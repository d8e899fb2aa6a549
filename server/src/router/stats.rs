//! Router counters, bumped on the hot path and read by whoever exports them (`/metrics`,
//! [`RouterStats::snapshot`]). Each worker thread counts into its own shard, on its own cache
//! line, and readers add the shards up: one counter that every thread bumps is a cache line
//! that moves between cores on every request.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards per counter; worker threads beyond this share.
pub const SHARDS: usize = 16;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes this thread count into shard `i` (the router's worker threads take 1, 2, ...; every
/// other thread shares shard 0).
pub fn use_shard(i: usize) {
    SHARD.with(|s| s.set(i % SHARDS));
}

fn shard() -> usize {
    SHARD.with(Cell::get)
}

/// A value on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line<T>(T);

#[derive(Debug, Default)]
pub struct Counters {
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

#[derive(Debug, Default)]
pub struct RouterStats {
    shards: [Line<Counters>; SHARDS],
}

impl RouterStats {
    /// The counters this thread bumps.
    pub fn here(&self) -> &Counters {
        &self.shards[shard()].0
    }

    pub fn count_status(&self, status: u16) {
        let s = self.here();
        let c = match status {
            200..=299 => &s.responses_2xx,
            300..=399 => &s.responses_3xx,
            400..=499 => &s.responses_4xx,
            _ => &s.responses_5xx,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (name, value) pairs, for an exporter.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let sum = |f: fn(&Counters) -> &AtomicU64| -> u64 {
            self.shards
                .iter()
                .map(|s| f(&s.0).load(Ordering::Relaxed))
                .sum()
        };
        vec![
            ("router_requests_total", sum(|c| &c.requests)),
            ("router_responses_2xx_total", sum(|c| &c.responses_2xx)),
            ("router_responses_3xx_total", sum(|c| &c.responses_3xx)),
            ("router_responses_4xx_total", sum(|c| &c.responses_4xx)),
            ("router_responses_5xx_total", sum(|c| &c.responses_5xx)),
            ("router_retries_total", sum(|c| &c.retries)),
            (
                "router_waited_for_instance_total",
                sum(|c| &c.waited_for_instance),
            ),
            ("router_errors_total", sum(|c| &c.router_errors)),
            ("router_websockets_total", sum(|c| &c.websockets)),
            (
                "router_access_log_dropped_total",
                sum(|c| &c.access_log_dropped),
            ),
        ]
    }
}

/// A count of things in flight (requests to one instance), kept per shard and added up when
/// read: each request raises and lowers it, readers (least-connections, the drain) are rarer.
#[derive(Debug, Default)]
pub struct Gauge([Line<AtomicUsize>; SHARDS]);

impl Gauge {
    /// Raises this thread's shard; returns it, for [`Gauge::dec`].
    pub fn inc(&self) -> usize {
        let s = shard();
        self.0[s].0.fetch_add(1, Ordering::Relaxed);
        s
    }

    pub fn dec(&self, shard: usize) {
        self.0[shard].0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> usize {
        self.0
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0usize, usize::wrapping_add)
    }
}

/// A round-robin position per shard: each thread takes turns over the instances on its own.
#[derive(Debug, Default)]
pub struct Turns([Line<AtomicUsize>; SHARDS]);

impl Turns {
    /// This thread's next turn.
    pub fn next(&self) -> usize {
        self.0[shard()].0.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up() {
        let stats = RouterStats::default();
        let g = Gauge::default();
        let s0 = g.inc();
        stats.here().requests.fetch_add(1, Ordering::Relaxed);
        std::thread::scope(|t| {
            t.spawn(|| {
                use_shard(3);
                stats.here().requests.fetch_add(2, Ordering::Relaxed);
                stats.count_status(204);
                let s = g.inc();
                assert_eq!(s, 3);
                assert_eq!(g.get(), 2);
                g.dec(s);
            });
        });
        let snap: std::collections::HashMap<_, _> = stats.snapshot().into_iter().collect();
        assert_eq!(snap["router_requests_total"], 3);
        assert_eq!(snap["router_responses_2xx_total"], 1);
        assert_eq!(g.get(), 1);
        g.dec(s0);
        assert_eq!(g.get(), 0);
    }
}
