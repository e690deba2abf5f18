-- One append batch in one statement, so a commit costs the writer one round trip instead of one
-- per step. The writer seals the batch on top of the head it believes is current; under the
-- advisory lock that serializes every appender, this function checks that belief and writes only
-- if it holds. Any append moves the head (positions are gapless and rows are never rewritten), so
-- an unchanged head means the stream versions the batch was decided against are still current.
--
-- Returns true when the rows are written (the caller's transaction then commits them), false when
-- the head has moved and nothing was written. Each statement of a PL/pgSQL function takes a new
-- snapshot under READ COMMITTED, so the head read below sees every commit made before the lock
-- was granted.
CREATE FUNCTION events_append(
    lock_key        BIGINT,
    channel         TEXT,
    head_position   BIGINT,
    head_hash       BYTEA,
    positions       BIGINT[],
    ids             UUID[],
    streams         TEXT[],
    versions        BIGINT[],
    types           TEXT[],
    schemas         BIGINT[],
    tenants         TEXT[],
    actor_kinds     TEXT[],
    actor_ids       TEXT[],
    occurred_ats    TEXT[],
    correlation_ids TEXT[],
    causation_ids   TEXT[],
    datas           TEXT[],
    prev_hashes     BYTEA[],
    hashes          BYTEA[]
) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    current_position BIGINT;
    current_hash     BYTEA;
    n                INTEGER := cardinality(positions);
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT e.position, e.hash INTO current_position, current_hash
        FROM events e ORDER BY e.position DESC LIMIT 1;
    IF NOT FOUND THEN
        IF head_position <> 0 THEN
            RETURN false;
        END IF;
    ELSIF current_position <> head_position OR current_hash <> head_hash THEN
        RETURN false;
    END IF;
    IF n = 0 OR positions[1] <> head_position + 1 OR positions[n] <> head_position + n THEN
        RAISE EXCEPTION 'an append batch must continue the log at position %', head_position + 1;
    END IF;
    INSERT INTO events (position, id, stream, version, type, schema, tenant, actor_kind, actor_id,
                        occurred_at, correlation_id, causation_id, data, prev_hash, hash)
        SELECT * FROM UNNEST(positions, ids, streams, versions, types, schemas, tenants,
                             actor_kinds, actor_ids, occurred_ats, correlation_ids, causation_ids,
                             datas, prev_hashes, hashes);
    PERFORM pg_notify(channel, positions[n]::text);
    RETURN true;
END;
$$;
