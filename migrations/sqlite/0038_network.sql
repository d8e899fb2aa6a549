-- App-to-app networking (issue 25). An instance's address on its node's instance network, as the
-- node reports it: what NAME.apps.internal resolves to and what network policies name.
ALTER TABLE instances ADD COLUMN ip TEXT;
-- A node's instance subnet (CIDR), for the other nodes' routes and no-NAT rules towards it.
ALTER TABLE nodes ADD COLUMN subnet TEXT;
-- Network policies, deny by default: SOURCE's instances may open connections to DESTINATION's on
-- protocol ports start_port..=end_port. They go with either app.
CREATE TABLE network_policies (
    id                 TEXT PRIMARY KEY,
    source_app_id      TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    destination_app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    protocol           TEXT NOT NULL,
    start_port         INTEGER NOT NULL,
    end_port           INTEGER NOT NULL,
    created_by         TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    UNIQUE (source_app_id, destination_app_id, protocol, start_port, end_port)
);
CREATE INDEX network_policies_destination ON network_policies (destination_app_id);
