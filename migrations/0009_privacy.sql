-- Privacy requests: deletion (right to erasure), access export and consent recorded through the API, each logged
-- without the identifier itself; and the suppression list that keeps a deleted person's identifiers from coming back.

-- One row per request, holding no raw identifier: the identifier's kind and its hash (cdp.identifier_hash).
CREATE TABLE cdp.privacy_requests (
    request_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('delete', 'export', 'consent')),
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    actor           text NOT NULL,
    identifier_kind text NOT NULL,
    identifier_hash text NOT NULL CHECK (identifier_hash ~ '^[0-9a-f]{64}$'),
    requested_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    counts          jsonb NOT NULL DEFAULT '{}',
    error           text
);
CREATE INDEX privacy_requests_identifier ON cdp.privacy_requests (identifier_hash);
COMMENT ON TABLE cdp.privacy_requests IS
    'Tributary: privacy requests (delete, export, consent): who asked, when, the outcome and counts; identifiers only as SHA-256';

-- Identifiers of deleted people, as SHA-256 of "kind:normalized value": events carrying one are dropped at ingestion
-- and counted here.
CREATE TABLE cdp.suppressions (
    identifier_hash text PRIMARY KEY CHECK (identifier_hash ~ '^[0-9a-f]{64}$'),
    kind            text NOT NULL,
    request_id      bigint REFERENCES cdp.privacy_requests (request_id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    events_dropped  bigint NOT NULL DEFAULT 0,
    last_dropped_at timestamptz
);
COMMENT ON TABLE cdp.suppressions IS
    'Tributary: identifiers of deleted people (SHA-256 of kind:normalized value); later events carrying one are dropped and counted';
