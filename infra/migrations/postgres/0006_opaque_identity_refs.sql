-- The identity trigger's refusals no longer carry identity keys. PostgreSQL writes every raised
-- error with its DETAIL into the server log, so each refused bind wrote a mobile or a unionid
-- there. DETAIL is now an opaque reference: the first 16 hex digits of the SHA-256 of the key,
-- which the command path computes for the identities it named to tell which one was refused
-- (`member_infra::event_store::commands::identity_reference`). See docs/decisions/0025.
CREATE FUNCTION member_identity_ref(identity_key text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$
SELECT left(encode(sha256(convert_to(identity_key, 'UTF8')), 'hex'), 16)
$$;

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
