-- Log lines are written at up to 100k/s; every secondary index costs each insert a b-tree update.
-- Filters by instance scan an app's lines through log_lines_app (app_name, id), and retention keeps
-- those bounded (PAAS_LOG_RETENTION_LINES per app), so this index saved little and cost every line.
DROP INDEX IF EXISTS log_lines_app_instance;
