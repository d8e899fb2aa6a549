-- Issue 3: who made each revision and why, and the push settings the manifest states that the
-- controller stores for later work (health checks: issue 4; routes: issue 5; processes).

ALTER TABLE revisions ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
ALTER TABLE revisions ADD COLUMN description TEXT NOT NULL DEFAULT '';
-- JSON of PushSettings fields the scheduler does not act on yet (buildpacks, routes, health,
-- processes), as last pushed.
ALTER TABLE apps ADD COLUMN push_settings TEXT NOT NULL DEFAULT '{}';

-- Incremental upload: which files (by sha256, stored in the blobstore) each user has uploaded.
-- A match is per owner, so nobody learns whether another tenant holds a file.
CREATE TABLE file_cache (
    owner      TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (owner, sha256)
);
