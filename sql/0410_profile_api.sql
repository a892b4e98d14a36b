-- The profile API: one profile as one JSON document, built by PostgreSQL in a single call so that
-- `GET /v1/profiles/{kind}/{value}` costs one round trip and the server passes the text through as it is.
-- Re-applied after every `tributary migrate`.

-- A timestamp as JSON text: ISO 8601 in UTC with milliseconds ("2026-11-01T10:00:00.000Z"), whatever the
-- session's TimeZone (to_json would use the session's offset).
CREATE OR REPLACE FUNCTION cdp.json_timestamp(t timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT to_char($1 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;
COMMENT ON FUNCTION cdp.json_timestamp(timestamptz) IS
    'Tributary: a timestamp as ISO 8601 text in UTC with milliseconds, as the profile API returns it';

-- The document of a live profile: traits and computed traits (from cdp.profile_data; {} while the profile stage
-- has not processed it), segments, identifiers in the order they were first seen, event aggregates, predictive
-- traits (null / {} until computed), recommendations and the newest event_limit events (by timestamp, then receive
-- order). Without a cdp.profile_data row, first_seen_at and
-- last_seen_at come from the identifiers and event_count is 0.
-- PL/pgSQL rather than SQL only so that the statement's plan is cached for the session: a SQL function that cannot
-- be inlined is planned again on every call (about 1 ms here, five times the cost of running it).
CREATE OR REPLACE FUNCTION cdp.profile_document_by_id(p_profile_id uuid, p_event_limit int) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN (SELECT json_build_object(
        'profile_id', $1,
        'traits', coalesce(d.traits, '{}'),
        'computed_traits', coalesce(d.computed, '{}'),
        'segments', (SELECT coalesce(json_agg(json_build_object('segment', m.segment, 'entered_at',
                     cdp.json_timestamp(m.entered_at)) ORDER BY m.segment), '[]')
                     FROM cdp.segment_members AS m WHERE m.profile_id = $1),
        'identities', coalesce(ids.list, '[]'),
        'first_seen_at', cdp.json_timestamp(coalesce(d.first_seen_at, ids.first_seen_at)),
        'last_seen_at', cdp.json_timestamp(coalesce(d.last_seen_at, ids.last_seen_at)),
        'event_count', coalesce(d.event_count, 0),
        'predictions', (SELECT json_build_object(
                            'probability_alive', x.probability_alive, 'expected_purchases', x.expected_purchases,
                            'expected_spend', x.expected_spend, 'predicted_lifetime_value', x.predicted_lifetime_value,
                            'scored_at', cdp.json_timestamp(x.scored_at))
                        FROM cdp.profile_predictions AS x WHERE x.profile_id = $1),
        'propensities', (SELECT coalesce(json_object_agg(x.name, json_build_object(
                             'probability', x.probability, 'percentile', x.percentile)), '{}')
                         FROM cdp.profile_propensities AS x WHERE x.profile_id = $1),
        -- The profile's own recommendations, else (no product interactions) the popular products.
        'recommendations', coalesce(
            (SELECT json_agg(json_build_object('product_id', r.product_id, 'score', r.score, 'source', r.source)
                             ORDER BY r.rank)
             FROM cdp.profile_recommendations AS r WHERE r.profile_id = $1),
            (SELECT json_agg(json_build_object('product_id', p.product_id, 'score', p.score, 'source', 'popular')
                             ORDER BY p.rank)
             FROM cdp.popular_products AS p WHERE p.rank <= 10),
            '[]'),
        'events', coalesce(recent.list, '[]')
    )::text
    FROM (
        SELECT json_agg(json_build_object(
                   'kind', n.kind, 'value', n.value,
                   'first_seen_at', cdp.json_timestamp(n.first_seen_at), 'last_seen_at', cdp.json_timestamp(n.last_seen_at))
                   ORDER BY n.first_seq, n.node_id) AS list,
               min(n.first_seen_at) AS first_seen_at,
               max(n.last_seen_at) AS last_seen_at
        FROM cdp.identity_nodes AS n
        WHERE n.profile_id = $1
    ) AS ids
    LEFT JOIN cdp.profile_data AS d ON d.profile_id = $1
    CROSS JOIN LATERAL (
        SELECT json_agg(json_build_object(
                   'message_id', e.message_id, 'type', e.type, 'event', e.event, 'name', e.name,
                   'timestamp', cdp.json_timestamp(e.timestamp), 'received_at', cdp.json_timestamp(e.received_at),
                   'source_id', e.source_id, 'properties', e.properties, 'traits', e.traits, 'context', e.context)
                   ORDER BY e.timestamp DESC, e.seq DESC) AS list
        FROM (
            -- events_profile_time: (profile_id, timestamp DESC, seq DESC).
            SELECT * FROM cdp.events AS e WHERE e.profile_id = $1 ORDER BY e.timestamp DESC, e.seq DESC LIMIT $2
        ) AS e
    ) AS recent);
END
$$;
COMMENT ON FUNCTION cdp.profile_document_by_id(uuid, int) IS
    'Tributary: the profile API document (JSON text) of a live profile id, with its newest event_limit events';

-- Looks up the profile an identifier belongs to and returns its document, or says why there is none.
--
--   outcome        document / details (JSON text)
--   found          the document (cdp.profile_document_by_id)
--   hub            {"kind", "value", "hub_threshold"}: the identifier is shared by many people (seen with more than
--                  hub_threshold distinct identifiers of one kind), so it identifies no one profile
--   not_found      {"kind", "value", "problem"}: no profile holds it; value is the normalized value, problem why the
--                  identity stage would refuse it (invalid_email, blocked, too_long, ...) or null
--   unknown_kind   {"kind", "known_kinds"}: the kind is neither configured nor held by any identifier
--   invalid_kind   null: the kind is not lower-case letters, digits and _ starting with a letter (at most 63)
--   invalid_value  null: kind profile_id, and the value is not a UUID
--
-- The value is normalized exactly as the identity stage normalizes identifiers (cdp.identity_candidates under the
-- rules in force). Kind profile_id takes any profile id ever issued: ids merged away resolve to the profile that
-- holds their identifiers now (cdp.resolve_profile).
CREATE OR REPLACE FUNCTION cdp.profile_lookup(p_kind text, p_value text, p_event_limit int)
RETURNS TABLE (outcome text, document text)
LANGUAGE plpgsql STABLE
AS $$
-- Written for the hot path: a found identifier costs two statements here (the rules; normalization and the node)
-- and one in cdp.profile_document_by_id; the answer is set by plain assignments (no query each).
DECLARE
    v_rules jsonb;
    v_value text;
    v_problem text;
    v_profile uuid;
    v_status text;
    v_known text[];
    v_used text[] := '{}';
    v_kind text;
BEGIN
    IF p_event_limit IS NULL OR p_event_limit < 0 THEN
        RAISE EXCEPTION 'event_limit must be 0 or more, got %', coalesce(p_event_limit::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_kind = 'profile_id' THEN
        IF p_value !~* '^[[:space:]]*[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}[[:space:]]*$' THEN
            outcome := 'invalid_value';
        ELSE
            v_profile := cdp.resolve_profile(btrim(p_value)::uuid);
            IF v_profile IS NULL THEN
                outcome := 'not_found';
                document := json_build_object('kind', p_kind, 'value', btrim(p_value)::uuid::text, 'problem', NULL)::text;
            ELSE
                outcome := 'found';
                document := cdp.profile_document_by_id(v_profile, p_event_limit);
            END IF;
        END IF;
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_kind IS NULL OR NOT (p_kind ~ '^[a-z][a-z0-9_]*$' AND length(p_kind) <= 63) THEN
        outcome := 'invalid_kind';
        RETURN NEXT;
        RETURN;
    END IF;

    -- The rules document the identity stage reads ({} when none were applied: the defaults, as far as
    -- normalization is concerned), the value normalized under them (normalization depends only on the kind, and
    -- context.externalIds carries any kind), and the node holding it.
    -- (Two statements: with the rules as a column of the same query, cdp.identity_candidates is not inlined.)
    v_rules := coalesce((SELECT r.rules FROM cdp.identity_rules AS r WHERE r.id = 1), '{}');
    -- (cdp.identifier_normalize is in sql/0650_privacy.sql; PL/pgSQL resolves it when this runs.)
    SELECT c.value, c.problem, n.profile_id, n.status INTO v_value, v_problem, v_profile, v_status
    FROM cdp.identifier_normalize(p_kind, p_value, v_rules) AS c
    LEFT JOIN cdp.identity_nodes AS n ON n.kind = p_kind AND n.value = c.value;

    IF v_status = 'hub' THEN
        outcome := 'hub';
        document := json_build_object(
            'kind', p_kind, 'value', v_value, 'hub_threshold', coalesce((v_rules ->> 'hubThreshold')::int, 20))::text;
        RETURN NEXT;
        RETURN;
    END IF;
    IF v_profile IS NOT NULL THEN
        outcome := 'found';
        document := cdp.profile_document_by_id(v_profile, p_event_limit);
        RETURN NEXT;
        RETURN;
    END IF;

    -- Not found: tell a kind nobody uses (a typo) from a value nobody has. Known kinds are the built-in ones, those
    -- the rules name, and those identifiers hold (one index probe per kind, in a loop: Citus runs no recursive
    -- query over a distributed table).
    SELECT min(n.kind) INTO v_kind FROM cdp.identity_nodes AS n;
    WHILE v_kind IS NOT NULL LOOP
        v_used := v_used || v_kind;
        SELECT min(n.kind) INTO v_kind FROM cdp.identity_nodes AS n WHERE n.kind > v_kind;
    END LOOP;
    SELECT array_agg(DISTINCT k ORDER BY k) INTO v_known
    FROM (
        SELECT unnest(ARRAY['profile_id', 'user_id', 'anonymous_id', 'email', 'phone'])
        UNION ALL SELECT value FROM jsonb_each_text(coalesce(v_rules -> 'traitKeys', '{}'))
        UNION ALL SELECT key FROM jsonb_each(coalesce(v_rules -> 'normalize', '{}'))
        UNION ALL SELECT key FROM jsonb_each(coalesce(v_rules -> 'limits', '{}'))
        UNION ALL SELECT jsonb_array_elements_text(coalesce(v_rules -> 'priority', '[]'))
        UNION ALL SELECT jsonb_array_elements_text(coalesce(v_rules -> 'hubExemptKinds', '[]'))
        UNION ALL SELECT jsonb_array_elements_text(b.entry -> 'kinds')
                  FROM jsonb_array_elements(coalesce(v_rules -> 'blocked', '[]')) AS b (entry)
                  WHERE jsonb_typeof(b.entry -> 'kinds') = 'array'
        UNION ALL SELECT unnest(v_used)
    ) AS known (k);
    IF p_kind = ANY (v_known) THEN
        outcome := 'not_found';
        document := json_build_object('kind', p_kind, 'value', coalesce(v_value, p_value), 'problem', v_problem)::text;
    ELSE
        outcome := 'unknown_kind';
        document := json_build_object('kind', p_kind, 'known_kinds', v_known)::text;
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION cdp.profile_lookup(text, text, int) IS
    'Tributary: the profile API lookup of identifier kind:value (or profile_id:UUID): outcome found|hub|not_found|unknown_kind|invalid_kind|invalid_value and the document or details';

-- The profile API document of the profile holding identifier kind:value (normalized as the identity stage does;
-- kind profile_id takes any profile id ever issued), or NULL when there is none or the identifier is a hub.
--
--   SELECT cdp.profile_document('email', ' Alice@Example.COM', 20)::jsonb;
-- PL/pgSQL rather than SQL: a SQL function over profile_lookup cannot be inlined and was planned on every call
-- (6-10 ms a call instead of 0.5).
CREATE OR REPLACE FUNCTION cdp.profile_document(kind text, value text, event_limit int) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    found_document text;
BEGIN
    SELECT l.document INTO found_document FROM cdp.profile_lookup($1, $2, $3) AS l WHERE l.outcome = 'found';
    RETURN found_document;
END
$$;
COMMENT ON FUNCTION cdp.profile_document(text, text, int) IS
    'Tributary: the profile API document (JSON text) of the profile holding identifier kind:value, with its newest event_limit events; NULL if none';
