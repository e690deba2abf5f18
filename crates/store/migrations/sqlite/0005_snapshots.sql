-- Snapshots of the in-memory indexes (authentication, authorization, API keys), kept outside the
-- log so a server starts from the latest one and reads only the events after it. Each row names
-- the position it was taken at and that event's hash (a snapshot of another or a rewritten log is
-- refused), the format it is written in (one of an older code is rebuilt), and a MAC under a key
-- derived from the master key (a row altered in the database is refused).
CREATE TABLE index_snapshots (
    name       TEXT NOT NULL PRIMARY KEY,
    position   BIGINT NOT NULL,
    event_hash TEXT NOT NULL,
    format     BIGINT NOT NULL,
    body       BLOB NOT NULL,
    mac        TEXT NOT NULL,
    taken_at   TEXT NOT NULL
);
