-- The nodes of a cluster that are alive, whether or not they write for a shard: how many
-- share the shards, so that a node writing for more than its share hands one to a node
-- with fewer (a node that joined, or came back). Each node renews its row while it runs
-- and removes it when it stops; a row past `seen_until` is a node gone. No value of any
-- event.
CREATE TABLE cluster_nodes (
    node TEXT PRIMARY KEY,
    seen_until INTEGER NOT NULL
);
