-- Ed25519 keys that sign the log's checkpoints (C2SP signed notes), kept apart from the access-token
-- keys. The private half is wrapped by the master key; which key is current is the log's to say
-- (`ledger.checkpoint_key_issued`), so a key made by a server that lost a race to issue its own is
-- never used.
CREATE TABLE checkpoint_keys (
    key_id          TEXT NOT NULL PRIMARY KEY,
    key_name        TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    private_wrapped TEXT NOT NULL,
    verifier_key    TEXT NOT NULL
);
