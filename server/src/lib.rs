//! The paas controller as a library, so integration tests start exactly what `main` starts.

pub mod api;
pub mod archive;
pub mod auth;
pub mod authz;
pub mod blobstore;
pub mod builds;
pub mod config;
pub mod control;
pub mod deploy;
pub mod drains;
pub mod droplets;
pub mod error;
pub mod events;
pub mod loghub;
pub mod metrics;
pub mod resources;
pub mod router;
pub mod secrets;
pub mod services;
pub mod ssh;
pub mod staging;
pub mod startup;
pub mod state;
pub mod store;
pub mod timeseries;
pub mod web;
