-- Issue 4 (readiness): whether a running instance passes its readiness check, as its node last
-- reported. Only running and ready instances are routed; an unready one keeps running. Rows from
-- before readiness checks existed were routed whenever running: ready.
ALTER TABLE instances ADD COLUMN ready INTEGER NOT NULL DEFAULT 1;
