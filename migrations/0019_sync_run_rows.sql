-- Per-row tracking of sync runs: every row a run sent, with what became of it (delivered, rejected with the
-- destination's reason, failed after its tries), kept for each sync's `rowHistoryDays` (default 14) and pruned at the
-- end of its runs. `tributary syncs replay` sends a run's rejected or failed rows again (trigger 'replay').
CREATE TABLE cdp.sync_run_rows (
    run_id      bigint NOT NULL,
    sync        text NOT NULL REFERENCES cdp.syncs (name) ON DELETE CASCADE,
    key         text NOT NULL,
    key_object  jsonb,
    operation   text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('delivered', 'rejected', 'failed')),
    reason      text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, key)
);
CREATE INDEX sync_run_rows_sync_time ON cdp.sync_run_rows (sync, recorded_at);
COMMENT ON TABLE cdp.sync_run_rows IS
    'Tributary: each row a sync run sent and its outcome (delivered, rejected with the reason, failed), kept rowHistoryDays';

ALTER TABLE cdp.sync_runs DROP CONSTRAINT sync_runs_trigger_check;
ALTER TABLE cdp.sync_runs ADD CONSTRAINT sync_runs_trigger_check CHECK (trigger IN ('schedule', 'manual', 'realtime', 'replay'));
