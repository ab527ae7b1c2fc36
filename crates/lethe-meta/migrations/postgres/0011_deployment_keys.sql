-- PostgreSQL twin of sqlite/0011_deployment_keys.sql.
CREATE TABLE deployment_keys (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    signing_key TEXT NOT NULL,
    salt TEXT NOT NULL
);
