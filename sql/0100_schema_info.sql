-- Re-applied after every `tributary migrate`: views and functions only, each written to be replaced safely.

CREATE OR REPLACE VIEW cdp.schema_version AS
SELECT
    coalesce(max(version), 0) AS version,
    (SELECT name FROM cdp.schema_migrations ORDER BY version DESC LIMIT 1) AS name,
    max(applied_at) AS applied_at,
    count(*) AS migrations_applied
FROM cdp.schema_migrations;
COMMENT ON VIEW cdp.schema_version IS 'Tributary: the newest migration applied to this database';

CREATE OR REPLACE FUNCTION cdp.installation_id() RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT value #>> '{}' FROM cdp.settings WHERE key = 'installation_id' $$;
COMMENT ON FUNCTION cdp.installation_id() IS 'Tributary: the id this database was given when it was first migrated';
