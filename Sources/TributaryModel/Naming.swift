import Foundation

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
