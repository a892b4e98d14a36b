import Foundation

/// Charts drawn as inline SVG on the server: no JavaScript, no files to fetch. Each point carries a `<title>` (its
/// label and value), which browsers show on hover and screen readers read.
enum Chart {
    /// One named series of values over the same labels.
    struct Series {
        var name: String
        var values: [Double]
        var color: String
    }

    static let palette = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2"]

    /// A line chart of `series` over `labels` (left to right), with the axis from 0 to the largest value.
    static func lines(_ series: [Series], labels: [String], title: String, width: Int = 720, height: Int = 200) -> HTML {
        let count = labels.count
        let top = max(1, series.flatMap(\.values).max() ?? 1)
        let (left, right, upper, lower) = (48.0, 8.0, 8.0, 24.0)
        let plotWidth = Double(width) - left - right, plotHeight = Double(height) - upper - lower
        func x(_ index: Int) -> Double { left + (count > 1 ? Double(index) / Double(count - 1) : 0.5) * plotWidth }
        func y(_ value: Double) -> Double { upper + plotHeight * (1 - value / top) }
        var parts: [HTML] = []
        for tick in [0.0, 0.5, 1.0] {
            let value = top * tick
            parts.append(
                """
                <line x1="\(left, digits: 1)" x2="\(Double(width) - right, digits: 1)" y1="\(y(value), digits: 1)" y2="\(y(value), digits: 1)" class="grid"/><text x="\(left - 4, digits: 1)" y="\(y(value) + 4, digits: 1)" text-anchor="end">\(compact(value))</text>
                """)
        }
        if count > 0 {
            for index in Set([0, count / 2, count - 1]).sorted() {
                // The first and last labels are anchored inward, so they stay inside the picture.
                let anchor = count == 1 ? "middle" : index == 0 ? "start" : index == count - 1 ? "end" : "middle"
                parts.append(
                    "<text x=\"\(x(index), digits: 1)\" y=\"\(Double(height) - 6, digits: 1)\" text-anchor=\"\(anchor)\">\(labels[index])</text>"
                )
            }
        }
        for line in series where !line.values.isEmpty {
            let points = line.values.enumerated().map { "\(fixed(x($0.offset))),\(fixed(y($0.element)))" }.joined(separator: " ")
            parts.append("<polyline fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"2\" points=\"\(points)\"/>")
            for (index, value) in line.values.enumerated() {
                parts.append(
                    """
                    <circle cx="\(x(index), digits: 1)" cy="\(y(value), digits: 1)" r="2.5" fill="\(line.color)"><title>\(line.name) · \(index < count ? labels[index] : ""): \(compact(value))</title></circle>
                    """)
            }
        }
        let legend = HTML.joined(
            series.map { "<span class=\"key\"><span class=\"swatch\" style=\"background:\($0.color)\"></span>\($0.name)</span>" },
            separator: " ")
        return """
            <figure class="chart"><svg viewBox="0 0 \(width) \(height)" width="100%" role="img" aria-label="\(title)">\(parts)</svg><figcaption>\(title) \(legend)</figcaption></figure>
            """
    }

    /// 1234 → "1,234"; 12_345_678 → "12.3M".
    static func compact(_ value: Double) -> String {
        if value >= 10_000_000 { return (value / 1_000_000).formatted(.number.precision(.fractionLength(1))) + "M" }
        if value >= 100_000 { return (value / 1000).formatted(.number.precision(.fractionLength(0))) + "k" }
        return value.rounded() == value
            ? Int(value).formatted() : value.formatted(.number.precision(.fractionLength(2)))
    }

    private static func fixed(_ value: Double) -> String {
        value.formatted(.number.precision(.fractionLength(1)).grouping(.never))
    }
}
