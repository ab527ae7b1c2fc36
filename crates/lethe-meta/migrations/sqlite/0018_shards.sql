-- A cluster's projects fall into shards, each with a writer of its own: the one writer's
-- lease becomes shard 0's, and the WAL checkpoint, one per WAL, becomes one per shard (a
-- single node's is shard 0's). Neither holds a value of any event.
CREATE TABLE shard_writers (
    shard INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    address TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    lease_until INTEGER NOT NULL
);
INSERT INTO shard_writers (shard, node, address, epoch, lease_until)
    SELECT 0, node, address, epoch, lease_until FROM cluster_writer;
DROP TABLE cluster_writer;
CREATE TABLE wal_checkpoints (
    shard INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL
);
INSERT INTO wal_checkpoints (shard, seq) SELECT 0, seq FROM wal_checkpoint;
DROP TABLE wal_checkpoint;
