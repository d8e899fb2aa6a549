-- Issue 6 (logs, metrics, events): the columns the log filters need, indexes for retention by
-- age, and the last resource sample of each instance.

ALTER TABLE log_lines ADD COLUMN process TEXT;
ALTER TABLE log_lines ADD COLUMN instance_index INTEGER;
CREATE INDEX log_lines_time ON log_lines(timestamp);
CREATE INDEX log_lines_app_instance ON log_lines(app_name, instance_index, id);

-- JSON of paas_common::api::InstanceUsage, as last reported by the node.
ALTER TABLE instances ADD COLUMN usage TEXT;

-- Per-app log drains (syslog:// or http(s)://), forwarded by the controller.
CREATE TABLE log_drains (
    app_name   TEXT NOT NULL,
    url        TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app_name, url)
);
