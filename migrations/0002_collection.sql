-- Collection: sources (with hashed write keys), the event store and its idempotency index.

CREATE TABLE cdp.sources (
    source_id        text PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    write_key_sha256 text NOT NULL UNIQUE,
    write_key_hint   text NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    key_rotated_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at      timestamptz,
    CONSTRAINT sources_name_not_blank CHECK (btrim(name) <> '')
);
COMMENT ON TABLE cdp.sources IS
    'Tributary: where events come from (a website, an app, a CRM export); write keys are stored as SHA-256 only';
COMMENT ON COLUMN cdp.sources.write_key_hint IS 'The first characters of the write key, to tell keys apart';

-- Receive sequence: later stages consume events in this order from a checkpoint. Writers take an advisory lock
-- before drawing numbers and hold it until they commit, so numbers become visible in increasing order.
CREATE SEQUENCE cdp.events_seq AS bigint;

CREATE TABLE cdp.events (
    seq                bigint NOT NULL,
    message_id         text NOT NULL,
    source_id          text NOT NULL,
    type               text NOT NULL,
    event              text,
    name               text,
    user_id            text,
    anonymous_id       text,
    group_id           text,
    previous_id        text,
    profile_id         uuid,
    timestamp          timestamptz NOT NULL,
    original_timestamp timestamptz,
    sent_at            timestamptz,
    received_at        timestamptz NOT NULL,
    properties         jsonb NOT NULL DEFAULT '{}',
    traits             jsonb NOT NULL DEFAULT '{}',
    context            jsonb NOT NULL DEFAULT '{}',
    integrations       jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (seq, timestamp),
    CONSTRAINT events_type_known CHECK (type IN ('identify', 'track', 'page', 'screen', 'group', 'alias'))
) PARTITION BY RANGE (timestamp);
COMMENT ON TABLE cdp.events IS
    'Tributary: every accepted Segment-style call, append-only, partitioned by month of timestamp; seq is the receive order';
COMMENT ON COLUMN cdp.events.timestamp IS
    'When it happened: the client timestamp corrected for clock skew (received_at - (sent_at - original_timestamp))';
COMMENT ON COLUMN cdp.events.profile_id IS 'The resolved profile, stamped by the identity stage (NULL until then)';

CREATE INDEX events_received_at ON cdp.events (received_at);

-- Idempotency: one row per (source, messageId) ever accepted, however late a retry comes. Not partitioned, so a
-- retry is recognised even when its corrected timestamp falls in another month.
CREATE TABLE cdp.event_message_ids (
    source_id   text NOT NULL,
    message_id  text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (source_id, message_id)
);
COMMENT ON TABLE cdp.event_message_ids IS 'Tributary: the messageIds already stored, per source, for exactly-once ingestion';
