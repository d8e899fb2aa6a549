-- A row may hold a run of lines (issue 5): consecutive lines of one app with the same source and
-- stream and consecutive ids, as the router's RTR lines arrive, are stored as one row. `lines` is
-- how many (ids id .. id + lines - 1); a row of more than one line has `ts` = its newest line's
-- time and each line in `message` as "<ns> <text>", one per text line. One B-tree insert per run
-- instead of one per line: storing an access-log line per request cost about a sixth of the
-- router's CPU. Every existing row is one line.
ALTER TABLE log_entries ADD COLUMN lines INTEGER NOT NULL DEFAULT 1;
