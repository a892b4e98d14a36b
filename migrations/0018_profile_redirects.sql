-- A flat redirect table: every profile id that was merged away or split off, with the live profile that holds its
-- identifiers now, so resolving an old id is one lookup instead of a walk along cdp.profile_merge_log. Kept current
-- by triggers on cdp.profile_merge_log and cdp.identity_profiles (sql/0300_identity.sql), so every writer (the
-- identity stage, splits, rebuilds, privacy deletion) maintains it alike.
CREATE TABLE cdp.profile_redirects (
    from_profile_id uuid PRIMARY KEY,
    profile_id      uuid NOT NULL
);
CREATE INDEX profile_redirects_profile ON cdp.profile_redirects (profile_id);
COMMENT ON TABLE cdp.profile_redirects IS
    'Tributary: each profile id merged away or split off -> the live profile holding its identifiers now (internal; read cdp.resolve_profile)';

-- Filled from the log with the recursive definition (the newest merge of each id, followed until a live profile).
WITH RECURSIVE chain (start, profile_id, depth) AS (
    SELECT ids.from_profile_id, ids.from_profile_id, 0
    FROM (SELECT DISTINCT from_profile_id FROM cdp.profile_merge_log) AS ids
    UNION ALL
    SELECT chain.start,
           (SELECT m.into_profile_id FROM cdp.profile_merge_log AS m
            WHERE m.from_profile_id = chain.profile_id ORDER BY m.merge_id DESC LIMIT 1),
           chain.depth + 1
    FROM chain
    WHERE chain.profile_id IS NOT NULL AND chain.depth < 100
      AND NOT EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = chain.profile_id)
)
INSERT INTO cdp.profile_redirects (from_profile_id, profile_id)
SELECT DISTINCT ON (chain.start) chain.start, chain.profile_id
FROM chain
WHERE chain.depth > 0 AND EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = chain.profile_id)
ORDER BY chain.start, chain.depth;
