-- Leader leases (issue 20): several controllers on one database choose the one that runs the
-- scheduler and convergence. `epoch` grows by one at every change of holder, and every scheduler
-- write checks it in its own transaction (fencing), so a leader that lost the lease cannot write.
-- `expires_at` is milliseconds since the Unix epoch by the database's clock, never a
-- controller's, so controllers with skewed clocks still agree on expiry.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
