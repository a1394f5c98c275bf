-- Crypto-shredding (docs/decisions/0033): each member's identity values in `events` are sealed
-- with the member's own data key, stored here wrapped by a master key that only the application
-- holds. Erasure deletes the row: the member's ciphertext, in this database and in every backup
-- of it, can no longer be read.
CREATE TABLE member_keys
(
    member_id  text        PRIMARY KEY,
    -- The master key that wrapped it (`encryption.master_keys`), so master keys rotate by
    -- re-wrapping (`member keys rotate`), never by re-encrypting events.
    key_id     text        NOT NULL,
    wrapped    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz
);

-- The identity trigger of migration 0009, with two changes:
-- - `identity_owners` is keyed on the keyed hash of the identity that the command path puts in
--   the event's metadata (`identity_ref`): the trigger never sees a value, and the table holds
--   none. (An event without it, from a binary older than this migration, is keyed as before;
--   `member keys migrate` rewrites such rows.) The refusal's opaque reference is the hash's
--   first 16 digits.
-- - A new member's wrapped data key arrives in its first event's metadata (`member_key`,
--   "<master key id>:<base64>") and is moved into `member_keys`, in the append's transaction:
--   the key exists exactly when the events sealed with it do. A second key for one member is
--   the primary key's unique violation, which the command path reads as a lost race.
CREATE OR REPLACE FUNCTION member_events_before_insert() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    payload    jsonb := NEW.payload::jsonb;
    metadata   jsonb := NEW.metadata::jsonb;
    changed    boolean := false;
    ident_key  text;
    ident_ref  text;
    gen        bigint;
    idem_key   text;
    stored     int;
BEGIN
    IF NEW.aggregate_type <> 'Member' THEN
        RETURN NEW;
    END IF;

    IF metadata ? 'member_key' THEN
        INSERT INTO member_keys (member_id, key_id, wrapped)
        VALUES (NEW.aggregate_id,
                split_part(metadata ->> 'member_key', ':', 1),
                decode(split_part(metadata ->> 'member_key', ':', 2), 'base64'));
        metadata := metadata - 'member_key';
        changed := true;
    END IF;

    IF payload ? 'IdentityBound' THEN
        ident_key := coalesce(metadata ->> 'identity_ref',
                              member_identity_key(payload -> 'IdentityBound' -> 'identity'));
    ELSIF payload ? 'IdentityUnbound' THEN
        ident_key := coalesce(metadata ->> 'identity_ref',
                              member_identity_key(payload -> 'IdentityUnbound' -> 'identity'));
    END IF;
    IF ident_key IS NOT NULL THEN
        ident_ref := CASE WHEN metadata ? 'identity_ref' THEN left(ident_key, 16)
                          ELSE member_identity_ref(ident_key) END;
    END IF;

    IF payload ? 'IdentityBound' THEN
        INSERT INTO identity_owners AS o (identity_key, member_id, generation)
        VALUES (ident_key, NEW.aggregate_id, nextval('identity_generation'))
        ON CONFLICT (identity_key) DO UPDATE
            SET member_id = EXCLUDED.member_id, generation = nextval('identity_generation')
            WHERE o.member_id IS NULL
        RETURNING generation INTO gen;
        IF gen IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MB409', MESSAGE = 'identity_already_bound',
                DETAIL = ident_ref;
        END IF;
    ELSIF payload ? 'IdentityUnbound' THEN
        UPDATE identity_owners
        SET member_id = NULL, generation = nextval('identity_generation')
        WHERE identity_key = ident_key AND member_id = NEW.aggregate_id
        RETURNING generation INTO gen;
        IF gen IS NULL THEN
            -- The aggregate only unbinds what it holds; anything else is a corrupted owner table.
            RAISE EXCEPTION USING ERRCODE = 'MB500', MESSAGE = 'identity_owner_mismatch',
                DETAIL = ident_ref;
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
        changed := true;
    END IF;
    IF changed THEN
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

-- The purge of migration 0009, now the crypto-shredding itself: once every relay has published
-- the erasure (the relay reads the member's identities once more, to tell every store which
-- index entries to delete), the member's data key is deleted, which leaves its sealed values
-- unreadable. Identity values still in the clear (events written before encryption, not yet
-- rewritten by `member keys migrate`) are redacted as before; the released owner rows nobody
-- holds again are deleted (keyed by the identity's hash, or by the identity before the rewrite).
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
        SELECT DISTINCT coalesce(e.metadata::jsonb ->> 'identity_ref',
                                 member_identity_key(e.payload::jsonb -> 'IdentityUnbound' -> 'identity'))
                            AS identity_key
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
    shredded AS (
        DELETE FROM member_keys k
            USING due
        WHERE k.member_id = due.member_id::text
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
          AND (e.payload::jsonb -> e.event_type -> 'identity') ? 'value'
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
