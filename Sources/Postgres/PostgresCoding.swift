import Foundation

/// A parameter value as it is sent to the server: its bytes (nil for NULL), its type and its format.
public struct PostgresBind: Sendable, Equatable {
    /// The bytes of the value, or nil for SQL NULL. Text values carry no terminating NUL.
    public var bytes: [UInt8]?
    /// The parameter's type; ``PostgresType/unspecified`` lets the server infer it.
    public var type: PostgresType
    /// True for the binary format (used for `bytea`), false for text.
    public var isBinary: Bool

    public init(bytes: [UInt8]?, type: PostgresType, isBinary: Bool = false) {
        self.bytes = bytes
        self.type = type
        self.isBinary = isBinary
    }

    /// A text-format value; fails if the text holds a NUL byte, which no PostgreSQL text value can contain.
    public static func text(_ text: String, type: PostgresType) throws -> PostgresBind {
        let bytes = Array(text.utf8)
        if bytes.contains(0) {
            throw PostgresError(.encoding, "a \(type) value contains a NUL byte, which PostgreSQL text cannot hold")
        }
        return PostgresBind(bytes: bytes, type: type)
    }

    public static func null(_ type: PostgresType) -> PostgresBind { PostgresBind(bytes: nil, type: type) }
}

/// A Swift value that can be sent as a query parameter.
///
/// ```swift
/// try await db.query("SELECT * FROM cdp.events WHERE user_id = \(userID) AND timestamp > \(since)")
/// // sends: SELECT * FROM cdp.events WHERE user_id = $1 AND timestamp > $2   with two bound values
/// ```
public protocol PostgresEncodable: Sendable {
    /// The type sent for a NULL of this Swift type.
    static var postgresType: PostgresType { get }
    /// The value as a bind parameter.
    func postgresBind() throws -> PostgresBind
}

/// A Swift value that can be decoded from a result column (text format).
public protocol PostgresDecodable {
    /// Decodes the value from PostgreSQL's text output for a column of `type`.
    init(postgresText text: String, type: PostgresType) throws
    /// The value SQL NULL decodes to, or nil when NULL is an error for this type (the default).
    static func postgresNull() -> Self?
}

extension PostgresDecodable {
    public static func postgresNull() -> Self? { nil }
}

/// `T?` decodes NULL as nil and anything else as `T`.
extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public static func postgresNull() -> Self? { .some(.none) }
    public init(postgresText text: String, type: PostgresType) throws {
        self = .some(try Wrapped(postgresText: text, type: type))
    }
}

/// Raised by decoders; the row adds the column name and type to it.
struct DecodingFailure: Error {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public static var postgresType: PostgresType { Wrapped.postgresType }
    public func postgresBind() throws -> PostgresBind {
        switch self {
        case .none: .null(Wrapped.postgresType)
        case .some(let value): try value.postgresBind()
        }
    }
}

// MARK: - Strings

extension String: PostgresEncodable, PostgresDecodable {
    /// Strings are sent untyped, so the server reads them as whatever the context needs (text, jsonb, uuid…).
    public static var postgresType: PostgresType { .unspecified }
    public func postgresBind() throws -> PostgresBind { try .text(self, type: .unspecified) }
    /// Any column decodes as a `String`: its text representation.
    public init(postgresText text: String, type: PostgresType) throws { self = text }
}

extension Substring: PostgresEncodable {
    public static var postgresType: PostgresType { .unspecified }
    public func postgresBind() throws -> PostgresBind { try .text(String(self), type: .unspecified) }
}

// MARK: - Numbers

/// Parses an integer column, naming the type in the failure.
private func parseInteger<T: FixedWidthInteger>(_ text: String, _ type: PostgresType) throws -> T {
    guard let value = T(text) else {
        throw DecodingFailure("'\(text.prefix(40))' is not a valid \(T.self)")
    }
    return value
}

extension Int: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .int8 }
    public func postgresBind() throws -> PostgresBind { PostgresBind(bytes: Array(String(self).utf8), type: .int8) }
    public init(postgresText text: String, type: PostgresType) throws { self = try parseInteger(text, type) }
}

extension Int64: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .int8 }
    public func postgresBind() throws -> PostgresBind { PostgresBind(bytes: Array(String(self).utf8), type: .int8) }
    public init(postgresText text: String, type: PostgresType) throws { self = try parseInteger(text, type) }
}

extension Int32: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .int4 }
    public func postgresBind() throws -> PostgresBind { PostgresBind(bytes: Array(String(self).utf8), type: .int4) }
    public init(postgresText text: String, type: PostgresType) throws { self = try parseInteger(text, type) }
}

extension Int16: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .int2 }
    public func postgresBind() throws -> PostgresBind { PostgresBind(bytes: Array(String(self).utf8), type: .int2) }
    public init(postgresText text: String, type: PostgresType) throws { self = try parseInteger(text, type) }
}

extension Bool: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .bool }
    public func postgresBind() throws -> PostgresBind { PostgresBind(bytes: [self ? 0x74 : 0x66], type: .bool) }
    public init(postgresText text: String, type: PostgresType) throws {
        switch text {
        case "t", "true": self = true
        case "f", "false": self = false
        default: throw DecodingFailure("'\(text.prefix(40))' is not a boolean")
        }
    }
}

/// PostgreSQL spells the special floating-point values `Infinity`, `-Infinity` and `NaN`.
private func floatText<T: BinaryFloatingPoint & LosslessStringConvertible>(_ value: T) -> String {
    if value.isNaN { return "NaN" }
    if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
    return value.description
}

private func parseFloat<T: BinaryFloatingPoint & LosslessStringConvertible>(_ text: String) throws -> T {
    switch text {
    case "NaN": return .nan
    case "Infinity": return .infinity
    case "-Infinity": return -.infinity
    default:
        guard let value = T(text) else { throw DecodingFailure("'\(text.prefix(40))' is not a valid \(T.self)") }
        return value
    }
}

extension Double: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .float8 }
    public func postgresBind() throws -> PostgresBind { PostgresBind(bytes: Array(floatText(self).utf8), type: .float8) }
    public init(postgresText text: String, type: PostgresType) throws { self = try parseFloat(text) }
}

extension Float: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .float4 }
    public func postgresBind() throws -> PostgresBind { PostgresBind(bytes: Array(floatText(self).utf8), type: .float4) }
    public init(postgresText text: String, type: PostgresType) throws { self = try parseFloat(text) }
}

extension Decimal: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .numeric }
    public func postgresBind() throws -> PostgresBind {
        PostgresBind(bytes: Array((isNaN ? "NaN" : description).utf8), type: .numeric)
    }
    public init(postgresText text: String, type: PostgresType) throws {
        if text == "NaN" { self = .nan; return }
        guard let value = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX")),
            !text.isEmpty, text != "Infinity", text != "-Infinity"
        else { throw DecodingFailure("'\(text.prefix(40))' is not a number Decimal can hold") }
        self = value
    }
}

// MARK: - Dates, UUIDs, bytes

extension Date: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .timestamptz }
    /// Sent as a `timestamptz` in UTC with microsecond precision (PostgreSQL's own precision).
    public func postgresBind() throws -> PostgresBind {
        PostgresBind(bytes: Array(PostgresTime.format(self).utf8), type: .timestamptz)
    }
    /// Decodes `timestamptz`, `timestamp` (read as UTC) and `date` (midnight UTC).
    public init(postgresText text: String, type: PostgresType) throws { self = try PostgresTime.parse(text) }
}

extension UUID: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .uuid }
    public func postgresBind() throws -> PostgresBind {
        PostgresBind(bytes: UUIDText.lowercaseBytes(self), type: .uuid)
    }
    public init(postgresText text: String, type: PostgresType) throws {
        guard let value = UUIDText.parse(text) else { throw DecodingFailure("'\(text.prefix(40))' is not a UUID") }
        self = value
    }
}

/// UUID text without Foundation's `sprintf`/`sscanf` (which showed up in profiles of bulk work).
enum UUIDText {
    private static let digits = Array("0123456789abcdef".utf8)

    /// The canonical lower-case form, `8-4-4-4-12` hex digits.
    static func lowercaseBytes(_ uuid: UUID) -> [UInt8] {
        withUnsafeBytes(of: uuid.uuid) { raw in
            var out = [UInt8]()
            out.reserveCapacity(36)
            for (index, byte) in raw.enumerated() {
                if index == 4 || index == 6 || index == 8 || index == 10 { out.append(UInt8(ascii: "-")) }
                out.append(digits[Int(byte >> 4)])
                out.append(digits[Int(byte & 0x0F)])
            }
            return out
        }
    }

    static func lowercaseString(_ uuid: UUID) -> String { String(decoding: lowercaseBytes(uuid), as: UTF8.self) }

    /// Parses the canonical form (either case); nil for anything else.
    static func parse(_ text: String) -> UUID? {
        text.utf8.withContiguousStorageIfAvailable { parse(bytes: $0) } ?? parse(bytes: Array(text.utf8))
    }

    private static func parse(bytes: some Collection<UInt8>) -> UUID? {
        guard bytes.count == 36 else { return nil }
        var value = [UInt8](repeating: 0, count: 16)
        var nibbles = 0
        for (index, byte) in bytes.enumerated() {
            if index == 8 || index == 13 || index == 18 || index == 23 {
                guard byte == UInt8(ascii: "-") else { return nil }
                continue
            }
            let nibble: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value[nibbles / 2] |= nibbles % 2 == 0 ? nibble << 4 : nibble
            nibbles += 1
        }
        return UUID(
            uuid: (
                value[0], value[1], value[2], value[3], value[4], value[5], value[6], value[7],
                value[8], value[9], value[10], value[11], value[12], value[13], value[14], value[15]
            ))
    }
}

extension Data: PostgresEncodable, PostgresDecodable {
    public static var postgresType: PostgresType { .bytea }
    public func postgresBind() throws -> PostgresBind { PostgresBind(bytes: [UInt8](self), type: .bytea, isBinary: true) }
    public init(postgresText text: String, type: PostgresType) throws { self = Data(try ByteaText.decode(text)) }
}

extension Array: PostgresEncodable where Element: PostgresArrayElement {
    public static var postgresType: PostgresType { Element.postgresArrayType }
    /// Sent as an array literal, for example `{"a","b\"c",NULL}`.
    public func postgresBind() throws -> PostgresBind {
        try .text(ArrayLiteral.encode(try map { try $0.postgresArrayElementText() }), type: Element.postgresArrayType)
    }
}

extension Array: PostgresDecodable where Element: PostgresArrayElement {
    public init(postgresText text: String, type: PostgresType) throws {
        let elementType = type.arrayElement ?? .text
        self = try ArrayLiteral.parse(text).map { try Element(postgresArrayElement: $0, type: elementType) }
    }
}

/// A value that can be an element of a one-dimensional PostgreSQL array.
public protocol PostgresArrayElement: Sendable {
    static var postgresArrayType: PostgresType { get }
    /// The element's text, or nil for NULL.
    func postgresArrayElementText() throws -> String?
    init(postgresArrayElement text: String?, type: PostgresType) throws
}

extension String: PostgresArrayElement {
    public static var postgresArrayType: PostgresType { .textArray }
    public func postgresArrayElementText() throws -> String? { self }
    public init(postgresArrayElement text: String?, type: PostgresType) throws {
        guard let text else { throw DecodingFailure("the array holds a NULL; decode it as [String?]") }
        self = text
    }
}

extension Int: PostgresArrayElement {
    public static var postgresArrayType: PostgresType { .int8Array }
    public func postgresArrayElementText() throws -> String? { String(self) }
    public init(postgresArrayElement text: String?, type: PostgresType) throws {
        guard let text else { throw DecodingFailure("the array holds a NULL; decode it as [Int?]") }
        self = try Int(postgresText: text, type: type)
    }
}

extension UUID: PostgresArrayElement {
    public static var postgresArrayType: PostgresType { .uuidArray }
    public func postgresArrayElementText() throws -> String? { UUIDText.lowercaseString(self) }
    public init(postgresArrayElement text: String?, type: PostgresType) throws {
        guard let text else { throw DecodingFailure("the array holds a NULL; decode it as [UUID?]") }
        self = try UUID(postgresText: text, type: type)
    }
}

extension Optional: PostgresArrayElement where Wrapped: PostgresArrayElement {
    public static var postgresArrayType: PostgresType { Wrapped.postgresArrayType }
    public func postgresArrayElementText() throws -> String? { try self?.postgresArrayElementText() }
    public init(postgresArrayElement text: String?, type: PostgresType) throws {
        self = try text.map { try Wrapped(postgresArrayElement: $0, type: type) }
    }
}

// MARK: - JSON

/// A `json`/`jsonb` value, kept as its JSON text.
///
/// ```swift
/// try await db.execute("INSERT INTO t(doc) VALUES (\(try PostgresJSON(encoding: ["plan": "pro"])))")
/// let plan = try row["doc"].decode(PostgresJSON.self).decode([String: String].self)["plan"]
/// ```
public struct PostgresJSON: PostgresEncodable, PostgresDecodable, Hashable, CustomStringConvertible {
    /// The JSON text.
    public var text: String

    /// Wraps JSON text as it is; the server validates it.
    public init(text: String) { self.text = text }

    /// Encodes a value with `JSONEncoder` (keys sorted, so equal values give equal text).
    public init(encoding value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        text = String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// Decodes the JSON text with `JSONDecoder`.
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(text.utf8))
    }

    public var description: String { text }

    public static var postgresType: PostgresType { .jsonb }
    public func postgresBind() throws -> PostgresBind { try .text(text, type: .jsonb) }
    public init(postgresText text: String, type: PostgresType) throws { self.text = text }
}
