-- Issue 22: automatic certificates by ACME HTTP-01. A domain opts in (`acme`); the leader
-- orders a certificate for the hosts mapped under it and stores it like one set through the API
-- (`cert_source` says which). A failure is kept with its backoff, so a restarted controller
-- does not ask the CA again before `acme_retry_at`.
ALTER TABLE domains ADD COLUMN acme INTEGER NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN cert_source TEXT;
ALTER TABLE domains ADD COLUMN acme_error TEXT;
ALTER TABLE domains ADD COLUMN acme_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN acme_retry_at TEXT;

-- Pending HTTP-01 challenges: every router (any controller's, standalone ones through the table
-- follow) answers `GET http://HOST/.well-known/acme-challenge/TOKEN` from these rows.
CREATE TABLE acme_challenges (
    token             TEXT PRIMARY KEY,
    domain            TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
    host              TEXT NOT NULL,
    key_authorization TEXT NOT NULL,
    created_at        TEXT NOT NULL
);

-- The ACME account per directory URL: its credentials (key included) sealed by `secrets`.
CREATE TABLE acme_accounts (
    directory   TEXT PRIMARY KEY,
    credentials TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
