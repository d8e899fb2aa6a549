-- Builds in flight (issue 20): a push waits on one controller while the node that stages may talk
-- to another, so the build, its assignment and its result live in the shared store, not in the
-- memory of the controller that placed it. A row goes when its push has read the result (or
-- gave up); rows older than a day are swept (a controller died while its push waited).
CREATE TABLE stagings (
    build_id   TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    app_id     TEXT NOT NULL,
    source     TEXT NOT NULL,
    assignment TEXT NOT NULL,
    result     TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX stagings_node ON stagings (node);
