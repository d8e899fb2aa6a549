-- Issue 26: a space's quota (Cloud Foundry space quotas). A missing row or a NULL limit is
-- unlimited. Enforced by the deploy layer (`deploy::quota`) on push, scale and start.
CREATE TABLE space_quotas (
    space_id   TEXT PRIMARY KEY REFERENCES spaces(id) ON DELETE CASCADE,
    memory_mb  BIGINT,
    instances  BIGINT,
    apps       BIGINT,
    routes     BIGINT,
    updated_at TEXT NOT NULL
);
