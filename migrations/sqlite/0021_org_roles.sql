-- Issue 18: roles per organization, as Cloud Foundry's org manager and org auditor. A manager
-- acts as admin in every space of the org (spaces made later too) and may make spaces there and
-- give roles in them; an auditor reads every space of the org.
CREATE TABLE org_roles (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    org_id  TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, org_id)
);
