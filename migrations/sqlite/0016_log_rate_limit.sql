-- The developer's log rate limit per instance in bytes per second (`log-rate-limit-per-second`,
-- `paas scale -l`); -1, Cloud Foundry's spelling, is the platform default (each node's
-- PAAS_LOG_RATE_LIMIT_*). Not NULL, so an update can keep the value with COALESCE and still
-- reset it to the default.
ALTER TABLE apps ADD COLUMN log_rate_limit INTEGER NOT NULL DEFAULT -1;
