//! The paas controller as a library, so integration tests start exactly what `main` starts.

pub mod api;
pub mod archive;
pub mod auth;
pub mod authz;
pub mod blobstore;
pub mod builds;
pub mod config;
pub mod convergence;
pub mod droplets;
pub mod error;
pub mod resources;
pub mod router;
pub mod scheduler;
pub mod staging;
pub mod startup;
pub mod state;
pub mod store;
pub mod web;
pub mod loghub;
pub mod metrics;
pub mod drains;
pub mod events;
pub mod processes;
pub mod secrets;
