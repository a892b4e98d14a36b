-- Privacy: the hash identifiers are suppressed and logged under. Re-applied after every `tributary migrate`.

-- SHA-256 in lower-case hex of "kind:value" (the value already normalized, as cdp.identities holds it).
CREATE OR REPLACE FUNCTION cdp.identifier_hash(kind text, value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT encode(sha256(convert_to($1 || ':' || $2, 'UTF8')), 'hex') $$;
COMMENT ON FUNCTION cdp.identifier_hash(text, text) IS
    'Tributary: SHA-256 (hex) of kind:value for a normalized identifier, as cdp.suppressions and cdp.privacy_requests hold it';

-- (An earlier form read the rules itself; the rules are a parameter so that the function is inlined.)
DROP FUNCTION IF EXISTS cdp.identifier_normalize(text, text);

-- An identifier's value normalized exactly as the identity stage normalizes it (cdp.identity_candidates under the
-- rules document p_rules, as in cdp.identity_rules; '{}' for the defaults), with the reason the stage would refuse it
-- (NULL when usable). context.externalIds carries any kind, so every kind normalizes here. Inlined into the caller
-- when p_rules is a parameter or constant.
CREATE OR REPLACE FUNCTION cdp.identifier_normalize(p_kind text, p_value text, p_rules jsonb) RETURNS TABLE (value text, problem text)
LANGUAGE sql STABLE
AS $$
    SELECT c.value, c.problem
    FROM cdp.identity_candidates(
        CASE WHEN p_kind = 'user_id' THEN p_value END,
        CASE WHEN p_kind = 'anonymous_id' THEN p_value END,
        '{}',
        jsonb_build_object('externalIds', jsonb_build_array(jsonb_build_object('type', p_kind, 'id', p_value))),
        p_rules) AS c
    WHERE c.kind = p_kind
    ORDER BY c.problem IS NOT NULL
    LIMIT 1
$$;
COMMENT ON FUNCTION cdp.identifier_normalize(text, text, jsonb) IS
    'Tributary: an identifier value normalized as the identity stage does under the given rules, and why it would be refused (NULL: usable)';
