-- Issue 18: spaces own their names, as in Cloud Foundry. An app name is unique within its space
-- (two spaces may each have a `web`); its default route's host label is stored on the app
-- (`host`, NULL for `--no-route`) and unique platform-wide, since a host routes to one app. What
-- was keyed by the app's name (log lines, drains, app-scoped tokens, an app's events) is keyed by
-- its id, so a name in one space never reaches another space's data.
--
-- The old platform-wide UNIQUE on `apps.name` can only go by rebuilding the table, which needs
-- foreign keys off (else dropping the old table cascades to every revision, instance and
-- route), and sqlx runs every SQLite migration in a transaction, where that pragma is a no-op:
-- `store::sqlite::rebuild_apps` does it right after the migrations, once.

ALTER TABLE apps ADD COLUMN host TEXT;
UPDATE apps SET host = lower(name);
CREATE UNIQUE INDEX apps_host ON apps (host) WHERE host IS NOT NULL;
CREATE UNIQUE INDEX apps_space_name ON apps (space_id, name);

-- Log lines and drains: by app id. Lines of apps that no longer exist cannot be read any more.
DELETE FROM log_entries WHERE app_name NOT IN (SELECT name FROM apps);
UPDATE log_entries SET app_name = (SELECT id FROM apps WHERE apps.name = log_entries.app_name);
ALTER TABLE log_entries RENAME COLUMN app_name TO app_id;

DELETE FROM log_drains WHERE app_name NOT IN (SELECT name FROM apps);
UPDATE log_drains SET app_name = (SELECT id FROM apps WHERE apps.name = log_drains.app_name);
ALTER TABLE log_drains RENAME COLUMN app_name TO app_id;

-- Events keep the name they were written with (history outlives the app) and gain the id that
-- decides who may read them. Events of an app deleted before this keep no id: operators only.
ALTER TABLE events ADD COLUMN app_id TEXT;
UPDATE events SET app_id = (SELECT id FROM apps WHERE apps.name = events.app_name)
WHERE app_name IS NOT NULL;
CREATE INDEX events_app_id ON events (app_id, id);

-- An app-scoped token names its app by id; one whose app is gone reaches nothing.
ALTER TABLE api_tokens ADD COLUMN app_id TEXT;
UPDATE api_tokens SET app_id = coalesce(
    (SELECT id FROM apps WHERE apps.name = api_tokens.app_name), '')
WHERE app_name IS NOT NULL;
