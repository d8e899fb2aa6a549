-- Canary and blue-green deployments (issue 23). A row per push that asked for one: while its
-- state is `active` or `paused` the app runs the old revision's instances beside the current
-- (new) revision's and the router splits requests between them by the current step's weight.
-- `strategy` is the JSON of paas-common's `DeployStrategy` (steps, step wait, thresholds, grace).
-- `step_started_at` is NULL until every new instance is routed: a step's window starts then.
-- A rollback or a cancel sets `apps.current_revision` back to `old_revision` in the same write.
CREATE TABLE deployments (
    id              TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    strategy        TEXT NOT NULL,
    old_revision    INTEGER NOT NULL,
    new_revision    INTEGER NOT NULL,
    step            INTEGER NOT NULL DEFAULT 0,
    step_started_at TEXT,
    state           TEXT NOT NULL,
    reason          TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX deployments_app ON deployments (app_id, created_at);
