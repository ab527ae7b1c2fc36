-- Twin of postgres/0017_value_partitions.sql. SQLite has no partitions, and needs none: its
-- secure_delete zeroes a deleted row's bytes in the file, and an erasure's purge truncates the
-- WAL. `purge_pending` names what an erasure deleted rows from until that purge has run.
CREATE TABLE purge_pending (relation TEXT PRIMARY KEY);
