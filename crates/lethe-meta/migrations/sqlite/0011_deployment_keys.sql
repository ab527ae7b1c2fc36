-- The deployment's Ed25519 key that signs receipts, and the salt that hashes user ids in
-- them (one row, made by the first node that starts).
CREATE TABLE deployment_keys (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    signing_key TEXT NOT NULL,
    salt TEXT NOT NULL
);
