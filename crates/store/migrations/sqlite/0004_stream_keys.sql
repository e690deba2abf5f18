-- A compact integer key per stream, so that the index that finds a stream's events by version holds
-- two small integers per event instead of the stream's name: fewer, denser pages for every commit
-- to write. `events` keeps every column it had (readers select them); its `stream` column still
-- names the stream, and `stream_key` is the same stream's key in `streams`.

-- Every stream the log has named, keyed in order of its first event. A row is never changed.
CREATE TABLE streams (
    key  INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);

INSERT INTO streams (name)
SELECT stream FROM events GROUP BY stream ORDER BY MIN(position);

-- The log again, with the key; the unique (stream, version) index that the old table carried
-- cannot be dropped from it, so the rows move into a new table.
CREATE TABLE events_keyed (
    position       INTEGER PRIMARY KEY,
    id             BLOB    NOT NULL UNIQUE,
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    type           TEXT    NOT NULL,
    schema         INTEGER NOT NULL,
    tenant         TEXT    NOT NULL,
    actor_kind     TEXT    NOT NULL,
    actor_id       TEXT    NOT NULL,
    occurred_at    TEXT    NOT NULL,
    correlation_id TEXT,
    causation_id   TEXT,
    data           TEXT    NOT NULL,
    prev_hash      BLOB    NOT NULL,
    hash           BLOB    NOT NULL,
    stream_key     INTEGER NOT NULL REFERENCES streams (key)
);

INSERT INTO events_keyed
SELECT e.position, e.id, e.stream, e.version, e.type, e.schema, e.tenant, e.actor_kind,
       e.actor_id, e.occurred_at, e.correlation_id, e.causation_id, e.data, e.prev_hash, e.hash,
       s.key
FROM events e JOIN streams s ON s.name = e.stream
ORDER BY e.position;

DROP TRIGGER events_are_append_only_update;
DROP TRIGGER events_are_append_only_delete;
DROP TABLE events;
ALTER TABLE events_keyed RENAME TO events;

CREATE UNIQUE INDEX events_stream_key_version ON events (stream_key, version);

-- Append-only: the database itself refuses to rewrite history.
CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

-- A stream's key never changes, or the version index would no longer guard its versions.
CREATE TRIGGER streams_are_append_only_update BEFORE UPDATE ON streams
BEGIN
    SELECT RAISE(ABORT, 'stream keys are append-only');
END;

CREATE TRIGGER streams_are_append_only_delete BEFORE DELETE ON streams
BEGIN
    SELECT RAISE(ABORT, 'stream keys are append-only');
END;
