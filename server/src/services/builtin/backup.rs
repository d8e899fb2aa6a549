//! PostgreSQL backups and restores of built-in service instances (added below).
