-- Issue 3 (processes): process types besides `web`.

-- Start command per process type of a droplet (Procfile or the buildpack's bin/release), keyed by
-- the droplet so a rollback or env change that reuses the droplet keeps its process types.
CREATE TABLE droplet_processes (
    droplet    TEXT PRIMARY KEY,
    processes  TEXT NOT NULL DEFAULT '{}'
);

-- Settings of an app's non-web process types (web keeps its settings on `apps`). A type without a
-- row runs with the defaults: one instance, the app's memory and disk, a process health check.
CREATE TABLE app_processes (
    app_id       TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    process_type TEXT NOT NULL,
    instances    INTEGER NOT NULL,
    memory_mb    INTEGER,
    command      TEXT,
    health       TEXT,
    PRIMARY KEY (app_id, process_type)
);

-- Buildpacks an operator added (after the built-ins in detection order, by position). `blob` is
-- the sha256 of a tar holding bin/detect, bin/compile and bin/release in the blobstore.
CREATE TABLE buildpacks (
    name       TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    blob       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
