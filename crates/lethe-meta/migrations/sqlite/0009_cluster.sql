-- A cluster's writer lease (one row) and the secret its nodes share (one row): neither
-- holds a value of any event.
CREATE TABLE cluster_writer (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    node TEXT NOT NULL,
    address TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    lease_until INTEGER NOT NULL
);
CREATE TABLE cluster_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    token TEXT NOT NULL
);
