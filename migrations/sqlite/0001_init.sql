-- The embedded store's schema. Times are RFC 3339 UTC text; ids are UUID text.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE nodes (
    name           TEXT PRIMARY KEY,
    address        TEXT NOT NULL,
    zone           TEXT NOT NULL,
    labels         TEXT NOT NULL DEFAULT '{}',
    memory_mb      INTEGER NOT NULL,
    disk_mb        INTEGER NOT NULL,
    instance_slots INTEGER NOT NULL,
    token_hash     TEXT NOT NULL,
    state          TEXT NOT NULL,
    last_heartbeat TEXT NOT NULL,
    registered_at  TEXT NOT NULL
);

CREATE TABLE apps (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    state             TEXT NOT NULL,
    desired_instances INTEGER NOT NULL,
    memory_mb         INTEGER NOT NULL,
    disk_mb           INTEGER NOT NULL,
    current_revision  INTEGER,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE revisions (
    app_id      TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    package     TEXT NOT NULL,
    droplet     TEXT NOT NULL,
    command     TEXT NOT NULL,
    detected    TEXT NOT NULL,
    env         TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    PRIMARY KEY (app_id, number)
);

-- One row per instance the controller wants: desired placement (node_name) and the actual state
-- last reported by that node. A new revision or a move to another node is a new row (new id).
CREATE TABLE instances (
    id              TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    revision        INTEGER NOT NULL,
    process_type    TEXT NOT NULL,
    idx             INTEGER NOT NULL,
    node_name       TEXT,
    state           TEXT NOT NULL,
    container_id    TEXT,
    host_port       INTEGER,
    restarts        INTEGER NOT NULL DEFAULT 0,
    last_exit       TEXT,
    placement_error TEXT,
    since           TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX instances_app ON instances(app_id);
CREATE INDEX instances_node ON instances(node_name);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    app_name   TEXT,
    actor      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX events_app ON events(app_name, id);

-- Keyed by app name, not id, so that history outlives a delete and re-push of the same app.
CREATE TABLE log_lines (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    app_name  TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    source    TEXT NOT NULL,
    stream    TEXT NOT NULL,
    message   TEXT NOT NULL
);
CREATE INDEX log_lines_app ON log_lines(app_name, id);
