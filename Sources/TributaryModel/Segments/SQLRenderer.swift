import Foundation
import Postgres

/// Renders the pieces computed traits and segments share (property conditions, JSON constants, numbers, moments) as
/// ``PostgresQuery`` fragments.
///
/// Every value from a definition (a trait key, an event name, a compared string) is a bind parameter of the
/// fragment; names go through `\(identifier:)`. The only text written here is the program's own: SQL keywords,
/// constants such as `interval '24 hours'`, and numbers Swift renders from a finite `Double` or an `Int`. A view,
/// which cannot take parameters, is created from ``PostgresQuery/inlined()``, which writes each bind as a literal
/// through ``SQLQuoting`` — the one place that escapes them.
///
/// ```swift
/// let sql = try SQLRenderer().eventCondition(PropertyCondition("plan", .equal, .string("pro")), row: "e")
/// // e.properties -> $1 = $2::jsonb      binds: plan, "pro"
/// ```
package struct SQLRenderer: Sendable {
    init() {}

    /// `(timestamptz 'epoch' + N * interval '1 microsecond')`: a fixed moment, exact to the microsecond.
    package static func timestamp(_ date: Date) -> PostgresQuery {
        let micros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        return "(timestamptz 'epoch' + \(unescaped: String(micros)) * interval '1 microsecond')"
    }

    /// `now - interval '24 hours' * days`: the start of a window of `days` ending at `now`. Days of 24 hours, not
    /// calendar days: `interval '1 day'` follows the session's time zone across daylight-saving changes, so the
    /// same view would give different members to sessions in different time zones.
    func daysBefore(_ now: PostgresQuery, _ days: Int) -> PostgresQuery {
        "\(now) - interval '24 hours' * \(unescaped: String(days))"
    }

    /// An event property of the event row `row`, as jsonb. `name` is the call's own name first (page and screen
    /// calls carry the page name at the top level, `cdp.events.name`, as the Segment and RudderStack SDKs send it),
    /// then `properties.name` (track calls); any other key is read from the properties.
    func eventProperty(_ key: String, row: String) -> PostgresQuery {
        key == "name"
            ? "coalesce(to_jsonb(\(unescaped: row).name), \(unescaped: row).properties -> 'name')"
            : "\(unescaped: row).properties -> \(key)"
    }

    /// A condition on an event property of the event row `row` (see ``eventProperty(_:row:)``).
    func eventCondition(_ condition: PropertyCondition, row: String) throws -> PostgresQuery {
        try comparison(field: eventProperty(condition.property, row: row), op: condition.op, value: condition.value)
    }

    /// A comparison of `object -> key` with `value`. Equality is JSON equality (numbers compare as numbers); `!=`
    /// holds when the key is absent; ordering compares numbers, or timestamps when the value is an ISO 8601 string;
    /// `contains` looks for a substring of a string value; `exists` means present and not null.
    func comparison(
        key: String, op: PropertyCondition.Operator, value: ConditionValue?, on object: String
    ) throws -> PostgresQuery {
        try comparison(field: "\(unescaped: object) -> \(key)", op: op, value: value)
    }

    /// The same comparison of the jsonb expression `field`.
    func comparison(field: PostgresQuery, op: PropertyCondition.Operator, value: ConditionValue?) throws -> PostgresQuery {
        switch op {
        case .exists: return "coalesce(jsonb_typeof(\(field)), 'null') <> 'null'"
        case .notExists: return "coalesce(jsonb_typeof(\(field)), 'null') = 'null'"
        case .equal: return "\(field) = \(try json(try required(value, op)))"
        case .notEqual: return "\(field) IS DISTINCT FROM \(try json(try required(value, op)))"
        case .in:
            guard case .list(let items) = try required(value, op) else { throw ProfileError("'in' needs a list") }
            return "\(field) IN (\(PostgresQuery.joined(try items.map(json))))"
        case .contains:
            guard case .string(let text) = try required(value, op) else { throw ProfileError("'contains' needs a string") }
            return "strpos(CASE WHEN jsonb_typeof(\(field)) = 'string' THEN \(field) #>> '{}' END, \(text)) > 0"
        case .greater, .greaterOrEqual, .less, .lessOrEqual:
            let comparison = PostgresQuery(unsafeSQL: op.rawValue)
            switch try required(value, op) {
            case .number(let number): return "cdp.jsonb_numeric(\(field)) \(comparison) \(try Self.number(number))"
            case .string(let text):
                guard let moment = Self.parseTimestamp(text) else {
                    throw ProfileError("'\(op.rawValue)' needs a number or an ISO 8601 timestamp, got '\(text)'")
                }
                return "cdp.jsonb_timestamptz(\(field)) \(comparison) \(Self.timestamp(moment))"
            default: throw ProfileError("'\(op.rawValue)' needs a number or an ISO 8601 timestamp")
            }
        }
    }

    private func required(_ value: ConditionValue?, _ op: PropertyCondition.Operator) throws -> ConditionValue {
        guard let value else { throw ProfileError("operator '\(op.rawValue)' needs a value") }
        return value
    }

    /// A JSON constant as jsonb: its JSON text bound, cast to jsonb.
    func json(_ value: ConditionValue) throws -> PostgresQuery {
        switch value {
        case .string(let text):
            let encoded = String(decoding: try JSONEncoder().encode(text), as: UTF8.self)
            return "\(encoded)::jsonb"
        case .number(let number): return "\(try Self.number(number).sql)::jsonb"
        case .bool(let flag): return "\(flag ? "true" : "false")::jsonb"
        case .list: throw ProfileError("a list is not a single value")
        }
    }

    /// A finite number as SQL/JSON numeric text, written by Swift (program text, not a bind: a view compares
    /// `numeric` with it exactly as written, and a bound `float8` would change the comparison's type).
    static func number(_ number: Double) throws -> PostgresQuery {
        guard number.isFinite else { throw ProfileError("\(number) is not a finite number") }
        if number == number.rounded(), abs(number) < 1e15 { return PostgresQuery(unsafeSQL: String(Int64(number))) }
        return PostgresQuery(unsafeSQL: "\(number)")
    }

    /// An ISO 8601 timestamp (with or without fractional seconds, `Z` or an offset) or a plain date (`2026-01-31`,
    /// midnight UTC).
    static func parseTimestamp(_ text: String) -> Date? {
        if let date = try? Date(text, strategy: .iso8601) { return date }
        if let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) { return date }
        return try? Date(text, strategy: Date.ISO8601FormatStyle().year().month().day())
    }
}

extension PostgresQuery {
    /// The query with every line indented by `spaces` (layout of nested subqueries). Values are binds, so no
    /// string constant of a definition is touched.
    package func indented(_ spaces: Int = 4) -> PostgresQuery {
        let pad = String(repeating: " ", count: spaces)
        return withText { text in
            text.split(separator: "\n", omittingEmptySubsequences: false).map { pad + $0 }.joined(separator: "\n")
        }
    }
}
