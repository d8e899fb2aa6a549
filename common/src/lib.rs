//! Wire types shared by every paas binary. A field that crosses the network is named once, here:
//! the REST DTOs the CLI and dashboard use (`api`), the controller <-> agent protocol (`agent`),
//! the one error shape every API error takes (`error`), the validated names and sizes that
//! both sides parse the same way (`domain`), and the compact log upload (`logwire`).

pub mod agent;
pub mod api;
pub mod apply;
pub mod deployment;
pub mod domain;
pub mod error;
pub mod logwire;
pub mod manifest;
pub mod network;
pub mod route;
pub mod service;
pub mod ssh;
pub mod stack;

pub use error::{ApiError, ErrorCode};

/// Labels every container the platform owns carries; the agent finds and re-adopts its containers
/// by these, and never touches a container without `LABEL_NODE` equal to its own node name.
pub mod labels {
    pub const MANAGED: &str = "paas.managed";
    pub const APP: &str = "paas.app";
    pub const INSTANCE: &str = "paas.instance";
    pub const INDEX: &str = "paas.index";
    pub const NODE: &str = "paas.node";
    pub const PROCESS: &str = "paas.process";
    pub const DROPLET: &str = "paas.droplet";
    /// On a one-off task's container (its task id, the same as [`INSTANCE`]): instance
    /// reconciliation leaves these alone, the task runner owns them (issue 21).
    pub const TASK: &str = "paas.task";
    /// On images the platform built from an app's Dockerfile (value [`IMAGE_DROPLET`]): the only
    /// images a node ever removes.
    pub const IMAGE: &str = "paas.image";
    pub const IMAGE_DROPLET: &str = "droplet";
    /// On a built-in service's container, network and volume (its service instance id): the
    /// agent's service runner owns these, instance reconciliation never sees them (issue 22).
    pub const SERVICE: &str = "paas.service";
    /// On a sidecar's container (its name), beside [`INSTANCE`] naming its instance: instance
    /// reconciliation lists these apart and removes them with their instance.
    pub const SIDECAR: &str = "paas.sidecar";
    /// On a sidecar's container: the id of the instance container whose network namespace it
    /// shares, so a sidecar left from an earlier run of an instance (or a duplicate) is told apart.
    pub const SIDECAR_OF: &str = "paas.sidecar-of";
}
