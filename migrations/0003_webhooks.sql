-- Inbound webhooks: per-source mappings that turn a tool's own JSON payloads into Segment calls.

CREATE TABLE cdp.webhook_mappings (
    source_id  text PRIMARY KEY REFERENCES cdp.sources (source_id) ON DELETE CASCADE,
    mapping    jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cdp.webhook_mappings IS
    'Tributary: how POST /v1/webhooks/{source} payloads become Segment calls (applied with tributary webhooks apply)';
