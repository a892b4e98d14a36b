-- Tributary foundation: the schemas of the analyst-facing contract and the installation's settings.
-- Released migrations are never edited; later changes go in new files.

CREATE SCHEMA IF NOT EXISTS cdp;
COMMENT ON SCHEMA cdp IS
    'Tributary: events, identities, profiles, merges and segment membership (the analyst-facing contract)';

CREATE SCHEMA IF NOT EXISTS segments;
COMMENT ON SCHEMA segments IS 'Tributary: one view per segment, compiled from segment definitions';

CREATE TABLE cdp.settings (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cdp.settings IS 'Tributary: installation-wide settings, one jsonb value per key';

INSERT INTO cdp.settings (key, value)
VALUES ('installation_id', to_jsonb(gen_random_uuid()::text));
