//! paas-agent: the node agent. It registers with the controller, long-polls this node's
//! assignment list and makes the local Docker engine match it (level-triggered: see
//! `paas_common::agent`), running each instance in a sandboxed container, checking its health,
//! restarting it with backoff when it crashes, and shipping its logs and state back.
//!
//! Code map: `config` (settings), `capacity` (what the node offers, read from the machine unless
//! set), `stack` (the base image, built with debootstrap), `runtime`
//! (everything that talks to Docker), `reconcile` (the per-instance state machine), `health`
//! (one check attempt), `backoff` (the crash restart schedule), `crashes` (restart counts kept
//! across agent restarts), `logfile` (the collector reading json-file logs directly across
//! rotation), `logs` (followers with the per-app rate limit, and the shipper), `spool` (the
//! shipper's bounded disk overflow), `stats` (resource samples for the heartbeat), `metrics`
//! (`/metrics`), `client` (the controller API), `staging` (buildpack builds in sandboxed
//! containers), `layers` (a re-push that changed only app code: the droplet from the new source
//! and the previous staging's additions, no container), `dockerfile` (Dockerfile builds whose image is the droplet, and removal of
//! collected droplets' images), `identity` (each instance's identity certificate and key, made
//! and renewed on the node, issue 25), `tasks` (one-off tasks, each
//! started at most once), `dns` (the node's resolver for `*.apps.internal`), `netpolicy`
//! (network policies as iptables rules), `agent` (startup and the loops that tie them together).

pub mod agent;
pub mod backoff;
pub mod capacity;
pub mod client;
pub mod config;
pub mod crashes;
pub mod depcache;
pub mod dns;
pub mod dockerfile;
pub mod filelock;
pub mod health;
pub mod identity;
pub mod layers;
pub mod logfile;
pub mod logs;
pub mod metrics;
pub mod netpolicy;
pub mod reconcile;
pub mod runtime;
pub mod service_image;
pub mod services;
pub mod spool;
pub mod ssh;
pub mod stack;
pub mod staging;
pub mod stats;
pub mod tasks;

pub use config::Settings;

/// A tar of small files (mode 0644), for unit tests that read droplets and app sources.
#[cfg(test)]
pub(crate) fn test_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        b.append_data(&mut h, p, body.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}
