-- Autoscaling (issue 23): one policy per app, read by the leader's autoscaler every few seconds.
-- The last scale-out and scale-in times are the cooldowns' clocks; `last_decision` is the reason
-- of the last change (also an `app.autoscale` event). Rules left NULL propose nothing.
CREATE TABLE app_autoscale (
    app_id                  TEXT PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    min_instances           INTEGER NOT NULL,
    max_instances           INTEGER NOT NULL,
    cpu_percent             INTEGER,
    rps_per_instance        INTEGER,
    p99_ms                  INTEGER,
    scale_out_cooldown_secs INTEGER NOT NULL,
    scale_in_cooldown_secs  INTEGER NOT NULL,
    last_scale_out_at       TEXT,
    last_scale_in_at        TEXT,
    last_decision           TEXT,
    updated_by              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
