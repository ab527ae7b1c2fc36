-- Each audit entry carries the SHA-256 of the previous entry's hash and its own content, so
-- that changing or removing an entry breaks every hash after it (`lethe audit verify`).
-- Entries written before this migration have none: the chain starts after them.
ALTER TABLE audit ADD COLUMN hash TEXT;
