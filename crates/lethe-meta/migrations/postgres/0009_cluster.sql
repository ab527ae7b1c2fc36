-- PostgreSQL twin of sqlite/0009_cluster.sql.
CREATE TABLE cluster_writer (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    node TEXT NOT NULL,
    address TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
CREATE TABLE cluster_secret (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    token TEXT NOT NULL
);
