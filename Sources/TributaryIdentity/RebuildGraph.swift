import Foundation
import TributaryModel

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
        package var firstSeq = Int64.max
        package var firstSeen = Int64.max
        package var lastSeen = Int64.min
        package var hub = false
        /// The profile holding the identifier.
        package var profile = UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        /// Whether any kept row names it (an alias call's dropped form names none).
        package var used: Bool { firstSeq != .max }
    }

    /// The identifiers, by the index the nodes use.
    package let table: IdentifierTable
    /// One entry per interned identifier (see ``Node/used``).
    package private(set) var nodes: [Node] = []
    /// Edges as node indices (`a` < `b` as indices, not yet as stored ids) with the event that first joined them.
    package private(set) var edges: [(a: Int32, b: Int32, firstSeq: Int64)] = []
    package private(set) var profiles: [(profile: UUID, founder: Identifier, foundedSeq: Int64)] = []
    /// Each event with identifiers and the profile it belongs to, in `seq` order.
    package private(set) var events: [(seq: Int64, profile: UUID)] = []
    package private(set) var hubs = 0
    package private(set) var components = 0
    package private(set) var conflictComponents = 0
    /// Identifiers in the graph.
    package private(set) var identifiers = 0

    package func kind(_ node: Int) -> String { table.kindName(Int32(node)) }
    package func value(_ node: Int) -> String { table.value(Int32(node)) }
    package func identifier(_ node: Int) -> Identifier { table.identifier(Int32(node)) }

    /// The node of `identifier`, if it is in the graph.
    package func position(of identifier: Identifier) -> Int? {
        guard let entry = table.find(kind: identifier.kind, value: identifier.value), nodes[Int(entry)].used else { return nil }
        return Int(entry)
    }

    /// ``position(of:)`` for an identifier given as UTF-8 bytes.
    package func position(kind: some Collection<UInt8>, value: some Collection<UInt8>) -> Int? {
        guard let entry = table.find(kind: kind, value: value), nodes[Int(entry)].used else { return nil }
        return Int(entry)
    }

    /// Builds the graph from the extracted rows (any order), which it releases once read.
    package init(rows: ExtractedRows, rules: IdentityRules) {
        table = rows.table
        nodes = [Node](repeating: Node(), count: table.count)
        // 1. Rows in receive order; node times from the rows that are not alias forms; then the alias rule decides
        //    which form of each previousId stays: an anonymous id when that value was the anonymousId of this or an
        //    earlier event (its first non-alias row), else a user id.
        var order = Array(0..<Int32(rows.count))
        order.sort { rows.seqs[Int($0)] < rows.seqs[Int($1)] }
        for row in order where !rows.viaAlias[Int(row)] {
            let node = Int(rows.nodes[Int(row)])
            if nodes[node].firstSeq == .max { nodes[node].firstSeq = rows.seqs[Int(row)] }
            nodes[node].firstSeen = min(nodes[node].firstSeen, rows.micros[Int(row)])
            nodes[node].lastSeen = max(nodes[node].lastSeen, rows.micros[Int(row)])
        }
        var anonymousAlias: [Int64: Bool] = [:]
        for row in order where rows.viaAlias[Int(row)] && rows.table.kindName(rows.nodes[Int(row)]) == "anonymous_id" {
            let seq = rows.seqs[Int(row)]
            anonymousAlias[seq] = nodes[Int(rows.nodes[Int(row)])].firstSeq <= seq
        }
        order.removeAll { row in
            guard rows.viaAlias[Int(row)] else { return false }
            let isAnonymous = anonymousAlias[rows.seqs[Int(row)]] == true
            return rows.table.kindName(rows.nodes[Int(row)]) == (isAnonymous ? "user_id" : "anonymous_id")
        }
        for row in order where rows.viaAlias[Int(row)] {
            let node = Int(rows.nodes[Int(row)])
            nodes[node].firstSeq = min(nodes[node].firstSeq, rows.seqs[Int(row)])
            nodes[node].firstSeen = min(nodes[node].firstSeen, rows.micros[Int(row)])
            nodes[node].lastSeen = max(nodes[node].lastSeen, rows.micros[Int(row)])
        }

        // 2. Per event (rows in seq order), its node indices.
        var eventSeqs: [Int64] = []
        var eventStarts: [Int] = []
        var links: [Int32] = []
        links.reserveCapacity(order.count)
        for row in order {
            let seq = rows.seqs[Int(row)], node = rows.nodes[Int(row)]
            if eventSeqs.last != seq {
                eventSeqs.append(seq)
                eventStarts.append(links.count)
            }
            // An identifier twice in one event is one link.
            if !links[eventStarts.last!...].contains(node) { links.append(node) }
        }
        eventStarts.append(links.count)
        order = []
        rows.releaseRows()
        identifiers = nodes.reduce(0) { $0 + ($1.used ? 1 : 0) }
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
                if candidates.contains(edge.a) { perKind[edge.a, default: [:]][kind(Int(edge.b)), default: 0] += 1 }
                if candidates.contains(edge.b) { perKind[edge.b, default: [:]][kind(Int(edge.a)), default: 0] += 1 }
            }
            for (node, counts) in perKind
            where counts.values.contains(where: { $0 > rules.hubThreshold }) && rules.hubDetection(for: kind(Int(node))) {
                nodes[Int(node)].hub = true
                hubs += 1
            }
        }

        // 4. Components of the non-hub graph.
        var usable: [Int64] = []
        var usableKinds: [UInt16] = []
        for (position, node) in nodes.enumerated() where node.used && !node.hub {
            usable.append(Int64(position))
            usableKinds.append(table.kindNumber(Int32(position)))
        }
        var finder = IdentityComponents(nodes: usable, kinds: usableKinds)
        for edge in edges where !nodes[Int(edge.a)].hub && !nodes[Int(edge.b)].hub {
            finder.union(Int64(edge.a), Int64(edge.b))
        }
        components = finder.count()
        let overLimit = Set(finder.overLimit { rules.limit(of: table.kindNames[Int($0)]) })
        conflictComponents = overLimit.count
        // The component (label: its smallest node index) of each non-hub node; -1 for hubs.
        var label = [Int64](repeating: -1, count: nodes.count)
        for position in 0..<finder.nodes.count { label[Int(finder.nodes[position])] = finder.label(at: position) }

        // 5. Founders: the first identifier in priority order among a component's nodes first seen on its earliest
        //    event (exactly that event's identifiers).
        var founder: [Int64: Int32] = [:]
        for (position, node) in nodes.enumerated() where node.used && !node.hub && !overLimit.contains(label[position]) {
            let component = label[position]
            guard let current = founder[component] else {
                founder[component] = Int32(position)
                continue
            }
            let other = nodes[Int(current)]
            if node.firstSeq < other.firstSeq
                || (node.firstSeq == other.firstSeq
                    && rules.precedes(identifier(position), identifier(Int(current))))
            {
                founder[component] = Int32(position)
            }
        }
        var componentProfile: [Int64: UUID] = [:]
        componentProfile.reserveCapacity(founder.count)
        for (component, position) in founder {
            let founderIdentifier = identifier(Int(position))
            let profile = founderIdentifier.foundedProfileID
            componentProfile[component] = profile
            profiles.append((profile, founderIdentifier, nodes[Int(position)].firstSeq))
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
                    identifiers: members.map { identifier(Int($0)) })
                engine.process(IdentityStage.resolverEvent(extracted, rules: rules, isHub: { _ in false }))
            }
            for (position, node) in nodes.enumerated() where node.used && !node.hub && overLimit.contains(label[position]) {
                nodes[position].profile = engine.profile(of: identifier(position))!
            }
            for id in engine.liveProfiles {
                let profile = engine.profiles[id]!
                profiles.append((id, profile.founder, profile.foundedSeq))
            }
            for stamp in engine.finalStamps { if let profile = stamp.profile { replayedEvents[stamp.seq] = profile } }
        }

        // Hubs found their own profiles; every other node takes its component's.
        for position in nodes.indices where nodes[position].used {
            let node = nodes[position]
            if node.hub {
                let hubIdentifier = identifier(position)
                nodes[position].profile = hubIdentifier.foundedProfileID
                profiles.append((hubIdentifier.foundedProfileID, hubIdentifier, node.firstSeq))
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
            } else if let first = members.min(by: { rules.precedes(identifier(Int($0)), identifier(Int($1))) }) {
                events.append((seq, nodes[Int(first)].profile))
            }
        }
    }
}
