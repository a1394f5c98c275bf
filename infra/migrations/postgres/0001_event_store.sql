-- The event store of postgres-es (its `events` table, unchanged in shape) plus what the relay needs:
-- a global position and the id of the inserting transaction, so that a reader can take events in
-- commit-safe order: only rows whose transaction id is below the current snapshot's xmin (those
-- transactions have all ended), ordered by (txid, position). See docs/decisions/0002-relay-ordering.md.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    position       bigint GENERATED ALWAYS AS IDENTITY,
    txid           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid                         NOT NULL DEFAULT gen_random_uuid(),
    recorded_at    timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_commit_order ON events (txid, position);

-- postgres-es's snapshot table; unused while snapshots are off, kept so they can be turned on.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
