-- Organization, people and access.
CREATE TABLE organization (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    active INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);
CREATE TABLE api_tokens (
    token_sha256 TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    api_key TEXT NOT NULL UNIQUE,
    secret_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Catalog: every event type, event property and user property seen, by numeric id.
-- Segment columns are named by these ids, so a name lives here and nowhere else.
CREATE TABLE catalog (
    project_id INTEGER NOT NULL REFERENCES projects(id),
    kind TEXT NOT NULL CHECK (kind IN ('event', 'event_property', 'user_property')),
    id INTEGER NOT NULL,
    name TEXT NOT NULL,
    first_seen INTEGER,
    last_seen INTEGER,
    event_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, kind, id),
    UNIQUE (project_id, kind, name)
);
-- Which event properties appear on which event type (taxonomy per event type).
CREATE TABLE catalog_event_property (
    project_id INTEGER NOT NULL,
    event_type_id INTEGER NOT NULL,
    property_id INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    PRIMARY KEY (project_id, event_type_id, property_id)
);

-- Identity: user_id and device_id → amplitude_id; and the current user profiles.
CREATE TABLE identities (
    project_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'device')),
    external_id TEXT NOT NULL,
    amplitude_id INTEGER NOT NULL,
    PRIMARY KEY (project_id, kind, external_id)
);
CREATE TABLE profiles (
    project_id INTEGER NOT NULL,
    amplitude_id INTEGER NOT NULL,
    user_id TEXT,
    properties TEXT NOT NULL,
    PRIMARY KEY (project_id, amplitude_id)
);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- The manifest: the live segments of each project, swapped in one transaction.
CREATE TABLE segments (
    id TEXT PRIMARY KEY,
    project_id INTEGER NOT NULL,
    day TEXT NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    min_time INTEGER NOT NULL,
    max_time INTEGER NOT NULL,
    event_types TEXT NOT NULL,
    event_properties TEXT NOT NULL,
    user_properties TEXT NOT NULL
);
CREATE INDEX segments_by_partition ON segments (project_id, day);
CREATE TABLE manifest (
    project_id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL
);
-- Highest WAL sequence whose records are all in committed segments.
CREATE TABLE wal_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO wal_checkpoint (id, seq) VALUES (1, 0);
INSERT INTO counters (name, value) VALUES ('amplitude_id', 0);
