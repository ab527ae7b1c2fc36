-- PostgreSQL twin of sqlite/0004_segment_checksums.sql.
ALTER TABLE segments ADD COLUMN crc32 BIGINT;
