-- Scheduled tasks (issue 21, cron): each run is a task (`tasks.kind` = `cron`) started by the
-- leader. `next_run_at` is when the leader starts the next run; after downtime a past
-- `next_run_at` gives one run at once and the next one from then (at most one missed run made up).
-- `last_task_id` is the newest run: a run still going is not started twice. A removed entry keeps
-- its row (`removed_at`), so its number is never given to another.
CREATE TABLE cron_jobs (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    sequence     BIGINT NOT NULL,
    schedule     TEXT NOT NULL,
    command      TEXT NOT NULL,
    last_run_at  TIMESTAMPTZ,
    last_task_id TEXT,
    next_run_at  TIMESTAMPTZ NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    removed_at   TIMESTAMPTZ,
    UNIQUE (app_id, sequence)
);
