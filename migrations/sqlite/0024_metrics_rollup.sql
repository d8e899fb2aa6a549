-- Issue 26: each app's metrics at 1-minute resolution, kept for a week (the 10 s rows of
-- `app_metrics` are kept for a day). Rolled up from `app_metrics` by the timeseries loop:
-- counts summed, p99 and memory the minute's highest, p50 and CPU the mean.
CREATE TABLE app_metrics_1m (
    app_id       TEXT NOT NULL,
    ts           BIGINT NOT NULL,   -- the minute's start, unix seconds
    requests     BIGINT NOT NULL,
    errors       BIGINT NOT NULL,
    p50_ms       REAL,
    p99_ms       REAL,
    memory_bytes BIGINT NOT NULL,
    cpu_percent  REAL NOT NULL,
    restarts     BIGINT NOT NULL,
    instances    TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (app_id, ts)
);
CREATE INDEX app_metrics_1m_ts ON app_metrics_1m (ts);
