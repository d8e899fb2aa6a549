-- Issue 26: each app's metrics over time, for the dashboard's charts and `GET
-- /v1/apps/{name}/metrics`. One row per app per 10 s (requests, 5xx, latency from the router's
-- RTR lines; memory and CPU per instance from the nodes' samples), kept for a day.
CREATE TABLE app_metrics (
    app_id       TEXT NOT NULL,
    ts           INTEGER NOT NULL,   -- the bucket's start, unix seconds
    requests     INTEGER NOT NULL,
    errors       INTEGER NOT NULL,   -- 5xx responses
    p50_ms       REAL,
    p99_ms       REAL,
    memory_bytes INTEGER NOT NULL,
    cpu_percent  REAL NOT NULL,
    restarts     INTEGER NOT NULL,
    instances    TEXT NOT NULL DEFAULT '[]',  -- [[index, memory_bytes, cpu_percent], ...]
    PRIMARY KEY (app_id, ts)
) WITHOUT ROWID;
CREATE INDEX app_metrics_ts ON app_metrics (ts);
