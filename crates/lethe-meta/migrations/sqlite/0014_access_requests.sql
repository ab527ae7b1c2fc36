-- Access requests (Amplitude's DSAR API): one user's events in a date range and current
-- profile, written to a file beside the segments (`file`) that is deleted when the download
-- window ends or the user is erased. Ids only: the user_id is looked up when shown.
CREATE TABLE access_requests (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    amplitude_id INTEGER NOT NULL,
    start_day TEXT NOT NULL,
    end_day TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('staging', 'submitted', 'done', 'failed')),
    fail_reason TEXT,
    file TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
