import Foundation
import Postgres
import TributaryModel

/// The identity graph as stored, read in full with COPY while the rebuild's swap transaction holds the real-time
/// stage's lock: edges, profiles and the profile stamp of every event up to the rebuild's end. Nodes are compared
/// with the computed graph as they stream in (never held: they are the largest part).
struct StoredGraph {

    struct EdgeKey: Hashable {
        var a: Int64
        var b: Int64
    }

    /// Nodes read (compared as they came).
    var nodes = 0
    var edges: [EdgeKey: Int64] = [:]
    var profiles: [UUID: (founder: Identifier, foundedSeq: Int64)] = [:]
    /// `(seq, profile)` of every event with `seq <= through`.
    var stamps: [(seq: Int64, profile: UUID?)] = []

    /// Reads the stored graph, comparing its nodes with `computed` into `changes` as they stream in. Edges and stamps
    /// stream on `reader`, a second session, side by side with nodes and profiles on `tx` (each
    /// parsed by its own task): `tx` holds the stage's lock, so both sessions read the same graph.
    static func read(
        _ tx: PostgresConnection, reader: PostgresConnection, through last: Int64, comparingNodesWith computed: RebuildGraph,
        into changes: inout Changes
    ) async throws -> StoredGraph {
        async let edgesAndStamps = readEdgesAndStamps(reader, through: last)
        var graph = StoredGraph()
        var nodesDeleted: [Int64] = []
        var nodesUpdated: [Int] = []
        var ids = [Int64](repeating: -1, count: computed.nodes.count)
        try await tx.copyOut(
            """
            COPY (SELECT node_id, kind, value, profile_id, status = 'hub', first_seq, (extract(epoch FROM first_seen_at) * 1000000)::int8,
                         (extract(epoch FROM last_seen_at) * 1000000)::int8
                  FROM cdp.identity_nodes) TO STDOUT
            """
        ) { chunk in
            var index = 0
            while index < chunk.count {
                let id = IdentityRebuild.parseDecimal(chunk, &index)
                let kind = IdentityRebuild.copyFieldBytes(chunk, &index)
                let value = IdentityRebuild.copyFieldBytes(chunk, &index)
                let profile = IdentityRebuild.parseUUID(chunk, &index)
                let hub = IdentityRebuild.parseBool(chunk, &index)
                let firstSeq = IdentityRebuild.parseDecimal(chunk, &index)
                let firstSeen = IdentityRebuild.parseSignedDecimal(chunk, &index)
                let lastSeen = IdentityRebuild.parseSignedDecimal(chunk, &index)
                graph.nodes += 1
                guard let position = computed.position(kind: kind, value: value) else {
                    nodesDeleted.append(id)
                    continue
                }
                ids[position] = id
                let node = computed.nodes[position]
                if profile != node.profile || hub != node.hub || firstSeq != node.firstSeq || firstSeen != node.firstSeen
                    || lastSeen != node.lastSeen
                {
                    nodesUpdated.append(position)
                }
            }
        }
        changes.ids = ids
        changes.nodesDeleted = nodesDeleted
        changes.nodesUpdated = nodesUpdated
        try await tx.copyOut(
            "COPY (SELECT profile_id, founder_kind, founder_value, founded_seq FROM cdp.identity_profiles) TO STDOUT"
        ) { chunk in
            var index = 0
            while index < chunk.count {
                let profile = IdentityRebuild.parseUUID(chunk, &index)
                let kind = IdentityRebuild.copyField(chunk, &index)
                let value = IdentityRebuild.copyField(chunk, &index)
                let seq = IdentityRebuild.parseDecimal(chunk, &index)
                if let profile { graph.profiles[profile] = (Identifier(kind: kind, value: value), seq) }
            }
        }
        (graph.edges, graph.stamps) = try await edgesAndStamps
        return graph
    }

    /// Every edge, and the stamp of every event with `seq <= last`.
    private static func readEdgesAndStamps(
        _ db: PostgresConnection, through last: Int64
    ) async throws -> (edges: [EdgeKey: Int64], stamps: [(seq: Int64, profile: UUID?)]) {
        // Room for the edges up front (the planner's row estimate), not rehashed a doubling at a time.
        let edgeEstimate = try await db.query(
            "SELECT reltuples::int8 FROM pg_class WHERE oid = 'cdp.identity_edges'::regclass"
        ).scalar(Int64.self)
        var edges: [EdgeKey: Int64] = [:]
        edges.reserveCapacity(Int(min(max(edgeEstimate, 0), 100_000_000)))
        try await db.copyOut("COPY (SELECT a, b, first_seq FROM cdp.identity_edges) TO STDOUT") { chunk in
            var index = 0
            while index < chunk.count {
                let a = IdentityRebuild.parseDecimal(chunk, &index)
                let b = IdentityRebuild.parseDecimal(chunk, &index)
                edges[EdgeKey(a: a, b: b)] = IdentityRebuild.parseDecimal(chunk, &index)
            }
        }
        var stamps: [(seq: Int64, profile: UUID?)] = []
        try await db.copyOut(
            """
            COPY (SELECT seq, profile_id FROM cdp.events WHERE seq <= \(unescaped: String(last))) TO STDOUT
            """
        ) { chunk in
            var index = 0
            while index < chunk.count {
                let seq = IdentityRebuild.parseDecimal(chunk, &index)
                let profile = IdentityRebuild.parseUUID(chunk, &index)
                stamps.append((seq, profile))
            }
        }
        return (edges, stamps)
    }
}

/// What the rebuild changes: the computed graph compared with the stored one, and written as differences only
/// (nothing at all when the graph is current).
struct Changes {
    /// Stored node id of each node of the computed graph (new ones drawn from the table's sequence).
    var ids: [Int64] = []
    var nodesDeleted: [Int64] = []
    var nodesUpdated: [Int] = []
    var nodesInserted: [Int] = []
    var edgesDeleted: [StoredGraph.EdgeKey] = []
    var edgesUpdated: [(StoredGraph.EdgeKey, Int64)] = []
    var edgesInserted: [(StoredGraph.EdgeKey, Int64)] = []
    var profilesDeleted: [UUID] = []
    var profilesUpdated: [(UUID, Identifier, Int64)] = []
    var profilesInserted: [(UUID, Identifier, Int64)] = []
    /// Profiles that disappear, with the profile their founder belongs to now (`cdp.profile_merge_log`, reason
    /// `rebuild`).
    var merges: [(from: UUID, into: UUID, founder: Identifier)] = []
    var restamps: [(seq: Int64, profile: UUID?)] = []

    /// Compares the rest after ``StoredGraph/read(_:through:comparingNodesWith:into:)`` compared the nodes. `stored`
    /// is consumed: what matches is removed from it as the comparison goes (no copy of a million entries).
    mutating func compare(graph: RebuildGraph, stored: consuming StoredGraph, tx: PostgresConnection) async throws {
        // Nodes not stored: new ids.
        nodesInserted = ids.indices.filter { ids[$0] < 0 && graph.nodes[$0].used }
        if !nodesInserted.isEmpty {
            var drawn: [Int64] = []
            drawn.reserveCapacity(nodesInserted.count)
            try await tx.copyOut(
                """
                COPY (SELECT nextval(pg_get_serial_sequence('cdp.identity_nodes', 'node_id'))
                      FROM generate_series(1, \(unescaped: String(nodesInserted.count)))) TO STDOUT
                """
            ) { chunk in
                var index = 0
                while index < chunk.count { drawn.append(IdentityRebuild.parseDecimal(chunk, &index)) }
            }
            for (position, id) in zip(nodesInserted, drawn) { ids[position] = id }
        }

        // Edges, in stored ids (a < b).
        for edge in graph.edges {
            let x = ids[Int(edge.a)], y = ids[Int(edge.b)]
            let key = StoredGraph.EdgeKey(a: min(x, y), b: max(x, y))
            if let first = stored.edges.removeValue(forKey: key) {
                if first != edge.firstSeq { edgesUpdated.append((key, edge.firstSeq)) }
            } else {
                edgesInserted.append((key, edge.firstSeq))
            }
        }
        edgesDeleted = Array(stored.edges.keys)

        // Profiles.
        var computed: [UUID: (founder: Identifier, foundedSeq: Int64)] = [:]
        computed.reserveCapacity(graph.profiles.count)
        for profile in graph.profiles { computed[profile.profile] = (profile.founder, profile.foundedSeq) }
        for (id, old) in stored.profiles {
            if let new = computed[id] {
                if new.founder != old.founder || new.foundedSeq != old.foundedSeq {
                    profilesUpdated.append((id, new.founder, new.foundedSeq))
                }
                continue
            }
            profilesDeleted.append(id)
            if let position = graph.position(of: old.founder), graph.nodes[position].profile != id {
                merges.append((id, graph.nodes[position].profile, old.founder))
            }
        }
        for (id, new) in computed where stored.profiles[id] == nil { profilesInserted.append((id, new.founder, new.foundedSeq)) }

        // Event stamps: both lists in seq order, walked side by side.
        stored.stamps.sort { $0.seq < $1.seq }
        var next = 0
        for event in stored.stamps {
            while next < graph.events.count && graph.events[next].seq < event.seq { next += 1 }
            let profile = next < graph.events.count && graph.events[next].seq == event.seq ? graph.events[next].profile : nil
            if profile != event.profile { restamps.append((event.seq, profile)) }
        }
    }

    /// Writes the differences, in the order the constraints expect: merge log, profiles (then their redirects),
    /// nodes (deleted before inserted: an identifier is unique), edges, event stamps.
    func write(_ tx: PostgresConnection, graph: RebuildGraph, through last: Int64) async throws {
        // Fresh statistics first for the tables the joins below touch: after a truncate or a first run the planner
        // would otherwise think them empty and scan them once per row.
        if !(profilesDeleted.isEmpty && profilesUpdated.isEmpty && profilesInserted.isEmpty) {
            try await tx.execute("ANALYZE cdp.identity_profiles")
        }
        if !(nodesDeleted.isEmpty && nodesUpdated.isEmpty && nodesInserted.isEmpty) {
            try await tx.execute("ANALYZE cdp.identity_nodes")
        }
        if !(edgesDeleted.isEmpty && edgesUpdated.isEmpty && edgesInserted.isEmpty) {
            try await tx.execute("ANALYZE cdp.identity_edges")
        }
        func uuid(_ id: UUID?, _ line: inout [UInt8]) {
            if let id { line.append(contentsOf: id.uuidString.utf8) } else { line.append(contentsOf: "\\N".utf8) }
        }
        func tab(_ line: inout [UInt8]) { line.append(0x09) }
        func number(_ value: Int64, _ line: inout [UInt8]) { IdentityRebuild.appendDecimal(value, to: &line) }

        if !merges.isEmpty {
            try await Self.temp(tx, "rebuild_merges", "from_id uuid, into_id uuid, kind text, value text", merges.count) {
                i, line in
                uuid(merges[i].from, &line)
                tab(&line)
                uuid(merges[i].into, &line)
                tab(&line)
                CopyText.appendEscaped(merges[i].founder.kind, to: &line)
                tab(&line)
                CopyText.appendEscaped(merges[i].founder.value, to: &line)
            }
            try await tx.execute(
                """
                INSERT INTO cdp.profile_merge_log (from_profile_id, into_profile_id, reason, kind, value)
                SELECT from_id, into_id, 'rebuild', kind, value FROM pg_temp.rebuild_merges
                """)
        }
        // Profile ids whose redirects this changes: merges logged or forgotten (by their from side), profiles gone or new.
        var touched = Set(merges.map(\.from)).union(profilesDeleted).union(profilesInserted.map(\.0))
        for row in try await tx.query("SELECT DISTINCT from_profile_id FROM cdp.profile_merge_log WHERE seq > \(last)") {
            touched.insert(try row[0].decode(UUID.self))
        }
        try await tx.execute("DELETE FROM cdp.profile_merge_log WHERE seq > \(last)")
        if !profilesDeleted.isEmpty {
            try await Self.temp(tx, "rebuild_profiles_gone", "profile_id uuid", profilesDeleted.count) { i, line in
                uuid(profilesDeleted[i], &line)
            }
            try await tx.execute(
                "DELETE FROM cdp.identity_profiles AS p USING pg_temp.rebuild_profiles_gone AS g WHERE p.profile_id = g.profile_id"
            )
        }
        func profileRows(_ rows: [(UUID, Identifier, Int64)], _ name: String) async throws {
            try await Self.temp(tx, name, "profile_id uuid, kind text, value text, founded_seq bigint", rows.count) { i, line in
                uuid(rows[i].0, &line)
                tab(&line)
                CopyText.appendEscaped(rows[i].1.kind, to: &line)
                tab(&line)
                CopyText.appendEscaped(rows[i].1.value, to: &line)
                tab(&line)
                number(rows[i].2, &line)
            }
        }
        if !profilesUpdated.isEmpty {
            try await profileRows(profilesUpdated, "rebuild_profiles_changed")
            try await tx.execute(
                """
                UPDATE cdp.identity_profiles AS p SET founder_kind = f.kind, founder_value = f.value, founded_seq = f.founded_seq
                FROM pg_temp.rebuild_profiles_changed AS f WHERE p.profile_id = f.profile_id
                """)
        }
        if !profilesInserted.isEmpty {
            try await profileRows(profilesInserted, "rebuild_profiles_new")
            try await tx.execute(
                """
                INSERT INTO cdp.identity_profiles (profile_id, founder_kind, founder_value, founded_seq)
                SELECT profile_id, kind, value, founded_seq FROM pg_temp.rebuild_profiles_new
                """)
        }
        try await IdentityStore.refreshRedirects(tx, touched: touched)
        if !(nodesDeleted.isEmpty && nodesUpdated.isEmpty && nodesInserted.isEmpty) {
            try await IdentityStore.advanceGraphEpoch(tx)
        }
        if !nodesDeleted.isEmpty {
            try await Self.temp(tx, "rebuild_nodes_gone", "node_id bigint", nodesDeleted.count) { i, line in
                number(nodesDeleted[i], &line)
            }
            try await tx.execute(
                "DELETE FROM cdp.identity_nodes AS n USING pg_temp.rebuild_nodes_gone AS g WHERE n.node_id = g.node_id")
        }
        func nodeRows(_ positions: [Int], _ name: String) async throws {
            let columns =
                "node_id bigint, kind text, value text, profile_id uuid, status text, first_seq bigint, first_seen timestamptz, last_seen timestamptz"
            try await Self.temp(tx, name, columns, positions.count) { i, line in
                let position = positions[i]
                let node = graph.nodes[position]
                number(ids[position], &line)
                tab(&line)
                CopyText.appendEscaped(graph.kind(position), to: &line)
                tab(&line)
                CopyText.appendEscaped(graph.value(position), to: &line)
                tab(&line)
                uuid(node.profile, &line)
                tab(&line)
                line.append(contentsOf: (node.hub ? "hub" : "active").utf8)
                tab(&line)
                number(node.firstSeq, &line)
                tab(&line)
                PostgresTime.append(micros: node.firstSeen, to: &line)
                tab(&line)
                PostgresTime.append(micros: node.lastSeen, to: &line)
            }
        }
        if !nodesUpdated.isEmpty {
            try await nodeRows(nodesUpdated, "rebuild_nodes_changed")
            try await tx.execute(
                """
                UPDATE cdp.identity_nodes AS n
                SET profile_id = m.profile_id, status = m.status, first_seq = m.first_seq, first_seen_at = m.first_seen,
                    last_seen_at = m.last_seen
                FROM pg_temp.rebuild_nodes_changed AS m WHERE n.node_id = m.node_id
                """)
        }
        if !nodesInserted.isEmpty {
            try await nodeRows(nodesInserted, "rebuild_nodes_new")
            try await tx.execute(
                """
                INSERT INTO cdp.identity_nodes (node_id, kind, value, profile_id, status, first_seq, first_seen_at, last_seen_at)
                SELECT node_id, kind, value, profile_id, status, first_seq, first_seen, last_seen FROM pg_temp.rebuild_nodes_new
                """)
        }
        func edgeRows(_ rows: [(StoredGraph.EdgeKey, Int64)], _ name: String) async throws {
            try await Self.temp(tx, name, "a bigint, b bigint, first_seq bigint", rows.count) { i, line in
                number(rows[i].0.a, &line)
                tab(&line)
                number(rows[i].0.b, &line)
                tab(&line)
                number(rows[i].1, &line)
            }
        }
        if !edgesDeleted.isEmpty {
            try await edgeRows(edgesDeleted.map { ($0, 0) }, "rebuild_edges_gone")
            try await tx.execute(
                "DELETE FROM cdp.identity_edges AS e USING pg_temp.rebuild_edges_gone AS g WHERE e.a = g.a AND e.b = g.b")
        }
        if !edgesUpdated.isEmpty {
            try await edgeRows(edgesUpdated, "rebuild_edges_changed")
            try await tx.execute(
                """
                UPDATE cdp.identity_edges AS e SET first_seq = m.first_seq
                FROM pg_temp.rebuild_edges_changed AS m WHERE e.a = m.a AND e.b = m.b
                """)
        }
        if !edgesInserted.isEmpty {
            try await edgeRows(edgesInserted, "rebuild_edges_new")
            try await tx.execute(
                "INSERT INTO cdp.identity_edges (a, b, first_seq) SELECT a, b, first_seq FROM pg_temp.rebuild_edges_new")
        }
        if !restamps.isEmpty {
            try await Self.temp(tx, "rebuild_restamp", "seq bigint, profile_id uuid", restamps.count) { i, line in
                number(restamps[i].seq, &line)
                tab(&line)
                uuid(restamps[i].profile, &line)
            }
            try await tx.execute(
                "UPDATE cdp.events AS e SET profile_id = d.profile_id FROM pg_temp.rebuild_restamp AS d WHERE e.seq = d.seq")
        }
    }

    /// A temporary table `name` (dropped at commit) filled with `count` rows by COPY, then analyzed (a join with a
    /// table the planner has no statistics for goes wrong).
    static func temp(
        _ tx: PostgresConnection, _ name: String, _ columns: String, _ count: Int, _ row: (Int, inout [UInt8]) -> Void
    ) async throws {
        try await tx.execute(PostgresQuery(unsafeSQL: "CREATE TEMPORARY TABLE \(name) (\(columns)) ON COMMIT DROP"))
        try await IdentityRebuild.copyRows(tx, PostgresQuery(unsafeSQL: "COPY pg_temp.\(name) FROM STDIN"), 0..<count, row)
        try await tx.execute(PostgresQuery(unsafeSQL: "ANALYZE pg_temp.\(name)"))
    }
}
