-- Erasure of a member's personal data (issue 21, docs/decisions/0033).
--
-- `member_erasures` is the receipt's first half: one row per erased member, written by the
-- identity trigger in the transaction that appends `MemberErased`, so an erasure is accepted
-- exactly when its event is durable, and a second erasure finds the first receipt. The
-- identities themselves are released by the `IdentityUnbound` events appended just before
-- (reason `member_erased`), through the trigger's existing unbind branch.
CREATE TABLE member_erasures
(
    member_id   uuid        PRIMARY KEY,
    -- The member's version after `MemberErased`: stores holding this version hold the tombstone.
    version     bigint      NOT NULL,
    caller      text,
    request_id  text,
    accepted_at timestamptz NOT NULL DEFAULT now()
);

-- The receipt's second half: when each projection target applied the erasure (its sink's write
-- was durable). Written by the projectors after the store acknowledged the batch holding the
-- `MemberErased` record; the first application counts.
CREATE TABLE erasure_applications
(
    member_id  uuid        NOT NULL,
    target     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, target)
);

-- The identity trigger of migration 0006, plus the erasure branch.
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
        INSERT INTO identity_owners AS o (identity_key, member_id, generation)
        VALUES (ident_key, NEW.aggregate_id, 1)
        ON CONFLICT (identity_key) DO UPDATE
            SET member_id = EXCLUDED.member_id, generation = o.generation + 1
            WHERE o.member_id IS NULL
        RETURNING generation INTO gen;
        IF gen IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MB409', MESSAGE = 'identity_already_bound',
                DETAIL = member_identity_ref(ident_key);
        END IF;
    ELSIF payload ? 'IdentityUnbound' THEN
        ident_key := member_identity_key(payload -> 'IdentityUnbound' -> 'identity');
        UPDATE identity_owners
        SET member_id = NULL, generation = generation + 1
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
