-- Retention policies: per project, events older than `days` (by server upload time, whole
-- UTC days), of the listed event types or of all (`event_types` NULL: a JSON array of
-- names otherwise), become an ordinary deletion task once a day.
CREATE TABLE retention_policies (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    days INTEGER NOT NULL CHECK (days >= 1),
    event_types TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    checked_day TEXT,
    last_task_id INTEGER REFERENCES deletion_tasks(id)
);
