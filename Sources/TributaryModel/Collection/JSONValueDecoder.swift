import Foundation

/// Decodes `Decodable` types from a parsed ``JSONValue``: the one JSON reader of every definitions file and HTTP body.
///
/// Everything Tributary reads as JSON goes through ``JSONParser`` (one grammar, one set of limits, numbers kept as
/// their exact text). Types that are easiest to describe as `Codable` (segments, computed traits, the catalog's
/// specs) are then decoded from the parsed tree with this decoder; the few that walk the tree themselves do so where
/// the exact number text matters or the shape is open (sync destinations' settings, webhook mappings, event
/// payloads, identity rules).
///
/// A number decodes into `Double` or `Float` from its text, and into an integer type only when it is a whole
/// number in range (`3`, `3.0` or `3e0`; `3.5` is a type mismatch). A key given twice in an object is refused (a
/// file that says two things must not mean the last one silently). Errors are `DecodingError`s with the coding path of the
/// value, which ``describe(_:)`` turns into `segments[0].conditions[2].value: must be a number`; text that is not
/// JSON is `dataCorrupted` at the root with the parser's error (byte offset and reason) underneath.
///
/// ```swift
/// let definitions = try JSONValueDecoder().decode(SegmentDefinitions.self, from: data)
/// ```
public struct JSONValueDecoder: Sendable {
    public init() {}

    /// Parses `data` with ``JSONParser`` and decodes `type` from it.
    public func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        let value: JSONValue
        do {
            value = try JSONParser.parse([UInt8](data))
        } catch {
            throw DecodingError.dataCorrupted(
                .init(codingPath: [], debugDescription: "not valid JSON", underlyingError: error))
        }
        return try decode(type, from: value)
    }

    /// Decodes `type` from an already parsed value.
    public func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try T(from: ValueDecoder(value: value, codingPath: []))
    }
}

/// A coding key of an object member or an array position.
struct JSONKey: CodingKey {
    let stringValue: String
    let intValue: Int?
    init(stringValue: String) {
        self.stringValue = stringValue
        self.intValue = nil
    }
    init(intValue: Int) {
        self.stringValue = "\(intValue)"
        self.intValue = intValue
    }
}

private struct ValueDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = value else {
            throw mismatch([String: JSONValue].self, value, codingPath)
        }
        var seen = Set<String>()
        for (name, _) in members where !seen.insert(name).inserted {
            throw DecodingError.dataCorrupted(
                .init(codingPath: codingPath + [JSONKey(stringValue: name)], debugDescription: "given twice"))
        }
        return KeyedDecodingContainer(ObjectContainer<Key>(members: members, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let items) = value else { throw mismatch([JSONValue].self, value, codingPath) }
        return ArrayContainer(items: items, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleContainer(value: value, codingPath: codingPath)
    }
}

/// The error for `value` where a `type` was expected: `valueNotFound` for null, else `typeMismatch`.
private func mismatch(_ type: Any.Type, _ value: JSONValue, _ path: [any CodingKey]) -> DecodingError {
    let found: String =
        switch value {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    let context = DecodingError.Context(codingPath: path, debugDescription: "expected \(type), found \(found)")
    if case .null = value { return .valueNotFound(type, context) }
    return .typeMismatch(type, context)
}

/// Decodes the primitive `T` from `value` (shared by the three containers).
private func primitive<T>(_ type: T.Type, _ value: JSONValue, _ path: [any CodingKey]) throws -> T {
    switch value {
    case .bool(let flag) where T.self == Bool.self: return flag as! T
    case .string(let text) where T.self == String.self: return text as! T
    case .number(let text):
        if T.self == Double.self, let number = Double(text) { return number as! T }
        if T.self == Float.self, let number = Float(text) { return number as! T }
        if let integer = try integer(type, text, path) { return integer }
    default: break
    }
    throw mismatch(type, value, path)
}

/// The number `text` as the integer type `T` (nil when `T` is not an integer type).
private func integer<T>(_ type: T.Type, _ text: String, _ path: [any CodingKey]) throws -> T? {
    guard let integerType = T.self as? any FixedWidthInteger.Type else { return nil }
    func convert<I: FixedWidthInteger>(_: I.Type) throws -> I {
        if let exact = I(text) { return exact }
        if let number = Double(text), number == number.rounded(), let exact = I(exactly: number) { return exact }
        throw DecodingError.typeMismatch(
            I.self, .init(codingPath: path, debugDescription: "the number \(text) is not a whole number that fits in \(I.self)"))
    }
    return try convert(integerType) as? T
}

private struct SingleContainer: SingleValueDecodingContainer {
    let value: JSONValue
    let codingPath: [any CodingKey]

    func decodeNil() -> Bool { value == .null }
    func decode(_ type: Bool.Type) throws -> Bool { try primitive(type, value, codingPath) }
    func decode(_ type: String.Type) throws -> String { try primitive(type, value, codingPath) }
    func decode(_ type: Double.Type) throws -> Double { try primitive(type, value, codingPath) }
    func decode(_ type: Float.Type) throws -> Float { try primitive(type, value, codingPath) }
    func decode(_ type: Int.Type) throws -> Int { try primitive(type, value, codingPath) }
    func decode(_ type: Int8.Type) throws -> Int8 { try primitive(type, value, codingPath) }
    func decode(_ type: Int16.Type) throws -> Int16 { try primitive(type, value, codingPath) }
    func decode(_ type: Int32.Type) throws -> Int32 { try primitive(type, value, codingPath) }
    func decode(_ type: Int64.Type) throws -> Int64 { try primitive(type, value, codingPath) }
    func decode(_ type: UInt.Type) throws -> UInt { try primitive(type, value, codingPath) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try primitive(type, value, codingPath) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try primitive(type, value, codingPath) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try primitive(type, value, codingPath) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try primitive(type, value, codingPath) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        if T.self == JSONValue.self { return value as! T }
        return try T(from: ValueDecoder(value: value, codingPath: codingPath))
    }
}

private struct ObjectContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    /// The members by key (``ValueDecoder/container(keyedBy:)`` refuses a key given twice).
    let values: [String: JSONValue]
    let allKeys: [Key]
    let codingPath: [any CodingKey]

    init(members: [(String, JSONValue)], codingPath: [any CodingKey]) {
        var values: [String: JSONValue] = [:]
        var keys: [Key] = []
        for (name, value) in members {
            if values.updateValue(value, forKey: name) == nil, let key = Key(stringValue: name) { keys.append(key) }
        }
        self.values = values
        self.allKeys = keys
        self.codingPath = codingPath
    }

    func contains(_ key: Key) -> Bool { values[key.stringValue] != nil }

    private func value(_ key: Key) throws -> JSONValue {
        guard let value = values[key.stringValue] else {
            throw DecodingError.keyNotFound(
                key, .init(codingPath: codingPath, debugDescription: "no value for key '\(key.stringValue)'"))
        }
        return value
    }

    func decodeNil(forKey key: Key) throws -> Bool { try value(key) == .null }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try primitive(type, value(key), codingPath + [key]) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try primitive(type, value(key), codingPath + [key]) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try SingleContainer(value: try value(key), codingPath: codingPath + [key]).decode(type)
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try ValueDecoder(value: try value(key), codingPath: codingPath + [key]).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try ValueDecoder(value: try value(key), codingPath: codingPath + [key]).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        ValueDecoder(value: values["super"] ?? .null, codingPath: codingPath + [JSONKey(stringValue: "super")])
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        ValueDecoder(value: values[key.stringValue] ?? .null, codingPath: codingPath + [key])
    }
}

private struct ArrayContainer: UnkeyedDecodingContainer {
    let items: [JSONValue]
    let codingPath: [any CodingKey]
    private(set) var currentIndex = 0

    init(items: [JSONValue], codingPath: [any CodingKey]) {
        self.items = items
        self.codingPath = codingPath
    }

    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    /// The next item and its coding path, moving past it.
    private mutating func next<T>(_ type: T.Type) throws -> (JSONValue, [any CodingKey]) {
        let path = codingPath + [JSONKey(intValue: currentIndex)]
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(type, .init(codingPath: path, debugDescription: "the array has no more items"))
        }
        defer { currentIndex += 1 }
        return (items[currentIndex], path)
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, items[currentIndex] == .null else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let (value, path) = try next(type)
        return try SingleContainer(value: value, codingPath: path).decode(type)
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try primitiveNext(type) }
    mutating func decode(_ type: String.Type) throws -> String { try primitiveNext(type) }
    mutating func decode(_ type: Double.Type) throws -> Double { try primitiveNext(type) }
    mutating func decode(_ type: Float.Type) throws -> Float { try primitiveNext(type) }
    mutating func decode(_ type: Int.Type) throws -> Int { try primitiveNext(type) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try primitiveNext(type) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try primitiveNext(type) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try primitiveNext(type) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try primitiveNext(type) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try primitiveNext(type) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try primitiveNext(type) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try primitiveNext(type) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try primitiveNext(type) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try primitiveNext(type) }

    private mutating func primitiveNext<T>(_ type: T.Type) throws -> T {
        let (value, path) = try next(type)
        return try primitive(type, value, path)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey>
    {
        let (value, path) = try next([String: JSONValue].self)
        return try ValueDecoder(value: value, codingPath: path).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let (value, path) = try next([JSONValue].self)
        return try ValueDecoder(value: value, codingPath: path).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let (value, path) = try next(JSONValue.self)
        return ValueDecoder(value: value, codingPath: path)
    }
}
