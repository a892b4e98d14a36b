import Foundation
import Postgres
import TributaryModel

extension PrivacyRequests {
    /// Writes everything held about the person one of whose identifiers is `identifier` (`KIND:VALUE`) as one JSON
    /// document (an access request), handing it to `write` in chunks: the events are read in pages from a cursor,
    /// never all at once.
    ///
    /// ```json
    /// {"identifier": {"kind": "email", "value": "ann@example.com"}, "generated_at": "…",
    ///  "profiles": [{"profile_id", "traits", "computed_traits", "first_seen_at", "last_seen_at", "event_count",
    ///                "identities": [{"kind", "value", "first_seen_at", "last_seen_at"}]}],
    ///  "merged_profile_ids": [...], "trait_history": [...], "consent": [...], "consent_history": [...],
    ///  "segments": [...], "segment_history": [...], "merges": [...],
    ///  "sync_deliveries": [{"sync", "key", "fields", "removed", "delivered_at"}], "pending_deliveries": [...],
    ///  "events": [{"message_id", "type", "event", "name", "user_id", "anonymous_id", "previous_id", "timestamp", …}]}
    /// ```
    ///
    /// Events are those of the profiles, those not yet resolved to a profile that carry one of the identifiers, and
    /// alias calls whose previousId is one of them (as a user id or an anonymous id).
    /// The request is logged (`privacy.export`) with the number of events.
    @discardableResult
    public func export(identifier: String, actor: AuditLog.Actor, to write: (String) async throws -> Void) async throws -> Int {
        let subject = try await resolve(identifier)
        let request = try await begin("export", subject.requested, actor: actor)
        do {
            let events = try await client.withConnection { db in
                let needles = try await Self.needles(db, subject)
                let rules = try await Self.rulesDocument(db)
                let head = try await db.query(Self.document(subject, needles: needles)).scalar(String.self)
                guard head.hasSuffix("}") else { throw PrivacyError("the export document is not a JSON object") }
                try await write(String(head.dropLast()) + ", \"events\": [")
                // The events in a transaction of their own, so the temporary tables live as long as the cursor.
                let count = try await db.withTransaction { tx in
                    try await Self.stageSubject(tx, subject)
                    var count = 0
                    var page = ""
                    try await tx.forEachRow(
                        """
                        SELECT json_build_object(
                            'message_id', e.message_id, 'type', e.type, 'event', e.event, 'name', e.name,
                            'user_id', e.user_id, 'anonymous_id', e.anonymous_id, 'group_id', e.group_id, 'previous_id', e.previous_id,
                            'profile_id', e.profile_id, 'source_id', e.source_id,
                            'timestamp', cdp.json_timestamp(e.timestamp), 'received_at', cdp.json_timestamp(e.received_at),
                            'properties', e.properties, 'traits', e.traits, 'context', e.context)::text
                        FROM cdp.events AS e
                        WHERE e.profile_id IN (SELECT profile_id FROM pg_temp.tributary_privacy_profiles)
                           OR (e.profile_id IS NULL AND \(Self.carriesIdentifier(rules: rules)))
                           -- An alias call naming the person as previousId, even where it joined no profile of theirs.
                           OR (e.type = 'alias' AND \(Self.carriesIdentifier(rules: rules)))
                        ORDER BY e.timestamp, e.seq
                        """
                    ) { row in
                        page += (count == 0 ? "\n  " : ",\n  ") + (try row[0].decode(String.self))
                        count += 1
                        if page.utf8.count >= 256 * 1024 {
                            try await write(page)
                            page = ""
                        }
                    }
                    try await write(page + (count == 0 ? "]}\n" : "\n]}\n"))
                    return count
                }
                try await db.withTransaction { tx in
                    try await Self.finish(
                        tx, request: request, kind: "export", identifier: subject.requested, actor: actor,
                        counts: ["events": .number(String(count)), "profiles": .number(String(subject.profiles.count))])
                }
                return count
            }
            return events
        } catch {
            throw await fail(error, request: request, kind: "export", subject: subject, actor: actor)
        }
    }

    /// The whole export as one string (for the API and tests; the CLI streams it).
    public func export(identifier: String, actor: AuditLog.Actor) async throws -> String {
        var document = ""
        try await export(identifier: identifier, actor: actor) { document += $0 }
        return document
    }

    /// The export without its events.
    static func document(_ subject: Subject, needles: [String]) -> PostgresQuery {
        let (profiles, profileIDs) = (subject.profiles, subject.profileIDs)
        let (kind, value) = (subject.requested.kind, subject.requested.value)
        return """
            SELECT json_build_object(
                'identifier', json_build_object('kind', \(kind)::text, 'value', \(value)::text),
                'generated_at', cdp.json_timestamp(now()),
                'profiles', (SELECT coalesce(json_agg(json_build_object(
                        'profile_id', p.id,
                        'traits', coalesce(d.traits, '{}'), 'computed_traits', coalesce(d.computed, '{}'),
                        'first_seen_at', cdp.json_timestamp(d.first_seen_at), 'last_seen_at', cdp.json_timestamp(d.last_seen_at),
                        'event_count', coalesce(d.event_count, 0),
                        'identities', (SELECT coalesce(json_agg(json_build_object(
                                'kind', n.kind, 'value', n.value, 'first_seen_at', cdp.json_timestamp(n.first_seen_at),
                                'last_seen_at', cdp.json_timestamp(n.last_seen_at)) ORDER BY n.first_seq, n.node_id), '[]')
                            FROM cdp.identity_nodes AS n WHERE n.profile_id = p.id))), '[]')
                    FROM unnest(\(profiles)::uuid[]) AS p (id) LEFT JOIN cdp.profile_data AS d ON d.profile_id = p.id),
                'merged_profile_ids', (SELECT coalesce(json_agg(id), '[]') FROM unnest(\(profileIDs)::uuid[]) AS id WHERE id <> ALL(\(profiles)::uuid[])),
                'trait_history', (SELECT coalesce(json_agg(json_build_object(
                        'profile_id', h.profile_id, 'key', h.key, 'old_value', h.old_value, 'new_value', h.new_value,
                        'event_timestamp', cdp.json_timestamp(h.event_timestamp), 'message_id', h.message_id, 'reason', h.reason,
                        'changed_at', cdp.json_timestamp(h.changed_at)) ORDER BY h.change_id), '[]')
                    FROM cdp.trait_history AS h WHERE h.profile_id = ANY(\(profileIDs)::uuid[])),
                'consent', (SELECT coalesce(json_agg(json_build_object(
                        'purpose', c.purpose, 'granted', c.granted, 'updated_at', cdp.json_timestamp(c.updated_at)) ORDER BY c.purpose), '[]')
                    FROM cdp.profile_consent AS c WHERE c.profile_id = ANY(\(profileIDs)::uuid[])),
                'consent_history', (SELECT coalesce(json_agg(json_build_object(
                        'purpose', c.purpose, 'granted', c.granted, 'previous', c.previous, 'reason', c.reason,
                        'changed_at', cdp.json_timestamp(c.changed_at)) ORDER BY c.change_id), '[]')
                    FROM cdp.consent_changes AS c WHERE c.profile_id = ANY(\(profileIDs)::uuid[])),
                'predictions', (SELECT coalesce(json_agg(json_build_object(
                        'profile_id', x.profile_id, 'probability_alive', x.probability_alive,
                        'expected_purchases', x.expected_purchases, 'expected_spend', x.expected_spend,
                        'predicted_lifetime_value', x.predicted_lifetime_value, 'fit_id', x.fit_id,
                        'scored_at', cdp.json_timestamp(x.scored_at)) ORDER BY x.profile_id), '[]')
                    FROM cdp.profile_predictions AS x WHERE x.profile_id = ANY(\(profileIDs)::uuid[])),
                'propensities', (SELECT coalesce(json_agg(json_build_object(
                        'profile_id', x.profile_id, 'name', x.name, 'probability', x.probability, 'percentile', x.percentile,
                        'model_id', x.model_id, 'scored_at', cdp.json_timestamp(x.scored_at)) ORDER BY x.name, x.profile_id), '[]')
                    FROM cdp.profile_propensities AS x WHERE x.profile_id = ANY(\(profileIDs)::uuid[])),
                'recommendations', (SELECT coalesce(json_agg(json_build_object(
                        'profile_id', x.profile_id, 'rank', x.rank, 'product_id', x.product_id, 'score', x.score,
                        'source', x.source, 'computed_at', cdp.json_timestamp(x.computed_at)) ORDER BY x.profile_id, x.rank), '[]')
                    FROM cdp.profile_recommendations AS x WHERE x.profile_id = ANY(\(profileIDs)::uuid[])),
                'segments', (SELECT coalesce(json_agg(json_build_object(
                        'segment', m.segment, 'entered_at', cdp.json_timestamp(m.entered_at)) ORDER BY m.segment), '[]')
                    FROM cdp.segment_members AS m WHERE m.profile_id = ANY(\(profileIDs)::uuid[])),
                'segment_history', (SELECT coalesce(json_agg(json_build_object(
                        'segment', c.segment, 'change', c.change, 'reason', c.reason,
                        'changed_at', cdp.json_timestamp(c.changed_at)) ORDER BY c.change_id), '[]')
                    FROM cdp.segment_changes AS c WHERE c.profile_id = ANY(\(profileIDs)::uuid[])),
                'merges', (SELECT coalesce(json_agg(json_build_object(
                        'from_profile_id', m.from_profile_id, 'into_profile_id', m.into_profile_id, 'reason', m.reason,
                        'kind', m.kind, 'value', m.value, 'merged_at', cdp.json_timestamp(m.merged_at)) ORDER BY m.merge_id), '[]')
                    FROM cdp.profile_merge_log AS m WHERE m.from_profile_id = ANY(\(profileIDs)::uuid[]) OR m.into_profile_id = ANY(\(profileIDs)::uuid[])),
                'sync_deliveries', (SELECT coalesce(json_agg(json_build_object(
                        'sync', s.sync, 'key', s.key_object, 'fields', s.payload, 'removed', s.removed,
                        'delivered_at', cdp.json_timestamp(s.delivered_at)) ORDER BY s.sync, s.key), '[]')
                    FROM cdp.sync_state AS s WHERE \(mentions(key: "s.key_object", fields: "s.payload", needles: needles))),
                'pending_deliveries', (SELECT coalesce(json_agg(json_build_object(
                        'sync', s.sync, 'key', s.key_object, 'fields', s.payload, 'operation', s.operation,
                        'sent_at', cdp.json_timestamp(s.sent_at)) ORDER BY s.sync, s.key), '[]')
                    FROM cdp.sync_pending AS s WHERE \(mentions(key: "s.key_object", fields: "s.payload", needles: needles)))
            )::text
            """
    }
}
