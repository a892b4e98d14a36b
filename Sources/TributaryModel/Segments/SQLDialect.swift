import Foundation
import Postgres

/// How names and literals are written in generated SQL. Every identifier and literal a compiler emits goes through
/// a dialect, so a test can swap in a deliberately odd one and any hard-coded quoting stands out.
///
/// ```swift
/// try PostgresDialect().identifier(#"my "segment""#)   // "my ""segment"""
/// try PostgresDialect().literal("it's")                // 'it''s'
/// ```
public protocol SQLDialect: Sendable {
    /// A quoted identifier (a view, column or schema name).
    func identifier(_ name: String) throws -> String
    /// A quoted string literal, safe to inline in DDL (views cannot take bind parameters).
    func literal(_ value: String) throws -> String
}

/// PostgreSQL: identifiers and literals quoted by ``SQLQuoting``, the one place that escapes them.
public struct PostgresDialect: SQLDialect {
    public init() {}
    public func identifier(_ name: String) throws -> String { try SQLQuoting.identifier(name) }
    public func literal(_ value: String) throws -> String { try SQLQuoting.literal(value) }
}

/// Renders the pieces computed traits and segments share (property conditions, JSON constants, numbers, moments)
/// through a dialect.
package struct SQLRenderer: Sendable {
    let dialect: any SQLDialect

    init(_ dialect: any SQLDialect = PostgresDialect()) { self.dialect = dialect }

    func identifier(_ name: String) throws -> String { try dialect.identifier(name) }
    func literal(_ value: String) throws -> String { try dialect.literal(value) }

    /// `timestamptz 'epoch' + N * interval '1 microsecond'`: a fixed moment, exact to the microsecond.
    func timestamp(_ date: Date) throws -> String {
        let micros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        return "(timestamptz \(try literal("epoch")) + \(micros) * interval \(try literal("1 microsecond")))"
    }

    /// `now - interval '24 hours' * days`: the start of a window of `days` ending at `now`. Days of 24 hours, not
    /// calendar days: `interval '1 day'` follows the session's time zone across daylight-saving changes, so the
    /// same view would give different members to sessions in different time zones.
    func daysBefore(_ now: String, _ days: Int) throws -> String {
        "\(now) - interval \(try literal("24 hours")) * \(days)"
    }

    /// A condition on the JSON object `object` (for example `e.properties`): `object -> 'key' = '"value"'::jsonb`.
    func condition(_ condition: PropertyCondition, on object: String) throws -> String {
        try comparison(key: condition.property, op: condition.op, value: condition.value, on: object)
    }

    /// An event property of the event row `row`, as jsonb. `name` is the call's own name first (page and screen
    /// calls carry the page name at the top level, `cdp.events.name`, as the Segment and RudderStack SDKs send it),
    /// then `properties.name` (track calls); any other key is read from the properties.
    func eventProperty(_ key: String, row: String) throws -> String {
        key == "name"
            ? "coalesce(to_jsonb(\(row).name), \(row).properties -> \(try literal("name")))"
            : "\(row).properties -> \(try literal(key))"
    }

    /// A condition on an event property of the event row `row` (see ``eventProperty(_:row:)``).
    func eventCondition(_ condition: PropertyCondition, row: String) throws -> String {
        try comparison(
            field: try eventProperty(condition.property, row: row), op: condition.op, value: condition.value)
    }

    /// A comparison of `object -> key` with `value`. Equality is JSON equality (numbers compare as numbers); `!=`
    /// holds when the key is absent; ordering compares numbers, or timestamps when the value is an ISO 8601 string;
    /// `contains` looks for a substring of a string value; `exists` means present and not null.
    func comparison(key: String, op: PropertyCondition.Operator, value: ConditionValue?, on object: String) throws -> String {
        try comparison(field: "\(object) -> \(try literal(key))", op: op, value: value)
    }

    /// The same comparison of the jsonb expression `field`.
    func comparison(field: String, op: PropertyCondition.Operator, value: ConditionValue?) throws -> String {
        let null = try literal("null")
        switch op {
        case .exists: return "coalesce(jsonb_typeof(\(field)), \(null)) <> \(null)"
        case .notExists: return "coalesce(jsonb_typeof(\(field)), \(null)) = \(null)"
        case .equal: return "\(field) = \(try json(try required(value, op)))"
        case .notEqual: return "\(field) IS DISTINCT FROM \(try json(try required(value, op)))"
        case .in:
            guard case .list(let items) = try required(value, op) else { throw ProfileError("'in' needs a list") }
            return "\(field) IN (\(try items.map(json).joined(separator: ", ")))"
        case .contains:
            guard case .string(let text) = try required(value, op) else { throw ProfileError("'contains' needs a string") }
            return
                "strpos(CASE WHEN jsonb_typeof(\(field)) = \(try literal("string")) THEN \(field) #>> \(try literal("{}")) END, \(try literal(text))) > 0"
        case .greater, .greaterOrEqual, .less, .lessOrEqual:
            switch try required(value, op) {
            case .number(let number): return "cdp.jsonb_numeric(\(field)) \(op.rawValue) \(try Self.number(number))"
            case .string(let text):
                guard let moment = Self.parseTimestamp(text) else {
                    throw ProfileError("'\(op.rawValue)' needs a number or an ISO 8601 timestamp, got '\(text)'")
                }
                return "cdp.jsonb_timestamptz(\(field)) \(op.rawValue) \(try timestamp(moment))"
            default: throw ProfileError("'\(op.rawValue)' needs a number or an ISO 8601 timestamp")
            }
        }
    }

    private func required(_ value: ConditionValue?, _ op: PropertyCondition.Operator) throws -> ConditionValue {
        guard let value else { throw ProfileError("operator '\(op.rawValue)' needs a value") }
        return value
    }

    /// A JSON literal as a jsonb constant.
    func json(_ value: ConditionValue) throws -> String {
        switch value {
        case .string(let text):
            let encoded = String(decoding: try JSONEncoder().encode(text), as: UTF8.self)
            return "\(try literal(encoded))::jsonb"
        case .number(let number): return "\(try literal(try Self.number(number)))::jsonb"
        case .bool(let flag): return "\(try literal(flag ? "true" : "false"))::jsonb"
        case .list: throw ProfileError("a list is not a single value")
        }
    }

    /// A finite number as SQL/JSON numeric text.
    static func number(_ number: Double) throws -> String {
        guard number.isFinite else { throw ProfileError("\(number) is not a finite number") }
        if number == number.rounded(), abs(number) < 1e15 { return String(Int64(number)) }
        return "\(number)"
    }

    /// An ISO 8601 timestamp (with or without fractional seconds, `Z` or an offset) or a plain date (`2026-01-31`,
    /// midnight UTC).
    static func parseTimestamp(_ text: String) -> Date? {
        if let date = try? Date(text, strategy: .iso8601) { return date }
        if let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) { return date }
        return try? Date(text, strategy: Date.ISO8601FormatStyle().year().month().day())
    }
}
