//! Resource sampling: every few seconds, one non-streaming engine stats call (`one-shot`) per
//! instance container gives memory use and limit and cumulative CPU time; CPU percent is the
//! difference to the previous sample, so one call per container is enough. Disk is the size of the
//! container's writable layer, uptime comes from the container's start time. The heartbeat carries
//! the latest sample of each instance.

use bollard::container::{InspectContainerOptions, StatsOptions};
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use paas_common::agent::InstanceReport;
use paas_common::api::{InstanceState, InstanceUsage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Latest sample per instance id.
pub type UsageMap = Arc<Mutex<HashMap<String, InstanceUsage>>>;

/// Cumulative CPU counters of the previous sample: (container total ns, system total ns, cpus).
type CpuMark = (u64, u64);

/// CPU percent of one core between two samples, as `docker stats` computes it.
pub fn cpu_percent(prev: CpuMark, now: CpuMark, online_cpus: u64) -> f64 {
    let cpu = now.0.saturating_sub(prev.0) as f64;
    let system = now.1.saturating_sub(prev.1) as f64;
    if system <= 0.0 || cpu <= 0.0 {
        return 0.0;
    }
    cpu / system * online_cpus.max(1) as f64 * 100.0
}

/// Samples the running instances in `reports` until the channel closes.
pub async fn run(docker: Docker, reports: watch::Receiver<Vec<InstanceReport>>, usage: UsageMap) {
    let mut marks: HashMap<String, CpuMark> = HashMap::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let running: Vec<(String, String)> = reports
            .borrow()
            .iter()
            .filter(|r| r.state == InstanceState::Running || r.state == InstanceState::Starting)
            .filter_map(|r| Some((r.instance_id.clone(), r.container_id.clone()?)))
            .collect();
        let mut fresh = HashMap::new();
        for (instance, container) in running {
            match sample(&docker, &container, marks.get(&container).copied()).await {
                Ok((u, mark)) => {
                    marks.insert(container, mark);
                    fresh.insert(instance, u);
                }
                Err(e) => {
                    tracing::debug!(container = %container, error = %e, "stats sample failed")
                }
            }
        }
        // Forget containers that are gone.
        let live: std::collections::HashSet<String> = reports
            .borrow()
            .iter()
            .filter_map(|r| r.container_id.clone())
            .collect();
        marks.retain(|c, _| live.contains(c));
        *usage.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
}

async fn sample(
    docker: &Docker,
    container: &str,
    prev: Option<CpuMark>,
) -> Result<(InstanceUsage, CpuMark), bollard::errors::Error> {
    let mut stream = docker.stats(
        container,
        Some(StatsOptions {
            stream: false,
            one_shot: true,
        }),
    );
    let stats = match stream.next().await {
        Some(s) => s?,
        None => {
            return Err(bollard::errors::Error::DockerStreamError {
                error: "no stats".into(),
            })
        }
    };
    let inspect = docker
        .inspect_container(container, Some(InspectContainerOptions { size: true }))
        .await?;
    let mark = (
        stats.cpu_stats.cpu_usage.total_usage,
        stats.cpu_stats.system_cpu_usage.unwrap_or(0),
    );
    let cpus = stats.cpu_stats.online_cpus.unwrap_or(1);
    let started: Option<DateTime<Utc>> = inspect
        .state
        .as_ref()
        .and_then(|s| s.started_at.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let now = Utc::now();
    let usage = InstanceUsage {
        cpu_percent: prev.map_or(0.0, |p| cpu_percent(p, mark, cpus)),
        memory_bytes: stats.memory_stats.usage.unwrap_or(0),
        memory_limit_bytes: stats.memory_stats.limit.unwrap_or(0),
        disk_bytes: inspect.size_rw.unwrap_or(0).max(0) as u64,
        uptime_secs: started.map_or(0, |s| (now - s).num_seconds().max(0) as u64),
        sampled_at: Some(now),
    };
    Ok((usage, mark))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_share_of_one_core() {
        // Half of the system time on a 4-CPU machine is two cores busy.
        assert_eq!(cpu_percent((0, 0), (500, 1000), 4), 200.0);
        assert_eq!(cpu_percent((100, 100), (100, 200), 2), 0.0);
        assert_eq!(cpu_percent((100, 100), (200, 100), 2), 0.0);
    }
}
