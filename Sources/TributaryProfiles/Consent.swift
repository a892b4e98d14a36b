import Foundation
import Postgres
import TributaryModel

/// Per-profile, per-purpose consent, taken from events as Segment's consent spec sends it:
///
/// ```json
/// {"type": "track", "event": "Segment Consent Preference Updated", "userId": "u1",
///  "context": {"consent": {"categoryPreferences": {"Advertising": false, "Analytics": true}}}}
/// ```
///
/// Any call may carry `context.consent.categoryPreferences`; for each purpose (category) the newest boolean (by event
/// `timestamp`, then receive order) wins, whatever order events arrive in, and non-boolean values are ignored. The
/// profile stage keeps `cdp.profile_consent` current in each batch's transaction and records every effective change
/// in `cdp.consent_changes`; like traits, consent is a function of the profile's events alone, so merges, splits
/// and rebuilds recompute it exactly. A purpose with no preference is not granted: syncs that serve a purpose send
/// only profiles that granted it.
public enum Consent {
    /// The event the consent API records (Segment's name for a consent change).
    public static let eventName = "Segment Consent Preference Updated"

    /// The newest preference per (profile, purpose) among events matching `scope` (a condition on `e`).
    static func latest(_ scope: PostgresQuery) -> PostgresQuery {
        """
        SELECT DISTINCT ON (e.profile_id, p.key) e.profile_id, p.key AS purpose, p.value = 'true'::jsonb AS granted,
               e.timestamp AS updated_at, e.seq
        FROM cdp.events AS e
        CROSS JOIN LATERAL jsonb_each(e.context -> 'consent' -> 'categoryPreferences') AS p
        WHERE \(scope) AND e.profile_id IS NOT NULL AND e.context ? 'consent'
          AND jsonb_typeof(e.context -> 'consent' -> 'categoryPreferences') = 'object'
          AND jsonb_typeof(p.value) = 'boolean'
        ORDER BY e.profile_id, p.key, e.timestamp DESC, e.seq DESC
        """
    }

    /// Applies the preferences in events `after < seq <= through` (profiles in `except` are recomputed instead).
    /// Returns the consent changes recorded.
    static func apply(_ tx: PostgresConnection, after: Int64, through: Int64, except: [UUID]) async throws -> Int {
        let events: PostgresQuery = "e.seq > \(after) AND e.seq <= \(through) AND e.profile_id <> ALL(\(except)::uuid[])"
        return try await tx.query(
            """
            WITH latest AS (\(latest(events))),
            changed AS (
                SELECT l.*, c.granted AS previous FROM latest AS l
                LEFT JOIN cdp.profile_consent AS c ON c.profile_id = l.profile_id AND c.purpose = l.purpose
                WHERE c.profile_id IS NULL OR (l.updated_at, l.seq) > (c.updated_at, c.event_seq)
            ),
            history AS (
                INSERT INTO cdp.consent_changes (profile_id, purpose, granted, previous, event_seq, reason)
                SELECT profile_id, purpose, granted, previous, seq, 'event' FROM changed WHERE previous IS DISTINCT FROM granted
                RETURNING 1
            ),
            upserted AS (
                INSERT INTO cdp.profile_consent AS c (profile_id, purpose, granted, updated_at, event_seq)
                SELECT profile_id, purpose, granted, updated_at, seq FROM changed
                ON CONFLICT (profile_id, purpose) DO UPDATE
                SET granted = excluded.granted, updated_at = excluded.updated_at, event_seq = excluded.event_seq
            )
            SELECT count(*) FROM history
            """
        ).scalar(Int.self)
    }

    /// Replaces the consent of `profiles` (nil: every profile) by what their events with `seq <= through` say,
    /// recording each effective change with `reason` (`merge`, `rebuild`). Profiles without events lose their rows.
    static func replace(_ tx: PostgresConnection, profiles: [UUID]?, through: Int64, reason: String) async throws -> Int {
        if let profiles, profiles.isEmpty { return 0 }
        /// The profile condition on `alias` (always true without profiles).
        func scope(_ alias: String) -> PostgresQuery {
            guard let profiles else { return "true" }
            return "\(identifier: alias).profile_id = ANY(\(profiles)::uuid[])"
        }
        try await tx.execute(
            """
            CREATE TEMP TABLE tributary_consent_latest ON COMMIT DROP AS \(latest("e.seq <= \(through) AND \(scope("e"))"))
            """)
        let changes = try await tx.query(
            """
            WITH old AS (SELECT * FROM cdp.profile_consent AS c WHERE \(scope("c"))),
            history AS (
                INSERT INTO cdp.consent_changes (profile_id, purpose, granted, previous, event_seq, reason)
                SELECT coalesce(l.profile_id, o.profile_id), coalesce(l.purpose, o.purpose), l.granted, o.granted, l.seq, \(reason)
                FROM pg_temp.tributary_consent_latest AS l
                FULL JOIN old AS o ON o.profile_id = l.profile_id AND o.purpose = l.purpose
                WHERE l.granted IS DISTINCT FROM o.granted
                RETURNING 1
            )
            SELECT count(*) FROM history
            """
        ).scalar(Int.self)
        try await tx.execute("DELETE FROM cdp.profile_consent AS c WHERE \(scope("c"))")
        try await tx.execute(
            """
            INSERT INTO cdp.profile_consent (profile_id, purpose, granted, updated_at, event_seq)
            SELECT profile_id, purpose, granted, updated_at, seq FROM pg_temp.tributary_consent_latest
            """)
        try await tx.execute("DROP TABLE pg_temp.tributary_consent_latest")
        return changes
    }
}
