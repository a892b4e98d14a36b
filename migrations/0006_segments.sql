-- Segments: definitions applied from a file (tributary segments apply), each compiled to the view segments."name";
-- their current members and the history of entries and exits.

CREATE TABLE cdp.segment_definitions (
    name         text PRIMARY KEY CHECK (name <> '' AND octet_length(name) <= 63),
    definition   jsonb NOT NULL,
    view_sql     text NOT NULL,
    realtime     boolean NOT NULL DEFAULT false,
    position     int NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    refreshed_at timestamptz,
    refresh_ms   bigint
);
COMMENT ON TABLE cdp.segment_definitions IS
    'Tributary: segments in force (tributary segments apply): the JSON definition and the query of its view segments."name"';

CREATE TABLE cdp.segment_members (
    segment    text NOT NULL REFERENCES cdp.segment_definitions (name) ON DELETE CASCADE,
    profile_id uuid NOT NULL,
    entered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment, profile_id)
);
CREATE INDEX segment_members_profile ON cdp.segment_members (profile_id);
COMMENT ON TABLE cdp.segment_members IS
    'Tributary: current members of each segment, refreshed on a schedule and, for real-time segments, whenever the profile changes';

CREATE TABLE cdp.segment_changes (
    change_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    segment    text NOT NULL,
    profile_id uuid NOT NULL,
    change     text NOT NULL CHECK (change IN ('entered', 'exited')),
    reason     text NOT NULL CHECK (reason IN ('refresh', 'profile', 'removed')),
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX segment_changes_segment ON cdp.segment_changes (segment, change_id);
CREATE INDEX segment_changes_profile ON cdp.segment_changes (profile_id, change_id);
COMMENT ON TABLE cdp.segment_changes IS
    'Tributary: every entry into and exit from a segment; reason refresh (scheduled), profile (re-evaluated after a change) or removed (segment removed)';

-- Event conditions of segments select by event name and time window.
CREATE INDEX events_event_time ON cdp.events (event, timestamp);
