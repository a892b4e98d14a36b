import Foundation
import Postgres

/// Compiles segments to SQL: the view `segments."name"` over `cdp.profile_data` (traits, computed traits) and
/// `cdp.events` (the `profile_id` the identity stage stamps on each event; no join through identities), and a
/// per-profile form of the same conditions for re-evaluating a few profiles right after they change.
///
/// The compiler builds ``PostgresQuery`` fragments: every value of a definition is a bind parameter, every name goes
/// through `\(identifier:)`, numbers are rendered by Swift. Statements run with their binds (the per-profile form);
/// the view, which cannot take parameters, is created from ``PostgresQuery/inlined()``, which writes each bind as a
/// literal through ``SQLQuoting``. For example
///
/// ```swift
/// Segment("buyers") { Event("Order Completed", within: .days(30)).count >= 2 }
/// ```
///
/// compiles to
///
/// ```sql
/// CREATE OR REPLACE VIEW segments."buyers" AS
/// SELECT p.profile_id
/// FROM cdp.profile_data AS p
/// WHERE p.profile_id IN (
///     SELECT e.profile_id
///     FROM cdp.events AS e
///     WHERE e.profile_id IS NOT NULL
///       AND e.event = 'Order Completed'
///       AND e.timestamp > now() - interval '24 hours' * 30
///     GROUP BY e.profile_id
///     HAVING count(*) >= 2
/// )
/// ```
public struct SegmentCompiler: Sendable {
    /// How the profile rows are reached.
    public enum Form: Sendable {
        /// Set-based: event conditions drive from `cdp.events` (`p.profile_id IN (SELECT … GROUP BY … HAVING …)`),
        /// for the view over all profiles.
        case view
        /// Correlated on the row `p`: each event condition reads that profile's events through the index on
        /// `(profile_id, timestamp)`, for a handful of profiles.
        case perProfile
    }

    /// The moment windows end at.
    public enum Clock: Sendable {
        /// `now()`: when the view is read.
        case transaction
        /// A fixed moment (tests, reproducible evaluation).
        case fixed(Date)
    }

    public let definitions: SegmentDefinitions
    public let catalog: Catalog?
    public let computed: ComputedTraitDefinitions?
    public let clock: Clock
    let sql = SQLRenderer()

    /// `catalog` and `computed` type the fields' columns; the conditions need neither.
    public init(
        _ definitions: SegmentDefinitions, catalog: Catalog? = nil, computed: ComputedTraitDefinitions? = nil,
        clock: Clock = .transaction
    ) {
        self.definitions = definitions
        self.catalog = catalog
        self.computed = computed
        self.clock = clock
    }

    /// `CREATE OR REPLACE VIEW segments."name" AS SELECT …`, its values inlined as literals (DDL takes no
    /// parameters).
    public func createView(_ name: String) throws -> PostgresQuery {
        let statement: PostgresQuery = "CREATE OR REPLACE VIEW \(unescaped: try viewName(name)) AS\n\(try select(name))"
        return try statement.inlined()
    }

    /// `"segments"."name"` (``Segment/view(_:)``).
    public func viewName(_ name: String) throws -> String {
        try Segment.view(name)
    }

    /// The view's query: `profile_id` and the segment's fields, for every profile that meets its conditions.
    public func select(_ name: String) throws -> PostgresQuery {
        let segment = try self.segment(name)
        var query: PostgresQuery = "SELECT \(PostgresQuery.joined(try columns(segment), separator: ",\n       "))"
        query.append("\nFROM cdp.profile_data AS p")
        if let predicate = try conditionsSQL(segment, form: .view, trail: []) { query.append("\nWHERE \(predicate)") }
        return query
    }

    /// The current members as `cdp.segment_members` holds them, with the segment's fields: what real-time syncs
    /// read (the view re-evaluates the conditions; this follows the memberships the profile stage keeps).
    public func members(_ name: String) throws -> PostgresQuery {
        """
        SELECT \(PostgresQuery.joined(try columns(try segment(name)), separator: ",\n       "))
        FROM cdp.segment_members AS m
        JOIN cdp.profile_data AS p ON p.profile_id = m.profile_id
        WHERE m.segment = \(name)
        """
    }

    /// `p.profile_id` and the segment's fields.
    private func columns(_ segment: Segment) throws -> [PostgresQuery] {
        try ["p.profile_id"] + segment.fields.map { "\(try fieldSQL($0)) AS \(identifier: $0.name)" }
    }

    /// The per-profile form: the members among `profiles`.
    public func perProfile(_ name: String, profiles: [UUID]) throws -> PostgresQuery {
        var query: PostgresQuery = "SELECT p.profile_id\nFROM cdp.profile_data AS p\nWHERE p.profile_id = ANY(\(profiles))"
        if let predicate = try self.predicate(name, form: .perProfile) { query.append("\n  AND \(predicate)") }
        return query
    }

    /// The segment's conditions over the profile row `p` of `cdp.profile_data` (nil: every profile).
    public func predicate(_ name: String, form: Form) throws -> PostgresQuery? {
        try conditionsSQL(try segment(name), form: form, trail: [])
    }

    func segment(_ name: String) throws -> Segment {
        guard let segment = definitions[name] else { throw ProfileError("unknown segment '\(name)'") }
        return segment
    }

    var now: PostgresQuery {
        switch clock {
        case .transaction: "now()"
        case .fixed(let date): SQLRenderer.timestamp(date)
        }
    }

    // MARK: - Conditions

    private func conditionsSQL(_ segment: Segment, form: Form, trail: [String]) throws -> PostgresQuery? {
        if trail.contains(segment.name) { throw ProfileError("segment '\(segment.name)' refers back to itself") }
        let parts = try conjunction(segment.conditions, form: form, trail: trail + [segment.name])
        return parts.isEmpty ? nil : PostgresQuery.joined(parts, separator: "\n  AND ")
    }

    /// The parts of an AND. In the view form, event conditions on the same events that a profile without such
    /// events fails (`count >= 2` and `sum(revenue) > 100` of the orders in 30 days) share one pass over the
    /// events: one `IN (SELECT … GROUP BY … HAVING a AND b)`, placed where the first of them was.
    private func conjunction(_ conditions: [SegmentCondition], form: Form, trail: [String]) throws -> [PostgresQuery] {
        var groups: [(event: Event, conditions: [EventCondition])] = []
        var slots: [Int] = []  // per condition: the group it renders (its first member), or -1
        for condition in conditions {
            guard form == .view, case .event(let event) = condition.node, !event.holdsWithoutEvents else {
                slots.append(-1)
                continue
            }
            if let index = groups.firstIndex(where: { $0.event == event.event }) {
                groups[index].conditions.append(event)
                slots.append(-2)
            } else {
                groups.append((event.event, [event]))
                slots.append(groups.count - 1)
            }
        }
        var parts: [PostgresQuery] = []
        for (condition, slot) in zip(conditions, slots) {
            switch slot {
            case -1: parts.append(try conditionSQL(condition, form: form, trail: trail))
            case -2: continue
            default: parts.append(try eventsInSQL(groups[slot].event, groups[slot].conditions))
            }
        }
        return parts
    }

    private func conditionSQL(_ condition: SegmentCondition, form: Form, trail: [String]) throws -> PostgresQuery {
        switch condition.node {
        case .trait(let key, let op, let value):
            return try sql.comparison(key: key, op: op, value: value, on: "p.traits")
        case .computed(let name, let op, let value):
            if let prediction = computed?.prediction(name) { return try predictiveTraitSQL(prediction, op: op, value: value) }
            return try sql.comparison(key: name, op: op, value: value, on: "p.computed")
        case .allOf(let all):
            return group(try conjunction(all, form: form, trail: trail), "AND", empty: "true")
        case .anyOf(let any):
            return group(try any.map { try conditionSQL($0, form: form, trail: trail) }, "OR", empty: "false")
        case .not(let inner):
            // A NULL inside (a missing value) must make NOT true, as it made the condition false.
            return "NOT coalesce(\(try conditionSQL(inner, form: form, trail: trail)), false)"
        case .segment(let name):
            if trail.contains(name) { throw ProfileError("segment '\(name)' refers back to itself") }
            return group(try conjunction(try segment(name).conditions, form: form, trail: trail + [name]), "AND", empty: "true")
        case .event(let event):
            return try eventSQL(event, form: form)
        case .funnel(let funnel):
            return try funnelSQL(funnel, form: form)
        case .notSince(let event, let since):
            return try notSinceSQL(event, since: since, form: form)
        case .prediction(let name, let percentile, let op, let value):
            return try predictionSQL(name, percentile: percentile, op: op, value: value)
        }
    }

    /// A predictive trait of the profile `p` compared with a number; NULL (not met) without a score.
    private func predictionSQL(
        _ name: String, percentile: Bool, op: PropertyCondition.Operator, value: Double
    ) throws -> PostgresQuery {
        let score = PredictionSource.named(name, in: computed).valueSQL(profile: "p.profile_id", percentile: percentile)
        return "\(score) \(unescaped: op.rawValue) \(try SQLRenderer.number(value))"
    }

    /// A predictive trait of the file compared as a computed trait: a number, `contains` for a product list, or
    /// whether it has a value.
    private func predictiveTraitSQL(
        _ prediction: PredictiveTrait, op: PropertyCondition.Operator, value: ConditionValue?
    ) throws -> PostgresQuery {
        let score = prediction.source.valueSQL(profile: "p.profile_id")
        switch (op, value) {
        case (.exists, _): return "\(score) IS NOT NULL"
        case (.notExists, _): return "\(score) IS NULL"
        case (.contains, .string(let product)?): return "\(product) = ANY (\(score))"
        case (_, .number(let number)?): return "\(score) \(unescaped: op.rawValue) \(try SQLRenderer.number(number))"
        default: throw ProfileError("prediction '\(prediction.name)': cannot compare with \(op.rawValue)")
        }
    }

    /// `(a\n    OR b)` over several lines; one part stands alone.
    private func group(_ parts: [PostgresQuery], _ op: String, empty: PostgresQuery) -> PostgresQuery {
        if parts.isEmpty { return empty }
        if parts.count == 1 { return parts[0] }
        return "(\n\(PostgresQuery.joined(parts, separator: "\n\(op) ").indented())\n)"
    }

    /// The filters of `event` on the event row `row`.
    private func filters(_ event: Event, row: String) throws -> [PostgresQuery] {
        var parts: [PostgresQuery] = []
        switch event.name {
        case Catalog.pageEvent: parts.append("\(unescaped: row).type = 'page'")
        case Catalog.screenEvent: parts.append("\(unescaped: row).type = 'screen'")
        case Event.anyName: break
        default: parts.append("\(unescaped: row).event = \(event.name)")
        }
        if let window = event.within { parts.append("\(unescaped: row).timestamp > \(sql.daysBefore(now, window.days))") }
        for condition in event.where ?? [] { parts.append(try sql.eventCondition(condition, row: row)) }
        return parts
    }

    /// `FROM cdp.events AS row WHERE …`, the profile either any (view) or the row `p`'s (per profile).
    private func eventsFrom(_ row: String, _ filters: [PostgresQuery], correlated: String) -> PostgresQuery {
        "FROM cdp.events AS \(unescaped: row)\nWHERE \(PostgresQuery.joined([PostgresQuery(unsafeSQL: correlated)] + filters, separator: "\n  AND "))"
    }

    /// `(\n  query\n)`: a subquery on its own lines.
    private func subquery(_ query: PostgresQuery) -> PostgresQuery {
        "(\n\(query.indented())\n)"
    }

    private func eventSQL(_ condition: EventCondition, form: Form) throws -> PostgresQuery {
        let filters = try self.filters(condition.event, row: "e")
        let (aggregate, comparison) = try measure(condition)
        let isCount = condition.aggregate == .count
        switch form {
        case .perProfile:
            let from = eventsFrom("e", filters, correlated: "e.profile_id = p.profile_id")
            // "Has a matching event" only when zero events fail; "has none" only when zero events pass.
            if isCount, Self.everyPositiveCount(condition), !condition.holdsWithoutEvents {
                return "EXISTS \(subquery("SELECT 1\n\(from)"))"
            }
            if isCount, Self.noPositiveCount(condition), condition.holdsWithoutEvents {
                return "NOT EXISTS \(subquery("SELECT 1\n\(from)"))"
            }
            return "\(subquery("SELECT \(aggregate)\n\(from)")) \(comparison)"
        case .view:
            guard condition.holdsWithoutEvents else { return try eventsInSQL(condition.event, [condition]) }
            // Profiles without a matching event meet it: everyone but those whose events fail it.
            let from = eventsFrom("e", filters, correlated: "e.profile_id IS NOT NULL")
            let having: PostgresQuery =
                isCount && Self.noPositiveCount(condition)
                ? "" : "\nGROUP BY e.profile_id\nHAVING NOT (\(aggregate) \(comparison))"
            return "p.profile_id NOT IN \(subquery("SELECT e.profile_id\n\(from)\(having)"))"
        }
    }

    /// `p.profile_id IN (SELECT e.profile_id FROM cdp.events AS e WHERE … GROUP BY e.profile_id HAVING …)`: the
    /// profiles whose events matching `event` meet every condition (none of which holds without such events).
    private func eventsInSQL(_ event: Event, _ conditions: [EventCondition]) throws -> PostgresQuery {
        let from = eventsFrom("e", try filters(event, row: "e"), correlated: "e.profile_id IS NOT NULL")
        // A count every profile with a matching event meets needs no HAVING term.
        let terms = try conditions.filter { !($0.aggregate == .count && Self.everyPositiveCount($0)) }.map { condition in
            let (aggregate, comparison) = try measure(condition)
            return "\(aggregate) \(comparison)" as PostgresQuery
        }
        let having: PostgresQuery =
            terms.isEmpty ? "" : "\nGROUP BY e.profile_id\nHAVING \(PostgresQuery.joined(terms, separator: "\n   AND "))"
        return "p.profile_id IN \(subquery("SELECT e.profile_id\n\(from)\(having)"))"
    }

    /// The aggregate over the event rows `e` and its comparison: (`count(*)`, `>= 2`).
    private func measure(_ condition: EventCondition) throws -> (PostgresQuery, PostgresQuery) {
        let aggregate: PostgresQuery
        switch condition.aggregate {
        case .count: aggregate = "count(*)"
        case .sum: aggregate = "coalesce(sum(\(try numeric(condition.property))), 0)"
        case .average: aggregate = "avg(\(try numeric(condition.property)))"
        case .min: aggregate = "min(\(try numeric(condition.property)))"
        case .max: aggregate = "max(\(try numeric(condition.property)))"
        }
        let op = condition.op.rawValue == "!=" ? "<>" : condition.op.rawValue
        return (aggregate, "\(unescaped: op) \(try SQLRenderer.number(condition.value))")
    }

    private func numeric(_ property: String?) throws -> PostgresQuery {
        guard let property else { throw ProfileError("this aggregate needs a property") }
        return "cdp.jsonb_numeric(\(sql.eventProperty(property, row: "e")))"
    }

    /// Whether every count of one or more meets the condition (so "has a matching event" is enough).
    static func everyPositiveCount(_ condition: EventCondition) -> Bool {
        let v = condition.value
        switch condition.op {
        case .greaterOrEqual: return v <= 1
        case .greater: return v < 1
        case .notEqual: return v < 1 || v != v.rounded()
        default: return false
        }
    }

    /// Whether no count of one or more meets the condition (so it means "has no matching event").
    static func noPositiveCount(_ condition: EventCondition) -> Bool {
        let v = condition.value
        switch condition.op {
        case .less: return v <= 1
        case .lessOrEqual: return v < 1
        case .equal: return v < 1 || v != v.rounded()
        default: return false
        }
    }

    private func funnelSQL(_ funnel: FunnelCondition, form: Form) throws -> PostgresQuery {
        // Innermost first: step k exists after step k-1, no later than the first step plus the window.
        var inner: PostgresQuery?
        for index in stride(from: funnel.steps.count - 1, through: 1, by: -1) {
            let row = "s\(index)", previous = "s\(index - 1)"
            var conditions: [PostgresQuery] =
                [
                    "\(unescaped: row).profile_id = \(unescaped: previous).profile_id",
                    "(\(unescaped: row).timestamp, \(unescaped: row).seq) > (\(unescaped: previous).timestamp, \(unescaped: previous).seq)",
                    "\(unescaped: row).timestamp <= s0.timestamp + interval '24 hours' * \(unescaped: String(funnel.within.days))",
                ] + (try filters(funnel.steps[index], row: row))
            if let inner { conditions.append(inner) }
            let from: PostgresQuery =
                "SELECT 1\nFROM cdp.events AS \(unescaped: row)\nWHERE \(PostgresQuery.joined(conditions, separator: "\n  AND "))"
            inner = "EXISTS \(subquery(from))"
        }
        var first = try filters(funnel.steps[0], row: "s0")
        if let inner { first.append(inner) }
        switch form {
        case .perProfile:
            return "EXISTS \(subquery("SELECT 1\n\(eventsFrom("s0", first, correlated: "s0.profile_id = p.profile_id"))"))"
        case .view:
            return
                "p.profile_id IN \(subquery("SELECT s0.profile_id\n\(eventsFrom("s0", first, correlated: "s0.profile_id IS NOT NULL"))"))"
        }
    }

    private func notSinceSQL(_ event: Event, since: Event, form: Form) throws -> PostgresQuery {
        let later =
            try filters(event, row: "x") + [
                "x.profile_id = y.profile_id",
                "(x.timestamp, x.seq) > (y.timestamp, y.seq)",
            ]
        let none: PostgresQuery =
            "NOT EXISTS \(subquery("SELECT 1\nFROM cdp.events AS x\nWHERE \(PostgresQuery.joined(later, separator: "\n  AND "))"))"
        let filters = try self.filters(since, row: "y") + [none]
        switch form {
        case .perProfile:
            return "EXISTS \(subquery("SELECT 1\n\(eventsFrom("y", filters, correlated: "y.profile_id = p.profile_id"))"))"
        case .view:
            return
                "p.profile_id IN \(subquery("SELECT y.profile_id\n\(eventsFrom("y", filters, correlated: "y.profile_id IS NOT NULL"))"))"
        }
    }

    // MARK: - Fields

    /// A field read from `p.traits` or `p.computed`, typed by the catalog (or the computed trait's aggregate).
    func fieldSQL(_ field: SegmentField) throws -> PostgresQuery {
        if field.trait == nil, let name = field.computed, let prediction = computed?.prediction(name) {
            return prediction.source.valueSQL(profile: "p.profile_id")
        }
        let (object, key) = field.trait.map { ("p.traits", $0) } ?? ("p.computed", field.computed ?? "")
        let value: PostgresQuery = "\(unescaped: object) -> \(key)"
        let type = field.trait != nil ? catalog?.traitType(key) : computedType(key)
        guard let type else { return "nullif(\(value), 'null'::jsonb)" }
        switch type {
        case .string: return "cdp.jsonb_text(\(value))"
        case .integer: return "cdp.jsonb_bigint(\(value))"
        case .double: return "cdp.jsonb_float8(\(value))"
        case .boolean: return "cdp.jsonb_boolean(\(value))"
        case .timestamp: return "cdp.jsonb_timestamptz(\(value))"
        case .object, .array:
            return "CASE WHEN jsonb_typeof(\(value)) = '\(unescaped: type.rawValue)' THEN \(value) END"
        }
    }

    /// The type of a computed trait's values (nil: unknown, kept as jsonb).
    private func computedType(_ name: String) -> ValueType? {
        if let trait = computed?.computedTraits.first(where: { $0.name == name }) { return trait.valueType(catalog: catalog) }
        guard computed?.rfm.enabled ?? false else { return nil }
        switch name {
        case "rfm_recency", "rfm_frequency", "rfm_monetary": return .integer
        case "rfm_score": return .string
        default: return nil
        }
    }
}
