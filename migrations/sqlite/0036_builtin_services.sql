-- The built-in service broker's own state (issue 22), keyed on the platform's service instance
-- and binding ids as any broker keeps its own database: where each PostgreSQL or Redis
-- container runs (node, published port), its administrator password (sealed), and the role or
-- ACL user of each binding. A row with state `deprovisioning` is no longer assigned; it goes
-- once its node stops reporting the container (container and volume removed).
CREATE TABLE builtin_service_instances (
    id              TEXT PRIMARY KEY,
    service         TEXT NOT NULL,
    plan            TEXT NOT NULL,
    memory_mb       INTEGER NOT NULL,
    disk_mb         INTEGER NOT NULL,
    admin_password  TEXT NOT NULL,
    state           TEXT NOT NULL,
    node_name       TEXT,
    placement_error TEXT,
    host_port       INTEGER,
    running         BOOLEAN NOT NULL DEFAULT 0,
    restarts        INTEGER NOT NULL DEFAULT 0,
    last_exit       TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE builtin_service_bindings (
    id          TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES builtin_service_instances(id) ON DELETE CASCADE,
    username    TEXT NOT NULL,
    password    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX builtin_service_bindings_instance ON builtin_service_bindings (instance_id);

-- PostgreSQL backups (pg_dump -Fc of the instance's database, a blob) and restores, run by the
-- agent of the service's node in the service container; `state` pending | done | failed.
CREATE TABLE builtin_service_jobs (
    id          TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES builtin_service_instances(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    backup_id   TEXT,
    blob        TEXT,
    state       TEXT NOT NULL,
    error       TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX builtin_service_jobs_instance ON builtin_service_jobs (instance_id);
