-- The log: one row per event. position is assigned by the writer under an advisory lock, not by a
-- sequence, so that positions are gapless in commit order.
CREATE TABLE events (
    position       BIGINT PRIMARY KEY,
    id             UUID   NOT NULL UNIQUE,
    stream         TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    type           TEXT   NOT NULL,
    schema         BIGINT NOT NULL,
    tenant         TEXT   NOT NULL,
    actor_kind     TEXT   NOT NULL,
    actor_id       TEXT   NOT NULL,
    occurred_at    TEXT   NOT NULL,
    correlation_id TEXT,
    causation_id   TEXT,
    data           TEXT   NOT NULL,
    prev_hash      BYTEA  NOT NULL,
    hash           BYTEA  NOT NULL,
    UNIQUE (stream, version)
);

-- Append-only: the database itself refuses to rewrite history.
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$;

CREATE TRIGGER events_are_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();

CREATE TRIGGER events_are_never_truncated
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();
