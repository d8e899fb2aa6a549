-- Issue 18: an app always has a space. Before, a new app was put in its space by the
-- authorization middleware after the handler answered, and an app left without one (a failed
-- first push, a streamed push) was open to every user. Such apps go to the default space, each
-- with an event, and from now on the store refuses an app row without a space.

INSERT INTO orgs (id, name, created_at)
SELECT lower(hex(randomblob(16))), 'default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE NOT EXISTS (SELECT 1 FROM orgs WHERE name = 'default');

INSERT INTO spaces (id, org_id, name, created_at)
SELECT lower(hex(randomblob(16))), o.id, 'default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
FROM orgs o
WHERE o.name = 'default'
  AND NOT EXISTS (SELECT 1 FROM spaces s WHERE s.org_id = o.id AND s.name = 'default');

INSERT INTO events (app_name, actor, kind, message, created_at)
SELECT name, 'system', 'app.space',
       'placed in default/default: the app had no space (issue 18)',
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
FROM apps WHERE space_id IS NULL;

UPDATE apps SET space_id = (
    SELECT s.id FROM spaces s JOIN orgs o ON o.id = s.org_id
    WHERE o.name = 'default' AND s.name = 'default'
) WHERE space_id IS NULL;

-- Drains of deleted apps (kept by name before): they would forward the logs of the next app of
-- that name, whichever space creates it, to the old app's sink.
DELETE FROM log_drains WHERE app_name NOT IN (SELECT name FROM apps);

-- SQLite cannot add NOT NULL to an existing column without rebuilding the table (and every table
-- referencing it); triggers refuse the same rows.
CREATE TRIGGER apps_space_required_insert BEFORE INSERT ON apps
WHEN NEW.space_id IS NULL
BEGIN
    SELECT RAISE(ABORT, 'an app needs a space');
END;

CREATE TRIGGER apps_space_required_update BEFORE UPDATE OF space_id ON apps
WHEN NEW.space_id IS NULL
BEGIN
    SELECT RAISE(ABORT, 'an app needs a space');
END;

-- Base images a Dockerfile may name besides the stack image, by name (operators allow them).
CREATE TABLE base_images (
    name       TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
