import Foundation

/// A piece of HTML. Interpolating a `String` (or a number) into it escapes the value; interpolating `HTML` embeds it
/// as it is. The literal parts are the console's own markup, so every value reaching a page is escaped unless it was
/// built as `HTML` itself.
///
/// ```swift
/// let name = "<script>alert(1)</script>"
/// let cell: HTML = "<td title=\"\(name)\">\(name)</td>"   // both escaped
/// ```
public struct HTML: Sendable, Equatable, CustomStringConvertible, ExpressibleByStringInterpolation {
    /// The markup.
    public private(set) var text: String

    public init(stringLiteral value: String) { text = value }
    public init(stringInterpolation: Interpolation) { text = stringInterpolation.text }

    public var description: String { text }

    /// Escapes `&`, `<`, `>`, `"` and `'`: safe in text and in quoted attribute values.
    public static func escape(_ value: String) -> String {
        var out = ""
        out.reserveCapacity(value.utf8.count)
        for character in value.unicodeScalars {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    /// Several pieces one after another.
    public static func joined(_ parts: some Sequence<HTML>, separator: HTML = "") -> HTML {
        var result: HTML = ""
        var first = true
        for part in parts {
            if !first { result.text += separator.text }
            result.text += part.text
            first = false
        }
        return result
    }

    public struct Interpolation: StringInterpolationProtocol {
        var text = ""
        public init(literalCapacity: Int, interpolationCount: Int) {
            text.reserveCapacity(literalCapacity + 16 * interpolationCount)
        }
        public mutating func appendLiteral(_ literal: String) { text += literal }
        /// Escaped.
        public mutating func appendInterpolation(_ value: String) { text += HTML.escape(value) }
        /// Escaped; nothing for nil.
        public mutating func appendInterpolation(_ value: String?) { if let value { text += HTML.escape(value) } }
        public mutating func appendInterpolation(_ value: some BinaryInteger) { text += String(value) }
        /// A number with `digits` decimals.
        public mutating func appendInterpolation(_ value: Double, digits: Int) {
            text += value.formatted(.number.precision(.fractionLength(digits)).grouping(.never))
        }
        /// Embedded as it is.
        public mutating func appendInterpolation(_ value: HTML) { text += value.text }
        public mutating func appendInterpolation(_ values: [HTML]) { for value in values { text += value.text } }
    }
}
