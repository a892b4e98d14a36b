import Foundation
import Postgres
import TributaryModel

/// What the rebuild changes: the computed graph compared with the stored one, and written as differences only
/// (nothing at all when the graph is current).
///
/// The stored graph is read in full with COPY while the swap transaction holds the real-time stage's lock, and
/// compared row by row as it streams in; none of it is held. First event stamps, half on the transaction's session and
/// half on a second one (the lock is held, so both sessions read the same graph); then the graph's event arrays are
/// released and its identifiers' index rebuilt in their place, and profiles (on the second session) stream alongside
/// nodes and then edges (on the transaction's: an edge names stored node ids, known once the nodes are read). What is kept is only the
/// differences, as indices into the computed graph where it can say the rest.
struct Changes {
    var nodesRead = 0
    /// Stored node id → node: an array over the stored ids' range (`dense`, from `base`) when they are dense enough
    /// (they come from one sequence), else a dictionary.
    private var base: Int64 = 0
    private var dense: [Int32] = []
    private var sparse: [Int64: Int32]?
    /// The first id drawn for ``nodesInserted`` (the rest follow in order).
    private var firstNewID: Int64 = 0
    var nodesDeleted: [Int64] = []
    /// Nodes whose stored row differs, with their stored id.
    var nodesUpdated: [(node: Int32, id: Int64)] = []
    var nodesInserted: [Int32] = []
    var edgesRead = 0
    var edgesDeleted: [(a: Int64, b: Int64)] = []
    /// Edges of the computed graph (indices) whose stored first event differs, and those not stored.
    var edgesUpdated: [UInt32] = []
    var edgesInserted: [UInt32] = []
    var profilesRead = 0
    var profilesDeleted: [UUID] = []
    var profilesUpdated: [(UUID, Identifier, Int64)] = []
    /// Computed profiles not stored: by component, by hub node, and the replay's.
    var componentsInserted: [Int32] = []
    var hubsInserted: [Int32] = []
    var replayedInserted: [UUID] = []
    /// Profiles that disappear, with the profile their founder belongs to now (`cdp.profile_merge_log`, reason
    /// `rebuild`).
    var merges: [(from: UUID, into: UUID, founder: Identifier)] = []
    var stampsRead = 0
    /// Events whose stamp changes, and to what (``RebuildGraph/profileCode(ofEvent:)``; none for an event without
    /// identifiers). Kept in two parts, one per session that compared them (not joined: at 10M events each part
    /// can be 40 MB).
    var restampParts: [[(seq: UInt32, code: Int32)]] = []
    var restampCount: Int { restampParts.reduce(0) { $0 + $1.count } }

    var profilesInserted: Int { componentsInserted.count + hubsInserted.count + replayedInserted.count }
    var rowsRead: Int { nodesRead + edgesRead + profilesRead + stampsRead }
    var rowsChanged: Int {
        nodesDeleted.count + nodesUpdated.count + nodesInserted.count + edgesDeleted.count + edgesUpdated.count
            + edgesInserted.count + profilesDeleted.count + profilesUpdated.count + profilesInserted + restampCount
    }

    /// Reads the stored graph through `last` and compares it with `graph`: stamps on both sessions, then, with the graph's
    /// events released and its identifiers' index rebuilt (``RebuildGraph/restoreIndex()``), profiles on `reader`
    /// alongside nodes and edges on `tx` (which holds the stage's lock).
    static func compare(
        _ tx: PostgresConnection, reader: PostgresConnection, through last: Int64, graph unindexed: RebuildGraph
    ) async throws -> Changes {
        var changes = Changes()
        // Stamps, half on each session.
        async let firstHalf = compareStamps(reader, after: 0, through: last / 2, graph: unindexed)
        let secondHalf = try await compareStamps(tx, after: last / 2, through: last, graph: unindexed)
        let first = try await firstHalf
        changes.stampsRead = first.0 + secondHalf.0
        changes.restampParts = [first.1, secondHalf.1]
        unindexed.events.release()
        let graph = {
            var graph = unindexed
            graph.restoreIndex()
            return graph
        }()
        async let profiles = Changes.profiles(reader, graph: graph)
        try await changes.compareNodes(tx, graph: graph)
        try await changes.compareEdges(tx, graph: graph)
        let compared = try await profiles
        changes.profilesRead = compared.profilesRead
        changes.profilesDeleted = compared.profilesDeleted
        changes.profilesUpdated = compared.profilesUpdated
        changes.merges = compared.merges
        changes.componentsInserted = compared.componentsInserted
        changes.hubsInserted = compared.hubsInserted
        changes.replayedInserted = compared.replayedInserted
        return changes
    }

    /// The stored node id → node index, as built by ``compareNodes(_:graph:)``.
    private func node(_ id: Int64) -> Int? {
        if let sparse { return sparse[id].map(Int.init) }
        guard id >= base, id - base < Int64(dense.count) else { return nil }
        let node = dense[Int(id - base)]
        return node >= 0 ? Int(node) : nil
    }

    /// The stored (or newly drawn) id of every node, for writing edges.
    private func storedIDs(_ graph: RebuildGraph) -> [Int64] {
        var ids = [Int64](repeating: -1, count: graph.nodeCount)
        if let sparse {
            for (id, node) in sparse { ids[Int(node)] = id }
        } else {
            for (offset, node) in dense.enumerated() where node >= 0 { ids[Int(node)] = base + Int64(offset) }
        }
        for (offset, node) in nodesInserted.enumerated() { ids[Int(node)] = firstNewID + Int64(offset) }
        return ids
    }

    /// Nodes: a stored identifier not in the graph goes, one whose profile, status or times differ is updated; then
    /// the graph's identifiers not stored get new ids.
    private mutating func compareNodes(_ tx: PostgresConnection, graph: RebuildGraph) async throws {
        let range = try await tx.query("SELECT coalesce(min(node_id), 0), coalesce(max(node_id), -1) FROM cdp.identity_nodes")
            .first!.decode((Int64, Int64).self)
        base = range.0
        let span = range.1 >= range.0 ? Int(range.1 - range.0) + 1 : 0
        if span <= 2 * graph.nodeCount + 1_000_000 {
            dense = [Int32](repeating: -1, count: span)
        } else {
            sparse = [:]
        }
        var known = [Bool](repeating: false, count: graph.nodeCount)
        var read = 0
        var deleted: [Int64] = []
        var updated: [(node: Int32, id: Int64)] = []
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
                read += 1
                guard let position = graph.position(kind: kind, value: value) else {
                    deleted.append(id)
                    continue
                }
                known[position] = true
                if sparse != nil {
                    sparse![id] = Int32(position)
                } else if id >= base, id - base < Int64(dense.count) {
                    dense[Int(id - base)] = Int32(position)
                } else {
                    // Inserted after the range was read: impossible under the lock, but never index out of it.
                    throw IdentityError("node \(id) is outside the stored range \(range.0)...\(range.1)")
                }
                if profile != graph.profile(ofNode: position) || hub != graph.hub[position]
                    || firstSeq != Int64(graph.firstSeq[position]) || firstSeen != graph.firstSeen[position]
                    || lastSeen != graph.lastSeen[position]
                {
                    updated.append((Int32(position), id))
                }
            }
        }
        nodesRead = read
        nodesDeleted = deleted
        nodesUpdated = updated
        nodesInserted = (0..<graph.nodeCount).lazy.filter { !known[$0] && graph.used($0) }.map { Int32($0) }
        if !nodesInserted.isEmpty {
            // One block of the table's sequence, not one nextval per node (3 s per million). Only the identity stage
            // and a rebuild insert nodes, and this transaction holds both their locks, so nobody draws meanwhile.
            firstNewID = try await tx.query(
                """
                WITH drawn AS (SELECT nextval(pg_get_serial_sequence('cdp.identity_nodes', 'node_id')) AS first)
                SELECT first, setval(pg_get_serial_sequence('cdp.identity_nodes', 'node_id'), first + \(nodesInserted.count - 1))
                FROM drawn
                """
            ).first![0].decode(Int64.self)
        }
    }

    /// Edges, once every stored node id is known: a stored edge between two nodes the graph joins is kept (its first
    /// event updated if it differs), any other goes; the graph's edges not met are inserted.
    private mutating func compareEdges(_ tx: PostgresConnection, graph: RebuildGraph) async throws {
        var met = [Bool](repeating: false, count: graph.edgeCount)
        var read = 0
        var deleted: [(a: Int64, b: Int64)] = []
        var updated: [UInt32] = []
        try await tx.copyOut("COPY (SELECT a, b, first_seq FROM cdp.identity_edges) TO STDOUT") { chunk in
            var index = 0
            while index < chunk.count {
                let a = IdentityRebuild.parseDecimal(chunk, &index)
                let b = IdentityRebuild.parseDecimal(chunk, &index)
                let firstSeq = IdentityRebuild.parseDecimal(chunk, &index)
                read += 1
                guard let x = node(a), let y = node(b), let edge = graph.edge(x, y), !met[edge] else {
                    deleted.append((a, b))
                    continue
                }
                met[edge] = true
                if graph.edgeFirstSeq(edge) != firstSeq { updated.append(UInt32(edge)) }
            }
        }
        edgesRead = read
        edgesDeleted = deleted
        edgesUpdated = updated
        edgesInserted = met.indices.lazy.filter { !met[$0] }.map { UInt32($0) }
    }

    /// Event stamps of `(after, last]`, streamed in any order and each compared with the stamp the graph gives its
    /// event.
    private static func compareStamps(
        _ db: PostgresConnection, after first: Int64, through last: Int64, graph: RebuildGraph
    ) async throws -> (Int, [(seq: UInt32, code: Int32)]) {
        var read = 0
        var restamps: [(seq: UInt32, code: Int32)] = []
        try await db.copyOut(
            """
            COPY (SELECT seq, profile_id FROM cdp.events WHERE seq > \(unescaped: String(first)) AND seq <= \(unescaped: String(last)))
            TO STDOUT
            """
        ) { chunk in
            var index = 0
            while index < chunk.count {
                let seq = IdentityRebuild.parseDecimal(chunk, &index)
                let profile = IdentityRebuild.parseUUID(chunk, &index)
                read += 1
                let code = graph.event(seq: seq).map(graph.profileCode(ofEvent:)) ?? RebuildGraph.noProfile
                if profile != graph.profile(code: code, seq: seq) { restamps.append((UInt32(seq), code)) }
            }
        }
        return (read, restamps)
    }

    /// Profiles: a stored profile is the graph's when its founder founds the same id in the graph (a profile's id
    /// is derived from its founder); any other goes, logged as merged into the profile its founder belongs to now.
    private static func profiles(_ db: PostgresConnection, graph: RebuildGraph) async throws -> Changes {
        var changes = Changes()
        try await changes.compareProfiles(db, graph: graph)
        return changes
    }

    private mutating func compareProfiles(_ db: PostgresConnection, graph: RebuildGraph) async throws {
        var componentMet = [Bool](repeating: false, count: graph.components)
        var hubsMet = Set<Int32>()
        var replayedMet = Set<UUID>()
        var read = 0
        var deleted: [UUID] = []
        var updated: [(UUID, Identifier, Int64)] = []
        var merges: [(from: UUID, into: UUID, founder: Identifier)] = []
        try await db.copyOut(
            "COPY (SELECT profile_id, founder_kind, founder_value, founded_seq FROM cdp.identity_profiles) TO STDOUT"
        ) { chunk in
            var index = 0
            while index < chunk.count {
                let parsed = IdentityRebuild.parseUUID(chunk, &index)
                let kind = IdentityRebuild.copyFieldBytes(chunk, &index)
                let value = IdentityRebuild.copyFieldBytes(chunk, &index)
                let seq = IdentityRebuild.parseDecimal(chunk, &index)
                read += 1
                guard let id = parsed else { continue }
                let founder = {
                    Identifier(kind: String(decoding: kind, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
                }
                if let replayed = graph.replayedProfile(id) {
                    replayedMet.insert(id)
                    let computed = graph.identifier(replayed.founder)
                    if computed != founder() || replayed.foundedSeq != seq { updated.append((id, computed, replayed.foundedSeq)) }
                    continue
                }
                let position = graph.position(kind: kind, value: value)
                if let position, graph.hub[position], graph.hubProfiles[Int32(position)] == id {
                    hubsMet.insert(Int32(position))
                    if Int64(graph.firstSeq[position]) != seq { updated.append((id, founder(), Int64(graph.firstSeq[position]))) }
                    continue
                }
                if let position, let component = graph.component(of: position), let computed = graph.componentProfile(component),
                    computed.profile == id
                {
                    componentMet[component] = true
                    if computed.founder != position || computed.foundedSeq != seq {
                        updated.append((id, graph.identifier(computed.founder), computed.foundedSeq))
                    }
                    continue
                }
                deleted.append(id)
                if let position, graph.profile(ofNode: position) != id {
                    merges.append((id, graph.profile(ofNode: position), founder()))
                }
            }
        }
        profilesRead = read
        profilesDeleted = deleted
        profilesUpdated = updated
        self.merges = merges
        componentsInserted = (0..<graph.components).lazy.filter { !componentMet[$0] && graph.componentProfile($0) != nil }
            .map { Int32($0) }
        hubsInserted = graph.hubProfiles.keys.filter { !hubsMet.contains($0) }.sorted()
        replayedInserted = graph.replayedProfileIDs.filter { !replayedMet.contains($0) }
    }

    /// Writes the differences, in the order the constraints expect: merge log, profiles (then their redirects),
    /// event stamps, nodes (deleted before inserted: an identifier is unique), edges. What is written and no longer
    /// needed is released as it goes (a cold rebuild at 10M events holds 80 MB of restamps and 39 MB of new nodes):
    /// read the counts (``rowsChanged``) before.
    mutating func write(_ tx: PostgresConnection, graph: RebuildGraph, through last: Int64) async throws {
        // Fresh statistics first for the tables the joins below touch: after a truncate or a first run the planner
        // would otherwise think them empty and scan them once per row.
        if !(profilesDeleted.isEmpty && profilesUpdated.isEmpty && profilesInserted == 0) {
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
        func text(_ value: String, _ line: inout [UInt8]) { CopyText.appendEscaped(value, to: &line) }
        // A node's kind and value, two fields, from the graph's bytes.
        func identifier(_ node: Int, _ line: inout [UInt8]) {
            text(graph.table.kindName(Int32(node)), &line)
            tab(&line)
            CopyText.appendEscaped(bytes: graph.table.valueBytes(Int32(node)), to: &line)
        }

        // Profile ids whose redirects this changes: merges logged or forgotten (by their from side), profiles gone or
        // new; collected in a table (a cold rebuild makes millions).
        try await Self.temp(tx, "rebuild_touched", "profile_id uuid", merges.count + profilesDeleted.count) { i, line in
            uuid(i < merges.count ? merges[i].from : profilesDeleted[i - merges.count], &line)
        }
        if !merges.isEmpty {
            try await Self.temp(tx, "rebuild_merges", "from_id uuid, into_id uuid, kind text, value text", merges.count) {
                i, line in
                uuid(merges[i].from, &line)
                tab(&line)
                uuid(merges[i].into, &line)
                tab(&line)
                text(merges[i].founder.kind, &line)
                tab(&line)
                text(merges[i].founder.value, &line)
            }
            try await tx.execute(
                """
                INSERT INTO cdp.profile_merge_log (from_profile_id, into_profile_id, reason, kind, value)
                SELECT from_id, into_id, 'rebuild', kind, value FROM pg_temp.rebuild_merges
                """)
        }
        try await tx.execute(
            """
            INSERT INTO pg_temp.rebuild_touched SELECT DISTINCT from_profile_id FROM cdp.profile_merge_log WHERE seq > \(last);
            """)
        try await tx.execute("DELETE FROM cdp.profile_merge_log WHERE seq > \(last)")
        if !profilesDeleted.isEmpty {
            try await Self.temp(tx, "rebuild_profiles_gone", "profile_id uuid", profilesDeleted.count) { i, line in
                uuid(profilesDeleted[i], &line)
            }
            try await tx.execute(
                "DELETE FROM cdp.identity_profiles AS p USING pg_temp.rebuild_profiles_gone AS g WHERE p.profile_id = g.profile_id"
            )
        }
        let profileColumns = "profile_id uuid, kind text, value text, founded_seq bigint"
        if !profilesUpdated.isEmpty {
            try await Self.temp(tx, "rebuild_profiles_changed", profileColumns, profilesUpdated.count) { i, line in
                let (id, founder, seq) = profilesUpdated[i]
                uuid(id, &line)
                tab(&line)
                text(founder.kind, &line)
                tab(&line)
                text(founder.value, &line)
                tab(&line)
                number(seq, &line)
            }
            try await tx.execute(
                """
                UPDATE cdp.identity_profiles AS p SET founder_kind = f.kind, founder_value = f.value, founded_seq = f.founded_seq
                FROM pg_temp.rebuild_profiles_changed AS f WHERE p.profile_id = f.profile_id
                """)
        }
        if profilesInserted > 0 {
            let components = componentsInserted.count, hubs = hubsInserted.count
            try await Self.temp(tx, "rebuild_profiles_new", profileColumns, profilesInserted) { i, line in
                if i < components + hubs {
                    let (id, founder, seq): (UUID, Int, Int64)
                    if i < components {
                        let computed = graph.componentProfile(Int(componentsInserted[i]))!
                        (id, founder, seq) = (computed.profile, computed.founder, computed.foundedSeq)
                    } else {
                        let node = hubsInserted[i - components]
                        (id, founder, seq) = (graph.hubProfiles[node]!, Int(node), Int64(graph.firstSeq[Int(node)]))
                    }
                    uuid(id, &line)
                    tab(&line)
                    identifier(founder, &line)
                    tab(&line)
                    number(seq, &line)
                } else {
                    let id = replayedInserted[i - components - hubs]
                    let replayed = graph.replayedProfile(id)!
                    uuid(id, &line)
                    tab(&line)
                    identifier(replayed.founder, &line)
                    tab(&line)
                    number(replayed.foundedSeq, &line)
                }
            }
            try await tx.execute(
                """
                INSERT INTO cdp.identity_profiles (profile_id, founder_kind, founder_value, founded_seq)
                SELECT profile_id, kind, value, founded_seq FROM pg_temp.rebuild_profiles_new
                """)
            try await tx.execute("INSERT INTO pg_temp.rebuild_touched SELECT profile_id FROM pg_temp.rebuild_profiles_new")
        }
        try await IdentityStore.refreshRedirects(tx, touchedBy: "SELECT DISTINCT profile_id FROM pg_temp.rebuild_touched")
        if restampCount > 0 {
            let parts = restampParts, firstCount = parts[0].count
            try await Self.temp(tx, "rebuild_restamp", "seq bigint, profile_id uuid", restampCount) { i, line in
                let restamp = i < firstCount ? parts[0][i] : parts[1][i - firstCount]
                let seq = Int64(restamp.seq)
                number(seq, &line)
                tab(&line)
                uuid(graph.profile(code: restamp.code, seq: seq), &line)
            }
            try await tx.execute(
                "UPDATE cdp.events AS e SET profile_id = d.profile_id FROM pg_temp.rebuild_restamp AS d WHERE e.seq = d.seq")
            restampParts = []
        }
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
        // `count` nodes, the i-th with its stored id.
        func nodeRows(_ count: Int, _ name: String, _ row: (Int) -> (node: Int32, id: Int64)) async throws {
            let columns =
                "node_id bigint, kind text, value text, profile_id uuid, status text, first_seq bigint, first_seen timestamptz, last_seen timestamptz"
            try await Self.temp(tx, name, columns, count) { i, line in
                let (node, id) = row(i)
                let position = Int(node)
                number(id, &line)
                tab(&line)
                identifier(position, &line)
                tab(&line)
                uuid(graph.profile(ofNode: position), &line)
                tab(&line)
                line.append(contentsOf: (graph.hub[position] ? "hub" : "active").utf8)
                tab(&line)
                number(Int64(graph.firstSeq[position]), &line)
                tab(&line)
                PostgresTime.append(micros: graph.firstSeen[position], to: &line)
                tab(&line)
                PostgresTime.append(micros: graph.lastSeen[position], to: &line)
            }
        }
        if !nodesUpdated.isEmpty {
            let updated = nodesUpdated
            try await nodeRows(updated.count, "rebuild_nodes_changed") { updated[$0] }
            try await tx.execute(
                """
                UPDATE cdp.identity_nodes AS n
                SET profile_id = m.profile_id, status = m.status, first_seq = m.first_seq, first_seen_at = m.first_seen,
                    last_seen_at = m.last_seen
                FROM pg_temp.rebuild_nodes_changed AS m WHERE n.node_id = m.node_id
                """)
        }
        if !nodesInserted.isEmpty {
            let inserted = nodesInserted, firstID = firstNewID
            try await nodeRows(inserted.count, "rebuild_nodes_new") { (inserted[$0], firstID + Int64($0)) }
            try await tx.execute(
                """
                INSERT INTO cdp.identity_nodes (node_id, kind, value, profile_id, status, first_seq, first_seen_at, last_seen_at)
                SELECT node_id, kind, value, profile_id, status, first_seq, first_seen, last_seen FROM pg_temp.rebuild_nodes_new
                """)
        }
        let edgeColumns = "a bigint, b bigint, first_seq bigint"
        if !edgesDeleted.isEmpty {
            try await Self.temp(tx, "rebuild_edges_gone", edgeColumns, edgesDeleted.count) { i, line in
                number(edgesDeleted[i].a, &line)
                tab(&line)
                number(edgesDeleted[i].b, &line)
                tab(&line)
                number(0, &line)
            }
            try await tx.execute(
                "DELETE FROM cdp.identity_edges AS e USING pg_temp.rebuild_edges_gone AS g WHERE e.a = g.a AND e.b = g.b")
        }
        // Computed edges in stored ids (a < b), by ascending index: the owning node found by walking alongside.
        let ids = edgesUpdated.isEmpty && edgesInserted.isEmpty ? [] : storedIDs(graph)
        (nodesInserted, dense, sparse) = ([], [], nil)
        func edgeRows(_ indices: [UInt32], _ name: String) async throws {
            var owner = 0
            try await Self.temp(tx, name, edgeColumns, indices.count) { i, line in
                let index = Int(indices[i])
                while graph.edges(of: owner).upperBound <= index { owner += 1 }
                let x = ids[owner], y = ids[graph.edgeTarget(index)]
                number(min(x, y), &line)
                tab(&line)
                number(max(x, y), &line)
                tab(&line)
                number(graph.edgeFirstSeq(index), &line)
            }
        }
        if !edgesUpdated.isEmpty {
            try await edgeRows(edgesUpdated.sorted(), "rebuild_edges_changed")
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
