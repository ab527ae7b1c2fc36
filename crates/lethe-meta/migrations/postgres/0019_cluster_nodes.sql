-- PostgreSQL twin of sqlite/0019_cluster_nodes.sql.
CREATE TABLE cluster_nodes (
    node TEXT PRIMARY KEY,
    seen_until BIGINT NOT NULL
);
