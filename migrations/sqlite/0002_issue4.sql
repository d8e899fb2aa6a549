-- Issue 4: rolling replacement, drain and per-app lifecycle settings.

-- How many indices of an app may be replaced at once in a rolling deploy or restart.
ALTER TABLE apps ADD COLUMN max_in_flight INTEGER NOT NULL DEFAULT 1;
-- The app's health check as JSON (paas_common::agent::HealthSettings); NULL means the defaults.
ALTER TABLE apps ADD COLUMN health TEXT;
-- Labels a node must carry to run the app (JSON map).
ALTER TABLE apps ADD COLUMN placement_labels TEXT NOT NULL DEFAULT '{}';

-- Set on a row that must be replaced (restart, restart-instance, memory change): convergence
-- starts a new row for its index elsewhere or alongside, and removes this one once that runs.
-- The row's app, revision and node never change.
ALTER TABLE instances ADD COLUMN retire INTEGER NOT NULL DEFAULT 0;
