-- Legacy imports (`member import`) and their governance (`member governance`).
-- See docs/decisions/0010-import-seed-governance.md.

-- Where an import of one file (identified by the SHA-256 of its content) stands: every line
-- before `next_line` has been handled (imported, recognised as already imported, or quarantined).
-- Re-handling a line is harmless, so the checkpoint may lag the work by a batch.
CREATE TABLE import_checkpoints
(
    file_digest text        PRIMARY KEY,
    next_line   bigint      NOT NULL,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Legacy records that were not imported because they would break an invariant, or could not be
-- read. Never merged silently: an operator resolves each one (`member governance repair`), and
-- the resolution is recorded here with who and why. One row per (file, line): re-running an
-- import adds nothing. `record` holds the parsed legacy record (NULL for a malformed line) so a
-- released entry can be imported later; `detail` is never personal data (an identity kind).
CREATE TABLE import_quarantine
(
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_digest     text        NOT NULL,
    line_number     bigint      NOT NULL,
    legacy_id       text,
    member_id       uuid,
    reason          text        NOT NULL,
    detail          text,
    record          jsonb,
    status          text        NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'released', 'dismissed')),
    resolved_by     text,
    resolution_note text,
    resolved_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (file_digest, line_number)
);

CREATE INDEX import_quarantine_open ON import_quarantine (id) WHERE status = 'open';
