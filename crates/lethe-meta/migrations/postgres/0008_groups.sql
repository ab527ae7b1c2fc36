-- PostgreSQL twin of sqlite/0008_groups.sql (PostgreSQL changes a CHECK in place).
CREATE TABLE group_profiles (
    project_id BIGINT NOT NULL REFERENCES projects(id),
    group_type TEXT NOT NULL,
    group_value TEXT NOT NULL,
    properties TEXT NOT NULL,
    as_of BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, group_type, group_value)
);
ALTER TABLE segments ADD COLUMN group_properties TEXT NOT NULL DEFAULT '[]';
ALTER TABLE catalog DROP CONSTRAINT catalog_kind_check;
ALTER TABLE catalog ADD CONSTRAINT catalog_kind_check
    CHECK (kind IN ('event', 'event_property', 'user_property', 'group_property'));
ALTER TABLE group_profiles ALTER COLUMN group_type SET STATISTICS 0;
ALTER TABLE group_profiles ALTER COLUMN group_value SET STATISTICS 0;
ALTER TABLE group_profiles ALTER COLUMN properties SET STATISTICS 0;
