-- The erased member's identity values leave the event log once the relay has published its
-- erasure (docs/decisions/0033, "Until crypto-shredding"): its `IdentityBound` and
-- `IdentityUnbound` events keep their kind, app, reason and generation, and their values (and an
-- openid's unionid) become "[erased]"; the request hashes of its commands go too.
--
-- Why only then: the `MemberErased` record tells the stores which identity-index entries to
-- delete, and the relay computes that list from the member's events; once every relay's
-- checkpoint is past the erasure, no record of this member will be built again (a relay reset
-- would fold the redacted events: still the same tombstone). Rebuild and verify fold redacted
-- events into the same tombstone as before.
--
-- Redacting per identity slot (one identity per kind, openids one per app) keeps every bind and
-- unbind of the history paired, so the fold of a redacted history is the fold of the original
-- with other values.
ALTER TABLE member_erasures ADD COLUMN purged_at timestamptz;

CREATE INDEX member_erasures_unpurged ON member_erasures (member_id) WHERE purged_at IS NULL;

CREATE FUNCTION member_redacted_identity(identity jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$
SELECT CASE
           WHEN identity ? 'unionid'
               THEN identity || jsonb_build_object('value', '[erased]', 'unionid', '[erased]')
           ELSE identity || jsonb_build_object('value', '[erased]')
           END
$$;

-- Redacts the events of every erased member whose erasure all relays have published (there is
-- at least one relay checkpoint, and none is before the `MemberErased` event). Returns the
-- number of members purged. Safe to run concurrently (rows are claimed with SKIP LOCKED) and
-- repeatedly. (The `redacted` statement runs whether or not it is read: PostgreSQL executes
-- data-modifying WITH statements to completion.)
CREATE FUNCTION member_purge_erasures() RETURNS bigint
    LANGUAGE plpgsql AS
$$
DECLARE
    purged bigint;
BEGIN
    WITH due AS (
        SELECT m.member_id
        FROM member_erasures m
                 JOIN events e ON e.aggregate_type = 'Member'
                                  AND e.aggregate_id = m.member_id::text
                                  AND e.sequence = m.version
        WHERE m.purged_at IS NULL
          AND EXISTS (SELECT 1 FROM relay_checkpoints)
          AND NOT EXISTS (SELECT 1
                          FROM relay_checkpoints c
                          WHERE (c.txid, c.position) < (e.txid, e.position))
        FOR UPDATE OF m SKIP LOCKED
    ),
    redacted AS (
        UPDATE events e
        SET payload  = (CASE
                            WHEN e.payload::jsonb ? 'IdentityBound' THEN jsonb_set(
                                    e.payload::jsonb, '{IdentityBound,identity}',
                                    member_redacted_identity(e.payload::jsonb -> 'IdentityBound' -> 'identity'))
                            ELSE jsonb_set(
                                    e.payload::jsonb, '{IdentityUnbound,identity}',
                                    member_redacted_identity(e.payload::jsonb -> 'IdentityUnbound' -> 'identity'))
                        END)::json,
            metadata = (e.metadata::jsonb - 'request_hash')::json
        FROM due
        WHERE e.aggregate_type = 'Member'
          AND e.aggregate_id = due.member_id::text
          AND e.event_type IN ('IdentityBound', 'IdentityUnbound')
        RETURNING 1
    )
    UPDATE member_erasures m
    SET purged_at = now()
    FROM due
    WHERE m.member_id = due.member_id;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;
