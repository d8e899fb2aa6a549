-- One-off tasks (issue 21, Cloud Foundry v3 tasks): a command run once on an app's droplet with
-- the env it was given (sealed secrets, as revisions keep them). `sequence` is the per-app id
-- users see. `node_name` is set once and never again (at most once: a placed task is never
-- placed a second time). `kind` is `task` or `release` (a push's release phase).
CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    sequence        BIGINT NOT NULL,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    command         TEXT NOT NULL,
    droplet         TEXT NOT NULL,
    revision        BIGINT NOT NULL,
    env             TEXT NOT NULL,
    memory_mb       BIGINT NOT NULL,
    disk_mb         BIGINT NOT NULL,
    state           TEXT NOT NULL,
    node_name       TEXT,
    exit_code       BIGINT,
    reason          TEXT,
    created_by      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (app_id, sequence)
);
CREATE INDEX tasks_state ON tasks (state);
