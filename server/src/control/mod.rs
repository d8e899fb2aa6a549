//! The control plane: what should run ([`desired`]), where it runs ([`scheduler`]), and the loop
//! that makes the instance rows match ([`convergence`]). Nothing here speaks HTTP; the deploy
//! layer and the API only record intent in the store and wake the loop.

pub mod acme;
pub mod autoscale;
pub mod convergence;
pub mod cron;
pub mod deployments;
pub mod desired;
pub mod lease;
pub mod network;
pub mod nodes;
pub mod scheduler;
pub mod services;
pub mod tasks;
pub mod usage;
