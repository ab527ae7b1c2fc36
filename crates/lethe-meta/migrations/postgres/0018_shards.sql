-- PostgreSQL twin of sqlite/0018_shards.sql.
CREATE TABLE shard_writers (
    shard INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    address TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
INSERT INTO shard_writers (shard, node, address, epoch, lease_until)
    SELECT 0, node, address, epoch, lease_until FROM cluster_writer;
DROP TABLE cluster_writer;
CREATE TABLE wal_checkpoints (
    shard INTEGER PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO wal_checkpoints (shard, seq) SELECT 0, seq FROM wal_checkpoint;
DROP TABLE wal_checkpoint;
