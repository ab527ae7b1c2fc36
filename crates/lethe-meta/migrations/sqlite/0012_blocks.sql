-- Each project's block list: event types and property keys that ingestion drops. Names
-- only, as in the catalog; never a value.
CREATE TABLE blocks (
    project_id INTEGER NOT NULL REFERENCES projects(id),
    kind TEXT NOT NULL CHECK (kind IN ('event_type', 'event_property', 'user_property', 'group_property')),
    name TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, kind, name)
);
