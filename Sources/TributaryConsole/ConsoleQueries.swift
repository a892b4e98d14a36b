import Foundation
import Postgres

/// The SQL each console page runs, one place for all of it: the pages show each query (literals inlined) behind a
/// "show SQL" link, so an analyst can take it to psql.
enum ConsoleQueries {
    /// Events stored per source and minute over the last hour (`cdp.event_counts`, kept by the event writer).
    static let eventsPerMinute: PostgresQuery = """
        SELECT coalesce(s.name, c.source_id) AS source, c.minute, c.events
        FROM cdp.event_counts AS c
        LEFT JOIN cdp.sources AS s ON s.source_id = c.source_id
        WHERE c.minute >= date_trunc('minute', now()) - interval '59 minutes'
        ORDER BY 1, 2
        """

    /// Each stream stage's checkpoint and how many events it is behind the newest.
    static let stageLag: PostgresQuery = """
        SELECT c.stage, c.seq, greatest(0, coalesce((SELECT max(seq) FROM cdp.events), 0) - c.seq) AS behind, c.updated_at
        FROM cdp.stage_checkpoints AS c
        ORDER BY c.stage
        """

    /// Segments in their applied order with their current member counts.
    static let segmentSizes: PostgresQuery = """
        SELECT d.name, d.realtime, (SELECT count(*) FROM cdp.segment_members AS m WHERE m.segment = d.name)::int8 AS members,
               d.refreshed_at
        FROM cdp.segment_definitions AS d
        ORDER BY d.position
        """

    /// Each sync with its latest run and the rows in error now.
    static let syncHealth: PostgresQuery = """
        SELECT s.name, s.enabled, r.status, r.started_at, r.delivered, r.rejected, r.failed,
               (SELECT count(*) FROM cdp.sync_errors AS e WHERE e.sync = s.name)::int8 AS rows_in_error
        FROM cdp.syncs AS s
        LEFT JOIN LATERAL (SELECT * FROM cdp.sync_runs AS r WHERE r.sync = s.name AND NOT r.dry_run
                           ORDER BY r.run_id DESC LIMIT 1) AS r ON true
        ORDER BY s.position
        """

    /// Sync runs that failed or delivered only part in the last hour.
    static let recentFailures: PostgresQuery = """
        SELECT r.sync, r.run_id, r.status, r.started_at, r.error
        FROM cdp.sync_runs AS r
        WHERE r.status IN ('failed', 'partial') AND r.started_at > now() - interval '1 hour'
        ORDER BY r.run_id DESC
        LIMIT 20
        """

    /// The live profile for any profile id ever issued.
    static func resolve(_ id: UUID) -> PostgresQuery { "SELECT cdp.resolve_profile(\(id))" }

    /// A profile by identifier, normalized as the identity stage normalizes it (the profile API's lookup).
    static func lookup(kind: String, value: String) -> PostgresQuery {
        """
        SELECT l.outcome, (l.document::jsonb ->> 'profile_id')::uuid, l.document
        FROM cdp.profile_lookup(\(kind)::text, \(value)::text, 0) AS l
        """
    }

    /// The profile document the profile API serves (traits, computed traits, identities, segments, latest events).
    static func profileDocument(_ id: UUID) -> PostgresQuery { "SELECT cdp.profile_document_by_id(\(id), 50)" }

    /// Merges into or out of the profile, and splits, newest first.
    static func merges(_ id: UUID) -> PostgresQuery {
        """
        SELECT m.from_profile_id, m.into_profile_id, m.reason, m.kind, m.value, m.merged_at
        FROM cdp.profile_merges AS m
        WHERE m.into_profile_id = \(id) OR m.from_profile_id = \(id)
        ORDER BY m.merged_at DESC
        LIMIT 100
        """
    }

    /// The profile's identifiers and the edges between them (an identifier without edges comes once, with NULL).
    static func graph(_ id: UUID) -> PostgresQuery {
        """
        SELECT n.node_id, n.kind, n.value, n.status, e.b
        FROM cdp.identity_nodes AS n
        LEFT JOIN cdp.identity_edges AS e ON e.a = n.node_id
             AND e.b IN (SELECT node_id FROM cdp.identity_nodes WHERE profile_id = \(id))
        WHERE n.profile_id = \(id)
        ORDER BY n.first_seq, n.node_id
        LIMIT 400
        """
    }

    /// The profile's segment entries and exits, newest first.
    static func segmentHistory(_ id: UUID) -> PostgresQuery {
        """
        SELECT c.segment, c.change, c.reason, c.changed_at
        FROM cdp.segment_changes AS c
        WHERE c.profile_id = \(id)
        ORDER BY c.change_id DESC
        LIMIT 50
        """
    }

    /// The profile's trait changes, newest first (old and new values as JSON text; NULL for none).
    static func traitHistory(_ id: UUID) -> PostgresQuery {
        """
        SELECT h.key, h.old_value::text, h.new_value::text, h.reason, h.changed_at
        FROM cdp.trait_history AS h
        WHERE h.profile_id = \(id)
        ORDER BY h.change_id DESC
        LIMIT 50
        """
    }

    /// Consent per purpose.
    static func consent(_ id: UUID) -> PostgresQuery {
        "SELECT c.purpose, c.granted, c.updated_at FROM cdp.consent AS c WHERE c.profile_id = \(id) ORDER BY c.purpose"
    }

    static func segmentDefinition(_ name: String) -> PostgresQuery {
        """
        SELECT d.definition::text, d.realtime, (SELECT count(*) FROM cdp.segment_members AS m WHERE m.segment = d.name)::int8
        FROM cdp.segment_definitions AS d
        WHERE d.name = \(name)
        """
    }

    /// Entries and exits per day over the last 30 days (every day, zeros included).
    static func segmentDaily(_ name: String) -> PostgresQuery {
        """
        SELECT d.day, count(c.*) FILTER (WHERE c.change = 'entered')::int8, count(c.*) FILTER (WHERE c.change = 'exited')::int8
        FROM generate_series(date_trunc('day', now()) - interval '29 days', date_trunc('day', now()), interval '1 day') AS d (day)
        LEFT JOIN cdp.segment_changes AS c
               ON c.segment = \(name) AND c.changed_at >= d.day AND c.changed_at < d.day + interval '1 day'
        GROUP BY d.day
        ORDER BY d.day
        """
    }

    static func syncState(_ name: String) -> PostgresQuery {
        "SELECT s.definition::text, s.enabled, s.next_run_at FROM cdp.syncs AS s WHERE s.name = \(name)"
    }

    /// The sync's latest 30 runs (dry runs included), newest first.
    static func syncRuns(_ name: String) -> PostgresQuery {
        """
        SELECT r.run_id, r.trigger, r.status, r.added::int8, r.changed::int8, r.removed::int8, r.delivered::int8,
               r.rejected::int8, r.failed::int8, r.started_at, r.duration_ms, r.error
        FROM cdp.sync_runs AS r
        WHERE r.sync = \(name)
        ORDER BY r.run_id DESC
        LIMIT 30
        """
    }

    /// Rows of the sync's kept run history (of one run, or of all) that were rejected or failed, newest first.
    static func syncProblemRows(_ name: String, run: Int64? = nil) -> PostgresQuery {
        """
        SELECT w.run_id, w.key, w.operation, w.outcome, w.reason, w.recorded_at
        FROM cdp.sync_run_rows AS w
        WHERE w.sync = \(name) AND w.outcome <> 'delivered' AND (\(run)::int8 IS NULL OR w.run_id = \(run))
        ORDER BY w.recorded_at DESC, w.run_id DESC
        LIMIT 100
        """
    }

    /// Events after `after` matching the filter (an empty filter matches all): the newest 50 first, or the next 100 in
    /// order, with whether the identity and profile stages have passed them.
    static func liveEvents(source: String, type: String, event: String, after: Int64, newestFirst: Bool) -> PostgresQuery {
        let order: PostgresQuery = newestFirst ? "ORDER BY e.seq DESC LIMIT 50" : "ORDER BY e.seq LIMIT 100"
        return """
            SELECT e.seq, e.received_at, coalesce(s.name, e.source_id), e.type, coalesce(e.event, e.name), e.user_id, e.anonymous_id,
                   e.profile_id,
                   e.profile_id IS NOT NULL AND e.seq <= coalesce((SELECT seq FROM cdp.stage_checkpoints WHERE stage = 'identity'), 0),
                   e.seq <= coalesce((SELECT seq FROM cdp.stage_checkpoints WHERE stage = 'profiles'), 0),
                   jsonb_build_object('properties', e.properties, 'traits', e.traits, 'context', e.context)::text,
                   to_jsonb(e)::text
            FROM cdp.events AS e
            LEFT JOIN cdp.sources AS s ON s.source_id = e.source_id
            WHERE e.seq > \(after)
              AND (\(source) = '' OR s.name = \(source))
              AND (\(type) = '' OR e.type = \(type))
              AND (\(event) = '' OR e.event = \(event) OR e.name = \(event))
            \(order)
            """
    }

    /// Privacy requests, newest first (identifiers are stored only as hashes).
    static let privacyRequests: PostgresQuery = """
        SELECT r.request_id, r.kind, r.status, r.actor, r.identifier_kind, left(r.identifier_hash, 12), r.requested_at,
               r.finished_at, r.counts::text, r.error
        FROM cdp.privacy_requests AS r
        ORDER BY r.request_id DESC
        LIMIT 50
        """

    /// The audit log, newest first.
    static let auditLog: PostgresQuery = """
        SELECT a.at, a.actor, a.action, a.target, a.details::text FROM cdp.audit_log AS a ORDER BY a.audit_id DESC LIMIT 100
        """

    /// API tokens: hints only (the secrets are stored as SHA-256 only).
    static let apiTokens: PostgresQuery = """
        SELECT t.name, t.token_hint, array_to_string(t.scopes, ', '), t.created_at, t.revoked_at
        FROM cdp.api_tokens AS t
        ORDER BY t.revoked_at IS NOT NULL, t.name
        """

    static func setSyncEnabled(_ name: String, _ enabled: Bool) -> PostgresQuery {
        "UPDATE cdp.syncs SET enabled = \(enabled) WHERE name = \(name) RETURNING name"
    }
}
