-- Real-time activation: syncs marked "realtime" follow the entries and exits of their segment in
-- cdp.segment_changes (the outbox the profile stage writes in each batch's transaction).

-- The members of a segment with its fields, from cdp.segment_members (what real-time syncs read).
ALTER TABLE cdp.segment_definitions ADD COLUMN members_sql text;
COMMENT ON COLUMN cdp.segment_definitions.members_sql IS
    'The current members (cdp.segment_members) with the segment''s fields: the source of real-time syncs';

-- How far each real-time sync has followed cdp.segment_changes. Advanced only after the changes up to it were
-- delivered (or found to need nothing), so a crash repeats work, never skips it; repeated work sends nothing twice
-- because the delivered state (cdp.sync_state) and unconfirmed sends (cdp.sync_pending, same idempotency key) decide.
CREATE TABLE cdp.sync_realtime (
    sync        text PRIMARY KEY REFERENCES cdp.syncs (name) ON DELETE CASCADE,
    change_id   bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cdp.sync_realtime IS
    'Tributary: per real-time sync, the last cdp.segment_changes entry delivered';

ALTER TABLE cdp.sync_runs DROP CONSTRAINT sync_runs_trigger_check;
ALTER TABLE cdp.sync_runs ADD CONSTRAINT sync_runs_trigger_check CHECK (trigger IN ('schedule', 'manual', 'realtime'));
