-- PostgreSQL twin of sqlite/0012_blocks.sql.
CREATE TABLE blocks (
    project_id BIGINT NOT NULL REFERENCES projects(id),
    kind TEXT NOT NULL CHECK (kind IN ('event_type', 'event_property', 'user_property', 'group_property')),
    name TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, kind, name)
);
