import Foundation

/// Names derived from trait keys, property keys and event names: the default `cdp.profiles` column of a trait and the
/// Swift names of the generated catalog source. Every derivation is deterministic and total: any key gives a valid name.
///
/// A key is split into words first: diacritics are folded (`café` → `cafe`), every character other than an ASCII
/// letter or digit separates words (and is dropped), and camel case starts a new word (`firstName` → first, Name;
/// `HTTPStatus` → HTTP, Status; `address2Line` → address2, Line).
public enum CatalogNames {
    /// The words of a key, in order, as described on ``CatalogNames``.
    package static func words(_ key: String) -> [String] {
        var words: [[UInt8]] = []
        var current: [UInt8] = []
        for byte in key.folding(options: .diacriticInsensitive, locale: nil).utf8 {
            guard byte.isASCIIUpper || byte.isASCIILower || byte.isASCIIDigit else {
                if !current.isEmpty { words.append(current) }
                current = []
                continue
            }
            if let last = current.last {
                if byte.isASCIIUpper && (last.isASCIILower || last.isASCIIDigit) {
                    // firstName, address2Line: a capital after a lower-case letter or digit starts a word.
                    words.append(current)
                    current = []
                } else if byte.isASCIILower && last.isASCIIUpper && current.count >= 2 && current[current.count - 2].isASCIIUpper
                {
                    // HTTPStatus: the last capital of a run starts the word the lower-case letter continues.
                    words.append(Array(current.dropLast()))
                    current = [last]
                }
            }
            current.append(byte)
        }
        if !current.isEmpty { words.append(current) }
        return words.map { String(decoding: $0, as: UTF8.self) }
    }

    /// The default `cdp.profiles` column of a trait: the key's words in lower case joined by `_` (`firstName` →
    /// `first_name`, `Lifetime Value` → `lifetime_value`), `_`-prefixed if it would start with a digit (`2fa` →
    /// `_2fa`), `trait` if the key has no letters or digits at all, cut to 63 bytes. Always a valid column name.
    public static func column(forKey key: String) -> String {
        var name = words(key).map { $0.lowercased() }.joined(separator: "_")
        if name.isEmpty { name = "trait" }
        if name.utf8.first?.isASCIIDigit == true { name = "_" + name }
        return String(name.prefix(Catalog.maxColumnBytes))
    }

    /// A Swift identifier for a key, without backticks: `lowerCamelCase` (for constants) or `UpperCamelCase` (for
    /// types) of its words (`lifetime_value` → `lifetimeValue`, `Order Completed` → `OrderCompleted`), `_`-prefixed
    /// if it would start with a digit, `fallback` if the key has no letters or digits. Use ``escaped(_:)`` to write it.
    public static func swiftName(_ key: String, upperCamel: Bool, fallback: String) -> String {
        let parts = words(key).enumerated().map { index, word in
            let lower = word.lowercased()
            return index == 0 && !upperCamel ? lower : lower.prefix(1).uppercased() + lower.dropFirst()
        }
        let name = parts.joined()
        if name.isEmpty { return fallback }
        return name.first!.isNumber ? "_" + name : name
    }

    /// `name` as it must be written in Swift source: in backticks if it is a keyword (`class` → `` `class` ``).
    public static func escaped(_ name: String) -> String {
        swiftKeywords.contains(name) ? "`\(name)`" : name
    }

    /// Swift's keywords, reserved and contextual; backticks around a contextual one are harmless, and safer than
    /// knowing every context.
    static let swiftKeywords: Set<String> = [
        "associatedtype", "borrowing", "class", "consuming", "deinit", "enum", "extension", "fileprivate", "func",
        "import", "init", "inout", "internal", "let", "nonisolated", "open", "operator", "private", "precedencegroup",
        "protocol", "public", "rethrows", "static", "struct", "subscript", "typealias", "var", "break", "case", "catch",
        "continue", "default", "defer", "do", "else", "fallthrough", "for", "guard", "if", "in", "repeat", "return",
        "throw", "switch", "where", "while", "Any", "as", "await", "false", "is", "nil", "self", "Self", "super",
        "throws", "true", "try", "associativity", "async", "convenience", "didSet", "dynamic", "final", "get",
        "indirect", "infix", "lazy", "left", "mutating", "none", "nonmutating", "optional", "override", "package",
        "postfix", "precedence", "prefix", "required", "right", "set", "some", "unowned", "weak", "willSet",
        "actor", "isolated", "macro", "each", "any", "copy", "discard", "consume", "sending", "then",
    ]
}

extension UInt8 {
    var isASCIIUpper: Bool { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self) }
    var isASCIILower: Bool { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) }
    var isASCIIDigit: Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) }
}
