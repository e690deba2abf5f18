-- Secrets kept outside the append-only log, so they can be destroyed.

-- One AES-256-GCM data key per subject (a user), wrapped by the server's master key. Personal data in
-- events is encrypted with it; deleting the row erases that data from every event at once
-- (crypto-shredding) while the hash chain still verifies.
CREATE TABLE data_keys (
    subject    TEXT NOT NULL PRIMARY KEY,
    tenant     TEXT NOT NULL,
    wrapped    TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Ed25519 keys that sign access tokens. The private half is wrapped by the master key; the newest
-- key signs, older ones verify until the tokens they signed have expired.
CREATE TABLE signing_keys (
    kid             TEXT NOT NULL PRIMARY KEY,
    created_at      TEXT NOT NULL,
    private_wrapped TEXT NOT NULL,
    public_key      TEXT NOT NULL
);
