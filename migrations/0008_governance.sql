-- Governance: the audit log of administrative actions, and per-profile consent taken from events
-- (context.consent.categoryPreferences, Segment's consent spec) with its history.

CREATE TABLE cdp.audit_log (
    audit_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text,
    details     jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT audit_log_action_not_blank CHECK (btrim(action) <> '')
);
CREATE INDEX audit_log_action ON cdp.audit_log (action, at);
COMMENT ON TABLE cdp.audit_log IS
    'Tributary: administrative actions (who, what, when): applies, syncs, tokens, privacy requests, retention; append-only';
COMMENT ON COLUMN cdp.audit_log.actor IS
    'Who: cli:<operating-system user>, token:<API token name>, or tributary:<process> for automatic actions';

-- The current consent of each profile per purpose: the newest preference (by event timestamp, then receive order)
-- found in its events. A function of the events alone, like traits, so merges, splits and rebuilds stay exact.
CREATE TABLE cdp.profile_consent (
    profile_id  uuid NOT NULL,
    purpose     text NOT NULL,
    granted     boolean NOT NULL,
    updated_at  timestamptz NOT NULL,
    event_seq   bigint NOT NULL,
    PRIMARY KEY (profile_id, purpose)
);
CREATE INDEX profile_consent_purpose ON cdp.profile_consent (purpose, profile_id) WHERE granted;
COMMENT ON TABLE cdp.profile_consent IS
    'Tributary: per profile and purpose, the newest consent preference found in its events (no row: never asked = not granted)';

CREATE TABLE cdp.consent_changes (
    change_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id  uuid NOT NULL,
    purpose     text NOT NULL,
    granted     boolean,
    previous    boolean,
    event_seq   bigint,
    reason      text NOT NULL CHECK (reason IN ('event', 'merge', 'rebuild')),
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consent_changes_profile ON cdp.consent_changes (profile_id, change_id);
COMMENT ON TABLE cdp.consent_changes IS
    'Tributary: every effective change of a profile''s consent (granted NULL: no longer known, after a split)';
