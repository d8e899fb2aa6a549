-- `paas apply` (issue 25): the source digest each droplet was staged from (the sorted list of the
-- pushed files' paths, contents and executable bits, `paas_common::apply::source_digest`), so
-- applying a file again pushes an app only when its folder changed. Keyed by droplet, not by
-- package: an upload that leaves out files the server holds is the same zip for different
-- folders, while a droplet is made from one source tree; revisions that reuse a droplet (env
-- changes, rollbacks) keep their digest.
CREATE TABLE droplet_trees (
    droplet TEXT PRIMARY KEY,
    tree    TEXT NOT NULL
);
