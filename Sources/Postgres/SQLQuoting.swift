/// The one place where names and values become SQL text.
///
/// Everything a user supplies that must appear in SQL text rather than as a bind parameter (identifiers
/// always; literals in DDL such as `CREATE VIEW`, which cannot take parameters) goes through these functions.
///
/// ```swift
/// try SQLQuoting.identifier(#"my "segment""#)   // "my ""segment"""
/// try SQLQuoting.literal("it's")                // 'it''s'
/// try SQLQuoting.literal(#"C:\path"#)           //  E'C:\\path'
/// ```
public enum SQLQuoting {
    /// PostgreSQL's identifier length limit (NAMEDATALEN - 1), in bytes.
    public static let maxIdentifierBytes = 63

    /// Quotes an identifier: wraps it in double quotes and doubles any embedded double quote.
    ///
    /// Refuses the empty string, a NUL byte, and names longer than 63 bytes (PostgreSQL would silently truncate
    /// them, so two long names could end up naming the same object).
    public static func identifier(_ name: String) throws -> String {
        if name.isEmpty { throw PostgresError(.encoding, "an SQL identifier cannot be empty") }
        if name.utf8.contains(0) { throw PostgresError(.encoding, "the identifier '\(printable(name))' contains a NUL byte") }
        if name.utf8.count > maxIdentifierBytes {
            throw PostgresError(
                .encoding,
                "the identifier '\(printable(name))' is \(name.utf8.count) bytes long; PostgreSQL allows at most \(maxIdentifierBytes)"
            )
        }
        return "\"" + name.replacingAll("\"", with: "\"\"") + "\""
    }

    /// Quotes a schema-qualified name: `"schema"."name"`.
    public static func qualified(_ schema: String, _ name: String) throws -> String {
        try identifier(schema) + "." + identifier(name)
    }

    /// Quotes a string literal: wraps it in single quotes and doubles embedded single quotes.
    ///
    /// A value with a backslash is written as an escape string (`E'…'`, backslashes doubled), so it means the
    /// same whatever the server's `standard_conforming_strings` setting. A NUL byte is refused: no PostgreSQL
    /// text value can hold one.
    public static func literal(_ value: String) throws -> String {
        if value.utf8.contains(0) { throw PostgresError(.encoding, "the value '\(printable(value))' contains a NUL byte") }
        let quoted = value.replacingAll("'", with: "''")
        if value.contains("\\") {
            return " E'" + quoted.replacingAll("\\", with: "\\\\") + "'"
        }
        return "'" + quoted + "'"
    }

    /// The value, shortened and with control characters made visible, for error messages.
    static func printable(_ value: String) -> String {
        var out = ""
        for scalar in value.unicodeScalars.prefix(64) {
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return value.unicodeScalars.count > 64 ? out + "…" : out
    }
}

extension String {
    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        out.reserveCapacity(utf8.count + 2)
        for character in self {
            if character == target { out += replacement } else { out.append(character) }
        }
        return out
    }
}
