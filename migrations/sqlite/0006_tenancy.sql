-- Tenancy (orgs, spaces, roles per space, operators) and API tokens for CI.

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE spaces (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (org_id, name)
);

-- role: admin | developer | viewer
CREATE TABLE space_roles (
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    space_id TEXT NOT NULL REFERENCES spaces(id) ON DELETE CASCADE,
    role     TEXT NOT NULL,
    PRIMARY KEY (user_id, space_id)
);

-- Operators manage nodes, buildpacks, users and spaces platform-wide.
ALTER TABLE users ADD COLUMN operator INTEGER NOT NULL DEFAULT 0;

-- Apps created before tenancy belong to the default space (filled in at start-up).
ALTER TABLE apps ADD COLUMN space_id TEXT REFERENCES spaces(id);

-- CI tokens: the token itself is shown once; only its sha256 is kept.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,            -- the JWT's jti
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL,               -- read | deploy | admin
    app_name     TEXT,                        -- restricts the token to one app
    token_hash   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);
