import Foundation
import Logging
import Postgres

/// One event's identifiers as extracted by `cdp.identity_candidates`.
struct ExtractedEvent: Sendable {
    var seq: Int64
    var messageID: String
    /// The event's timestamp in microseconds since 1970 (cheaper to move than text).
    var micros: Int64
    var identifiers: [Identifier] = []
    var problems: [(kind: String, reason: String)] = []
}

/// A node of the identity graph as stored.
struct StoredNode {
    var id: Int64
    var profile: UUID
    var isHub: Bool
}

/// Database access shared by the real-time stage, splits, the rebuild and explain.
enum IdentityStore {
    static let processorLock = AdvisoryLockKey(name: "tributary.identity.processor")
    static let stage = "identity"

    /// The rules in force (defaults when none were applied) and the document the SQL extraction reads.
    static func rules(_ db: PostgresConnection) async throws -> (IdentityRules, PostgresJSON) {
        let rows = try await db.query("SELECT rules::text FROM cdp.identity_rules WHERE id = 1")
        let rules = try rows.first.map { try PostgresJSON(text: $0[0].decode(String.self)).decode(IdentityRules.self) }
            ?? IdentityRules()
        return (rules, try rules.document())
    }

    static func checkpoint(_ db: PostgresConnection) async throws -> Int64 {
        try await db.execute("INSERT INTO cdp.stage_checkpoints (stage) VALUES (\(stage)) ON CONFLICT DO NOTHING")
        return try await db.query("SELECT seq FROM cdp.stage_checkpoints WHERE stage = \(stage)").scalar(Int64.self)
    }

    static func setCheckpoint(_ db: PostgresConnection, _ seq: Int64) async throws {
        try await db.execute("UPDATE cdp.stage_checkpoints SET seq = \(seq), updated_at = now() WHERE stage = \(stage)")
    }

    /// Which events to extract identifiers from.
    enum EventSelection {
        case range(after: Int64, through: Int64)
        case profiles([UUID])
    }

    /// The identifiers of the selected events, in receive order (every selected event, even one without any).
    static func extract(_ db: PostgresConnection, document: PostgresJSON, _ selection: EventSelection) async throws -> [ExtractedEvent] {
        let rows: PostgresRows
        switch selection {
        case .range(let after, let through):
            rows = try await db.query("""
                SELECT e.seq, e.message_id, (extract(epoch FROM e.timestamp) * 1000000)::int8, c.kind, c.value, c.problem
                FROM cdp.events AS e
                LEFT JOIN LATERAL cdp.identity_candidates(e.user_id, e.anonymous_id, e.traits, e.context, \(document)) AS c ON true
                WHERE e.seq > \(after) AND e.seq <= \(through)
                ORDER BY e.seq
                """)
        case .profiles(let ids):
            rows = try await db.query("""
                SELECT e.seq, e.message_id, (extract(epoch FROM e.timestamp) * 1000000)::int8, c.kind, c.value, c.problem
                FROM cdp.events AS e
                LEFT JOIN LATERAL cdp.identity_candidates(e.user_id, e.anonymous_id, e.traits, e.context, \(document)) AS c ON true
                WHERE e.profile_id = ANY(\(ids)::uuid[])
                ORDER BY e.seq
                """)
        }
        var events: [ExtractedEvent] = []
        for row in rows {
            let (seq, messageID, micros, kind, value, problem) = try row.decode((Int64, String, Int64, String?, String?, String?).self)
            if events.last?.seq != seq { events.append(ExtractedEvent(seq: seq, messageID: messageID, micros: micros)) }
            guard let kind else { continue }
            if let problem {
                events[events.count - 1].problems.append((kind, problem))
            } else if let value {
                events[events.count - 1].identifiers.append(Identifier(kind: kind, value: value))
            }
        }
        return events
    }

    /// The stored nodes of the given identifiers.
    static func nodes(_ db: PostgresConnection, _ identifiers: some Collection<Identifier>) async throws -> [Identifier: StoredNode] {
        guard !identifiers.isEmpty else { return [:] }
        let rows = try await db.query("""
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
        for row in try await db.query("""
            SELECT p.profile_id, p.founder_kind, p.founder_value, p.founded_seq, c.kind, c.identifiers
            FROM cdp.identity_profiles AS p
            LEFT JOIN LATERAL (SELECT n.kind, count(*) AS identifiers FROM cdp.identity_nodes AS n
                               WHERE n.profile_id = p.profile_id AND n.status = 'active' GROUP BY n.kind) AS c ON true
            WHERE p.profile_id = ANY(\(Array(ids)))
            """) {
            let (id, founderKind, founderValue, seq, kind, count) = try row.decode((UUID, String, String, Int64, String?, Int?).self)
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
        try await db.execute("""
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
        try await db.execute("""
            INSERT INTO cdp.identity_ignored AS i (reason, kind, count, last_seq)
            SELECT * FROM unnest(\(parts.map { $0[0] })::text[], \(parts.map { $0[1] })::text[],
                                 \(keys.map { counts[$0]!.count })::int8[], \(keys.map { Int(counts[$0]!.lastSeq) })::int8[])
            ON CONFLICT (reason, kind) DO UPDATE
            SET count = i.count + excluded.count, last_seq = excluded.last_seq, updated_at = now()
            """)
        let total = counts.values.reduce(0) { $0 + $1.count }
        logger.info("identity: ignored identifiers", metadata: [
            "count": "\(total)",
            "reasons": "\(keys.map { "\($0.replacingOccurrences(of: "\u{1}", with: "/"))=\(counts[$0]!.count) (last event seq \(counts[$0]!.lastSeq))" }.joined(separator: ", "))",
        ])
        return total
    }
}
