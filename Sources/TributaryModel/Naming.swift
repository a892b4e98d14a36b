import Foundation
import Postgres

/// Checks a name people give something (a source, an API token): trimmed, not blank, at most 100 characters, no
/// control characters. Returns the trimmed name or throws `error` with a message that starts with `what`.
///
/// ```swift
/// try checkedName(" web ", what: "a source name", error: SourceError.init)  // "web"
/// ```
package func checkedName<E: Error>(_ name: String, what: String, error: (String) -> E) throws -> String {
    let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
    guard !trimmed.isEmpty else { throw error("\(what) cannot be empty") }
    guard trimmed.count <= 100 else { throw error("\(what) can be at most 100 characters") }
    guard !trimmed.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
        throw error("\(what) cannot contain control characters")
    }
    return trimmed
}

/// The rules for names that become SQL identifiers, in one place: trait, field and computed-trait columns, identifier
/// kinds, segment views, sync names.
public enum SQLNames {
    /// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes; a longer name would be cut silently.
    public static let maxBytes = SQLQuoting.maxIdentifierBytes

    /// Whether `name` can be used unquoted: lower-case ASCII letters, digits and `_`, not starting with a digit
    /// (nor with `_` unless `leadingUnderscore`), at most ``maxBytes`` bytes.
    public static func isPlain(_ name: String, leadingUnderscore: Bool = true) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= maxBytes,
            first.isASCIILower || (leadingUnderscore && first == UInt8(ascii: "_"))
        else { return false }
        return bytes.allSatisfy { $0.isASCIILower || $0.isASCIIDigit || $0 == UInt8(ascii: "_") }
    }

    /// Whether `name` can be a quoted identifier: not empty, no NUL, at most ``maxBytes`` bytes.
    public static func fits(_ name: String) -> Bool {
        !name.isEmpty && !name.utf8.contains(0) && name.utf8.count <= maxBytes
    }
}
