-- Issue 3: who made each revision and why, and the push settings the manifest states that the
-- controller stores for later work (health checks: issue 4; routes: issue 5; processes).

ALTER TABLE revisions ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
ALTER TABLE revisions ADD COLUMN description TEXT NOT NULL DEFAULT '';
-- JSON of PushSettings fields the scheduler does not act on yet (buildpacks, routes, health,
-- processes), as last pushed.
ALTER TABLE apps ADD COLUMN push_settings TEXT NOT NULL DEFAULT '{}';
