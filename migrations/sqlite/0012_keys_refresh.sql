-- Issue 7: signing keys with ids (rotation), refresh tokens, and events listed per actor.

-- JWT signing keys. The newest key without `retired_at` signs; a retired key still verifies
-- login tokens for one token lifetime, and CI tokens it signed while they live. `secret` is
-- sealed with the secret-env key (never stored in plain).
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT
);

-- The key that signed each CI token, so rotation keeps it until the token expires.
ALTER TABLE api_tokens ADD COLUMN kid TEXT;

-- Refresh tokens: opaque, stored as sha256, single use. Each refresh marks the token used and
-- issues its successor in the same family; presenting a used token again revokes the family
-- (someone replayed a stolen token).
CREATE TABLE refresh_tokens (
    id         TEXT PRIMARY KEY,
    family     TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT,
    revoked_at TEXT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);

-- The platform-wide event list (`GET /v1/events`) filters by actor.
CREATE INDEX events_actor ON events(actor, id);
