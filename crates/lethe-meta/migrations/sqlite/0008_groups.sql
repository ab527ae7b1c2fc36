-- Groups (Amplitude's accounts): each group's current properties, and which group-property
-- keys each segment holds (its g_<id> columns), as for event and user properties.
CREATE TABLE group_profiles (
    project_id INTEGER NOT NULL REFERENCES projects(id),
    group_type TEXT NOT NULL,
    group_value TEXT NOT NULL,
    properties TEXT NOT NULL,
    as_of INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, group_type, group_value)
);
ALTER TABLE segments ADD COLUMN group_properties TEXT NOT NULL DEFAULT '[]';
-- The catalog learns a fourth kind: group properties (SQLite rebuilds a table to change a CHECK).
CREATE TABLE catalog_new (
    project_id INTEGER NOT NULL REFERENCES projects(id),
    kind TEXT NOT NULL CHECK (kind IN ('event', 'event_property', 'user_property', 'group_property')),
    id INTEGER NOT NULL,
    name TEXT NOT NULL,
    first_seen INTEGER,
    last_seen INTEGER,
    event_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, kind, id),
    UNIQUE (project_id, kind, name)
);
INSERT INTO catalog_new SELECT project_id, kind, id, name, first_seen, last_seen, event_count FROM catalog;
DROP TABLE catalog;
ALTER TABLE catalog_new RENAME TO catalog;
