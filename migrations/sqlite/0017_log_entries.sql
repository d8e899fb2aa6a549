-- Log lines, reshaped for 100k lines/s (issue 6). One b-tree per line instead of three: the table
-- is clustered on (app_name, id), the order every read and every retention pass uses, so the
-- separate (app_name, id) index and the rowid table (with AUTOINCREMENT's sqlite_sequence update)
-- are gone. The time is an integer (nanoseconds since the Unix epoch) rather than RFC 3339 text:
-- nothing to format on write or parse on read, and half the bytes. `process` is left out: it is
-- part of `source` and no query read it. Lines moved from the old table keep their time to the
-- millisecond, which is what SQLite's date functions read of it.
CREATE TABLE log_entries (
    app_name       TEXT NOT NULL,
    id             INTEGER NOT NULL,
    ts             INTEGER NOT NULL,
    source         TEXT NOT NULL,
    stream         TEXT NOT NULL,
    message        TEXT NOT NULL,
    instance_index INTEGER,
    PRIMARY KEY (app_name, id)
) WITHOUT ROWID;

INSERT INTO log_entries (app_name, id, ts, source, stream, message, instance_index)
SELECT app_name, id,
       COALESCE(CAST(round((julianday(timestamp) - 2440587.5) * 86400000) AS INTEGER) * 1000000, 0),
       source, stream, message, instance_index
FROM log_lines;

DROP TABLE log_lines;
