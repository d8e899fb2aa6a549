-- ssh session offers relayed through the database (issue 21 with issue 20's several
-- controllers): the controller holding the client's socket writes the offer, the controller the
-- node long-polls hands it over (deleting it, so once), and the node dials back the URL in it.
CREATE TABLE ssh_offers (
    session_id TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    offer      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX ssh_offers_node ON ssh_offers (node);
