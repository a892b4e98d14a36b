import Foundation

/// A profile's identity graph as an SVG picture: identifiers on a circle (hubs in red), the edges between them.
enum GraphPicture {
    /// `rows`: (node id, kind, value, status, linked node id or nil), as ``ConsoleQueries/graph(_:)`` returns them.
    static func draw(_ rows: [(Int64, String, String, String, Int64?)], mask: PIIMask) -> HTML {
        var order: [Int64] = []
        var labels: [Int64: (kind: String, value: String, hub: Bool)] = [:]
        var edges: [(Int64, Int64)] = []
        for (node, kind, value, status, other) in rows {
            if labels[node] == nil {
                order.append(node)
                labels[node] = (kind, mask.identifier(kind: kind, value), status == "hub")
            }
            if let other { edges.append((node, other)) }
        }
        guard !order.isEmpty else { return "<p class=\"empty\">No identifiers.</p>" }
        let size = 420.0, radius = order.count == 1 ? 0 : 150.0
        var position: [Int64: (Double, Double)] = [:]
        for (index, node) in order.enumerated() {
            let angle = 2 * Double.pi * Double(index) / Double(order.count) - Double.pi / 2
            position[node] = (size / 2 + radius * cos(angle), size / 2 + radius * sin(angle))
        }
        var parts: [HTML] = []
        for (a, b) in edges {
            guard let p = position[a], let q = position[b] else { continue }
            parts.append(
                "<line x1=\"\(p.0, digits: 1)\" y1=\"\(p.1, digits: 1)\" x2=\"\(q.0, digits: 1)\" y2=\"\(q.1, digits: 1)\" stroke=\"#94a3b8\"/>"
            )
        }
        for node in order {
            let (x, y) = position[node]!
            let label = labels[node]!
            let text = "\(label.kind):\(label.value)"
            let short = text.count > 28 ? String(text.prefix(27)) + "…" : text
            parts.append(
                """
                <circle cx="\(x, digits: 1)" cy="\(y, digits: 1)" r="7" fill="\(label.hub ? "#dc2626" : "#2563eb")"><title>\(text)\(label.hub ? " (hub: links nothing)" : "")</title></circle><text x="\(x, digits: 1)" y="\(y - 11, digits: 1)" text-anchor="middle">\(short)</text>
                """)
        }
        return """
            <figure class="chart"><svg viewBox="0 0 \(Int(size)) \(Int(size))" width="420" role="img" aria-label="identity graph">\(parts)</svg><figcaption>\(order.count) identifiers, \(edges.count) links (seen together on an event)\(rows.count >= 400 ? "; the first 400 rows" : "")</figcaption></figure>
            """
    }
}
