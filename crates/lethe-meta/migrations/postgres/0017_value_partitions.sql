-- An erasure rewrites (VACUUM FULL) what it deleted rows from, so that no dead tuple keeps an
-- erased user's values; a rewrite locks its table, and every flush commit writes identities
-- and profiles. Each table is therefore split into 16 hash partitions: an erasure rewrites
-- only the partitions that held its users' rows (`purge_pending` names them, written in the
-- transaction that deleted the rows), about a 16th of the table per user instead of all of
-- it, so the commits it holds up wait a 16th as long. (More partitions cost every flush
-- commit more: with 64, an upsert of 256 identities took twice as long as unpartitioned.)
CREATE TABLE purge_pending (relation TEXT PRIMARY KEY);

ALTER TABLE identities RENAME TO identities_whole;
ALTER TABLE identities_whole RENAME CONSTRAINT identities_pkey TO identities_whole_pkey;
DROP INDEX identities_by_amplitude_id;
ALTER TABLE profiles RENAME TO profiles_whole;
ALTER TABLE profiles_whole RENAME CONSTRAINT profiles_pkey TO profiles_whole_pkey;

CREATE TABLE identities (
    project_id BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'device')),
    external_id TEXT NOT NULL,
    amplitude_id BIGINT NOT NULL,
    PRIMARY KEY (project_id, kind, external_id)
) PARTITION BY HASH (external_id);
CREATE TABLE profiles (
    project_id BIGINT NOT NULL,
    amplitude_id BIGINT NOT NULL,
    user_id TEXT,
    properties TEXT NOT NULL,
    as_of BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, amplitude_id)
) PARTITION BY HASH (amplitude_id);
DO $$
BEGIN
    FOR r IN 0..15 LOOP
        EXECUTE format('CREATE TABLE identities_p%s PARTITION OF identities
                        FOR VALUES WITH (MODULUS 16, REMAINDER %s)', r, r);
        EXECUTE format('CREATE TABLE profiles_p%s PARTITION OF profiles
                        FOR VALUES WITH (MODULUS 16, REMAINDER %s)', r, r);
    END LOOP;
END $$;
CREATE INDEX identities_by_amplitude_id ON identities (project_id, amplitude_id);
-- As in 0001: no planner statistics (copies of values) for the columns that hold values. Set
-- on the parents after their partitions exist, which the setting reaches.
ALTER TABLE identities ALTER COLUMN external_id SET STATISTICS 0;
ALTER TABLE profiles ALTER COLUMN user_id SET STATISTICS 0;
ALTER TABLE profiles ALTER COLUMN properties SET STATISTICS 0;

INSERT INTO identities (project_id, kind, external_id, amplitude_id)
    SELECT project_id, kind, external_id, amplitude_id FROM identities_whole;
INSERT INTO profiles (project_id, amplitude_id, user_id, properties, as_of)
    SELECT project_id, amplitude_id, user_id, properties, as_of FROM profiles_whole;
-- Dropping the old tables removes their files, dead tuples included.
DROP TABLE identities_whole;
DROP TABLE profiles_whole;
