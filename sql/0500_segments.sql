-- Segment membership history for analysts: one row per stay in a segment (exited_at NULL: still a member).
CREATE OR REPLACE VIEW cdp.segment_history AS
SELECT segment, profile_id, changed_at AS entered_at, exited_at
FROM (
    SELECT segment, profile_id, change, changed_at,
           lead(changed_at) OVER (PARTITION BY segment, profile_id ORDER BY change_id) AS exited_at
    FROM cdp.segment_changes
) AS c
WHERE change = 'entered';
COMMENT ON VIEW cdp.segment_history IS
    'Tributary: each stay of a profile in a segment, from cdp.segment_changes (exited_at NULL: still a member)';
