-- Profiles: typed reads of JSON values, trait candidates from events, RFM scoring, generated views.

-- JSON values as typed SQL values: NULL when the value is absent or of another type, never an error, so that one
-- odd value sent by one client cannot break an analyst's query over cdp.profiles.
CREATE OR REPLACE FUNCTION cdp.jsonb_numeric(value jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(value) = 'number' THEN value::numeric END $$;

CREATE OR REPLACE FUNCTION cdp.jsonb_bigint(value jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(value) = 'number' AND value::numeric = trunc(value::numeric)
                       AND abs(value::numeric) < 9223372036854775807 THEN value::numeric::bigint END $$;

CREATE OR REPLACE FUNCTION cdp.jsonb_float8(value jsonb) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(value) = 'number' THEN value::numeric::float8 END $$;

CREATE OR REPLACE FUNCTION cdp.jsonb_boolean(value jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(value) = 'boolean' THEN value::boolean END $$;

CREATE OR REPLACE FUNCTION cdp.jsonb_text(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(value) = 'string' THEN value #>> '{}'
                  WHEN jsonb_typeof(value) IN ('number', 'boolean') THEN value::text END $$;

-- STABLE: a date-time without an offset is read in the session's time zone.
CREATE OR REPLACE FUNCTION cdp.jsonb_timestamptz(value jsonb) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    IF jsonb_typeof(value) IS DISTINCT FROM 'string' OR (value #>> '{}') !~ '^\d{4}-\d{2}-\d{2}' THEN
        RETURN NULL;
    END IF;
    RETURN (value #>> '{}')::timestamptz;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
    RETURN NULL;
END
$$;

-- Every trait value every event carries: the traits of identify calls (source 1) and context.traits of any call
-- (source 0), top-level keys. Callers filter by seq or profile_id; the filters reach cdp.events.
CREATE OR REPLACE VIEW cdp.event_trait_values AS
SELECT e.profile_id, kv.key, kv.value, e.timestamp AS event_timestamp, e.seq, e.message_id, 1::smallint AS source
FROM cdp.events AS e
CROSS JOIN LATERAL jsonb_each(CASE WHEN e.type = 'identify' AND jsonb_typeof(e.traits) = 'object' THEN e.traits ELSE '{}' END) AS kv
WHERE e.profile_id IS NOT NULL
UNION ALL
SELECT e.profile_id, kv.key, kv.value, e.timestamp, e.seq, e.message_id, 0::smallint
FROM cdp.events AS e
CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(e.context -> 'traits') = 'object' THEN e.context -> 'traits' ELSE '{}' END) AS kv
WHERE e.profile_id IS NOT NULL;
COMMENT ON VIEW cdp.event_trait_values IS 'Tributary: trait values carried by events (internal)';

-- A quintile score 1..5 of value against four ascending boundaries: with higher_is_better, 1 + the number of
-- boundaries below the value; otherwise, 1 + the number of boundaries at or above it.
-- No boundaries yet (before the first bulk recompute): NULL. Plain arithmetic, so it inlines.
CREATE OR REPLACE FUNCTION cdp.rfm_score(value float8, boundaries float8[], higher_is_better boolean) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN boundaries IS NOT NULL AND value IS NOT NULL THEN
        CASE WHEN higher_is_better
             THEN 1 + (value > boundaries[1])::int + (value > boundaries[2])::int
                    + (value > boundaries[3])::int + (value > boundaries[4])::int
             ELSE 1 + (value <= boundaries[1])::int + (value <= boundaries[2])::int
                    + (value <= boundaries[3])::int + (value <= boundaries[4])::int
        END
    END
$$;

-- Trait changes, for analysts.
CREATE OR REPLACE VIEW cdp.trait_changes AS
SELECT profile_id, key, old_value, new_value, event_timestamp, seq, message_id, reason, changed_at, change_id
FROM cdp.trait_history;
COMMENT ON VIEW cdp.trait_changes IS
    'Tributary: every change of a profile trait (NULL: absent or removed), with the event that caused it; reason event, merge (a merge or split) or rebuild';

-- cdp.profiles is generated (its typed columns follow the catalog and the computed trait definitions); until
-- something is configured it has the fixed columns only.
INSERT INTO cdp.generated_views (name, definition) VALUES ('cdp.profiles', $$
SELECT p.profile_id,
       coalesce(d.traits, '{}'::jsonb) AS traits,
       coalesce(d.computed, '{}'::jsonb) AS computed_traits,
       d.first_seen_at,
       d.last_seen_at,
       coalesce(d.event_count, 0) AS event_count,
       d.updated_at
FROM cdp.identity_profiles AS p
LEFT JOIN cdp.profile_data AS d ON d.profile_id = p.profile_id
$$) ON CONFLICT (name) DO NOTHING;

-- (Re)creates every generated view; a view whose columns changed is dropped and created again.
CREATE OR REPLACE FUNCTION cdp.apply_generated_views() RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT name, definition FROM cdp.generated_views ORDER BY name LOOP
        BEGIN
            EXECUTE 'CREATE OR REPLACE VIEW ' || v.name || ' AS ' || v.definition;
        EXCEPTION WHEN invalid_table_definition OR feature_not_supported OR datatype_mismatch THEN
            EXECUTE 'DROP VIEW IF EXISTS ' || v.name;
            EXECUTE 'CREATE VIEW ' || v.name || ' AS ' || v.definition;
        END;
    END LOOP;
END
$$;

SELECT cdp.apply_generated_views();
COMMENT ON VIEW cdp.profiles IS
    'Tributary: one row per profile: merged traits (jsonb), computed traits (jsonb), first/last seen, event count, and typed columns for catalog traits and computed traits';
