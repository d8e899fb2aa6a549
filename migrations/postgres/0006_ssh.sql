-- Issue 21: `paas ssh` can be turned off per app (`disable-ssh`) and per space
-- (`disallow-space-ssh`), as in Cloud Foundry. A missing row is allowed.
CREATE TABLE app_ssh (
    app_id     TEXT PRIMARY KEY,
    enabled    BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE space_ssh (
    space_id   TEXT PRIMARY KEY REFERENCES spaces(id) ON DELETE CASCADE,
    allowed    BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
