-- Project secret keys are kept as SHA-256 digests only: a secret is shown once, when the
-- project is created or the secret rotated. Secrets stored in plain text before this
-- migration are digested (and blanked) when the database is opened.
ALTER TABLE projects ADD COLUMN secret_sha256 TEXT;

-- Which projects a member or viewer may reach, and in which role; administrators reach every
-- project. Members and viewers of existing databases keep reaching every project.
CREATE TABLE project_members (
    project_id INTEGER NOT NULL REFERENCES projects(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    role TEXT NOT NULL CHECK (role IN ('member', 'viewer')),
    PRIMARY KEY (project_id, user_id)
);
INSERT INTO project_members (project_id, user_id, role)
    SELECT p.id, u.id, u.role FROM projects p, users u WHERE u.role IN ('member', 'viewer');
