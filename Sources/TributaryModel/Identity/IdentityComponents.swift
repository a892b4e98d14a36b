/// Connected components of the identity graph by union-find over integer node ids: what the rebuild uses instead of
/// iterating in SQL. The recursive definition (every identifier reaches every identifier of its component over
/// edges between non-hub identifiers) stays the definition; a test checks this against a recursive query.
///
/// Memory is a few bytes per node: the sorted node ids (8), their parents (4) and kinds (2); edges are streamed
/// through ``union(_:_:)`` and never kept. Node ids are found by binary search, so they may be sparse.
///
/// ```swift
/// var components = IdentityComponents(nodes: [1, 2, 5, 9], kinds: [0, 1, 0, 0])
/// components.union(1, 5)
/// components.label(at: 2)   // 1: the smallest node id of its component
/// ```
public struct IdentityComponents: Sendable {
    /// Node ids, ascending.
    public let nodes: [Int64]
    /// Each node's kind, as an index into the caller's list of kinds.
    public let kinds: [UInt16]
    private var parent: [Int32]

    /// - Parameters:
    ///   - nodes: every non-hub node id, ascending, each once.
    ///   - kinds: the kind of each node (same order).
    public init(nodes: [Int64], kinds: [UInt16]) {
        precondition(nodes.count == kinds.count, "one kind per node")
        precondition(nodes.count < Int(Int32.max), "at most 2^31 nodes")
        self.nodes = nodes
        self.kinds = kinds
        parent = (0..<Int32(nodes.count)).map { $0 }
    }

    /// The position of node `id`, if it is one of the nodes.
    public func position(of id: Int64) -> Int? {
        var low = 0, high = nodes.count
        while low < high {
            let middle = (low + high) / 2
            if nodes[middle] < id { low = middle + 1 } else { high = middle }
        }
        return low < nodes.count && nodes[low] == id ? low : nil
    }

    private mutating func root(_ index: Int32) -> Int32 {
        var current = index
        while parent[Int(current)] != current {
            let next = parent[Int(current)]
            parent[Int(current)] = parent[Int(next)]  // path halving
            current = next
        }
        return current
    }

    /// Joins the components of nodes `a` and `b`; an edge touching a node that is not listed (a hub) joins nothing.
    /// The root of a component is always its smallest position, so its smallest node id.
    public mutating func union(_ a: Int64, _ b: Int64) {
        guard let x = position(of: a), let y = position(of: b) else { return }
        let rx = root(Int32(x)), ry = root(Int32(y))
        if rx == ry { return }
        if rx < ry { parent[Int(ry)] = rx } else { parent[Int(rx)] = ry }
    }

    /// The label of the node at `position`: the smallest node id of its component.
    public mutating func label(at position: Int) -> Int64 { nodes[Int(root(Int32(position)))] }

    /// Every node with its label, in node order.
    public mutating func labels() -> [(node: Int64, label: Int64)] {
        (0..<nodes.count).map { (nodes[$0], label(at: $0)) }
    }

    /// Labels of the components that hold more identifiers of some kind than `limit(kind)` allows, ascending: the
    /// ones whose result depends on the order of events.
    public mutating func overLimit(_ limit: (UInt16) -> Int) -> [Int64] {
        let roots = (0..<Int32(nodes.count)).map { root($0) }
        var sizes = [Int32](repeating: 0, count: nodes.count)
        for component in roots { sizes[Int(component)] += 1 }
        // Counts per (component, kind), only for components of more than one node (limits are at least 1).
        var counts: [Int64: Int] = [:]
        var over = Set<Int32>()
        for (position, component) in roots.enumerated() where sizes[Int(component)] > 1 {
            let kind = kinds[position]
            let key = Int64(component) << 16 | Int64(kind)
            let count = counts[key, default: 0] + 1
            counts[key] = count
            if count > limit(kind) { over.insert(component) }
        }
        return over.sorted().map { nodes[Int($0)] }
    }

    /// How many components there are (single nodes included).
    public mutating func count() -> Int {
        (0..<nodes.count).reduce(0) { $0 + (root(Int32($1)) == Int32($1) ? 1 : 0) }
    }
}
