-- Self-service deletion tasks: the durable, FIFO deletion queue. A task keeps an immutable
-- copy of its spec (names only, never values) and the preview counts taken at submission.
CREATE TABLE deletion_tasks (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    preview TEXT NOT NULL,
    progress TEXT,
    result TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX deletion_tasks_by_status ON deletion_tasks (status, id);

-- Append-only audit trail: who did what to which task, with names and counts only.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    task_id INTEGER,
    detail TEXT NOT NULL
);
CREATE TRIGGER audit_is_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_is_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
