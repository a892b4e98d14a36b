import Foundation
import Logging
import Postgres
import TributaryModel
import TributaryRuntime

/// One event's identifiers as extracted by `cdp.event_identifiers` (`cdp.identity_candidates` and an alias call's previousId).
package struct ExtractedEvent: Sendable {
    var seq: Int64
    var messageID: String
    /// The event's timestamp in microseconds since 1970 (cheaper to move than text).
    var micros: Int64
    var identifiers: [Identifier] = []
    var problems: [(kind: String, reason: String)] = []
    /// For an `alias` call, the two forms of its previousId (`cdp.alias_candidates`) until
    /// ``IdentityStore/resolveAliases(_:_:)`` keeps one of them in `identifiers`.
    var previous: AliasPrevious?
}

/// The user_id and anonymous_id forms of an alias call's previousId: a usable identifier, or why it is refused.
package struct AliasPrevious: Sendable {
    var user: Identifier?
    var userProblem: String?
    var anonymous: Identifier?
}

/// A node of the identity graph as stored.
package struct StoredNode {
    var id: Int64
    var profile: UUID
    var isHub: Bool
}

/// Database access shared by the real-time stage, splits, the rebuild and explain.
package enum IdentityStore {
    package static let processorLock = AdvisoryLockKey(name: "tributary.identity.processor")

    /// The rules in force (defaults when none were applied) and the document the SQL extraction reads.
    static func rules(_ db: PostgresConnection) async throws -> (IdentityRules, PostgresJSON) {
        let rows = try await db.query("SELECT rules::text FROM cdp.identity_rules WHERE id = 1")
        let rules =
            try rows.first.map { try PostgresJSON(text: $0[0].decode(String.self)).decode(IdentityRules.self) }
            ?? IdentityRules()
        return (rules, try rules.document())
    }

    /// Brings `cdp.profile_redirects` up to date after this transaction created or deleted profiles, or logged or
    /// forgot merges: `touched` names those profile ids (a merge by its `from` side). Every writer calls it (rather
    /// than triggers: Citus fires triggers on each shard, on the workers).
    package static func refreshRedirects(_ db: PostgresConnection, touched: some Sequence<UUID>) async throws {
        let ids = Array(Set(touched))
        guard !ids.isEmpty else { return }
        try await db.execute("SELECT cdp.profile_redirects_refresh(\(ids)::uuid[])")
    }

    /// ``refreshRedirects(_:touched:)`` for the profile ids `query` returns.
    package static func refreshRedirects(_ db: PostgresConnection, touchedBy query: PostgresQuery) async throws {
        try await db.execute("SELECT cdp.profile_redirects_refresh(array(\(query)))")
    }

    /// Advances `cdp.identity_graph_epoch`, which tells the identity stage's cache that someone else changed the
    /// graph. Every writer other than the stage calls it; on one server a statement trigger also advances it for any
    /// other change (an analyst's own SQL), but the distributed layouts drop that trigger.
    package static func advanceGraphEpoch(_ db: PostgresConnection) async throws {
        try await db.execute("SELECT nextval('cdp.identity_graph_epoch')")
    }

    /// Where `cdp.identity_graph_epoch` stands: it moves with every statement that changes `cdp.identity_nodes`.
    static func graphEpoch(_ db: PostgresConnection) async throws -> Int64 {
        // 0 until the first change (last_value alone reads the same before and after the first nextval).
        try await db.query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM cdp.identity_graph_epoch").scalar(
            Int64.self)
    }

    /// Which events to extract identifiers from.
    enum EventSelection {
        case range(after: Int64, through: Int64)
        /// The events of these profiles up to `through`.
        case profiles([UUID], through: Int64)
    }

    /// The identifiers of the selected events, in receive order (every selected event, even one without any).
    static func extract(
        _ db: PostgresConnection, document: PostgresJSON, _ selection: EventSelection
    ) async throws -> [ExtractedEvent] {
        // The event's own identifiers, and both forms of an alias call's previousId (resolveAliases keeps one).
        let condition: PostgresQuery
        switch selection {
        case .range(let after, let through): condition = "e.seq > \(after) AND e.seq <= \(through)"
        case .profiles(let ids, let through): condition = "e.profile_id = ANY(\(ids)::uuid[]) AND e.seq <= \(through)"
        }
        let rows = try await db.query(
            """
            SELECT e.seq, e.message_id, (extract(epoch FROM e.timestamp) * 1000000)::int8, c.kind, c.value, c.problem, c.via_alias
            FROM cdp.events AS e
            LEFT JOIN LATERAL cdp.event_identifiers(e.type, e.user_id, e.anonymous_id, e.previous_id, e.traits, e.context, \(document)::jsonb) AS c
                ON true
            WHERE \(condition)
            ORDER BY e.seq
            """)
        var events: [ExtractedEvent] = []
        for row in rows {
            let (seq, messageID, micros, kind, value, problem, alias) =
                try row.decode((Int64, String, Int64, String?, String?, String?, Bool?).self)
            if events.last?.seq != seq { events.append(ExtractedEvent(seq: seq, messageID: messageID, micros: micros)) }
            guard let kind else { continue }
            if alias == true {
                var previous = events[events.count - 1].previous ?? AliasPrevious()
                let usable = problem == nil ? value.map { Identifier(kind: kind, value: $0) } : nil
                if kind == "anonymous_id" {
                    previous.anonymous = usable
                } else {
                    previous.user = usable
                    previous.userProblem = problem
                }
                events[events.count - 1].previous = previous
            } else if let problem {
                events[events.count - 1].problems.append((kind, problem))
            } else if let value {
                events[events.count - 1].identifiers.append(Identifier(kind: kind, value: value))
            }
        }
        return events
    }

    /// The alias rule: keeps one form of each alias call's previousId among the event's identifiers. It is the
    /// anonymous_id form when that value was the anonymousId of this or an earlier event (by seq): an anonymous_id
    /// node first seen at or before the call, or an anonymous id of an event before it among `events`. Otherwise it is
    /// the user_id form (its refusal, if refused, is counted like any other). `events` must be in seq order; the
    /// rebuild applies the same rule in SQL, so both give the same answer whatever the batch boundaries.
    static func resolveAliases(_ db: PostgresConnection, _ events: inout [ExtractedEvent]) async throws {
        guard events.contains(where: { $0.previous != nil }) else { return }
        let wanted = Array(Set(events.compactMap { $0.previous?.anonymous?.value }))
        var firstSeq: [String: Int64] = [:]
        if !wanted.isEmpty {
            for row in try await db.query(
                """
                SELECT n.value, n.first_seq FROM unnest(\(wanted)::text[]) AS wanted (value)
                CROSS JOIN LATERAL (SELECT value, first_seq FROM cdp.identity_nodes AS n
                                    WHERE n.kind = 'anonymous_id' AND n.value = wanted.value LIMIT 1) AS n
                """)
            {
                let (value, seq) = try row.decode((String, Int64).self)
                firstSeq[value] = seq
            }
        }
        for index in events.indices {
            let seq = events[index].seq
            for identifier in events[index].identifiers where identifier.kind == "anonymous_id" {
                firstSeq[identifier.value] = min(firstSeq[identifier.value] ?? seq, seq)
            }
            guard let previous = events[index].previous else { continue }
            if let anonymous = previous.anonymous, let first = firstSeq[anonymous.value], first <= seq {
                events[index].identifiers.append(anonymous)
            } else if let user = previous.user {
                events[index].identifiers.append(user)
            } else if let problem = previous.userProblem {
                events[index].problems.append(("user_id", problem))
            }
        }
    }

    /// The stored nodes of the given identifiers.
    static func nodes(
        _ db: PostgresConnection, _ identifiers: some Collection<Identifier>
    ) async throws -> [Identifier: StoredNode] {
        guard !identifiers.isEmpty else { return [:] }
        let rows = try await db.query(
            """
            SELECT n.node_id, n.kind, n.value, n.profile_id, n.status = 'hub'
            FROM unnest(\(identifiers.map(\.kind))::text[], \(identifiers.map(\.value))::text[]) AS wanted (kind, value)
            -- LIMIT 1 keeps this a per-identifier index lookup (never a hash join over every node).
            CROSS JOIN LATERAL (SELECT * FROM cdp.identity_nodes AS n
                                WHERE n.kind = wanted.kind AND n.value = wanted.value LIMIT 1) AS n
            """)
        var nodes: [Identifier: StoredNode] = [:]
        nodes.reserveCapacity(rows.count)
        for row in rows {
            let (id, kind, value, profile, hub) = try row.decode((Int64, String, String, UUID, Bool).self)
            nodes[Identifier(kind: kind, value: value)] = StoredNode(id: id, profile: profile, isHub: hub)
        }
        return nodes
    }

    /// Loads live profiles (founder, founding event, per-kind counts of active identifiers) into an engine.
    static func loadProfiles(_ db: PostgresConnection, _ ids: Set<UUID>, into engine: inout IdentityEngine) async throws {
        guard !ids.isEmpty else { return }
        var loaded: [UUID: (founder: Identifier, seq: Int64, counts: [String: Int])] = [:]
        for row in try await db.query(
            """
            SELECT p.profile_id, p.founder_kind, p.founder_value, p.founded_seq, c.kind, c.identifiers
            FROM cdp.identity_profiles AS p
            LEFT JOIN LATERAL (SELECT n.kind, count(*) AS identifiers FROM cdp.identity_nodes AS n
                               WHERE n.profile_id = p.profile_id AND n.status = 'active' GROUP BY n.kind) AS c ON true
            WHERE p.profile_id = ANY(\(Array(ids)))
            """)
        {
            let (id, founderKind, founderValue, seq, kind, count) = try row.decode(
                (UUID, String, String, Int64, String?, Int?).self)
            if loaded[id] == nil { loaded[id] = (Identifier(kind: founderKind, value: founderValue), seq, [:]) }
            if let kind, let count { loaded[id]!.counts[kind] = count }
        }
        for (id, profile) in loaded {
            engine.load(profile: id, founder: profile.founder, foundedSeq: profile.seq, counts: profile.counts)
        }
    }

    /// Writes profiles of `engine` (founder and founding event) to `cdp.identity_profiles`; with `replacing`, a row
    /// that exists is overwritten (splits re-found profiles that may keep their ids), otherwise it is an error.
    static func storeProfiles(_ db: PostgresConnection, _ ids: [UUID], of engine: IdentityEngine, replacing: Bool) async throws {
        guard !ids.isEmpty else { return }
        let profiles = ids.map { engine.profiles[$0]! }
        try await db.execute(
            """
            INSERT INTO cdp.identity_profiles (profile_id, founder_kind, founder_value, founded_seq)
            SELECT * FROM unnest(\(ids)::uuid[], \(profiles.map(\.founder.kind))::text[], \(profiles.map(\.founder.value))::text[],
                                 \(profiles.map { Int($0.foundedSeq) })::int8[])
            \(unescaped: replacing ? """
                ON CONFLICT (profile_id) DO UPDATE
                SET founder_kind = excluded.founder_kind, founder_value = excluded.founder_value, founded_seq = excluded.founded_seq
                """ : "")
            """)
    }

    /// Adds counted, ignored identifiers to `cdp.identity_ignored` and logs them.
    static func recordIgnored(_ db: PostgresConnection, _ events: [ExtractedEvent], logger: Logger) async throws -> Int {
        var counts: [String: (count: Int, lastSeq: Int64)] = [:]
        for event in events {
            for problem in event.problems {
                let key = problem.reason + "\u{1}" + problem.kind
                counts[key, default: (0, 0)].count += 1
                counts[key]!.lastSeq = event.seq
            }
        }
        guard !counts.isEmpty else { return 0 }
        let keys = counts.keys.sorted()
        let parts = keys.map { $0.split(separator: "\u{1}", maxSplits: 1).map(String.init) }
        try await db.execute(
            """
            INSERT INTO cdp.identity_ignored AS i (reason, kind, count, last_seq)
            SELECT * FROM unnest(\(parts.map { $0[0] })::text[], \(parts.map { $0[1] })::text[],
                                 \(keys.map { counts[$0]!.count })::int8[], \(keys.map { Int(counts[$0]!.lastSeq) })::int8[])
            ON CONFLICT (reason, kind) DO UPDATE
            SET count = i.count + excluded.count, last_seq = excluded.last_seq, updated_at = excluded.updated_at
            """)
        let total = counts.values.reduce(0) { $0 + $1.count }
        logger.info(
            "identity: ignored identifiers",
            metadata: [
                "count": "\(total)",
                "reasons":
                    "\(keys.map { "\($0.replacingOccurrences(of: "\u{1}", with: "/"))=\(counts[$0]!.count) (last event seq \(counts[$0]!.lastSeq))" }.joined(separator: ", "))",
            ])
        return total
    }
}

extension Checkpoint {
    /// The identity stage's position in `cdp.events`; its generation moves with every rebuild of the graph.
    public static let identity = Checkpoint("identity")
}
