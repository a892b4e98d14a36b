import Foundation
import TributaryModel

/// One identifier of one event, as `cdp.event_identifiers` extracts it for the rebuild.
package struct ExtractedRow: Sendable {
    package var seq: Int64
    /// The event's timestamp in microseconds since 1970.
    package var micros: Int64
    package var kind: String
    package var value: String
    /// One of the two forms of an alias call's previousId (the alias rule keeps one).
    package var viaAlias: Bool

    package init(seq: Int64, micros: Int64, kind: String, value: String, viaAlias: Bool) {
        self.seq = seq
        self.micros = micros
        self.kind = kind
        self.value = value
        self.viaAlias = viaAlias
    }
}

/// The identity graph the rebuild computes, in memory, from every event's extracted identifiers: the same nodes,
/// edges, hubs, components, founders and event stamps the real-time stage arrives at, over integer indices.
///
/// The steps, each a pass over arrays (no per-row SQL):
/// 1. The alias rule: an alias call's previousId is an anonymous id when that value was the anonymousId of this or
///    an earlier event, else a user id (as `IdentityStore.resolveAliases` decides in real time).
/// 2. Identifiers interned to indices, with first/last seen and the event that introduced them.
/// 3. Edges between the identifiers of each event (the event that first joined them), hubs: a value seen with more
///    than `hubThreshold` distinct identifiers of one kind (kinds in `hubExemptKinds` never are).
/// 4. Components of the non-hub graph by union-find (``IdentityComponents``).
/// 5. A component within every kind's limit is one profile, founded by the first identifier (in priority order) of
///    its earliest event; the events of components over a limit are replayed in receive order through the
///    ``IdentityEngine`` the real-time stage uses. A hub is its own profile; an event with only hubs belongs to the
///    first of them.
package struct RebuildGraph {
    package struct Node {
        package var kind: String
        package var value: String
        package var firstSeq: Int64
        package var firstSeen: Int64
        package var lastSeen: Int64
        package var hub = false
        /// The profile holding the identifier.
        package var profile = UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    }

    package private(set) var nodes: [Node] = []
    /// The position in ``nodes`` of each identifier.
    package private(set) var index: [Identifier: Int32] = [:]
    /// Edges as node indices (`a` < `b` as indices, not yet as stored ids) with the event that first joined them.
    package private(set) var edges: [(a: Int32, b: Int32, firstSeq: Int64)] = []
    package private(set) var profiles: [(profile: UUID, founder: Identifier, foundedSeq: Int64)] = []
    /// Each event with identifiers and the profile it belongs to, in `seq` order.
    package private(set) var events: [(seq: Int64, profile: UUID)] = []
    package private(set) var hubs = 0
    package private(set) var components = 0
    package private(set) var conflictComponents = 0

    /// Builds the graph from `rows` (any order; several arrays, as the extraction sessions deliver them).
    package init(rows parts: consuming [[ExtractedRow]], rules: IdentityRules) {
        // 1. Rows in receive order (each part released once copied); the alias rule decides which form of each
        //    previousId stays.
        var rows: [ExtractedRow] = []
        rows.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        while let part = parts.popLast() { rows.append(contentsOf: part) }
        rows.sort { $0.seq < $1.seq }
        var firstAnonymous: [String: Int64] = [:]
        for row in rows where !row.viaAlias && row.kind == "anonymous_id" && firstAnonymous[row.value] == nil {
            firstAnonymous[row.value] = row.seq
        }
        // Per alias event: whether its previousId is an anonymous id (decided by the value of its anonymous form).
        var anonymousAlias: [Int64: Bool] = [:]
        for row in rows where row.viaAlias && row.kind == "anonymous_id" {
            anonymousAlias[row.seq] = (firstAnonymous[row.value] ?? .max) <= row.seq
        }
        rows.removeAll { $0.viaAlias && $0.kind == (anonymousAlias[$0.seq] == true ? "user_id" : "anonymous_id") }

        // 2. Nodes and, per event, its node indices (rows are in seq order).
        index.reserveCapacity(rows.count)
        var eventSeqs: [Int64] = []
        var eventStarts: [Int] = []
        var links: [Int32] = []
        links.reserveCapacity(rows.count)
        for row in rows {
            if eventSeqs.last != row.seq {
                eventSeqs.append(row.seq)
                eventStarts.append(links.count)
            }
            let identifier = Identifier(kind: row.kind, value: row.value)
            let node: Int32
            if let known = index[identifier] {
                node = known
                nodes[Int(node)].lastSeen = max(nodes[Int(node)].lastSeen, row.micros)
                nodes[Int(node)].firstSeen = min(nodes[Int(node)].firstSeen, row.micros)
            } else {
                node = Int32(nodes.count)
                index[identifier] = node
                nodes.append(
                    Node(kind: row.kind, value: row.value, firstSeq: row.seq, firstSeen: row.micros, lastSeen: row.micros))
            }
            // An identifier twice in one event is one link.
            if !links[eventStarts.last!...].contains(node) { links.append(node) }
        }
        eventStarts.append(links.count)
        rows = []
        let eventCount = eventSeqs.count
        func eventNodes(_ event: Int) -> ArraySlice<Int32> { links[eventStarts[event]..<eventStarts[event + 1]] }

        // 3. Edges (first joined by the earliest event, since events are visited in order), degrees, hubs.
        var edgeIndex: [UInt64: Int] = [:]
        for event in 0..<eventCount {
            let members = eventNodes(event)
            guard members.count > 1 else { continue }
            for x in members {
                for y in members where x < y {
                    let key = UInt64(UInt32(x)) << 32 | UInt64(UInt32(y))
                    if edgeIndex[key] == nil {
                        edgeIndex[key] = edges.count
                        edges.append((x, y, eventSeqs[event]))
                    }
                }
            }
        }
        edgeIndex = [:]
        var degree = [Int32](repeating: 0, count: nodes.count)
        for edge in edges {
            degree[Int(edge.a)] += 1
            degree[Int(edge.b)] += 1
        }
        // Only a node with more than hubThreshold edges in all can have that many to one kind.
        var candidates = Set<Int32>()
        for (node, count) in degree.enumerated() where Int(count) > rules.hubThreshold { candidates.insert(Int32(node)) }
        if !candidates.isEmpty {
            var perKind: [Int32: [String: Int]] = [:]
            for edge in edges {
                if candidates.contains(edge.a) { perKind[edge.a, default: [:]][nodes[Int(edge.b)].kind, default: 0] += 1 }
                if candidates.contains(edge.b) { perKind[edge.b, default: [:]][nodes[Int(edge.a)].kind, default: 0] += 1 }
            }
            for (node, counts) in perKind
            where counts.values.contains(where: { $0 > rules.hubThreshold }) && rules.hubDetection(for: nodes[Int(node)].kind) {
                nodes[Int(node)].hub = true
                hubs += 1
            }
        }

        // 4. Components of the non-hub graph.
        var kindNames: [String] = []
        var kindOf: [String: UInt16] = [:]
        var usable: [Int64] = []
        var usableKinds: [UInt16] = []
        for (position, node) in nodes.enumerated() where !node.hub {
            let kind =
                kindOf[node.kind]
                ?? {
                    kindNames.append(node.kind)
                    kindOf[node.kind] = UInt16(kindNames.count - 1)
                    return UInt16(kindNames.count - 1)
                }()
            usable.append(Int64(position))
            usableKinds.append(kind)
        }
        var finder = IdentityComponents(nodes: usable, kinds: usableKinds)
        for edge in edges where !nodes[Int(edge.a)].hub && !nodes[Int(edge.b)].hub {
            finder.union(Int64(edge.a), Int64(edge.b))
        }
        components = finder.count()
        let overLimit = Set(finder.overLimit { rules.limit(of: kindNames[Int($0)]) })
        conflictComponents = overLimit.count
        // The component (label: its smallest node index) of each non-hub node; -1 for hubs.
        var label = [Int64](repeating: -1, count: nodes.count)
        for position in 0..<finder.nodes.count { label[Int(finder.nodes[position])] = finder.label(at: position) }

        // 5. Founders: the first identifier in priority order among a component's nodes first seen on its earliest
        //    event (exactly that event's identifiers).
        var founder: [Int64: Int32] = [:]
        for (position, node) in nodes.enumerated() where !node.hub && !overLimit.contains(label[position]) {
            let component = label[position]
            guard let current = founder[component] else {
                founder[component] = Int32(position)
                continue
            }
            let other = nodes[Int(current)]
            if node.firstSeq < other.firstSeq
                || (node.firstSeq == other.firstSeq
                    && rules.precedes(
                        Identifier(kind: node.kind, value: node.value), Identifier(kind: other.kind, value: other.value)))
            {
                founder[component] = Int32(position)
            }
        }
        var componentProfile: [Int64: UUID] = [:]
        componentProfile.reserveCapacity(founder.count)
        for (component, position) in founder {
            let node = nodes[Int(position)]
            let identifier = Identifier(kind: node.kind, value: node.value)
            let profile = identifier.foundedProfileID
            componentProfile[component] = profile
            profiles.append((profile, identifier, node.firstSeq))
        }

        // Components over a limit: their events replayed through the engine, in receive order.
        var replayedEvents: [Int64: UUID] = [:]
        if !overLimit.isEmpty {
            var engine = IdentityEngine(rules: rules)
            for event in 0..<eventCount {
                let members = eventNodes(event).filter { !nodes[Int($0)].hub }
                guard let first = members.first, overLimit.contains(label[Int(first)]) else { continue }
                let extracted = ExtractedEvent(
                    seq: eventSeqs[event], messageID: "", micros: 0,
                    identifiers: members.map { Identifier(kind: nodes[Int($0)].kind, value: nodes[Int($0)].value) })
                engine.process(IdentityStage.resolverEvent(extracted, rules: rules, isHub: { _ in false }))
            }
            for (position, node) in nodes.enumerated() where !node.hub && overLimit.contains(label[position]) {
                nodes[position].profile = engine.profile(of: Identifier(kind: node.kind, value: node.value))!
            }
            for id in engine.liveProfiles {
                let profile = engine.profiles[id]!
                profiles.append((id, profile.founder, profile.foundedSeq))
            }
            for stamp in engine.finalStamps { if let profile = stamp.profile { replayedEvents[stamp.seq] = profile } }
        }

        // Hubs found their own profiles; every other node takes its component's.
        for position in nodes.indices {
            let node = nodes[position]
            if node.hub {
                let identifier = Identifier(kind: node.kind, value: node.value)
                nodes[position].profile = identifier.foundedProfileID
                profiles.append((identifier.foundedProfileID, identifier, node.firstSeq))
            } else if let profile = componentProfile[label[position]] {
                nodes[position].profile = profile
            }
        }

        // Event stamps: the component of its non-hub identifiers (all in one component: they are joined by this
        // event), or the replay's stamp; an event with only hubs belongs to the first of them in priority order.
        events.reserveCapacity(eventCount)
        for event in 0..<eventCount {
            let members = eventNodes(event)
            let seq = eventSeqs[event]
            if let usable = members.first(where: { !nodes[Int($0)].hub }) {
                if let profile = componentProfile[label[Int(usable)]] {
                    events.append((seq, profile))
                } else if let profile = replayedEvents[seq] {
                    events.append((seq, profile))
                }
            } else if let first = members.min(by: { a, b in
                rules.precedes(
                    Identifier(kind: nodes[Int(a)].kind, value: nodes[Int(a)].value),
                    Identifier(kind: nodes[Int(b)].kind, value: nodes[Int(b)].value))
            }) {
                events.append((seq, nodes[Int(first)].profile))
            }
        }
    }
}
