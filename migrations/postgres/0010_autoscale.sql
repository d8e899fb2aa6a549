-- Autoscaling (issue 23): one policy per app, read by the leader's autoscaler every few seconds.
-- The last scale-out and scale-in times are the cooldowns' clocks; `last_decision` is the reason
-- of the last change (also an `app.autoscale` event). Rules left NULL propose nothing.
CREATE TABLE app_autoscale (
    app_id                  TEXT PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    min_instances           BIGINT NOT NULL,
    max_instances           BIGINT NOT NULL,
    cpu_percent             BIGINT,
    rps_per_instance        BIGINT,
    p99_ms                  BIGINT,
    scale_out_cooldown_secs BIGINT NOT NULL,
    scale_in_cooldown_secs  BIGINT NOT NULL,
    last_scale_out_at       TIMESTAMPTZ,
    last_scale_in_at        TIMESTAMPTZ,
    last_decision           TEXT,
    updated_by              TEXT NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL
);
