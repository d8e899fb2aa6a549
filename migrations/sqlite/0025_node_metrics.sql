-- Issue 26: each node's health over time for the nodes page, one row per node and minute,
-- recorded by the controller from what heartbeats told it: the longest silence since the last
-- heartbeat seen during the minute, the state, reserved memory against capacity, instances.
-- Trimmed after a day, like the 10 s app metrics.
CREATE TABLE node_metrics (
    node_name   TEXT NOT NULL,
    ts          BIGINT NOT NULL,   -- the minute's start, unix seconds
    state       TEXT NOT NULL,
    lag_secs    REAL NOT NULL,
    reserved_mb BIGINT NOT NULL,
    capacity_mb BIGINT NOT NULL,
    instances   BIGINT NOT NULL,
    PRIMARY KEY (node_name, ts)
);
CREATE INDEX node_metrics_ts ON node_metrics (ts);
