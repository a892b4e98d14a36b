import Foundation

/// The small, logic-less template language of the `http` destination: a request body is written as the JSON it
/// should be, and values of the row are put in with `{{name}}`.
///
/// - A string that is exactly `"{{email}}"` becomes the row's value as it is typed (a number stays a number, a
///   missing or NULL value is `null`); `"Hi {{first_name}}"` puts the value's text into the string (JSON-escaped on
///   output, like every string).
/// - `{"$rows": TEMPLATE}` (alone in its object) becomes an array with TEMPLATE rendered for each row of the batch:
///   one request per batch. A body without `$rows` sends one request per row.
/// - Names: the sync's mapped fields, `key.COLUMN` (a primary-key column), `operation` (`upsert`, `delete`, `add`,
///   …), `idempotency_key`, and, anywhere, `sync` and `run_id`.
/// - In a URL, values are percent-encoded (`/contacts/{{key.id}}`); in headers, put in as text.
///
/// Every name is checked when the sync file is applied (``validate(names:at:)``), so a typo fails `syncs apply`, not
/// a run.
///
/// ```swift
/// let body = try HTTPTemplate(parsing: try JSONParser.parse(Array(#"{"inputs": {"$rows": {"id": "{{email}}"}}}"#.utf8)))
/// body.render(rows: batch, sync: "crm", runID: 7)   // {"inputs": [{"id": "a@x.com"}, …]}
/// ```
public struct HTTPTemplate: Sendable {
    /// What a `{{…}}` names.
    public enum Reference: Sendable, Equatable, CustomStringConvertible {
        case field(String)
        case key(String)
        case operation, idempotencyKey, sync, runID

        init(_ name: String) {
            switch name {
            case "operation": self = .operation
            case "idempotency_key": self = .idempotencyKey
            case "sync": self = .sync
            case "run_id": self = .runID
            default: self = name.hasPrefix("key.") ? .key(String(name.dropFirst(4))) : .field(name)
            }
        }

        public var description: String {
            switch self {
            case .field(let name): name
            case .key(let column): "key.\(column)"
            case .operation: "operation"
            case .idempotencyKey: "idempotency_key"
            case .sync: "sync"
            case .runID: "run_id"
            }
        }

        /// Whether the name reads a row (everything but `sync` and `run_id`).
        var readsRow: Bool { self != .sync && self != .runID }
    }

    /// A piece of a string: text as written, or a value.
    public enum Part: Sendable, Equatable {
        case text(String)
        case value(Reference)
    }

    indirect enum Node: Sendable {
        case literal(JSONValue)
        /// The whole string was one `{{name}}`: the typed value.
        case value(Reference)
        case text([Part])
        case object([(String, Node)])
        case array([Node])
        case rows(Node)
    }

    let root: Node

    /// Parses a JSON template; a `$rows` that is not alone in its object, or inside another `$rows`, is an error.
    public init(parsing value: JSONValue, at path: String = "body") throws {
        root = try Self.node(value, at: path, insideRows: false)
    }

    /// Parses the `{{…}}` of a string (a URL or a header value).
    public init(text: String, at path: String) throws {
        root = try Self.node(.string(text), at: path, insideRows: false)
    }

    /// One request per batch (`$rows` somewhere) or one per row.
    public var isBatch: Bool { Self.containsRows(root) }

    private static func containsRows(_ node: Node) -> Bool {
        switch node {
        case .rows: true
        case .object(let members): members.contains { containsRows($0.1) }
        case .array(let items): items.contains(where: containsRows)
        default: false
        }
    }

    static func node(_ value: JSONValue, at path: String, insideRows: Bool) throws -> Node {
        switch value {
        case .string(let text): return try parts(text, at: path)
        case .array(let items):
            return .array(try items.enumerated().map { try node($1, at: "\(path)[\($0)]", insideRows: insideRows) })
        case .object(let members):
            if let rows = members.first(where: { $0.0 == "$rows" }) {
                guard members.count == 1 else { throw SyncError("\(path).$rows: must be the only key of its object") }
                guard !insideRows else { throw SyncError("\(path).$rows: a $rows inside another $rows") }
                return .rows(try node(rows.1, at: "\(path).$rows", insideRows: true))
            }
            return .object(try members.map { ($0.0, try node($0.1, at: "\(path).\($0.0)", insideRows: insideRows)) })
        default: return .literal(value)
        }
    }

    static func parts(_ text: String, at path: String) throws -> Node {
        var parts: [Part] = []
        var rest = Substring(text)
        while let open = rest.range(of: "{{") {
            if open.lowerBound > rest.startIndex { parts.append(.text(String(rest[..<open.lowerBound]))) }
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                throw SyncError("\(path): '{{' without its '}}'")
            }
            let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty else { throw SyncError("\(path): an empty {{}}") }
            parts.append(.value(Reference(name)))
            rest = rest[close.upperBound...]
        }
        if !rest.isEmpty { parts.append(.text(String(rest))) }
        if parts.isEmpty { return .literal(.string(text)) }
        if parts.count == 1, case .value(let reference) = parts[0] { return .value(reference) }
        if parts.allSatisfy({ if case .text = $0 { true } else { false } }) { return .literal(.string(text)) }
        return .text(parts)
    }

    /// Checks every name against the sync's fields and key columns. `rowsAllowed`: whether row values may appear
    /// outside `$rows` (a per-row request: yes; a batch request: only `sync` and `run_id` there).
    public func validate(fields: [String], keys: [String], rowsAllowed: Bool, at path: String) throws {
        try Self.check(root, fields: fields, keys: keys, inRow: rowsAllowed, at: path)
    }

    private static func check(_ node: Node, fields: [String], keys: [String], inRow: Bool, at path: String) throws {
        func reference(_ reference: Reference) throws {
            switch reference {
            case .field(let name) where !fields.contains(name):
                throw SyncError(
                    "\(path): unknown name '\(name)' in {{…}}; the sync's fields are \(fields.joined(separator: ", "))"
                        + " (also key.COLUMN, operation, idempotency_key, sync, run_id)")
            case .key(let column) where !keys.contains(column):
                throw SyncError("\(path): 'key.\(column)' is not a primary-key column (\(keys.joined(separator: ", ")))")
            default: break
            }
            if reference.readsRow && !inRow {
                throw SyncError("\(path): '{{\(reference)}}' reads a row, but this is outside $rows (one request for the batch)")
            }
        }
        switch node {
        case .literal: return
        case .value(let value): try reference(value)
        case .text(let parts):
            for case .value(let value) in parts { try reference(value) }
        case .object(let members):
            for (name, child) in members { try check(child, fields: fields, keys: keys, inRow: inRow, at: "\(path).\(name)") }
        case .array(let items):
            for (index, child) in items.enumerated() {
                try check(child, fields: fields, keys: keys, inRow: inRow, at: "\(path)[\(index)]")
            }
        case .rows(let child): try check(child, fields: fields, keys: keys, inRow: true, at: "\(path).$rows")
        }
    }

    /// What the names read: the run's sync and id, and (inside `$rows` or for a per-row request) one change.
    public struct Scope: Sendable {
        public var sync: String
        public var runID: Int64
        public var rows: [SyncChange]
        public init(sync: String, runID: Int64, rows: [SyncChange]) {
            self.sync = sync
            self.runID = runID
            self.rows = rows
        }
    }

    /// The JSON the template gives for `scope` (its first row is the row outside `$rows`).
    public func render(_ scope: Scope) -> JSONValue {
        Self.render(root, scope, row: scope.rows.first)
    }

    /// The text the template gives (a URL or a header): values' text, each passed through `encode`.
    public func renderText(_ scope: Scope, encode: (String) -> String = { $0 }) -> String {
        switch root {
        case .literal(.string(let text)): return text
        case .value(let reference): return encode(Self.value(reference, scope, row: scope.rows.first).plainText)
        case .text(let parts):
            return parts.map { part in
                switch part {
                case .text(let text): text
                case .value(let reference): encode(Self.value(reference, scope, row: scope.rows.first).plainText)
                }
            }.joined()
        default: return render(scope).plainText
        }
    }

    private static func render(_ node: Node, _ scope: Scope, row: SyncChange?) -> JSONValue {
        switch node {
        case .literal(let value): return value
        case .value(let reference): return value(reference, scope, row: row)
        case .text(let parts):
            return .string(
                parts.map { part in
                    switch part {
                    case .text(let text): text
                    case .value(let reference): value(reference, scope, row: row).plainText
                    }
                }.joined())
        case .object(let members): return .object(members.map { ($0.0, render($0.1, scope, row: row)) })
        case .array(let items): return .array(items.map { render($0, scope, row: row) })
        case .rows(let child): return .array(scope.rows.map { render(child, scope, row: $0) })
        }
    }

    static func value(_ reference: Reference, _ scope: Scope, row: SyncChange?) -> JSONValue {
        switch reference {
        case .sync: return .string(scope.sync)
        case .runID: return .number(String(scope.runID))
        case .operation: return row.map { .string($0.operation.rawValue) } ?? .null
        case .idempotencyKey: return row.map { .string($0.idempotencyKey) } ?? .null
        case .field(let name): return row?.fields[name] ?? .null
        case .key(let column): return row?.key[column] ?? .null
        }
    }
}
