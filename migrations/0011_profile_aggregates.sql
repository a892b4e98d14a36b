-- The profile stage's incremental aggregates: per profile, the partial aggregates of its events (counts, sums,
-- first/last values with their event, value counts, first/last seen, RFM inputs) that a batch combines with its own
-- events instead of re-reading the profile's history. NULL until the stage next touches the profile (or a rebuild),
-- which then computes it from all the profile's events. Internal: its layout follows the computed trait definitions
-- (key "d" identifies them).
ALTER TABLE cdp.profile_data ADD COLUMN aggregates jsonb;
COMMENT ON COLUMN cdp.profile_data.aggregates IS
    'Tributary (internal): partial aggregates of the profile''s events, combined with each batch''s by the profile stage';
