-- Governance functions: normalized hashing and masking of personal data (sync field transforms, the analyst role's
-- masked views), and the consent view for analysts.

-- The form an identifier is hashed in: emails trimmed and lower-cased; phones reduced to digits (what Meta, Google
-- and others expect before SHA-256); anything else trimmed and lower-cased.
CREATE OR REPLACE FUNCTION cdp.pii_normalize(value text, kind text DEFAULT 'text') RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE kind
        WHEN 'phone' THEN nullif(regexp_replace(value, '[^0-9]', '', 'g'), '')
        ELSE nullif(lower(btrim(value)), '')
    END
$$;
COMMENT ON FUNCTION cdp.pii_normalize(text, text) IS
    'Tributary: an identifier as hashed: email/text trimmed and lower-cased, phone digits only; NULL if empty';

-- SHA-256 in lower-case hex of the normalized value; NULL stays NULL.
CREATE OR REPLACE FUNCTION cdp.pii_hash(value text, kind text DEFAULT 'text') RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(cdp.pii_normalize(value, kind), 'UTF8')), 'hex')
$$;
COMMENT ON FUNCTION cdp.pii_hash(text, text) IS
    'Tributary: SHA-256 (hex) of the normalized value (cdp.pii_normalize); NULL stays NULL';

-- A masked form that still helps a human recognise a record: emails keep their first character and domain
-- (j***@example.com), anything else its last four characters (*******4321); four characters or fewer: all masked.
-- Surrounding spaces are trimmed first.
CREATE OR REPLACE FUNCTION cdp.pii_mask(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN v IS NULL THEN NULL
        WHEN position('@' IN v) > 1 THEN left(v, 1) || '***@' || split_part(v, '@', 2)
        WHEN length(v) <= 4 THEN repeat('*', length(v))
        ELSE repeat('*', length(v) - 4) || right(v, 4)
    END
    FROM (SELECT btrim(value) AS v) AS trimmed
$$;
COMMENT ON FUNCTION cdp.pii_mask(text) IS
    'Tributary: a masked value: j***@example.com for emails, the last four characters for anything else';

-- Current consent per profile and purpose (no row: never asked, which syncs treat as not granted).
CREATE OR REPLACE VIEW cdp.consent AS
SELECT profile_id, purpose, granted, updated_at FROM cdp.profile_consent;
COMMENT ON VIEW cdp.consent IS
    'Tributary: each profile''s current consent per purpose, from context.consent.categoryPreferences of its events';
