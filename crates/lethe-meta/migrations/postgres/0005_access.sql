-- PostgreSQL twin of sqlite/0005_access.sql.
ALTER TABLE projects ADD COLUMN secret_sha256 TEXT;
CREATE TABLE project_members (
    project_id BIGINT NOT NULL REFERENCES projects(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL CHECK (role IN ('member', 'viewer')),
    PRIMARY KEY (project_id, user_id)
);
