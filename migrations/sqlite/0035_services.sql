-- Issue 22, services: the marketplace of service brokers, service instances and their bindings.
-- A broker an operator registers is a row (its password sealed by `secrets`, the broker's name
-- as associated data; `space_id` NULL: every space sees it); built-in brokers are registered in
-- process and have no row. `catalog` is the broker's last `GET /v2/catalog`, as JSON.
CREATE TABLE service_brokers (
    name        TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    username    TEXT NOT NULL,
    password    TEXT NOT NULL,
    space_id    TEXT REFERENCES spaces(id) ON DELETE CASCADE,
    catalog     TEXT,
    created_at  TEXT NOT NULL
);

-- A service instance: `kind` is `managed` (provisioned by `broker`) or `user-provided`
-- (`credentials`, sealed, set by the user). `state` is `create in progress`, `succeeded`,
-- `failed` or `delete in progress`; `operation` is the broker's operation to poll.
CREATE TABLE service_instances (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    space_id         TEXT NOT NULL REFERENCES spaces(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    broker           TEXT,
    service_id       TEXT NOT NULL,
    plan_id          TEXT NOT NULL,
    label            TEXT NOT NULL,
    plan             TEXT NOT NULL,
    tags             TEXT NOT NULL,
    credentials      TEXT,
    syslog_drain_url TEXT,
    dashboard_url    TEXT,
    state            TEXT NOT NULL,
    operation        TEXT,
    description      TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (space_id, name)
);

-- A binding of an app to an instance: the broker's credentials, sealed (the binding id as
-- associated data). An instance with bindings is not deleted (the store refuses).
CREATE TABLE service_bindings (
    id               TEXT PRIMARY KEY,
    app_id           TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    instance_id      TEXT NOT NULL REFERENCES service_instances(id) ON DELETE CASCADE,
    credentials      TEXT NOT NULL,
    syslog_drain_url TEXT,
    created_at       TEXT NOT NULL,
    UNIQUE (app_id, instance_id)
);
CREATE INDEX service_bindings_instance ON service_bindings (instance_id);
