-- Cross-member uniqueness: every identity belongs to at most one member.
--
-- The owner table is maintained by a trigger on the events table, so the check and the append are
-- one statement in one transaction: no check-then-act window, whatever the concurrency. A row is
-- never deleted: an unbound identity keeps its row with member_id NULL, and `generation` counts
-- every bind and unbind of the identity. Events that bind or unbind carry that generation in their
-- metadata, which lets identity indexes order a move between members whose records travel on
-- different Kafka partitions.
CREATE TABLE identity_owners
(
    identity_key text   PRIMARY KEY,
    member_id    text,
    generation   bigint NOT NULL
);

CREATE INDEX identity_owners_member ON identity_owners (member_id) WHERE member_id IS NOT NULL;

-- The canonical key of an identity, as `IdentityKey`'s Display writes it in the domain crate:
-- `kind:value`, or `wechat_openid:app:value`. A test checks that both agree for every kind.
CREATE FUNCTION member_identity_key(identity jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT AS
$$
SELECT CASE
           WHEN identity ->> 'kind' = 'wechat_openid'
               THEN 'wechat_openid:' || (identity ->> 'app') || ':' || (identity ->> 'value')
           ELSE (identity ->> 'kind') || ':' || (identity ->> 'value')
           END
$$;

-- Idempotency keys: the first outcome of a command sent with an Idempotency-Key. Outcomes of
-- commands that append events are written by the trigger below, in the append's transaction;
-- refusals (which append nothing) are written by the API on their own.
CREATE TABLE idempotency_keys
(
    key          text        PRIMARY KEY,
    request_hash text        NOT NULL,
    status       smallint    NOT NULL,
    body         jsonb       NOT NULL,
    txid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Errors raised here use their own SQLSTATEs (postgres-es reads 23505 as an optimistic-lock
-- conflict, so a unique violation must not escape as such):
--   MB409  identity_already_bound, DETAIL = the identity key
--   MB422  idempotency_key_in_use, DETAIL = the idempotency key
CREATE FUNCTION member_events_before_insert() RETURNS trigger
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
            RAISE EXCEPTION USING ERRCODE = 'MB409', MESSAGE = 'identity_already_bound', DETAIL = ident_key;
        END IF;
    ELSIF payload ? 'IdentityUnbound' THEN
        ident_key := member_identity_key(payload -> 'IdentityUnbound' -> 'identity');
        UPDATE identity_owners
        SET member_id = NULL, generation = generation + 1
        WHERE identity_key = ident_key AND member_id = NEW.aggregate_id
        RETURNING generation INTO gen;
        IF gen IS NULL THEN
            -- The aggregate only unbinds what it holds; anything else is a corrupted owner table.
            RAISE EXCEPTION USING ERRCODE = 'MB500', MESSAGE = 'identity_owner_mismatch', DETAIL = ident_key;
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
            RAISE EXCEPTION USING ERRCODE = 'MB422', MESSAGE = 'idempotency_key_in_use', DETAIL = idem_key;
        END IF;
    END IF;

    RETURN NEW;
END
$$;

CREATE TRIGGER member_events_before_insert
    BEFORE INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION member_events_before_insert();
