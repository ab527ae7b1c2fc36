-- User Privacy API: erasure requests gather into one job per project and day. A job is
-- `staging` while ids can be added or removed, `submitted` once it is on the deletion queue
-- (task_id), `done` when its task completed. Requests keep the amplitude_id and the
-- requester only.
CREATE TABLE privacy_jobs (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    day TEXT NOT NULL,
    run_at INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('staging', 'submitted', 'done')),
    task_id INTEGER REFERENCES deletion_tasks(id),
    created_at INTEGER NOT NULL,
    done_at INTEGER
);
CREATE INDEX privacy_jobs_by_day ON privacy_jobs (project_id, day);
CREATE INDEX privacy_jobs_by_status ON privacy_jobs (status, run_at);
CREATE TABLE privacy_requests (
    job_id INTEGER NOT NULL REFERENCES privacy_jobs(id),
    amplitude_id INTEGER NOT NULL,
    requester TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, amplitude_id)
);

-- Suppressed end users: ingestion drops their events. Only a SHA-256 of the user_id is kept.
CREATE TABLE suppressions (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    user_id_sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (project_id, user_id_sha256)
);

-- Erasing a user deletes its identity rows by amplitude_id.
CREATE INDEX identities_by_amplitude_id ON identities (project_id, amplitude_id);
