//! What the node offers the scheduler: memory, disk and instance slots. Unless the operator sets
//! them (`PAAS_NODE_MEMORY_MB`, `PAAS_NODE_DISK_MB`, `PAAS_NODE_INSTANCE_SLOTS` or the config
//! file's keys), they are read from the machine at startup, so a node is not refused work it has
//! room for (a fixed default made pushes wait on nodes with plenty of memory free) nor offered
//! more than it has.
//!
//! Memory is the engine's `MemTotal` (the machine containers actually run on, also when the
//! engine lives in a VM), else `/proc/meminfo`, less a reserve for the engine, the agent and the
//! system. Disk is the free space of the engine's data root (`DockerRootDir`, where images,
//! container layers and logs go); when that path is not visible from here (an agent in a
//! container, a remote engine), the free space of the agent's data dir is the best guess left.

use crate::config::Settings;
use paas_common::agent::NodeCapacity;
use std::path::{Path, PathBuf};

/// Instance slots when unset: high enough that memory or disk decides for small apps.
pub const DEFAULT_INSTANCE_SLOTS: u32 = 250;
/// Used only when neither the engine nor `/proc/meminfo` says how much memory there is.
const FALLBACK_MEMORY_MB: u64 = 4096;
/// Used only when no free space can be read at all.
const FALLBACK_DISK_MB: u64 = 10240;

/// Where each number came from, for the startup log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub capacity: NodeCapacity,
    pub memory_from: String,
    pub disk_from: String,
}

/// The engine's own view of the machine: `docker info`'s `MemTotal` (bytes) and
/// `DockerRootDir`.
#[derive(Debug, Clone, Default)]
pub struct EngineInfo {
    pub mem_total_bytes: Option<i64>,
    pub root_dir: Option<String>,
}

/// Asks the engine; an engine that does not answer leaves the host's own numbers.
pub async fn engine_info(docker: &bollard::Docker) -> EngineInfo {
    match docker.info().await {
        Ok(info) => EngineInfo {
            mem_total_bytes: info.mem_total,
            root_dir: info.docker_root_dir,
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the engine's info: capacity from the host");
            EngineInfo::default()
        }
    }
}

/// The capacity to advertise: the settings where given, the machine's numbers otherwise.
pub fn detect(settings: &Settings, engine: &EngineInfo) -> Detected {
    let (memory_mb, memory_from) = match settings.memory_mb {
        Some(mb) => (mb, "configured".to_string()),
        None => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
            memory_from(engine.mem_total_bytes, meminfo.as_deref())
        }
    };
    let (disk_mb, disk_from) = match settings.disk_mb {
        Some(mb) => (mb, "configured".to_string()),
        None => disk_free(engine.root_dir.as_deref(), &settings.data_dir),
    };
    Detected {
        capacity: NodeCapacity {
            memory_mb,
            disk_mb,
            instance_slots: settings.instance_slots.unwrap_or(DEFAULT_INSTANCE_SLOTS),
        },
        memory_from,
        disk_from,
    }
}

/// Memory kept back for the engine, the agent and the system: a tenth of the machine, at least
/// 256 MB and at most 2 GB (a big machine needs no more than that for the platform itself).
pub fn reserve_mb(total_mb: u64) -> u64 {
    (total_mb / 10).clamp(256, 2048).min(total_mb / 2)
}

/// Memory to offer and its source, from the engine's `MemTotal` or else `/proc/meminfo`.
pub fn memory_from(engine_bytes: Option<i64>, meminfo: Option<&str>) -> (u64, String) {
    let engine_mb = engine_bytes
        .and_then(|b| u64::try_from(b).ok())
        .map(|b| b / (1024 * 1024))
        .filter(|mb| *mb > 0);
    let (total, from) = match (engine_mb, meminfo.and_then(parse_meminfo_total_mb)) {
        (Some(mb), _) => (mb, "the engine's MemTotal"),
        (None, Some(mb)) => (mb, "/proc/meminfo"),
        (None, None) => return (FALLBACK_MEMORY_MB, "a fixed default".into()),
    };
    let reserve = reserve_mb(total);
    (
        total - reserve,
        format!("{from} ({total} MB) less {reserve} MB for the system"),
    )
}

/// `MemTotal` of `/proc/meminfo`, in MB.
pub fn parse_meminfo_total_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// The free space of the engine's data root, else of the agent's data dir (or the nearest
/// folder above it that exists: the data dir may not be made yet).
fn disk_free(root_dir: Option<&str>, data_dir: &Path) -> (u64, String) {
    for path in disk_candidates(root_dir, data_dir) {
        match fs4::available_space(&path) {
            Ok(bytes) => {
                return (
                    bytes / (1024 * 1024),
                    format!("free space of {}", path.display()),
                )
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "no free space"),
        }
    }
    (FALLBACK_DISK_MB, "a fixed default".into())
}

/// Paths whose free space stands for the node's disk, best first.
pub fn disk_candidates(root_dir: Option<&str>, data_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = root_dir
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .into_iter()
        .collect();
    if let Some(existing) = data_dir.ancestors().find(|p| p.is_dir()) {
        out.push(existing.to_path_buf());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_in_mb() {
        let text = "MemTotal:       8048640 kB\nMemFree:         100 kB\n";
        assert_eq!(parse_meminfo_total_mb(text), Some(7860));
        assert_eq!(parse_meminfo_total_mb("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total_mb("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn engine_memory_wins_over_the_host_and_keeps_a_reserve() {
        let meminfo = "MemTotal:       8048640 kB\n";
        // 24 GiB engine: 2 GB reserve (the cap).
        let (mb, from) = memory_from(Some(24 * 1024 * 1024 * 1024), Some(meminfo));
        assert_eq!(mb, 24 * 1024 - 2048);
        assert!(from.starts_with("the engine's MemTotal"), "{from}");
        // No engine number: /proc/meminfo, a tenth kept back.
        let (mb, from) = memory_from(None, Some(meminfo));
        assert_eq!(mb, 7860 - 786);
        assert!(from.starts_with("/proc/meminfo"), "{from}");
        // An engine answering 0 is no answer.
        assert_eq!(memory_from(Some(0), Some(meminfo)).0, 7860 - 786);
        assert_eq!(memory_from(None, None).0, FALLBACK_MEMORY_MB);
    }

    #[test]
    fn reserve_is_bounded() {
        assert_eq!(reserve_mb(1024), 256);
        assert_eq!(reserve_mb(8000), 800);
        assert_eq!(reserve_mb(64 * 1024), 2048);
        // A tiny machine keeps at least half for apps.
        assert_eq!(reserve_mb(300), 150);
    }

    #[test]
    fn disk_from_the_engine_root_else_the_data_dir() {
        let root = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let not_yet = data.path().join("agent/data");
        let root_s = root.path().to_str().unwrap();
        assert_eq!(
            disk_candidates(Some(root_s), &not_yet),
            [root.path().to_path_buf(), data.path().to_path_buf()]
        );
        // The engine's root is not visible from here (another mount namespace or machine).
        assert_eq!(
            disk_candidates(Some("/no/such/docker/root"), &not_yet),
            [data.path().to_path_buf()]
        );
        assert_eq!(
            disk_candidates(None, data.path()),
            [data.path().to_path_buf()]
        );
        let (mb, from) = disk_free(Some(root_s), &not_yet);
        assert!(mb > 0);
        assert!(from.contains(root_s), "{from}");
    }

    #[test]
    fn settings_override_detection() {
        let mut s = Settings {
            memory_mb: Some(2048),
            disk_mb: Some(4096),
            instance_slots: Some(8),
            ..Settings::default()
        };
        let d = detect(&s, &EngineInfo::default());
        assert_eq!(
            d.capacity,
            NodeCapacity {
                memory_mb: 2048,
                disk_mb: 4096,
                instance_slots: 8
            }
        );
        assert_eq!(d.memory_from, "configured");
        s.memory_mb = None;
        s.disk_mb = None;
        s.instance_slots = None;
        let d = detect(
            &s,
            &EngineInfo {
                mem_total_bytes: Some(4 << 30),
                root_dir: None,
            },
        );
        assert_eq!(d.capacity.memory_mb, 4096 - 409);
        assert_eq!(d.capacity.instance_slots, DEFAULT_INSTANCE_SLOTS);
        assert!(d.capacity.disk_mb > 0);
    }
}
