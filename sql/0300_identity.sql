-- Identity resolution: identifier extraction and normalization, profile ids, and the analyst views.
-- Re-applied after every `tributary migrate`. The real-time stage, splits and `tributary identity rebuild` all
-- extract identifiers through cdp.identity_candidates (via cdp.event_identifiers, which adds an alias call's
-- previousId; the rebuild reads userId and anonymousId through cdp.column_identifiers), and every path normalizes
-- and checks a value with cdp.normalized_identifier and cdp.identifier_problem, so they cannot disagree about what
-- an identifier is.

-- The profile id an identifier founds: the first 16 bytes of SHA-256("kind:value"), marked as a version 8 UUID.
-- Deterministic, so a rebuild gives the profiles the ids the real-time stage gave them.
CREATE OR REPLACE FUNCTION cdp.identity_profile_id(kind text, value text) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT encode(set_byte(set_byte(h, 6, (get_byte(h, 6) & 15) | 128), 8, (get_byte(h, 8) & 63) | 128), 'hex')::uuid
    FROM (SELECT substring(sha256(convert_to($1 || ':' || $2, 'UTF8')) FROM 1 FOR 16) AS h) AS digest
$$;
COMMENT ON FUNCTION cdp.identity_profile_id(text, text) IS
    'Tributary: the id of the profile founded by identifier kind:value (SHA-256 based, version 8 UUID)';

-- One identifier's text normalized by `method` (email, phone, lowercase, trim, or anything else for as-is); NULL when
-- longer than max_length characters. Inlined into its callers (a single expression over cheap arguments).
CREATE OR REPLACE FUNCTION cdp.normalized_identifier(p_method text, p_text text, p_max_length int) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN length(p_text) <= p_max_length THEN
               CASE p_method
                   WHEN 'email' THEN lower(btrim(p_text, E' \t\r\n'))
                   WHEN 'phone' THEN CASE WHEN left(btrim(p_text, E' \t\r\n'), 1) = '+' THEN '+' ELSE '' END
                                     || regexp_replace(p_text, '[^0-9]', '', 'g')
                   WHEN 'lowercase' THEN lower(btrim(p_text, E' \t\r\n'))
                   WHEN 'trim' THEN btrim(p_text, E' \t\r\n')
                   ELSE p_text
               END
           END
$$;
COMMENT ON FUNCTION cdp.normalized_identifier(text, text, int) IS
    'Tributary: an identifier''s text normalized by method (email, phone, lowercase, trim); NULL when too long';

-- Why a normalized identifier value is refused (NULL: accepted): too long (value NULL), control characters, a blocked
-- pattern for its kind (or for every kind), or not an email / phone when normalized as one.
CREATE OR REPLACE FUNCTION cdp.identifier_problem(p_kind text, p_method text, p_value text, p_rules jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
               WHEN p_value IS NULL THEN 'too_long'
               WHEN p_value ~ '[[:cntrl:]]' THEN 'control_characters'
               WHEN p_value ~* coalesce(p_rules -> 'blockedRegex' ->> p_kind, p_rules -> 'blockedRegex' ->> '*') THEN 'blocked'
               WHEN p_method = 'email' AND p_value !~ '^[^@[:space:]]+@[^@[:space:]]+$' THEN 'invalid_email'
               WHEN p_method = 'phone' AND length(p_value) - (left(p_value, 1) = '+')::int < 5 THEN 'invalid_phone'
           END
$$;
COMMENT ON FUNCTION cdp.identifier_problem(text, text, text, jsonb) IS
    'Tributary: why a normalized identifier is refused (too_long, control_characters, blocked, invalid_email, invalid_phone), NULL if accepted';

-- The normalization method of an identifier kind under the rules: the rules' normalize entry, else email or phone
-- for those kinds and trim for any other. Inlined; with a constant kind and constant rules it folds to a constant.
CREATE OR REPLACE FUNCTION cdp.identifier_method(p_kind text, p_rules jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT coalesce(p_rules -> 'normalize' ->> p_kind,
                    CASE p_kind WHEN 'email' THEN 'email' WHEN 'phone' THEN 'phone' ELSE 'trim' END)
$$;
COMMENT ON FUNCTION cdp.identifier_method(text, jsonb) IS
    'Tributary: the normalization method of an identifier kind under the given rules (email, phone, lowercase, trim, none)';

-- One identifier found in an event, as a JSON value: no row when it is absent or JSON null; else its kind (cut to
-- 63 characters), its normalized value and the reason it is refused (NULL when usable). A string is taken as it is,
-- a number as its text unless the kind normalizes as email, anything else is refused as wrong_type.
CREATE OR REPLACE FUNCTION cdp.checked_identifier(p_kind text, p_raw jsonb, p_rules jsonb)
RETURNS TABLE (kind text, value text, problem text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- Inlined into the caller. Every caller passes the rules as a constant, so with a constant kind the method, the
    -- maximum length and the blocked pattern fold into constants when the query is planned (a third of the cost
    -- of looking them up per identifier). Each OFFSET 0 keeps a step from being pulled up, so its expressions are
    -- evaluated once per identifier instead of once per use.
    SELECT left(p_kind, 63),
           normalized.value,
           CASE
               -- ^[a-z][a-z0-9_]{0,62}$ written without the bounded repeat, which PostgreSQL's regex engine expands
               -- into 62 copies (2 µs a check instead of 0.2).
               WHEN NOT (p_kind ~ '^[a-z][a-z0-9_]*$' AND length(p_kind) <= 63) THEN 'invalid_kind'
               WHEN normalized.text_value IS NULL THEN 'wrong_type'
               ELSE cdp.identifier_problem(p_kind, cdp.identifier_method(p_kind, p_rules), normalized.value, p_rules)
           END
    FROM (
        SELECT typed.text_value,
               cdp.normalized_identifier(cdp.identifier_method(p_kind, p_rules), typed.text_value,
                                         coalesce((p_rules ->> 'maxLength')::int, 256)) AS value
        FROM (SELECT CASE jsonb_typeof(p_raw)
                         WHEN 'string' THEN p_raw #>> '{}'
                         WHEN 'number' THEN CASE WHEN cdp.identifier_method(p_kind, p_rules) <> 'email' THEN p_raw #>> '{}' END
                     END AS text_value
              WHERE p_raw IS NOT NULL AND jsonb_typeof(p_raw) <> 'null'
              OFFSET 0) AS typed
        OFFSET 0
    ) AS normalized
$$;
COMMENT ON FUNCTION cdp.checked_identifier(text, jsonb, jsonb) IS
    'Tributary: one identifier given as a JSON value, normalized under the given rules, with the reason it is refused (no row when absent)';

-- Every identifier an event carries, normalized, with the reason it is refused (NULL when usable).
-- rules is the complete rules document of cdp.identity_rules: normalize (kind -> email|phone|lowercase|trim|none),
-- traitKeys (trait key -> kind), blockedRegex (kind or "*" -> one case-insensitive regex), maxLength.
CREATE OR REPLACE FUNCTION cdp.identity_candidates(
    p_user_id text, p_anonymous_id text, p_traits jsonb, p_context jsonb, p_rules jsonb
) RETURNS TABLE (kind text, value text, problem text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- Written to be inlined into the caller's query. The six fixed places are one branch each, with the kind a
    -- constant (see cdp.checked_identifier); trait keys from the rules and context.externalIds follow, each behind a
    -- gate that is a one-time test per event (false for every event when the rules list no trait keys). Duplicates
    -- are possible (the same email in traits and context.traits); callers deduplicate.
    SELECT c.* FROM cdp.checked_identifier('user_id', to_jsonb(p_user_id), p_rules) AS c
    UNION ALL
    SELECT c.* FROM cdp.checked_identifier('anonymous_id', to_jsonb(p_anonymous_id), p_rules) AS c
    UNION ALL
    SELECT c.* FROM cdp.checked_identifier('email', p_traits -> 'email', p_rules) AS c
    UNION ALL
    SELECT c.* FROM cdp.checked_identifier('email', p_context -> 'traits' -> 'email', p_rules) AS c
    UNION ALL
    SELECT c.* FROM cdp.checked_identifier('phone', p_traits -> 'phone', p_rules) AS c
    UNION ALL
    SELECT c.* FROM cdp.checked_identifier('phone', p_context -> 'traits' -> 'phone', p_rules) AS c
    UNION ALL
    SELECT c.*
    FROM (SELECT p_rules -> 'traitKeys' AS keys WHERE p_rules -> 'traitKeys' <> '{}' OFFSET 0) AS gate
    CROSS JOIN LATERAL jsonb_each_text(gate.keys) AS keys (key, kind)
    CROSS JOIN (VALUES (p_traits), (p_context -> 'traits')) AS source (object)
    CROSS JOIN LATERAL cdp.checked_identifier(keys.kind, source.object -> keys.key, p_rules) AS c
    UNION ALL
    SELECT c.*
    FROM (SELECT p_context -> 'externalIds' AS items WHERE jsonb_typeof(p_context -> 'externalIds') = 'array' OFFSET 0) AS gate
    CROSS JOIN LATERAL jsonb_array_elements(gate.items) AS external (item)
    CROSS JOIN LATERAL (
        SELECT CASE WHEN jsonb_typeof(external.item) = 'object' THEN lower(btrim(external.item ->> 'type')) ELSE 'external_id' END,
               -- Anything but an object is refused as wrong_type (wrapped in an array, which never passes).
               CASE WHEN jsonb_typeof(external.item) = 'object' THEN external.item -> 'id' ELSE jsonb_build_array(external.item) END
        OFFSET 0
    ) AS item (kind, raw)
    CROSS JOIN LATERAL cdp.checked_identifier(item.kind, item.raw, p_rules) AS c
$$;
COMMENT ON FUNCTION cdp.identity_candidates(text, text, jsonb, jsonb, jsonb) IS
    'Tributary: the normalized identifiers of one event under the given rules, with the reason each refused one is refused';

-- The recursive definition of where an old profile id went: itself while it exists, else follow its newest merge
-- in cdp.profile_merge_log until a live profile. cdp.resolve_profile answers the same from cdp.profile_redirects in
-- one lookup; tests check the table against this walk (the product never runs it: Citus runs no recursive query
-- over a distributed table).
CREATE OR REPLACE FUNCTION cdp.resolve_profile_by_log(old_profile_id uuid) RETURNS uuid
LANGUAGE sql STABLE
SET jit = off
AS $$
    WITH RECURSIVE chain (profile_id, depth) AS (
        SELECT $1, 0
        UNION ALL
        SELECT (SELECT m.into_profile_id FROM cdp.profile_merge_log AS m
                WHERE m.from_profile_id = chain.profile_id ORDER BY m.merge_id DESC LIMIT 1),
               chain.depth + 1
        FROM chain
        WHERE chain.profile_id IS NOT NULL AND chain.depth < 100
          AND NOT EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = chain.profile_id)
    )
    SELECT chain.profile_id FROM chain
    WHERE EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = chain.profile_id)
    LIMIT 1
$$;
COMMENT ON FUNCTION cdp.resolve_profile_by_log(uuid) IS
    'Tributary: the live profile id for any profile id ever issued, by walking cdp.profile_merge_log (the definition; cdp.resolve_profile is the fast form)';

-- The live profile id for any profile id ever issued: itself while it exists, else its row of
-- cdp.profile_redirects (one lookup); NULL if unknown or deleted.
CREATE OR REPLACE FUNCTION cdp.resolve_profile(old_profile_id uuid) RETURNS uuid
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = $1) THEN $1
        ELSE (SELECT r.profile_id FROM cdp.profile_redirects AS r
              WHERE r.from_profile_id = $1
                AND EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = r.profile_id))
    END
$$;
COMMENT ON FUNCTION cdp.resolve_profile(uuid) IS
    'Tributary: the live profile id for any profile id ever issued (follows merges and splits); NULL if unknown';

-- Recomputes the redirects of `changed` ids and of every id whose walk passes through one of them (found backwards
-- along each id's newest merge), from the log: what every writer calls when it logs or forgets a merge, or creates
-- or deletes a profile. Usually a few index probes per changed id. Written as loops of plain statements,
-- one step of every walk at a time, rather than recursive CTEs: Citus runs no recursive query over a distributed
-- table (cdp.resolve_profile_by_log stays the recursive definition tests compare with).
CREATE OR REPLACE FUNCTION cdp.profile_redirects_refresh(changed uuid[]) RETURNS void
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    affected uuid[];
    frontier uuid[];
    starts uuid[];
    currents uuid[];
    ends_from uuid[] := '{}';
    ends_to uuid[] := '{}';
    live_from uuid[];
    live_to uuid[];
    depth int := 0;
BEGIN
    IF changed IS NULL OR cardinality(changed) = 0 THEN
        RETURN;
    END IF;
    -- Only ids the log or the redirects mention can change anything (a profile founded by an identifier never seen
    -- before, the usual case, costs three index probes here).
    SELECT array_agg(DISTINCT c.id) INTO affected FROM unnest(changed) AS c (id)
    WHERE c.id IS NOT NULL
      AND (EXISTS (SELECT 1 FROM cdp.profile_merge_log AS m WHERE m.into_profile_id = c.id)
           OR EXISTS (SELECT 1 FROM cdp.profile_merge_log AS m WHERE m.from_profile_id = c.id)
           OR EXISTS (SELECT 1 FROM cdp.profile_redirects AS r WHERE r.from_profile_id = c.id));
    IF affected IS NULL THEN
        RETURN;
    END IF;
    -- Backwards: ids whose newest merge went into an affected id are affected too.
    frontier := affected;
    LOOP
        SELECT array_agg(DISTINCT m.from_profile_id) INTO frontier
        FROM cdp.profile_merge_log AS m
        WHERE m.into_profile_id = ANY(frontier) AND m.from_profile_id <> ALL(affected)
          AND NOT EXISTS (SELECT 1 FROM cdp.profile_merge_log AS newer
                          WHERE newer.from_profile_id = m.from_profile_id AND newer.merge_id > m.merge_id);
        EXIT WHEN frontier IS NULL;
        affected := affected || frontier;
    END LOOP;
    -- Forwards: from each affected id along its newest merge until a live profile (cdp.resolve_profile_by_log for
    -- all of them at once, at most 100 steps).
    starts := affected;
    currents := affected;
    LOOP
        SELECT coalesce(array_agg(w.s) FILTER (WHERE w.live), '{}'), coalesce(array_agg(w.c) FILTER (WHERE w.live), '{}'),
               coalesce(array_agg(w.s) FILTER (WHERE NOT w.live), '{}'), coalesce(array_agg(w.c) FILTER (WHERE NOT w.live), '{}')
        INTO live_from, live_to, starts, currents
        FROM (SELECT u.s, u.c, EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = u.c) AS live
              FROM unnest(starts, currents) AS u (s, c)) AS w;
        ends_from := ends_from || live_from;
        ends_to := ends_to || live_to;
        EXIT WHEN cardinality(starts) = 0 OR depth >= 100;
        SELECT coalesce(array_agg(u.s), '{}'), coalesce(array_agg(n.into_profile_id), '{}') INTO starts, currents
        FROM unnest(starts, currents) AS u (s, c)
        CROSS JOIN LATERAL (SELECT m.into_profile_id FROM cdp.profile_merge_log AS m
                            WHERE m.from_profile_id = u.c ORDER BY m.merge_id DESC LIMIT 1) AS n;
        depth := depth + 1;
    END LOOP;
    -- An id that is live itself, or whose walk reaches no live profile, has no redirect.
    DELETE FROM cdp.profile_redirects AS r
    WHERE r.from_profile_id = ANY(affected)
      AND NOT EXISTS (SELECT 1 FROM unnest(ends_from, ends_to) AS e (s, c) WHERE e.s = r.from_profile_id AND e.c <> e.s);
    INSERT INTO cdp.profile_redirects (from_profile_id, profile_id)
    SELECT e.s, e.c FROM unnest(ends_from, ends_to) AS e (s, c)
    WHERE e.c <> e.s
    ON CONFLICT (from_profile_id) DO UPDATE SET profile_id = excluded.profile_id
        WHERE cdp.profile_redirects.profile_id <> excluded.profile_id;
END
$$;

-- The redirects used to follow the log and the profiles through statement triggers; every writer now calls
-- cdp.profile_redirects_refresh itself (Citus fires triggers on each shard, on the workers).
DROP TRIGGER IF EXISTS profile_redirects_log_insert ON cdp.profile_merge_log;
DROP TRIGGER IF EXISTS profile_redirects_log_delete ON cdp.profile_merge_log;
DROP TRIGGER IF EXISTS profile_redirects_profile_insert ON cdp.identity_profiles;
DROP TRIGGER IF EXISTS profile_redirects_profile_delete ON cdp.identity_profiles;
DROP FUNCTION IF EXISTS cdp.profile_redirects_follow_log();
DROP FUNCTION IF EXISTS cdp.profile_redirects_follow_profiles();

CREATE OR REPLACE VIEW cdp.identities AS
SELECT profile_id, kind, value, first_seen_at, last_seen_at, status = 'hub' AS is_hub
FROM cdp.identity_nodes;
COMMENT ON VIEW cdp.identities IS
    'Tributary: one row per normalized identifier (kind: user_id, anonymous_id, email, phone, configured kinds) and the profile holding it; is_hub marks values that link too many separate identities and are not used for merging';

-- The identifiers a node was seen with (an edge is stored once, a < b), each with the event that first linked them.
CREATE OR REPLACE FUNCTION cdp.identity_links(p_node bigint) RETURNS TABLE (other bigint, first_seq bigint)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT e.b, e.first_seq FROM cdp.identity_edges AS e WHERE e.a = p_node
    UNION ALL
    SELECT e.a, e.first_seq FROM cdp.identity_edges AS e WHERE e.b = p_node
$$;
COMMENT ON FUNCTION cdp.identity_links(bigint) IS
    'Tributary: the node ids an identifier node was seen with, each with the event that first linked the pair';

-- Junk suspects: emails and phones with the shape of a placeholder typed by strangers: linked only to anonymous ids
-- (two or more), which share nothing else (no two of them were seen with one same identifier besides this value).
-- Advisory only, never a merge rule: a person who typed their email on two browsers and a phone without signing in
-- has exactly this shape (17,540 of the identity benchmark's 300,000 people do), so refusing these values would
-- split real people. A data team reviews the list, most-linked first, and puts true placeholders in rules.blocked,
-- which splits what they joined. Computed from the graph alone, so the real-time stage and a rebuild (which arrive
-- at the same graph) give the same rows. One row per suspect; filter on value or profile_id for one lookup.
CREATE OR REPLACE VIEW cdp.identity_junk_suspects AS
SELECT v.kind, v.value, v.profile_id, links.anonymous_ids, v.first_seen_at, v.last_seen_at
FROM cdp.identity_nodes AS v
CROSS JOIN LATERAL (
    SELECT count(*) AS anonymous_ids, array_agg(n.node_id) AS nodes
    FROM cdp.identity_links(v.node_id) AS linked
    JOIN cdp.identity_nodes AS n ON n.node_id = linked.other
    HAVING count(*) >= 2 AND bool_and(n.kind = 'anonymous_id')
) AS links
WHERE v.kind IN ('email', 'phone') AND v.status = 'active'
  AND NOT EXISTS (
      SELECT 1
      FROM unnest(links.nodes) AS anonymous (node_id)
      CROSS JOIN LATERAL cdp.identity_links(anonymous.node_id) AS linked
      WHERE linked.other <> v.node_id
      GROUP BY linked.other
      HAVING count(*) > 1);
COMMENT ON VIEW cdp.identity_junk_suspects IS
    'Tributary: emails and phones linked only to two or more anonymous ids that share nothing else (the shape of a placeholder typed by strangers, and of a person who never signed in); advisory, for review before adding a value to rules.blocked';

CREATE OR REPLACE VIEW cdp.profile_merges AS
SELECT from_profile_id, into_profile_id, merged_at, reason, kind, value, seq AS event_seq, message_id
FROM cdp.profile_merge_log;
COMMENT ON VIEW cdp.profile_merges IS
    'Tributary: every profile merge (reason identifier: an event carried identifiers of both), split (a value became blocked or a hub) and rebuild reassignment';

-- The alias rule, part 1: what an `alias` call's previousId may be. Per the Segment spec, previousId is an earlier
-- user id or anonymous id of the person now called userId, so it is offered in both forms (kind user_id and kind
-- anonymous_id, each normalized and checked under its own kind's rules); no rows for other calls. The identity stage
-- keeps exactly one form per call (part 2, in IdentityStore.resolveAliases and the rebuild): the anonymous_id form
-- when that value was the anonymousId of this or an earlier event (by seq), else the user_id form. Privacy (deletion,
-- suppression, export) matches both forms.
CREATE OR REPLACE FUNCTION cdp.alias_candidates(p_type text, p_previous_id text, p_rules jsonb)
RETURNS TABLE (kind text, value text, problem text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- Inlined into the caller; the OFFSET 0 keeps the gate a subquery of its own, so its condition is a one-time
    -- filter per event and nothing is extracted for calls other than alias.
    SELECT c.kind, c.value, c.problem
    FROM (SELECT p_previous_id AS previous_id WHERE p_type = 'alias' OFFSET 0) AS gate
    CROSS JOIN LATERAL cdp.identity_candidates(gate.previous_id, gate.previous_id, NULL, NULL, p_rules) AS c
$$;
COMMENT ON FUNCTION cdp.alias_candidates(text, text, jsonb) IS
    'Tributary: the two forms (user_id, anonymous_id) of an alias call''s previousId under the given rules; none for other calls';

-- cdp.checked_identifier's steps for a text that needs no typing (a column), keeping only an accepted value. Written
-- out rather than shared through a function both call: with that extra level of inlining the planner expands the
-- normalized value into every use (the plan repeats it in each check), 1-6% slower over the benchmark's events.
CREATE OR REPLACE FUNCTION cdp.accepted_text_identifier(p_kind text, p_text text, p_rules jsonb)
RETURNS TABLE (kind text, value text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT p_kind, normalized.value
    FROM (SELECT cdp.normalized_identifier(cdp.identifier_method(p_kind, p_rules), p_text,
                                           coalesce((p_rules ->> 'maxLength')::int, 256)) AS value
          WHERE p_text IS NOT NULL
          OFFSET 0) AS normalized
    WHERE cdp.identifier_problem(p_kind, cdp.identifier_method(p_kind, p_rules), normalized.value, p_rules) IS NULL
$$;
COMMENT ON FUNCTION cdp.accepted_text_identifier(text, text, jsonb) IS
    'Tributary: a text identifier of the given kind normalized under the given rules; no row when absent or refused';

-- For the rebuild, which reads every event: the accepted identifiers of an event's userId and anonymousId columns,
-- exactly as cdp.identity_candidates accepts them (the same normalization and checks), over plain text instead of
-- the generic jsonb path (3x cheaper per event). The rebuild takes these from here and everything else (traits,
-- context, alias calls) from cdp.event_identifiers with those two columns NULL; the tests that compare the rebuild
-- with the real-time stage check the two agree.
CREATE OR REPLACE FUNCTION cdp.column_identifiers(p_user_id text, p_anonymous_id text, p_rules jsonb)
RETURNS TABLE (kind text, value text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- One branch per column with the kind a constant, so that, as in cdp.identity_candidates, the method and
    -- blocked pattern fold into constants (1.4x cheaper than the two columns as rows of one VALUES).
    SELECT c.* FROM cdp.accepted_text_identifier('user_id', p_user_id, p_rules) AS c
    UNION ALL
    SELECT c.* FROM cdp.accepted_text_identifier('anonymous_id', p_anonymous_id, p_rules) AS c
$$;
COMMENT ON FUNCTION cdp.column_identifiers(text, text, jsonb) IS
    'Tributary: the accepted identifiers of an event''s userId and anonymousId (what cdp.identity_candidates accepts from them), for the rebuild';

-- Every identifier an event names: cdp.identity_candidates, plus (via_alias true) both forms of an alias call's
-- previousId. The identity stage keeps one of those two forms (see above); deletion, suppression and export match both.
-- (Created in this form with the alias rule; a new column needs DROP FUNCTION first, as RETURNS TABLE cannot change.)
CREATE OR REPLACE FUNCTION cdp.event_identifiers(
    p_type text, p_user_id text, p_anonymous_id text, p_previous_id text, p_traits jsonb, p_context jsonb, p_rules jsonb
) RETURNS TABLE (kind text, value text, problem text, via_alias boolean)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT c.kind, c.value, c.problem, false FROM cdp.identity_candidates(p_user_id, p_anonymous_id, p_traits, p_context, p_rules) AS c
    UNION ALL
    SELECT a.kind, a.value, a.problem, true FROM cdp.alias_candidates(p_type, p_previous_id, p_rules) AS a
$$;
COMMENT ON FUNCTION cdp.event_identifiers(text, text, text, text, jsonb, jsonb, jsonb) IS
    'Tributary: every identifier an event names (its identity candidates, and both forms of an alias previousId with via_alias true), normalized under the given rules';
