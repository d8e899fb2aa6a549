-- Issue 21: `paas ssh` can be turned off per app (`disable-ssh`) and per space
-- (`disallow-space-ssh`), as in Cloud Foundry. A missing row is allowed. No foreign key to apps
-- (SQLite's apps table is rebuilt by `rebuild_apps`); a new app has a new id, so a row left by a
-- deleted app is never read.
CREATE TABLE app_ssh (
    app_id     TEXT PRIMARY KEY,
    enabled    BOOLEAN NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE space_ssh (
    space_id   TEXT PRIMARY KEY REFERENCES spaces(id) ON DELETE CASCADE,
    allowed    BOOLEAN NOT NULL,
    updated_at TEXT NOT NULL
);
