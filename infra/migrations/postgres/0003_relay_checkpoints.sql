-- Where each relay stands in the event store's commit order: the (txid, position) of the last
-- event it published and the broker acknowledged.
CREATE TABLE relay_checkpoints
(
    name       text        PRIMARY KEY,
    txid       xid8        NOT NULL,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
