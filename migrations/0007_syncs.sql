-- Reverse-ETL syncs: definitions applied from a file (tributary syncs apply), the state last delivered per row,
-- every run, and rows a destination refused.

CREATE TABLE cdp.syncs (
    name        text PRIMARY KEY CHECK (name <> '' AND octet_length(name) <= 63),
    definition  jsonb NOT NULL,
    position    int NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    next_run_at timestamptz,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cdp.syncs IS 'Tributary: syncs in force (tributary syncs apply) and when each is next due';

-- One row per source row delivered: its key, the fields delivered and their hash. A row removed at the destination
-- stays as a tombstone (removed = true), so a later re-add is a new change.
CREATE TABLE cdp.sync_state (
    sync         text NOT NULL REFERENCES cdp.syncs (name) ON DELETE CASCADE,
    key          text NOT NULL,
    key_object   jsonb NOT NULL,
    payload      jsonb NOT NULL,
    hash         bigint NOT NULL,
    removed      boolean NOT NULL DEFAULT false,
    run_id       bigint NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sync, key)
);
COMMENT ON TABLE cdp.sync_state IS
    'Tributary: per sync, what the destination confirmed for each row (key, fields, hash); advanced only on confirmation';

-- Changes sent but not (yet) confirmed: the destination may hold them. A key here is sent again by the next run even
-- if the source went back to what was last confirmed, and a different later change gets a new idempotency key.
CREATE TABLE cdp.sync_pending (
    sync            text NOT NULL REFERENCES cdp.syncs (name) ON DELETE CASCADE,
    key             text NOT NULL,
    key_object      jsonb NOT NULL,
    payload         jsonb NOT NULL,
    hash            bigint NOT NULL,
    operation       text NOT NULL,
    idempotency_key text NOT NULL,
    run_id          bigint NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sync, key)
);
COMMENT ON TABLE cdp.sync_pending IS
    'Tributary: per sync, changes sent whose delivery the destination has not confirmed (sent again by the next run)';

CREATE TABLE cdp.sync_runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sync        text NOT NULL,
    trigger     text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    dry_run     boolean NOT NULL DEFAULT false,
    status      text NOT NULL CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'cancelled', 'abandoned')),
    added       bigint NOT NULL DEFAULT 0,
    changed     bigint NOT NULL DEFAULT 0,
    removed     bigint NOT NULL DEFAULT 0,
    delivered   bigint NOT NULL DEFAULT 0,
    rejected    bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    batches     int NOT NULL DEFAULT 0,
    attempts    int NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration_ms bigint,
    error       text,
    worker      text
);
CREATE INDEX sync_runs_sync ON cdp.sync_runs (sync, run_id DESC);
COMMENT ON TABLE cdp.sync_runs IS
    'Tributary: every sync run: rows added, changed, removed, delivered, rejected by the destination, failed (not delivered), status';

CREATE TABLE cdp.sync_errors (
    sync            text NOT NULL REFERENCES cdp.syncs (name) ON DELETE CASCADE,
    key             text NOT NULL,
    key_object      jsonb NOT NULL,
    operation       text NOT NULL,
    reason          text NOT NULL,
    attempts        int NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    last_run_id     bigint NOT NULL,
    PRIMARY KEY (sync, key)
);
COMMENT ON TABLE cdp.sync_errors IS
    'Tributary: rows a destination refused, with its reason; tried again on every run until delivered';
