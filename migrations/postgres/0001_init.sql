-- The PostgreSQL store's schema (issue 20): the same tables, columns, keys and indexes as the
-- SQLite store after its migration 0022 (per-space app names, app-id keyed logs, org roles, app
-- metrics), in one migration because no PostgreSQL deployment predates it. Types are PostgreSQL's own where the
-- Rust side already has them: times are TIMESTAMPTZ (chrono's DateTime<Utc>), counts BIGINT (i64),
-- flags BOOLEAN; JSON documents stay TEXT, as the store serialises them itself on both backends.
-- Applied by server/src/store/postgres.rs at open; the SQL that reads and writes it is shared with
-- SQLite (server/src/store/sql.rs), so a column added on one side must be added on the other.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    operator      BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE nodes (
    name           TEXT PRIMARY KEY,
    address        TEXT NOT NULL,
    zone           TEXT NOT NULL,
    labels         TEXT NOT NULL DEFAULT '{}',
    memory_mb      BIGINT NOT NULL,
    disk_mb        BIGINT NOT NULL,
    instance_slots BIGINT NOT NULL,
    token_hash     TEXT NOT NULL,
    state          TEXT NOT NULL,
    last_heartbeat TIMESTAMPTZ NOT NULL,
    registered_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE spaces (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE apps (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    state             TEXT NOT NULL,
    desired_instances BIGINT NOT NULL,
    memory_mb         BIGINT NOT NULL,
    disk_mb           BIGINT NOT NULL,
    current_revision  BIGINT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    max_in_flight     BIGINT NOT NULL DEFAULT 1,
    health            TEXT,
    placement_labels  TEXT NOT NULL DEFAULT '{}',
    push_settings     TEXT NOT NULL DEFAULT '{}',
    space_id          TEXT NOT NULL REFERENCES spaces(id),
    log_rate_limit    BIGINT NOT NULL DEFAULT -1,
    -- The default route's host label; unique among the apps that have one.
    host              TEXT
);
CREATE UNIQUE INDEX apps_host ON apps (host) WHERE host IS NOT NULL;
CREATE UNIQUE INDEX apps_space_name ON apps (space_id, name);

CREATE TABLE revisions (
    app_id      TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    number      BIGINT NOT NULL,
    package     TEXT NOT NULL,
    droplet     TEXT NOT NULL,
    command     TEXT NOT NULL,
    detected    TEXT NOT NULL,
    env         TEXT NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (app_id, number)
);

CREATE TABLE instances (
    id              TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    revision        BIGINT NOT NULL,
    process_type    TEXT NOT NULL,
    idx             BIGINT NOT NULL,
    node_name       TEXT,
    state           TEXT NOT NULL,
    container_id    TEXT,
    host_port       BIGINT,
    restarts        BIGINT NOT NULL DEFAULT 0,
    last_exit       TEXT,
    placement_error TEXT,
    since           TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    retire          BOOLEAN NOT NULL DEFAULT FALSE,
    usage           TEXT,
    ready           BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX instances_app ON instances (app_id);
CREATE INDEX instances_node ON instances (node_name);

CREATE TABLE events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The app's name as it was, for display; app_id says whose it is.
    app_name   TEXT,
    actor      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    app_id     TEXT
);
CREATE INDEX events_app ON events (app_name, id);
CREATE INDEX events_app_id ON events (app_id, id);
CREATE INDEX events_actor ON events (actor, id);

CREATE TABLE routes (
    host       TEXT NOT NULL,
    path       TEXT NOT NULL DEFAULT '',
    app_id     TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (host, path)
);
CREATE INDEX routes_app ON routes (app_id);

CREATE TABLE log_drains (
    app_id     TEXT NOT NULL,
    url        TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (app_id, url)
);

CREATE TABLE log_entries (
    app_id         TEXT NOT NULL,
    id             BIGINT NOT NULL,
    -- Unix nanoseconds, as in SQLite: lines are ordered and trimmed by it.
    ts             BIGINT NOT NULL,
    source         TEXT NOT NULL,
    stream         TEXT NOT NULL,
    message        TEXT NOT NULL,
    instance_index BIGINT,
    lines          BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (app_id, id)
);

CREATE TABLE file_cache (
    owner      TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (owner, sha256)
);

CREATE TABLE space_roles (
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    space_id TEXT NOT NULL REFERENCES spaces(id) ON DELETE CASCADE,
    role     TEXT NOT NULL,
    PRIMARY KEY (user_id, space_id)
);

CREATE TABLE org_roles (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    org_id  TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, org_id)
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,            -- the JWT's jti
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL,               -- read | deploy | admin
    app_name     TEXT,                        -- the app's name when the token was made
    token_hash   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    kid          TEXT,
    app_id       TEXT                         -- restricts the token to one app
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE refresh_tokens (
    id         TEXT PRIMARY KEY,
    family     TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    retired_at TIMESTAMPTZ
);

CREATE TABLE droplet_processes (
    droplet   TEXT PRIMARY KEY,
    processes TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE app_processes (
    app_id       TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    process_type TEXT NOT NULL,
    instances    BIGINT NOT NULL,
    memory_mb    BIGINT,
    command      TEXT,
    health       TEXT,
    PRIMARY KEY (app_id, process_type)
);

CREATE TABLE buildpacks (
    name       TEXT PRIMARY KEY,
    position   BIGINT NOT NULL,
    blob       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE base_images (
    name       TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE droplet_images (
    droplet  TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    port     BIGINT NOT NULL,
    -- Numeric uid:gid the instances run as (the image's USER resolved at build; never root).
    run_user TEXT NOT NULL DEFAULT ''
);

CREATE TABLE app_metrics (
    app_id       TEXT NOT NULL,
    ts           BIGINT NOT NULL,   -- the bucket's start, unix seconds
    requests     BIGINT NOT NULL,
    errors       BIGINT NOT NULL,   -- 5xx responses
    p50_ms       DOUBLE PRECISION,
    p99_ms       DOUBLE PRECISION,
    memory_bytes BIGINT NOT NULL,
    cpu_percent  DOUBLE PRECISION NOT NULL,
    restarts     BIGINT NOT NULL,
    instances    TEXT NOT NULL DEFAULT '[]',  -- [[index, memory_bytes, cpu_percent], ...]
    PRIMARY KEY (app_id, ts)
);
CREATE INDEX app_metrics_ts ON app_metrics (ts);

-- The default org and space (SQLite's migration 0019), where apps go when nobody names a space.
INSERT INTO orgs (id, name, created_at)
VALUES (replace(gen_random_uuid()::text, '-', ''), 'default', now());
INSERT INTO spaces (id, org_id, name, created_at)
SELECT replace(gen_random_uuid()::text, '-', ''), id, 'default', now() FROM orgs WHERE name = 'default';

-- Issue 26: a space's quota; a missing row or a NULL limit is unlimited.
CREATE TABLE space_quotas (
    space_id   TEXT PRIMARY KEY REFERENCES spaces(id) ON DELETE CASCADE,
    memory_mb  BIGINT,
    instances  BIGINT,
    apps       BIGINT,
    routes     BIGINT,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Issue 26: each app's metrics at 1-minute resolution, kept for a week.
CREATE TABLE app_metrics_1m (
    app_id       TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    requests     BIGINT NOT NULL,
    errors       BIGINT NOT NULL,
    p50_ms       DOUBLE PRECISION,
    p99_ms       DOUBLE PRECISION,
    memory_bytes BIGINT NOT NULL,
    cpu_percent  DOUBLE PRECISION NOT NULL,
    restarts     BIGINT NOT NULL,
    instances    TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (app_id, ts)
);
CREATE INDEX app_metrics_1m_ts ON app_metrics_1m (ts);

-- Issue 26: each node's health over time, one row per node and minute, kept for a day.
CREATE TABLE node_metrics (
    node_name   TEXT NOT NULL,
    ts          BIGINT NOT NULL,
    state       TEXT NOT NULL,
    lag_secs    DOUBLE PRECISION NOT NULL,
    reserved_mb BIGINT NOT NULL,
    capacity_mb BIGINT NOT NULL,
    instances   BIGINT NOT NULL,
    PRIMARY KEY (node_name, ts)
);
CREATE INDEX node_metrics_ts ON node_metrics (ts);
