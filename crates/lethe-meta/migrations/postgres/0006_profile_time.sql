-- PostgreSQL twin of sqlite/0006_profile_time.sql.
ALTER TABLE profiles ADD COLUMN as_of BIGINT NOT NULL DEFAULT 0;
