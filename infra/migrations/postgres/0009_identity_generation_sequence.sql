-- Ownership generations come from one sequence instead of a counter per identity, so that the
-- owner rows of an erased member's released identities can be deleted (they are keyed by the
-- identity itself: plaintext the erasure must remove; docs/decisions/0033).
--
-- What generations are for is unchanged: ordering the binds and unbinds of one identity across
-- members, in every store (ADR 0001). A sequence orders them as well: every change of an
-- identity happens under its row's lock and draws its number then, so a later change always has a
-- higher one, and a row deleted and created again later starts above every generation the
-- identity ever had (no store can hold a tombstone that outranks the new holder). Existing
-- generations are kept; the sequence starts above the highest.
CREATE SEQUENCE identity_generation AS bigint;
SELECT setval('identity_generation', (SELECT coalesce(max(generation), 0) + 1 FROM identity_owners), false);

-- The identity trigger of migration 0007, drawing generations from the sequence.
CREATE OR REPLACE FUNCTION member_events_before_insert() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    payload    jsonb := NEW.payload::jsonb;
    metadata   jsonb := NEW.metadata::jsonb;
    ident_key  text;
    gen        bigint;
    idem_key   text;
    stored     int;
BEGIN
    IF NEW.aggregate_type <> 'Member' THEN
        RETURN NEW;
    END IF;

    IF payload ? 'IdentityBound' THEN
        ident_key := member_identity_key(payload -> 'IdentityBound' -> 'identity');
        -- A new row takes the next generation of the sequence; a released row takes one too,
        -- drawn while its lock is held (so after the generation of whoever held it last).
        INSERT INTO identity_owners AS o (identity_key, member_id, generation)
        VALUES (ident_key, NEW.aggregate_id, nextval('identity_generation'))
        ON CONFLICT (identity_key) DO UPDATE
            SET member_id = EXCLUDED.member_id, generation = nextval('identity_generation')
            WHERE o.member_id IS NULL
        RETURNING generation INTO gen;
        IF gen IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MB409', MESSAGE = 'identity_already_bound',
                DETAIL = member_identity_ref(ident_key);
        END IF;
    ELSIF payload ? 'IdentityUnbound' THEN
        ident_key := member_identity_key(payload -> 'IdentityUnbound' -> 'identity');
        UPDATE identity_owners
        SET member_id = NULL, generation = nextval('identity_generation')
        WHERE identity_key = ident_key AND member_id = NEW.aggregate_id
        RETURNING generation INTO gen;
        IF gen IS NULL THEN
            -- The aggregate only unbinds what it holds; anything else is a corrupted owner table.
            RAISE EXCEPTION USING ERRCODE = 'MB500', MESSAGE = 'identity_owner_mismatch',
                DETAIL = member_identity_ref(ident_key);
        END IF;
    END IF;

    IF payload ? 'MemberErased' THEN
        -- The receipt, in the erasure's own transaction: accepted exactly when the erasure is.
        INSERT INTO member_erasures (member_id, version, caller, request_id)
        VALUES (NEW.aggregate_id::uuid, NEW.sequence, metadata ->> 'caller', metadata ->> 'request_id')
        ON CONFLICT (member_id) DO NOTHING;
        -- Legacy records quarantined for this member carry its personal data: forget them.
        UPDATE import_quarantine
        SET record = NULL, legacy_id = NULL, status = 'dismissed',
            resolved_by = 'erasure', resolution_note = 'member erased', resolved_at = now()
        WHERE member_id = NEW.aggregate_id::uuid;
    END IF;

    IF gen IS NOT NULL THEN
        -- cqrs-es metadata is a map of strings.
        metadata := metadata || jsonb_build_object('identity_generation', gen::text);
        NEW.metadata := metadata::json;
    END IF;

    idem_key := metadata ->> 'idempotency_key';
    IF idem_key IS NOT NULL THEN
        INSERT INTO idempotency_keys AS k (key, request_hash, status, body)
        VALUES (idem_key,
                metadata ->> 'request_hash',
                (metadata ->> 'success_status')::smallint,
                jsonb_build_object('member_id', NEW.aggregate_id, 'version', NEW.sequence))
        ON CONFLICT (key) DO UPDATE
            SET body = EXCLUDED.body
            WHERE k.txid = pg_current_xact_id()
        RETURNING 1 INTO stored;
        IF stored IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MB422', MESSAGE = 'idempotency_key_in_use';
        END IF;
    END IF;

    RETURN NEW;
END
$$;

-- The purge of migration 0008, which now also deletes the owner rows of the erased member's
-- released identities that nobody holds (a row someone holds again is theirs and stays).
CREATE OR REPLACE FUNCTION member_purge_erasures() RETURNS bigint
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
    -- Read before the redaction below (one statement, one snapshot).
    released AS (
        SELECT DISTINCT member_identity_key(e.payload::jsonb -> 'IdentityUnbound' -> 'identity') AS identity_key
        FROM events e
                 JOIN due ON e.aggregate_type = 'Member' AND e.aggregate_id = due.member_id::text
        WHERE e.event_type = 'IdentityUnbound'
    ),
    forgotten AS (
        DELETE FROM identity_owners o
            USING released r
        WHERE o.identity_key = r.identity_key
          AND o.member_id IS NULL
        RETURNING 1
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
