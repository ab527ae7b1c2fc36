-- The IANA time zone a project's charts count days in (Amplitude's project time zone).
ALTER TABLE projects ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
