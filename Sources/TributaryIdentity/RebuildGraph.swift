import Foundation
import TributaryModel

/// What the extraction sessions deliver, shared under a lock, folded as it arrives so that little is kept per row:
/// the identifiers interned once, each identifier's first event and earliest and latest time, and per row only its
/// event and identifier packed in 8 bytes. The forms of alias calls' previousIds (few) are kept whole until the alias
/// rule decides between them. Sequence numbers must fit 32 bits (``IdentityRebuild`` checks).
package final class ExtractedRows: @unchecked Sendable {
    private let lock = NSLock()
    package private(set) var table = IdentifierTable()
    /// Per identifier, from the rows that are not alias forms: its first event, `UInt32.max` when none.
    package private(set) var firstSeq: [UInt32] = []
    package private(set) var firstSeen: [Int64] = []
    package private(set) var lastSeen: [Int64] = []
    /// `seq << 32 | identifier` of every row that is not an alias form, in arrival order.
    package private(set) var links: [UInt64] = []
    /// Both forms of each alias call's previousId.
    package private(set) var aliasForms: [(seq: UInt32, micros: Int64, node: Int32)] = []

    /// `expectedRows`: room reserved up front (about two per event), so the largest array is not copied as it grows.
    package init(expectedRows: Int = 0) { links.reserveCapacity(expectedRows) }

    /// Rows received.
    package var count: Int { links.count + aliasForms.count }

    /// Adds the rows of one COPY chunk (`seq`, `micros`, kind, value, alias), interning their identifiers.
    package func add(_ rows: [(seq: Int64, micros: Int64, kind: ArraySlice<UInt8>, value: ArraySlice<UInt8>, alias: Bool)]) {
        lock.lock()
        defer { lock.unlock() }
        for row in rows {
            let kind = table.kind(row.kind)
            let node = table.intern(kind: kind, row.value)
            if Int(node) == firstSeq.count {
                firstSeq.append(.max)
                firstSeen.append(.max)
                lastSeen.append(.min)
            }
            let seq = UInt32(truncatingIfNeeded: row.seq)
            if row.alias {
                aliasForms.append((seq, row.micros, node))
            } else {
                keep((seq, row.micros, node))
            }
        }
    }

    /// A kept row: linked to its event, and folded into its identifier's first event and first and last seen times.
    private func keep(_ row: (seq: UInt32, micros: Int64, node: Int32)) {
        links.append(UInt64(row.seq) << 32 | UInt64(UInt32(bitPattern: row.node)))
        let position = Int(row.node)
        firstSeq[position] = min(firstSeq[position], row.seq)
        firstSeen[position] = min(firstSeen[position], row.micros)
        lastSeen[position] = max(lastSeen[position], row.micros)
    }

    /// The alias rule, as `IdentityStore.resolveAliases` applies it in real time: an alias call's previousId is an
    /// anonymous id when that value was the anonymousId of this or an earlier event (its first row that is not an
    /// alias form), else a user id. The kept form joins the rows; both leave ``aliasForms``.
    fileprivate func applyAliasRule() {
        var anonymous: [UInt32: Bool] = [:]
        for form in aliasForms where table.kindName(form.node) == "anonymous_id" {
            anonymous[form.seq] = firstSeq[Int(form.node)] <= form.seq
        }
        for form in aliasForms where table.kindName(form.node) == (anonymous[form.seq] == true ? "anonymous_id" : "user_id") {
            keep(form)
        }
        aliasForms = []
    }

    /// Hands over the per-identifier folds and the rows, leaving this empty.
    fileprivate func take() -> (IdentifierTable, [UInt32], [Int64], [Int64], [UInt64]) {
        defer {
            table = IdentifierTable()
            firstSeq = []
            firstSeen = []
            lastSeen = []
            links = []
        }
        return (table, firstSeq, firstSeen, lastSeen, links)
    }
}

/// The identity graph the rebuild computes, in memory, from every event's extracted identifiers: the same nodes,
/// edges, hubs, components, founders and event stamps the real-time stage arrives at, over integer indices, in
/// flat arrays (about 110 bytes per event in all at 10M events, no per-row object):
/// 1. The alias rule (``ExtractedRows``); identifiers interned to indices with their first event and first and last
///    seen times.
/// 2. Events: the rows sorted by `(seq, identifier)`, each event's identifiers as a slice of one array.
/// 3. Edges between the identifiers of each event, kept per node as sorted `(other node, first event)` pairs (the
///    event that first joined them, since events are visited in order); hubs: a value seen with more than
///    `hubThreshold` distinct identifiers of one kind (kinds in `hubExemptKinds` never are).
/// 4. Components of the non-hub graph by union-find over the node indices.
/// 5. A component within every kind's limit is one profile, founded by the first identifier (in priority order) of
///    its earliest event; the events of components over a limit are replayed in receive order through the
///    ``IdentityEngine`` the real-time stage uses. A hub is its own profile; an event with only hubs belongs to the
///    first of them in priority order.
///
/// Profiles and event stamps are not stored per event or node: ``profile(ofNode:)`` and ``profileCode(ofEvent:)``
/// derive them from the component, which is what lets 10 million events fit in about a gigabyte.
package struct RebuildGraph: Sendable {
    /// The identifiers, by the index the nodes use.
    package private(set) var table: IdentifierTable
    /// Per node: its first event (`UInt32.max` when no kept row names it: an alias call's dropped form), its first
    /// and last seen times in microseconds, whether it is a hub.
    package let firstSeq: [UInt32]
    package let firstSeen: [Int64]
    package let lastSeen: [Int64]
    package private(set) var hub: [Bool]
    /// Per node: its component (an index into the per-component arrays), -1 for hubs and unused nodes.
    private var component: [Int32] = []

    /// Events with identifiers, ascending, and the identifiers of event `i` at `links[starts[i]..<starts[i + 1]]`:
    /// the largest part of the graph after the identifiers, held apart so the swap can release it once it has
    /// compared the stamps (``EventLinks/release()``).
    package final class EventLinks: @unchecked Sendable {
        /// Each event's `seq`, empty when they are dense (event `i` is `firstSeq + i`, as when every event has an
        /// identifier).
        fileprivate(set) var seqs: [UInt32] = []
        fileprivate(set) var firstSeq: UInt32 = 0
        fileprivate(set) var starts: [UInt32] = []
        fileprivate(set) var links: [Int32] = []

        /// Events with identifiers.
        var count: Int { max(0, starts.count - 1) }
        /// The `seq` of event `index`.
        func seq(_ index: Int) -> UInt32 { seqs.isEmpty ? firstSeq + UInt32(index) : seqs[index] }

        /// Frees the arrays: ``RebuildGraph/profileCode(ofEvent:)`` and ``RebuildGraph/event(seq:)`` must not be
        /// called after.
        package func release() {
            seqs = []
            starts = []
            links = []
        }
    }
    package private(set) var events = EventLinks()

    /// The edges of node `a` to nodes `b > a`: `edgeEntries[edgeStarts[a]..<edgeStarts[a + 1]]`, each `b << 32 | seq
    /// of the first event`, ascending by `b`.
    private var edgeStarts: [UInt32] = []
    private var edgeEntries: [UInt64] = []

    /// Per component: its profile and founder node (a zero UUID and -1 when over a limit: replayed).
    private var componentProfile: [UUID] = []
    private var componentFounder: [Int32] = []
    /// The replay's results for components over a limit, sorted: `node << 32 | profile` for each of their nodes and
    /// `seq << 32 | profile` for each of their events, `profile` an index into `replayedIDs`; and the live profiles.
    private var replayedNodes: [UInt64] = []
    private var replayedEvents: [UInt64] = []
    private var replayedIDs: [UUID] = []
    /// Per profile of `replayedIDs`: its founder node (-1 for a profile the replay did not leave live) and founding
    /// event.
    private var replayedFounders: [Int32] = []
    private var replayedFoundedSeqs: [Int64] = []
    private var replayedNumbers: [UUID: UInt32] = [:]
    /// Each hub's own profile.
    package private(set) var hubProfiles: [Int32: UUID] = [:]

    package private(set) var hubs = 0
    package private(set) var components = 0
    package private(set) var conflictComponents = 0
    /// Identifiers in the graph.
    package private(set) var identifiers = 0
    package var edgeCount: Int { edgeEntries.count }
    package var nodeCount: Int { firstSeq.count }
    /// Profiles in the graph: one per component within its limits, the replay's live ones, one per hub.
    package var profileCount: Int { componentFounder.count - conflictComponents + replayedProfileIDs.count + hubProfiles.count }

    /// The live profiles of the replay.
    package var replayedProfileIDs: [UUID] { replayedIDs.indices.filter { replayedFounders[$0] >= 0 }.map { replayedIDs[$0] } }

    /// A live profile of the replay: its founder node and founding event.
    package func replayedProfile(_ id: UUID) -> (founder: Int, foundedSeq: Int64)? {
        guard let number = replayedNumbers[id].map(Int.init), replayedFounders[number] >= 0 else { return nil }
        return (Int(replayedFounders[number]), replayedFoundedSeqs[number])
    }

    package func used(_ node: Int) -> Bool { firstSeq[node] != .max }
    package func identifier(_ node: Int) -> Identifier { table.identifier(Int32(node)) }

    /// The node of an identifier given as UTF-8 bytes, if it is in the graph (after ``restoreIndex()``).
    package func position(kind: some Collection<UInt8>, value: some Collection<UInt8>) -> Int? {
        guard let entry = table.find(kind: kind, value: value), used(Int(entry)) else { return nil }
        return Int(entry)
    }

    /// The profile holding a used node.
    package func profile(ofNode node: Int) -> UUID {
        if hub[node] { return hubProfiles[Int32(node)]! }
        let component = Int(component[node])
        if componentFounder[component] >= 0 { return componentProfile[component] }
        return replayedIDs[Int(Self.lookup(UInt32(node), in: replayedNodes)!)]
    }

    /// The index of the entry of `sorted[range]` (ascending) whose high half is `key`.
    private static func index(ofHigh key: UInt64, in sorted: [UInt64], _ range: Range<Int>) -> Int? {
        var low = range.lowerBound, high = range.upperBound
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] >> 32 < key { low = middle + 1 } else { high = middle }
        }
        return low < range.upperBound && sorted[low] >> 32 == key ? low : nil
    }

    /// The low half of the entry of `sorted` whose high half is `key`.
    private static func lookup(_ key: UInt32, in sorted: [UInt64]) -> UInt32? {
        index(ofHigh: UInt64(key), in: sorted, sorted.indices).map { UInt32(truncatingIfNeeded: sorted[$0]) }
    }

    /// The index of the event `seq` among the events with identifiers, if it has any.
    package func event(seq: Int64) -> Int? {
        guard seq >= 0, seq < Int64(UInt32.max) else { return nil }
        if events.seqs.isEmpty {
            let index = seq - Int64(events.firstSeq)
            return index >= 0 && index < Int64(events.count) ? Int(index) : nil
        }
        let target = UInt32(seq), seqs = events.seqs
        var low = 0, high = seqs.count
        while low < high {
            let middle = (low + high) / 2
            if seqs[middle] < target { low = middle + 1 } else { high = middle }
        }
        return low < seqs.count && seqs[low] == target ? low : nil
    }

    /// The profile event `index` belongs to, as a code that ``profile(code:seq:)`` resolves without the events: its
    /// non-hub identifiers' component (they are all in one: this event joins them), or the replay's stamp; an event
    /// with only hubs belongs to the first of them in priority order.
    package func profileCode(ofEvent index: Int) -> Int32 {
        let members = events.links[Int(events.starts[index])..<Int(events.starts[index + 1])]
        if let usable = members.first(where: { !hub[Int($0)] }) {
            let component = component[Int(usable)]
            return componentFounder[Int(component)] >= 0 ? component : Self.replayedCode
        }
        guard var first = members.first else { return Self.noProfile }
        for member in members.dropFirst() where precedes(member, first) { first = member }
        return -2 - first
    }

    /// Codes of ``profileCode(ofEvent:)`` besides a component (0 or more) and a hub (`-2 - node`).
    package static let noProfile: Int32 = -1
    static let replayedCode = Int32.min

    /// The profile a ``profileCode(ofEvent:)`` stands for, for the event `seq`.
    package func profile(code: Int32, seq: Int64) -> UUID? {
        switch code {
        case Self.noProfile: nil
        case Self.replayedCode: Self.lookup(UInt32(seq), in: replayedEvents).map { replayedIDs[Int($0)] }
        case ..<0: hubProfiles[-2 - code]
        default: componentProfile[Int(code)]
        }
    }

    /// The edge between nodes `x` and `y` (in either order), as an index into the edges, if there is one.
    package func edge(_ x: Int, _ y: Int) -> Int? {
        Self.index(ofHigh: UInt64(max(x, y)), in: edgeEntries, edges(of: min(x, y)))
    }

    /// The indices of the edges of node `a` to nodes `b > a`.
    package func edges(of a: Int) -> Range<Int> { Int(edgeStarts[a])..<Int(edgeStarts[a + 1]) }

    /// The larger node of edge `index`.
    package func edgeTarget(_ index: Int) -> Int { Int(edgeEntries[index] >> 32) }

    /// The `seq` of the event that first joined the ends of edge `index`.
    package func edgeFirstSeq(_ index: Int) -> Int64 { Int64(edgeEntries[index] & 0xFFFF_FFFF) }

    /// The profiles founded by a component within its limits: the component's profile, founder node and the
    /// founder's first event. `nil` for a component that was replayed.
    package func componentProfile(_ component: Int) -> (profile: UUID, founder: Int, foundedSeq: Int64)? {
        let founder = Int(componentFounder[component])
        guard founder >= 0 else { return nil }
        return (componentProfile[component], founder, Int64(firstSeq[founder]))
    }

    /// The component of a used non-hub node.
    package func component(of node: Int) -> Int? { component[node] >= 0 ? Int(component[node]) : nil }

    /// Whether node `a` comes before node `b` in priority order (``IdentityRules/precedes(_:_:)``), without making
    /// strings.
    private func precedes(_ a: Int32, _ b: Int32) -> Bool {
        let ka = table.kindNumber(a), kb = table.kindNumber(b)
        if ka != kb {
            let ra = kindRank[Int(ka)], rb = kindRank[Int(kb)]
            if ra != rb { return ra < rb }
            return table.kindNames[Int(ka)].utf8.lexicographicallyPrecedes(table.kindNames[Int(kb)].utf8)
        }
        return table.valuePrecedes(a, b)
    }
    private var kindRank: [Int] = []

    /// Builds the graph from the extracted rows, which it empties.
    /// - Parameter replayBatch: identifiers per engine when replaying components over a limit (whole components;
    ///   the result does not depend on it).
    package init(rows: ExtractedRows, rules: IdentityRules, replayBatch: Int = 20_000) {
        rows.applyAliasRule()
        var (table, firstSeq, firstSeen, lastSeen, keys) = rows.take()
        // The table's hash index is not needed to build the graph: the swap rebuilds it (restoreIndex()) once it has
        // released the events.
        table.releaseIndex()
        self.table = table
        self.firstSeq = firstSeq
        self.firstSeen = firstSeen
        self.lastSeen = lastSeen
        let nodeCount = firstSeq.count
        hub = [Bool](repeating: false, count: nodeCount)
        kindRank = table.kindNames.map { rules.rank(of: $0) }
        identifiers = firstSeq.reduce(0) { $0 + ($1 != .max ? 1 : 0) }
        firstSeq = []

        // 2. Events: the rows in (seq, node) order; an identifier twice in one event is one link. Their seqs are
        //    kept only when they are not dense.
        let events = EventLinks()
        var eventSeqs: [UInt32] = [], eventStarts: [UInt32] = [], links: [Int32] = []
        keys.sort()
        links.reserveCapacity(keys.count)
        var eventTotal = 0
        for (index, key) in keys.enumerated() where index == 0 || key >> 32 != keys[index - 1] >> 32 { eventTotal += 1 }
        let dense = keys.isEmpty || Int(keys.last! >> 32) - Int(keys.first! >> 32) + 1 == eventTotal
        events.firstSeq = keys.first.map { UInt32($0 >> 32) } ?? 0
        if !dense { eventSeqs.reserveCapacity(eventTotal) }
        eventStarts.reserveCapacity(eventTotal + 1)
        var previous = UInt64.max
        for key in keys where key != previous {
            if key >> 32 != previous >> 32 {
                if !dense { eventSeqs.append(UInt32(key >> 32)) }
                eventStarts.append(UInt32(links.count))
            }
            links.append(Int32(bitPattern: UInt32(key & 0xFFFF_FFFF)))
            previous = key
        }
        eventStarts.append(UInt32(links.count))
        keys = []
        (events.seqs, events.starts, events.links) = (eventSeqs, eventStarts, links)
        self.events = events
        func members(_ event: Int) -> ArraySlice<Int32> { links[Int(eventStarts[event])..<Int(eventStarts[event + 1])] }

        // 3. Edges: per node a, its pairs (b > a, seq) in event order, then sorted and the first of each b kept, in
        //    place (the pairs become the edges).
        var starts = [UInt32](repeating: 0, count: nodeCount + 1)
        for event in 0..<events.count {
            let members = members(event)
            guard members.count > 1 else { continue }
            for x in members { for y in members where x < y { starts[Int(x) + 1] += 1 } }
        }
        for node in 0..<nodeCount { starts[node + 1] += starts[node] }
        var pairs = [UInt64](repeating: 0, count: Int(starts[nodeCount]))
        // starts[x] serves as x's cursor, and ends at x's end, the next node's start: shifted back after.
        for event in 0..<events.count {
            let members = members(event)
            guard members.count > 1 else { continue }
            let seq = UInt64(events.seq(event))
            for x in members {
                for y in members where x < y {
                    pairs[Int(starts[Int(x)])] = UInt64(UInt32(bitPattern: y)) << 32 | seq
                    starts[Int(x)] += 1
                }
            }
        }
        Self.shiftBack(&starts)
        var kept = 0
        for node in 0..<nodeCount {
            let begin = Int(starts[node]), end = Int(starts[node + 1])
            starts[node] = UInt32(kept)
            if end - begin > 1 { pairs[begin..<end].sort() }
            let first = kept
            for index in begin..<end where kept == first || pairs[kept - 1] >> 32 != pairs[index] >> 32 {
                pairs[kept] = pairs[index]
                kept += 1
            }
        }
        starts[nodeCount] = UInt32(kept)
        pairs.removeLast(pairs.count - kept)
        edgeStarts = starts
        edgeEntries = pairs
        pairs = []

        // Hubs. Only a node with more than hubThreshold edges in all can have that many to one kind.
        var degree = [Int32](repeating: 0, count: nodeCount)
        for a in 0..<nodeCount {
            degree[a] += Int32(edges(of: a).count)
            for index in edges(of: a) { degree[edgeTarget(index)] += 1 }
        }
        var candidates = Set<Int32>()
        for (node, count) in degree.enumerated() where Int(count) > rules.hubThreshold { candidates.insert(Int32(node)) }
        degree = []
        if !candidates.isEmpty {
            var perKind: [Int32: [UInt16: Int]] = [:]
            for a in 0..<nodeCount {
                for index in edges(of: a) {
                    let b = Int32(edgeTarget(index))
                    if candidates.contains(Int32(a)) { perKind[Int32(a), default: [:]][table.kindNumber(b), default: 0] += 1 }
                    if candidates.contains(b) { perKind[b, default: [:]][table.kindNumber(Int32(a)), default: 0] += 1 }
                }
            }
            for (node, counts) in perKind
            where counts.values.contains(where: { $0 > rules.hubThreshold }) && rules.hubDetection(for: table.kindName(node)) {
                hub[Int(node)] = true
                hubs += 1
            }
        }

        // 4. Components of the non-hub graph: union-find over node indices, a root always the smallest index of its
        //    component (so one ascending pass finds every node's root), then numbered densely in node order.
        var parent = (0..<Int32(nodeCount)).map { $0 }
        func root(_ node: Int32) -> Int32 {
            var current = node
            while parent[Int(current)] != current {
                let next = parent[Int(current)]
                parent[Int(current)] = parent[Int(next)]
                current = next
            }
            return current
        }
        for a in 0..<nodeCount where !hub[a] {
            for index in edges(of: a) {
                let b = Int32(edgeTarget(index))
                guard !hub[Int(b)] else { continue }
                let ra = root(Int32(a)), rb = root(b)
                if ra < rb { parent[Int(rb)] = ra } else if rb < ra { parent[Int(ra)] = rb }
            }
        }
        var componentCount: Int32 = 0
        for node in 0..<nodeCount {
            if self.firstSeq[node] == .max || hub[node] {
                parent[node] = -1
            } else if parent[node] == Int32(node) {
                parent[node] = componentCount
                componentCount += 1
            } else {
                parent[node] = parent[Int(parent[node])]  // the root is smaller: already numbered
            }
        }
        component = parent
        parent = []
        components = Int(componentCount)

        // 5. Per component (members grouped by a counting sort): the kinds against their limits, and the founder: the
        //    first identifier in priority order among the nodes first seen on its earliest event (exactly that
        //    event's identifiers).
        var memberStarts = [UInt32](repeating: 0, count: components + 1)
        for node in 0..<nodeCount where component[node] >= 0 { memberStarts[Int(component[node]) + 1] += 1 }
        for index in 0..<components { memberStarts[index + 1] += memberStarts[index] }
        var grouped = [Int32](repeating: 0, count: Int(memberStarts[components]))
        // memberStarts[c] serves as c's cursor, ending at the next component's start: shifted back after.
        for node in 0..<nodeCount where component[node] >= 0 {
            let c = Int(component[node])
            grouped[Int(memberStarts[c])] = Int32(node)
            memberStarts[c] += 1
        }
        Self.shiftBack(&memberStarts)
        let limits = table.kindNames.map { rules.limit(of: $0) }
        var kindCounts = [Int](repeating: 0, count: table.kindNames.count)
        componentFounder = [Int32](repeating: -1, count: components)
        componentProfile = [UUID](repeating: UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)), count: components)
        var overLimit: [(component: Int32, nodes: Int)] = []
        for c in 0..<components {
            let group = grouped[Int(memberStarts[c])..<Int(memberStarts[c + 1])]
            var over = false
            if group.count > 1 {
                for node in group {
                    let kind = Int(table.kindNumber(node))
                    kindCounts[kind] += 1
                    if kindCounts[kind] > limits[kind] { over = true }
                }
                for node in group { kindCounts[Int(table.kindNumber(node))] = 0 }
            }
            if over {
                overLimit.append((Int32(c), group.count))
                continue
            }
            var founder = group.first!
            for node in group.dropFirst() {
                let seq = self.firstSeq[Int(node)], best = self.firstSeq[Int(founder)]
                if seq < best || (seq == best && precedes(node, founder)) { founder = node }
            }
            componentFounder[c] = founder
            componentProfile[c] = table.identifier(founder).foundedProfileID
        }
        grouped = []
        memberStarts = []
        conflictComponents = overLimit.count

        // Components over a limit: their events replayed through the engine, in receive order, a batch of whole
        //    components (about 20,000 identifiers) per engine: components never share an event, so each replays alone,
        //    and the engine (a few hundred bytes per identifier) stays small.
        if !overLimit.isEmpty {
            var batchOf = [Int32](repeating: -1, count: components)
            var batch: Int32 = 0, filled = 0
            for (c, size) in overLimit {
                if filled > 0 && filled + size > replayBatch {
                    batch += 1
                    filled = 0
                }
                batchOf[Int(c)] = batch
                filled += size
            }
            // The events to replay, by batch, in receive order within each.
            var replayed: [(batch: Int32, event: UInt32)] = []
            for event in 0..<events.count {
                guard let first = members(event).first(where: { !hub[Int($0)] }), component[Int(first)] >= 0 else { continue }
                let batch = batchOf[Int(component[Int(first)])]
                if batch >= 0 { replayed.append((batch, UInt32(event))) }
            }
            batchOf = []
            replayed.sort { ($0.batch, $0.event) < ($1.batch, $1.event) }
            var start = 0
            while start < replayed.count {
                var end = start
                while end < replayed.count && replayed[end].batch == replayed[start].batch { end += 1 }
                var engine = IdentityEngine(rules: rules)
                var batchNodes = Set<Int32>()
                for (_, event) in replayed[start..<end] {
                    let nodes = members(Int(event)).filter { !hub[Int($0)] }
                    batchNodes.formUnion(nodes)
                    let extracted = ExtractedEvent(
                        seq: Int64(events.seq(Int(event))), messageID: "", micros: 0,
                        identifiers: nodes.map { table.identifier($0) })
                    engine.process(IdentityStage.resolverEvent(extracted, rules: rules, isHub: { _ in false }))
                }
                // Profiles are numbered as they are met.
                func code(_ profile: UUID) -> UInt64 {
                    if let known = replayedNumbers[profile] { return UInt64(known) }
                    replayedNumbers[profile] = UInt32(replayedIDs.count)
                    replayedIDs.append(profile)
                    replayedFounders.append(-1)
                    replayedFoundedSeqs.append(0)
                    return UInt64(replayedIDs.count - 1)
                }
                var nodeOf: [Identifier: Int32] = [:]
                for node in batchNodes {
                    let identifier = table.identifier(node)
                    nodeOf[identifier] = node
                    replayedNodes.append(UInt64(UInt32(bitPattern: node)) << 32 | code(engine.profile(of: identifier)!))
                }
                for id in engine.liveProfiles {
                    let profile = engine.profiles[id]!, number = Int(code(id))
                    replayedFounders[number] = nodeOf[profile.founder]!
                    replayedFoundedSeqs[number] = profile.foundedSeq
                }
                for stamp in engine.finalStamps {
                    if let profile = stamp.profile { replayedEvents.append(UInt64(stamp.seq) << 32 | code(profile)) }
                }
                start = end
            }
            replayedNodes.sort()
            replayedEvents.sort()
        }

        // Hubs found their own profiles.
        for node in 0..<nodeCount where hub[node] && self.firstSeq[node] != .max {
            hubProfiles[Int32(node)] = table.identifier(Int32(node)).foundedProfileID
        }
    }

    /// Puts back the start offsets of a grouping (`starts[g]..<starts[g + 1]` for group `g`) after they served as
    /// its groups' cursors while it was filled: each then stands at the next group's start.
    private static func shiftBack(_ starts: inout [UInt32]) {
        for group in stride(from: starts.count - 1, to: 0, by: -1) { starts[group] = starts[group - 1] }
        starts[0] = 0
    }

    /// Rebuilds the identifiers' hash index, which the graph drops while it is built (it is not needed there, and
    /// the build's peak would hold it): ``position(kind:value:)`` needs it.
    package mutating func restoreIndex() { table.restoreIndex() }
}
