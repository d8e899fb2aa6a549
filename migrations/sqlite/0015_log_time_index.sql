-- Retention by age no longer needs an index on time: lines are stored in arrival order, so the
-- expired ones are a prefix by id, found by reading from the first id (see trim_logs_before). The
-- index cost every inserted and every deleted line a b-tree update at 100k lines/s.
DROP INDEX IF EXISTS log_lines_time;
