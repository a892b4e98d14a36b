import Testing
import TributaryModel

/// Union-find components against a plain breadth-first search, on random sparse graphs with gaps in the ids.
@Suite struct IdentityComponentsTests {
    struct Random {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
    }

    @Test(arguments: [UInt64(1), 2, 3, 4])
    func componentsAreTheReachableSets(seed: UInt64) {
        var random = Random(state: seed)
        let ids = (0..<400).map { Int64($0 * 3 + 7) }  // sparse ids
        let kinds = ids.map { _ in UInt16(random.next(3)) }
        var edges: [(Int64, Int64)] = (0..<300).map { _ in (ids[random.next(ids.count)], ids[random.next(ids.count)]) }
        edges.append((ids[0], 1_000_000))  // a node not listed (a hub) joins nothing
        var components = IdentityComponents(nodes: ids, kinds: kinds)
        for (a, b) in edges { components.union(a, b) }

        var adjacent: [Int64: [Int64]] = [:]
        for (a, b) in edges where b != 1_000_000 {
            adjacent[a, default: []].append(b)
            adjacent[b, default: []].append(a)
        }
        var expected: [Int64: Int64] = [:]
        for id in ids where expected[id] == nil {
            var seen: Set<Int64> = [id]
            var queue = [id]
            while let node = queue.popLast() {
                for other in adjacent[node, default: []] where seen.insert(other).inserted { queue.append(other) }
            }
            let label = seen.min()!
            for node in seen { expected[node] = label }
        }
        let labels = components.labels()
        #expect(labels.map(\.node) == ids)
        #expect(Dictionary(uniqueKeysWithValues: labels.map { ($0.node, $0.label) }) == expected)
        #expect(components.count() == Set(expected.values).count)

        // Over a limit: a component holding more than one node of kind 0.
        var byLabel: [Int64: Int] = [:]
        for (index, id) in ids.enumerated() where kinds[index] == 0 { byLabel[expected[id]!, default: 0] += 1 }
        let over = byLabel.filter { $0.value > 1 }.keys.sorted()
        #expect(components.overLimit { $0 == 0 ? 1 : 1000 } == over)
        #expect(!over.isEmpty)
        #expect(components.position(of: 8) == nil && components.position(of: 10) == 1)
    }
}
