-- PostgreSQL twin of sqlite/0007_project_time_zone.sql.
ALTER TABLE projects ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
