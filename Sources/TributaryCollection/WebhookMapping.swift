import Foundation
import Postgres
import TributaryModel

/// How a tool's webhook payload (an email platform, a support desk, a payment provider) becomes Segment calls.
///
/// A mapping is a JSON file kept in git and applied with `tributary webhooks apply FILE`:
///
/// ```json
/// {
///   "source": "stripe",
///   "type": "track",
///   "event": "$.type",
///   "userId": "$.data.object.customer",
///   "messageId": "$.id",
///   "timestamp": "$.created", "timestampFormat": "unix",
///   "traits": { "email": "$.data.object.receipt_email" },
///   "properties": { "amount": "$.data.object.amount", "currency": "$.data.object.currency" }
/// }
/// ```
///
/// A string starting with `$` is a path into the payload (`$` is the whole payload, `$.a.b.0` walks objects and
/// arrays); any other string is a literal. `each` (a path to an array) makes one call per element. Without a
/// `messageId` path, the message id is derived from the payload, so a tool re-delivering the same payload is stored once.
public struct WebhookMapping: Sendable, Equatable {
    public var source: String
    public var type: CallType
    public var each: String?
    public var fields: [(String, String)]
    public var traits: [(String, String)]
    public var properties: [(String, String)]
    public var timestampFormat: TimestampFormat

    public enum TimestampFormat: String, Sendable { case iso8601, unix, unixMilliseconds = "unix_ms" }

    public static func == (lhs: WebhookMapping, rhs: WebhookMapping) -> Bool { lhs.json == rhs.json }

    static let fieldNames = ["event", "name", "userId", "anonymousId", "groupId", "previousId", "messageId", "timestamp"]

    /// Reads and checks a mapping document; errors give the path of the problem (`mapping.traits.email: …`).
    public init(json value: JSONValue) throws {
        guard case .object(let members) = value else { throw ImportError("mapping: must be a JSON object") }
        func string(_ key: String) throws -> String? {
            switch value[key] {
            case nil, .null?: return nil
            case .string(let text)?: return text
            default: throw ImportError("mapping.\(key): must be a string")
            }
        }
        func specs(_ key: String) throws -> [(String, String)] {
            switch value[key] {
            case nil, .null?: return []
            case .object(let entries)?:
                return try entries.map { name, spec in
                    guard case .string(let text) = spec else { throw ImportError("mapping.\(key).\(name): must be a string") }
                    try Self.checkPath(text, at: "mapping.\(key).\(name)")
                    return (name, text)
                }
            default: throw ImportError("mapping.\(key): must be an object of field: \"$.path\" or literal")
            }
        }
        let known = Set(Self.fieldNames + ["source", "type", "each", "traits", "properties", "timestampFormat"])
        if let unknown = members.first(where: { !known.contains($0.0) }) {
            throw ImportError("mapping.\(unknown.0): unknown key; known keys are \(known.sorted().joined(separator: ", "))")
        }
        guard let source = try string("source"), !source.isEmpty else { throw ImportError("mapping.source: required") }
        guard let typeName = try string("type"), let type = CallType(rawValue: typeName) else {
            throw ImportError("mapping.type: required, one of \(CallType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self.source = source
        self.type = type
        each = try string("each")
        if let each { try Self.checkPath(each, at: "mapping.each") }
        fields = try Self.fieldNames.compactMap { key in
            guard let spec = try string(key) else { return nil }
            try Self.checkPath(spec, at: "mapping.\(key)")
            return (key, spec)
        }
        traits = try specs("traits")
        properties = try specs("properties")
        let format = try string("timestampFormat") ?? "iso8601"
        guard let timestampFormat = TimestampFormat(rawValue: format) else {
            throw ImportError("mapping.timestampFormat: one of iso8601, unix, unix_ms")
        }
        self.timestampFormat = timestampFormat
    }

    static func checkPath(_ spec: String, at location: String) throws {
        guard spec.hasPrefix("$") else { return }
        if spec != "$" && !spec.hasPrefix("$.") { throw ImportError("\(location): a path starts with $. (got \(spec))") }
        if spec.hasSuffix(".") || spec.contains("..") { throw ImportError("\(location): '\(spec)' has an empty step") }
    }

    /// The document as stored.
    public var json: JSONValue {
        var members: [(String, JSONValue)] = [("source", .string(source)), ("type", .string(type.rawValue))]
        if let each { members.append(("each", .string(each))) }
        members += fields.map { ($0.0, .string($0.1)) }
        if !traits.isEmpty { members.append(("traits", .object(traits.map { ($0.0, .string($0.1)) }))) }
        if !properties.isEmpty { members.append(("properties", .object(properties.map { ($0.0, .string($0.1)) }))) }
        members.append(("timestampFormat", .string(timestampFormat.rawValue)))
        return .object(members)
    }

    /// The Segment calls a payload maps to (validated afterwards by ``SegmentParser/call(_:index:batch:receivedAt:)``).
    public func calls(for payload: JSONValue, rawPayload: [UInt8]) throws -> [JSONValue] {
        var items = [payload]
        if let each {
            guard case .array(let elements)? = Self.resolve(each, in: payload) else {
                throw ValidationIssue(index: nil, field: each, message: "expected an array in the payload")
            }
            items = elements
        }
        return try items.enumerated().map { index, item in
            var call: [(String, JSONValue)] = [("type", .string(type.rawValue))]
            for (key, spec) in fields {
                guard let value = Self.value(spec, in: item), value != .null else { continue }
                if key == "timestamp" {
                    call.append((key, .string(try timestamp(value))))
                } else {
                    call.append((key, value))
                }
            }
            for (key, specs) in [("traits", traits), ("properties", properties)] where !specs.isEmpty {
                call.append((key, .object(specs.compactMap { name, spec in Self.value(spec, in: item).map { (name, $0) } })))
            }
            if !fields.contains(where: { $0.0 == "messageId" }) {
                call.append(("messageId", .string("webhook-" + Importer.digest(rawPayload + Array(String(index).utf8)))))
            }
            return .object(call)
        }
    }

    private func timestamp(_ value: JSONValue) throws -> String {
        switch (timestampFormat, value) {
        case (.iso8601, .string(let text)): return text
        case (.unix, .number(let text)), (.unix, .string(let text)):
            guard let seconds = Double(text) else { break }
            return PostgresTime.format(Date(timeIntervalSince1970: seconds))
        case (.unixMilliseconds, .number(let text)), (.unixMilliseconds, .string(let text)):
            guard let milliseconds = Double(text) else { break }
            return PostgresTime.format(Date(timeIntervalSince1970: milliseconds / 1000))
        default: break
        }
        throw ValidationIssue(
            index: nil, field: "timestamp", message: "the payload's value is not a \(timestampFormat.rawValue) timestamp")
    }

    static func value(_ spec: String, in payload: JSONValue) -> JSONValue? {
        spec.hasPrefix("$") ? resolve(spec, in: payload) : .string(spec)
    }

    /// Walks `$.a.b.0` through objects and arrays.
    static func resolve(_ path: String, in payload: JSONValue) -> JSONValue? {
        var current: JSONValue? = payload
        for step in path.dropFirst(2).split(separator: ".", omittingEmptySubsequences: false) where path != "$" {
            switch current {
            case .object?: current = current?[String(step)]
            case .array(let elements)?:
                guard let index = Int(step), elements.indices.contains(index) else { return nil }
                current = elements[index]
            default: return nil
            }
        }
        return current
    }
}

/// Webhook mappings in `cdp.webhook_mappings`.
public struct WebhookMappingStore: Sendable {
    let client: PostgresClient
    public init(client: PostgresClient) { self.client = client }

    /// Stores (or replaces) the mapping of its source.
    public func apply(_ mapping: WebhookMapping) async throws {
        guard let source = try await SourceStore(client: client).named(mapping.source) else {
            throw ImportError("mapping.source: there is no source named '\(mapping.source)'")
        }
        try await client.execute(
            """
            INSERT INTO cdp.webhook_mappings (source_id, mapping) VALUES (\(source.id), \(PostgresJSON(text: mapping.json.serialized)))
            ON CONFLICT (source_id) DO UPDATE SET mapping = EXCLUDED.mapping, updated_at = excluded.updated_at
            """)
    }

    /// The mapping of a source, or nil.
    public func mapping(sourceID: String) async throws -> WebhookMapping? {
        guard
            let text = try await client.query(
                "SELECT mapping::text FROM cdp.webhook_mappings WHERE source_id = \(sourceID)"
            ).first?[0].decode(String.self)
        else { return nil }
        return try WebhookMapping(json: JSONParser.parse(Array(text.utf8)))
    }
}
