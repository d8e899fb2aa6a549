-- Issue 22: private domains owned by spaces. Only the owning space maps hosts under a domain
-- (`host = name` or a name under it); the shared apps domain is implicit, never a row. The
-- certificate set through the API is kept beside its domain: the chain as PEM (public), the key
-- sealed like secret env (`paas-secret:v1:...`, the domain name as associated data).
CREATE TABLE domains (
    name            TEXT PRIMARY KEY,
    space_id        TEXT NOT NULL REFERENCES spaces(id) ON DELETE CASCADE,
    created_at      TEXT NOT NULL,
    certificate     TEXT,
    private_key     TEXT,
    cert_names      TEXT
);
CREATE INDEX domains_space ON domains (space_id);

-- Per route: plain HTTP answered with a 308 to HTTPS, and the opt-in HSTS header.
ALTER TABLE routes ADD COLUMN https_redirect INTEGER NOT NULL DEFAULT 0;
ALTER TABLE routes ADD COLUMN hsts INTEGER NOT NULL DEFAULT 0;
