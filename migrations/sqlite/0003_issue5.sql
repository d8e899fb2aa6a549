-- Issue 5: routes as data. A route maps a host and an optional path prefix ('' = the whole host)
-- to an app. The default route NAME.<apps domain> is implicit and never stored.
CREATE TABLE routes (
    host       TEXT NOT NULL,
    path       TEXT NOT NULL DEFAULT '',
    app_id     TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (host, path)
);
CREATE INDEX routes_app ON routes (app_id);
