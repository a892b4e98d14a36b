-- Events stored per source and minute, kept by the event writer in the transaction that stores them (so the count is
-- exact: a retried message is counted once, a rolled-back flush not at all). The console's traffic chart reads it
-- instead of scanning an hour of cdp.events (tens of millions of rows at ten thousand events a second).
CREATE TABLE cdp.event_counts (
    source_id text NOT NULL,
    minute    timestamptz NOT NULL,
    events    bigint NOT NULL CHECK (events >= 0),
    PRIMARY KEY (source_id, minute)
);
COMMENT ON TABLE cdp.event_counts IS
    'Tributary: events stored per source and minute of storing (kept by the event writer); the console''s traffic chart';
