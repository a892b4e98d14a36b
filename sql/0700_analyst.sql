-- The analyst schema: read-only views over the analyst contract with personal data masked unless the reader is a
-- member of tributary_pii. `tributary roles setup` creates the roles tributary_analyst (may read these views and
-- nothing else) and tributary_pii (unmasks them) and grants them; this file only (re)creates the views and, when the
-- roles exist, re-grants them, so views added by a later version stay readable.

CREATE SCHEMA IF NOT EXISTS analyst;
COMMENT ON SCHEMA analyst IS
    'Tributary: the analyst contract with personal data masked unless the reader is a member of tributary_pii (read-only for tributary_analyst)';

-- Whether the current user may see personal data: a member (directly or not) of tributary_pii. Superusers are
-- members of every role. False while the role does not exist.
CREATE OR REPLACE FUNCTION cdp.pii_visible() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN to_regrole('tributary_pii') IS NULL THEN false ELSE pg_has_role('tributary_pii', 'MEMBER') END
$$;
COMMENT ON FUNCTION cdp.pii_visible() IS
    'Tributary: true if the current user is a member of tributary_pii (sees personal data unmasked in schema analyst)';

-- The keys treated as personal data in traits, context.traits and properties, matched exactly: every common spelling
-- of the built-in phrases below (email_address, emailAddress, EmailAddress, "Email Address", email-address,
-- emailaddress, EMAIL_ADDRESS, …), plus every catalog trait or event property marked "pii": true (and a trait's typed
-- column), minus the keys the catalog marks "pii": false. Exact matching lets the views test a whole object with one
-- `?|` and leave objects without personal data (most) untouched at almost no cost. One row, with `visible`
-- (cdp.pii_visible() of the reader): the analyst views join it, so both are computed once per query, not per row.
CREATE OR REPLACE VIEW cdp.pii_keys AS
WITH catalog AS (
    SELECT document FROM cdp.profile_config WHERE name = 'catalog'
), traits AS (
    SELECT t.key, t.value
    FROM catalog, jsonb_each(CASE WHEN jsonb_typeof(document -> 'traits') = 'object' THEN document -> 'traits' ELSE '{}' END) AS t
    WHERE jsonb_typeof(t.value -> 'pii') = 'boolean'
), flags AS (
    SELECT key, (value ->> 'pii')::boolean AS pii FROM traits
    UNION ALL
    SELECT value ->> 'column', (value ->> 'pii')::boolean FROM traits WHERE jsonb_typeof(value -> 'column') = 'string'
    UNION ALL
    SELECT p.key, (p.value ->> 'pii')::boolean
    FROM catalog,
         jsonb_each(CASE WHEN jsonb_typeof(document -> 'events') = 'object' THEN document -> 'events' ELSE '{}' END) AS e,
         jsonb_each(CASE WHEN jsonb_typeof(e.value -> 'properties') = 'object' THEN e.value -> 'properties' ELSE '{}' END) AS p
    WHERE jsonb_typeof(p.value -> 'pii') = 'boolean'
), phrases AS (
    SELECT string_to_array(phrase, ' ') AS words
    FROM unnest(ARRAY[
        'email', 'email address', 'phone', 'phone number', 'mobile', 'mobile phone', 'name', 'first name', 'last name',
        'full name', 'username', 'user name', 'address', 'street', 'birthday', 'birthdate', 'date of birth', 'ip',
        'ip address', 'ssn', 'tax id', 'passport', 'advertising id'
    ]) AS phrase
), builtin AS (
    SELECT spelling AS key
    FROM phrases,
         LATERAL (SELECT array_agg(initcap(w) ORDER BY n) AS capitalized FROM unnest(words) WITH ORDINALITY AS u(w, n)) AS c,
         LATERAL unnest(ARRAY[
             array_to_string(words, ''), array_to_string(words, '_'), array_to_string(words, '-'),
             words[1] || array_to_string(capitalized[2:], ''), array_to_string(capitalized, ''),
             array_to_string(capitalized, ' '), upper(array_to_string(words, '_')), upper(array_to_string(words, ''))
         ]) AS spelling
), keys AS (
    (SELECT key FROM builtin EXCEPT SELECT key FROM flags WHERE NOT pii)
    UNION
    SELECT key FROM flags WHERE pii
)
SELECT coalesce(array_agg(key ORDER BY key), '{}') AS keys, cdp.pii_visible() AS visible FROM keys;
COMMENT ON VIEW cdp.pii_keys IS
    'Tributary: the keys masked in schema analyst (exact): spellings of the built-in list plus catalog "pii": true, minus "pii": false; visible: cdp.pii_visible()';

-- One JSON value masked: strings and numbers through cdp.pii_mask (as a string), null stays null, anything else
-- becomes "***". A SQL-standard body (parsed when created, so using it needs no USAGE on schema cdp) and STABLE like
-- to_jsonb, so that the planner inlines it into the analyst views.
CREATE OR REPLACE FUNCTION cdp.pii_mask_json(value jsonb) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE jsonb_typeof(value)
    WHEN 'null' THEN value
    WHEN 'string' THEN to_jsonb(cdp.pii_mask(value #>> '{}'))
    WHEN 'number' THEN to_jsonb(cdp.pii_mask(value::text))
    ELSE CASE WHEN value IS NOT NULL THEN '"***"'::jsonb END
END;

-- The SQL of an expression giving the jsonb expression `value` with the values of its top-level PII keys masked, for
-- the views of schema analyst (they join cdp.pii_keys AS k). Written into the views rather than called as a function:
-- a function holding a subquery cannot be inlined, and calling one per row costs about 0.1 ms. Rows the reader may
-- see unmasked, anything but an object, and objects without a PII key (one `?|`) are returned as they are.
CREATE OR REPLACE FUNCTION cdp.pii_mask_object_sql(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN format($sql$CASE WHEN k.visible OR jsonb_typeof(%1$s) IS DISTINCT FROM 'object' OR NOT (%1$s ?| k.keys) THEN %1$s
            ELSE %1$s || (SELECT jsonb_object_agg(j.key, cdp.pii_mask_json(j.value)) FROM jsonb_each(%1$s) AS j WHERE j.key = ANY (k.keys))
            END$sql$, value);

CREATE OR REPLACE VIEW analyst.identities AS
SELECT profile_id, kind,
       CASE WHEN k.visible THEN value ELSE cdp.pii_mask(value) END AS value,
       first_seen_at, last_seen_at, is_hub
FROM cdp.identities CROSS JOIN cdp.pii_keys AS k;
COMMENT ON VIEW analyst.identities IS 'Tributary: cdp.identities with every identifier value masked (unless tributary_pii)';

CREATE OR REPLACE VIEW analyst.profile_merges AS
SELECT from_profile_id, into_profile_id, merged_at, reason, kind,
       CASE WHEN k.visible THEN value ELSE cdp.pii_mask(value) END AS value,
       event_seq, message_id
FROM cdp.profile_merges CROSS JOIN cdp.pii_keys AS k;
COMMENT ON VIEW analyst.profile_merges IS 'Tributary: cdp.profile_merges with the linking identifier masked (unless tributary_pii)';

CREATE OR REPLACE VIEW analyst.trait_changes AS
SELECT c.profile_id, c.key,
       CASE WHEN k.visible OR NOT (c.key = ANY (k.keys)) THEN c.old_value ELSE cdp.pii_mask_json(c.old_value) END AS old_value,
       CASE WHEN k.visible OR NOT (c.key = ANY (k.keys)) THEN c.new_value ELSE cdp.pii_mask_json(c.new_value) END AS new_value,
       c.event_timestamp, c.seq, c.message_id, c.reason, c.changed_at, c.change_id
FROM cdp.trait_changes AS c CROSS JOIN cdp.pii_keys AS k;
COMMENT ON VIEW analyst.trait_changes IS 'Tributary: cdp.trait_changes with values of PII keys masked (unless tributary_pii)';

CREATE OR REPLACE VIEW analyst.sources AS
SELECT source_id, name, enabled, created_at, disabled_at FROM cdp.sources;
COMMENT ON VIEW analyst.sources IS 'Tributary: sources (no key material)';

CREATE OR REPLACE VIEW analyst.segment_members AS
SELECT segment, profile_id, entered_at FROM cdp.segment_members;
COMMENT ON VIEW analyst.segment_members IS 'Tributary: current members of each segment (join analyst.profiles for fields)';

CREATE OR REPLACE VIEW analyst.segment_history AS
SELECT segment, profile_id, entered_at, exited_at FROM cdp.segment_history;
COMMENT ON VIEW analyst.segment_history IS 'Tributary: each stay of a profile in a segment';

CREATE OR REPLACE VIEW analyst.consent AS
SELECT profile_id, purpose, granted, updated_at FROM cdp.consent;
COMMENT ON VIEW analyst.consent IS 'Tributary: each profile''s current consent per purpose';

CREATE OR REPLACE VIEW analyst.profile_predictions AS
SELECT profile_id, fit_id, frequency, recency, age, monetary_value, probability_alive, expected_purchases, expected_spend,
       predicted_lifetime_value, scored_at
FROM cdp.profile_predictions;
COMMENT ON VIEW analyst.profile_predictions IS
    'Tributary: predictive traits of every buyer (see analyst.prediction_fits for what they mean)';

CREATE OR REPLACE VIEW analyst.prediction_fits AS
SELECT fit_id, model, purchase_event, revenue_property, time_unit_days, window_start, window_end, customers,
       repeat_customers, r, alpha, a, b, log_likelihood, p, q, v, spend_log_likelihood, purchases_days, lifetime_days,
       annual_discount_rate, fitted_at, duration_ms
FROM cdp.prediction_fits;
COMMENT ON VIEW analyst.prediction_fits IS 'Tributary: every fit of the customer-base models, with its data window';

CREATE OR REPLACE VIEW analyst.profile_propensities AS
SELECT profile_id, name, model_id, probability, percentile, scored_at FROM cdp.profile_propensities;
COMMENT ON VIEW analyst.profile_propensities IS
    'Tributary: each profile''s propensity per published model (see analyst.propensity_models)';

CREATE OR REPLACE VIEW analyst.propensity_models AS
SELECT model_id, name, kind, goal_event, window_days, training_cutoff, validation_cutoff, training_examples,
       training_positives, validation_examples, validation_positives, auc, log_loss, lift_top_decile, model, trained_at,
       duration_ms
FROM cdp.propensity_models;
COMMENT ON VIEW analyst.propensity_models IS 'Tributary: every published propensity model with its validation figures';

CREATE OR REPLACE VIEW analyst.profile_recommendations AS
SELECT profile_id, rank, product_id, score, source, computed_at FROM cdp.profile_recommendations;
COMMENT ON VIEW analyst.profile_recommendations IS
    'Tributary: each profile''s next-best products, ranked (see analyst.popular_products for profiles without rows)';

CREATE OR REPLACE VIEW analyst.popular_products AS
SELECT rank, product_id, score, computed_at FROM cdp.popular_products;
COMMENT ON VIEW analyst.popular_products IS 'Tributary: the most popular products: the recommendations of new profiles';

-- Grants the analyst views to tributary_analyst if that role exists (tributary roles setup creates it); returns
-- whether it did. Serialized with `roles setup` by an advisory lock: concurrent GRANTs on one object can collide.
CREATE OR REPLACE FUNCTION cdp.grant_analyst_views() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regrole('tributary_analyst') IS NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tributary.roles'));
    GRANT USAGE ON SCHEMA analyst TO tributary_analyst;
    GRANT SELECT ON ALL TABLES IN SCHEMA analyst TO tributary_analyst;
    RETURN true;
END
$$;
COMMENT ON FUNCTION cdp.grant_analyst_views() IS
    'Tributary: grants USAGE on schema analyst and SELECT on its views to tributary_analyst, if that role exists';

-- (Re)creates analyst.events and re-grants schema analyst; re-run by every migrate and roles setup. analyst.profiles,
-- whose columns follow the catalog and the computed traits, is generated by Tributary (AnalystViews) from the
-- definition of cdp.profiles it compiles, after this file.
CREATE OR REPLACE FUNCTION cdp.apply_analyst_views() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- analyst.events: context keeps its keys; context.ip, the PII keys of context.traits, the ids of
    -- context.externalIds and context.device.id/advertisingId are masked.
    EXECUTE format($sql$
        CREATE OR REPLACE VIEW analyst.events AS
        SELECT e.seq, e.message_id, e.source_id, e.type, e.event, e.name,
               CASE WHEN k.visible THEN e.user_id ELSE cdp.pii_mask(e.user_id) END AS user_id,
               CASE WHEN k.visible THEN e.anonymous_id ELSE cdp.pii_mask(e.anonymous_id) END AS anonymous_id,
               e.group_id,
               CASE WHEN k.visible THEN e.previous_id ELSE cdp.pii_mask(e.previous_id) END AS previous_id,
               e.profile_id, e.timestamp, e.original_timestamp, e.sent_at, e.received_at,
               %s AS properties,
               %s AS traits,
               CASE WHEN k.visible OR jsonb_typeof(e.context) IS DISTINCT FROM 'object' THEN e.context
               ELSE e.context
                   || CASE WHEN e.context ? 'ip' THEN jsonb_build_object('ip', cdp.pii_mask_json(e.context -> 'ip')) ELSE '{}' END
                   || CASE WHEN jsonb_typeof(e.context -> 'traits') = 'object' AND (e.context -> 'traits') ?| k.keys
                           THEN jsonb_build_object('traits', %s) ELSE '{}' END
                   || CASE WHEN jsonb_typeof(e.context -> 'externalIds') = 'array'
                           THEN jsonb_build_object('externalIds', coalesce((
                               SELECT jsonb_agg(CASE WHEN jsonb_typeof(x) = 'object' AND x ? 'id'
                                                     THEN x || jsonb_build_object('id', cdp.pii_mask_json(x -> 'id')) ELSE x END ORDER BY n)
                               FROM jsonb_array_elements(e.context -> 'externalIds') WITH ORDINALITY AS a(x, n)), '[]'))
                           ELSE '{}' END
                   || CASE WHEN jsonb_typeof(e.context -> 'device') = 'object' AND (e.context -> 'device') ?| ARRAY['id', 'advertisingId']
                           THEN jsonb_build_object('device', (e.context -> 'device')
                               || CASE WHEN e.context -> 'device' ? 'advertisingId'
                                       THEN jsonb_build_object('advertisingId', cdp.pii_mask_json(e.context -> 'device' -> 'advertisingId')) ELSE '{}' END
                               || CASE WHEN e.context -> 'device' ? 'id'
                                       THEN jsonb_build_object('id', cdp.pii_mask_json(e.context -> 'device' -> 'id')) ELSE '{}' END)
                           ELSE '{}' END
               END AS context,
               e.integrations
        FROM cdp.events AS e CROSS JOIN cdp.pii_keys AS k
        $sql$, cdp.pii_mask_object_sql('e.properties'), cdp.pii_mask_object_sql('e.traits'),
           cdp.pii_mask_object_sql($sql$(e.context -> 'traits')$sql$));
    COMMENT ON VIEW analyst.events IS
        'Tributary: cdp.events with user_id, anonymous_id, previous_id, PII keys of properties/traits/context.traits, context.ip, externalIds and device ids masked (unless tributary_pii)';

    PERFORM cdp.grant_analyst_views();
END
$$;
COMMENT ON FUNCTION cdp.apply_analyst_views() IS
    'Tributary: (re)creates analyst.events, and re-grants schema analyst (analyst.profiles is generated by Tributary)';

SELECT cdp.apply_analyst_views();

-- Functions of an earlier development version (per-row masking was too slow), replaced by cdp.pii_mask_object_sql.
DROP FUNCTION IF EXISTS cdp.pii_mask_context(jsonb, text[]);
DROP FUNCTION IF EXISTS cdp.pii_mask_object(jsonb, text[]);
DROP FUNCTION IF EXISTS cdp.pii_key(text);
