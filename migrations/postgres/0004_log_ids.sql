-- Log line ids shared by every controller (issue 20): one counter, reserved a batch at a time
-- (`UPDATE ... RETURNING`), starting after every line already stored.
CREATE TABLE log_ids (
    one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    next_id BIGINT NOT NULL
);
INSERT INTO log_ids (one, next_id)
SELECT TRUE, COALESCE(MAX(id + lines), 1) FROM log_entries;
