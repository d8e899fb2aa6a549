-- Sidecars (issue 25): the JSON list of paas-common's `Sidecar` (name, process_types, command,
-- memory_mb) a revision runs beside its processes. Part of the revision, so a rollback brings
-- back the sidecars of the revision it returns to and a running instance's never change.
ALTER TABLE revisions ADD COLUMN sidecars TEXT NOT NULL DEFAULT '[]';
