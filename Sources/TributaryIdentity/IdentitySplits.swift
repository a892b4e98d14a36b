import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryModel

/// Hub detection and splits: when a value becomes a hub (or blocked) after it has merged profiles, the identifiers
/// connected to those profiles are re-resolved from their events as if the value had never been usable, and the
/// events are re-stamped.
///
/// What is re-resolved is the set of whole connected components (over edges between active identifiers) that
/// contain the affected profiles' identifiers, together with every profile any of them belongs to. Components are
/// independent under the merge rule, so replaying their events in receive order with an empty state gives exactly
/// what a full rebuild gives for them.
package enum IdentitySplits {
    struct Report: Sendable {
        var profilesBefore = 0
        var profilesAfter = 0
        var eventsRestamped = 0
    }

    /// Nodes among `candidates` that have become hubs: seen with more than `hubThreshold` distinct identifiers of
    /// one kind, for kinds subject to hub detection.
    static func detectHubs(
        _ tx: PostgresConnection, among candidates: [Int64], rules: IdentityRules, status: String = "active"
    ) async throws -> [Int64] {
        guard !candidates.isEmpty else { return [] }
        // Only a node with more than hubThreshold edges in all can have that many with one kind.
        let busy = try await tx.query(
            """
            SELECT candidate.node
            FROM unnest(\(candidates.map { Int($0) })::int8[]) AS candidate (node)
            CROSS JOIN LATERAL (SELECT count(*) AS edges
                                FROM (SELECT 1 FROM cdp.identity_edges AS e WHERE e.a = candidate.node
                                      UNION ALL
                                      SELECT 1 FROM cdp.identity_edges AS e WHERE e.b = candidate.node
                                      LIMIT \(rules.hubThreshold + 1)) AS linked) AS degree
            WHERE degree.edges > \(rules.hubThreshold)
            """
        ).map { try $0[0].decode(Int.self) }
        guard !busy.isEmpty else { return [] }
        let rows = try await tx.query(
            """
            SELECT c.node_id
            FROM cdp.identity_nodes AS c
            WHERE c.node_id = ANY(\(busy)::int8[]) AND c.status = \(status)
              AND NOT (c.kind = ANY(\(rules.hubExemptKinds)::text[]))
              AND EXISTS (
                  SELECT 1
                  FROM (SELECT e.b FROM cdp.identity_edges AS e WHERE e.a = c.node_id
                        UNION ALL
                        SELECT e.a FROM cdp.identity_edges AS e WHERE e.b = c.node_id) AS linked (other)
                  JOIN cdp.identity_nodes AS n ON n.node_id = linked.other
                  GROUP BY n.kind
                  HAVING count(*) > \(rules.hubThreshold))
            """)
        return try rows.map { try $0[0].decode(Int64.self) }
    }

    /// Marks `hubs` as hubs and deletes `blocked` nodes, then re-resolves everything they had joined, from the
    /// events up to `through` (the events the stage has resolved; later ones may carry an ingest-time guess).
    @discardableResult
    static func split(
        _ tx: PostgresConnection, rules: IdentityRules, document: PostgresJSON, hubs: [Int64], blocked: [Int64],
        through: Int64, logger: Logger
    ) async throws -> Report {
        var report = Report()
        let changed = (hubs + blocked).map { Int($0) }
        guard !changed.isEmpty else { return report }
        var oldProfiles = Set<UUID>()
        var cause: Identifier?
        for row in try await tx.query(
            "SELECT kind, value, profile_id FROM cdp.identity_nodes WHERE node_id = ANY(\(changed)::int8[]) ORDER BY node_id")
        {
            let (kind, value, profile) = try row.decode((String, String, UUID).self)
            oldProfiles.insert(profile)
            if cause == nil { cause = Identifier(kind: kind, value: value) }
        }
        var hubProfiles = Set<UUID>()
        if !hubs.isEmpty {
            for row in try await tx.query(
                """
                UPDATE cdp.identity_nodes SET status = 'hub', profile_id = cdp.identity_profile_id(kind, value)
                WHERE node_id = ANY(\(hubs.map { Int($0) })::int8[])
                RETURNING profile_id, kind, value
                """)
            {
                let (profile, kind, value) = try row.decode((UUID, String, String).self)
                hubProfiles.insert(profile)
                logger.warning(
                    "identity: hub detected; it no longer merges profiles", metadata: ["identifier": "\(kind):\(value)"])
            }
            try await tx.execute(
                """
                INSERT INTO cdp.identity_profiles (profile_id, founder_kind, founder_value, founded_seq)
                SELECT profile_id, kind, value, first_seq FROM cdp.identity_nodes WHERE node_id = ANY(\(hubs.map { Int($0) })::int8[])
                ON CONFLICT (profile_id) DO UPDATE
                SET founder_kind = excluded.founder_kind, founder_value = excluded.founder_value, founded_seq = excluded.founded_seq
                """)
        }
        if !blocked.isEmpty {
            // Hubs next to a blocked value lose its links; those no longer over the threshold merge again.
            let blockedIDs = blocked.map { Int($0) }
            let hubNeighbours = try await tx.query(
                """
                SELECT DISTINCT n.node_id
                FROM cdp.identity_edges AS e
                JOIN cdp.identity_nodes AS n ON n.node_id = CASE WHEN e.a = ANY(\(blockedIDs)::int8[]) THEN e.b ELSE e.a END
                WHERE (e.a = ANY(\(blockedIDs)::int8[]) OR e.b = ANY(\(blockedIDs)::int8[])) AND n.status = 'hub'
                """
            ).map { try $0[0].decode(Int64.self) }
            try await tx.execute(
                "DELETE FROM cdp.identity_edges WHERE a = ANY(\(blockedIDs)::int8[]) OR b = ANY(\(blockedIDs)::int8[])")
            try await tx.execute("DELETE FROM cdp.identity_nodes WHERE node_id = ANY(\(blockedIDs)::int8[])")
            let stillHubs = Set(try await detectHubs(tx, among: hubNeighbours, rules: rules, status: "hub"))
            let released = hubNeighbours.filter { !stillHubs.contains($0) }.map { Int($0) }
            if !released.isEmpty {
                for row in try await tx.query(
                    """
                    UPDATE cdp.identity_nodes SET status = 'active' WHERE node_id = ANY(\(released)::int8[]) RETURNING profile_id
                    """)
                {
                    oldProfiles.insert(try row[0].decode(UUID.self))
                }
                // Events that carried only hubs, one of them now released, are stamped with a hub's own profile:
                // replay those too.
                for row in try await tx.query(
                    """
                    SELECT DISTINCT h.profile_id
                    FROM cdp.identity_edges AS e
                    JOIN cdp.identity_nodes AS h ON h.node_id = CASE WHEN e.a = ANY(\(released)::int8[]) THEN e.b ELSE e.a END
                    WHERE (e.a = ANY(\(released)::int8[]) OR e.b = ANY(\(released)::int8[])) AND h.status = 'hub'
                    """)
                {
                    oldProfiles.insert(try row[0].decode(UUID.self))
                }
            }
        }

        // Grow the set to whole components and every profile and event they touch.
        var seeds = try await tx.query(
            """
            SELECT node_id FROM cdp.identity_nodes WHERE profile_id = ANY(\(Array(oldProfiles))::uuid[]) AND status = 'active'
            """
        ).map { try $0[0].decode(Int64.self) }
        var profiles = oldProfiles
        var events: [ExtractedEvent] = []
        var nodes: [Identifier: StoredNode] = [:]
        var component = Set<Int64>()
        while true {
            component = Set(try await closure(tx, seeds))
            for row in try await tx.query(
                """
                SELECT DISTINCT profile_id FROM cdp.identity_nodes WHERE node_id = ANY(\(component.map { Int($0) })::int8[])
                """)
            {
                profiles.insert(try row[0].decode(UUID.self))
            }
            events = try await IdentityStore.extract(tx, document: document, .profiles(Array(profiles), through: through))
            try await IdentityStore.resolveAliases(tx, &events)
            nodes = try await IdentityStore.nodes(tx, Set(events.flatMap(\.identifiers)))
            let extra = nodes.values.filter { !$0.isHub && !component.contains($0.id) }.map(\.id)
            if extra.isEmpty { break }
            seeds = Array(component) + extra
        }

        var engine = IdentityEngine(rules: rules)
        for var event in events {
            event.identifiers.removeAll { nodes[$0] == nil }
            engine.process(IdentityStage.resolverEvent(event, rules: rules, isHub: { nodes[$0]?.isHub == true }))
        }
        let alive = engine.liveProfiles

        // Identifiers to their new profiles.
        var assignments: [(Int, UUID)] = []
        var movedFrom: [UUID: [UUID: Int]] = [:]
        for (identifier, node) in nodes where !node.isHub {
            guard let profile = engine.profile(of: identifier) else { continue }
            assignments.append((Int(node.id), profile))
            movedFrom[node.profile, default: [:]][profile, default: 0] += 1
        }
        if !assignments.isEmpty {
            try await tx.execute(
                """
                UPDATE cdp.identity_nodes AS n SET profile_id = u.profile_id
                FROM unnest(\(assignments.map(\.0))::int8[], \(assignments.map(\.1))::uuid[]) AS u (node_id, profile_id)
                WHERE n.node_id = u.node_id AND n.node_id = ANY(\(assignments.map(\.0))::int8[]) AND n.profile_id <> u.profile_id
                """)
        }
        // Profiles: the replaced ones go (recorded as splits so their ids stay resolvable), the new ones come.
        // Hubs keep their own profiles.
        for row in try await tx.query(
            """
            SELECT profile_id FROM cdp.identity_nodes WHERE status = 'hub' AND profile_id = ANY(\(Array(profiles))::uuid[])
            """)
        {
            hubProfiles.insert(try row[0].decode(UUID.self))
        }
        let gone = profiles.subtracting(alive).subtracting(hubProfiles)
        var founders: [UUID: Identifier] = [:]
        for row in try await tx.query(
            """
            SELECT profile_id, founder_kind, founder_value FROM cdp.identity_profiles WHERE profile_id = ANY(\(Array(gone))::uuid[])
            """)
        {
            let (id, kind, value) = try row.decode((UUID, String, String).self)
            founders[id] = Identifier(kind: kind, value: value)
        }
        // Record where identifiers went: one row per (old profile, new profile) that received some of them; an old id
        // that is gone resolves to the piece holding its founder (logged last, so cdp.resolve_profile follows it).
        var splitFrom: [UUID] = []
        var splitInto: [UUID] = []
        for old in profiles.sorted(by: { $0.uuidString < $1.uuidString }) {
            let preferred = founders[old].flatMap { engine.profile(of: $0) }
            let targets = (movedFrom[old] ?? [:]).keys.filter { $0 != old && $0 != preferred }.sorted {
                $0.uuidString < $1.uuidString
            }
            for target in targets + (preferred.map { $0 == old ? [] : [$0] } ?? []) {
                splitFrom.append(old)
                splitInto.append(target)
            }
        }
        try await tx.execute("DELETE FROM cdp.identity_profiles WHERE profile_id = ANY(\(Array(gone))::uuid[])")
        try await IdentityStore.storeProfiles(tx, Array(alive), of: engine, replacing: true)
        if !splitFrom.isEmpty {
            try await tx.execute(
                """
                INSERT INTO cdp.profile_merge_log (from_profile_id, into_profile_id, reason, kind, value)
                SELECT f, i, 'split', \(cause?.kind), \(cause?.value)
                FROM unnest(\(splitFrom)::uuid[], \(splitInto)::uuid[]) AS m (f, i)
                """)
        }
        let stamps = engine.finalStamps
        let seqs = stamps.map { Int($0.seq) }
        let restamped =
            try await tx.execute(
                """
                UPDATE cdp.events AS e SET profile_id = s.profile_id
                FROM unnest(\(seqs)::int8[], \(stamps.map(\.profile))::uuid[]) AS s (seq, profile_id)
                WHERE e.seq = s.seq AND e.seq = ANY(\(seqs)::int8[]) AND e.profile_id IS DISTINCT FROM s.profile_id
                """) ?? 0
        try await IdentityStore.refreshRedirects(tx, touched: gone.union(alive).union(hubProfiles).union(splitFrom))
        try await IdentityStore.advanceGraphEpoch(tx)
        // Later stages recompute every profile whose events may have changed hands.
        let involved = profiles.union(alive).union(stamps.compactMap(\.profile)).sorted { $0.uuidString < $1.uuidString }
        try await tx.execute(
            """
            INSERT INTO cdp.profile_changes (profile_id, reason) SELECT unnest(\(involved)::uuid[]), 'split'
            """)
        report.profilesBefore = profiles.count
        report.profilesAfter = alive.count
        report.eventsRestamped = restamped
        logger.info(
            "identity: split",
            metadata: [
                "cause": "\(cause.map(\.description) ?? "")", "profiles_before": "\(profiles.count)",
                "profiles_after": "\(alive.count)", "events_restamped": "\(restamped)",
            ])
        return report
    }

    /// Every active node connected to `seeds` through edges between active nodes: breadth first, one statement per
    /// step (Citus runs no recursive query over a distributed table).
    static func closure(_ tx: PostgresConnection, _ seeds: [Int64]) async throws -> [Int64] {
        var component = Set(seeds)
        var frontier = Array(component).map { Int($0) }
        while !frontier.isEmpty {
            let next = try await tx.query(
                """
                SELECT DISTINCT n.node_id
                FROM (SELECT e.b FROM cdp.identity_edges AS e WHERE e.a = ANY(\(frontier)::int8[])
                      UNION ALL
                      SELECT e.a FROM cdp.identity_edges AS e WHERE e.b = ANY(\(frontier)::int8[])) AS linked (other)
                JOIN cdp.identity_nodes AS n ON n.node_id = linked.other AND n.status = 'active'
                """
            ).map { try $0[0].decode(Int64.self) }
            frontier = next.filter { component.insert($0).inserted }.map { Int($0) }
        }
        return Array(component)
    }
}
