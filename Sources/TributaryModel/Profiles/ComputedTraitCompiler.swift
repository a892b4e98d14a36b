import Foundation
import Postgres

/// Compiles computed trait definitions to SQL: one aggregate query over `cdp.events` grouped by `profile_id` that
/// computes every trait (plus first/last seen, the event count and RFM inputs) in a single pass, for all profiles
/// (bulk recompute) or a set of them (incremental maintenance).
///
/// The SQL is built as ``PostgresQuery`` fragments: every value from a definition is a bind parameter; numbers are
/// rendered by Swift.
public struct ComputedTraitCompiler: Sendable {
    public let definitions: ComputedTraitDefinitions

    public init(_ definitions: ComputedTraitDefinitions) {
        self.definitions = definitions
    }

    /// `SELECT e.profile_id, first_seen_at, last_seen_at, event_count, "t0", "t1", ..., rfm_last, rfm_orders,
    /// rfm_revenue FROM cdp.events AS e WHERE ... GROUP BY e.profile_id`, over events with `seq <= through`.
    /// `profileFilter` is an extra condition on `e` (for example `e.profile_id = ANY(\(profiles))`).
    public func aggregateSQL(asOf: Date, through: Int64, profileFilter: PostgresQuery? = nil) throws -> PostgresQuery {
        let now = SQLRenderer.timestamp(asOf)
        var columns: [PostgresQuery] = [
            "e.profile_id",
            "min(e.timestamp) AS first_seen_at",
            "max(e.timestamp) AS last_seen_at",
            "count(*) AS event_count",
        ]
        for (index, trait) in definitions.computedTraits.enumerated() {
            columns.append("\(try aggregate(trait, now: now)) AS t\(unescaped: String(index))")
        }
        columns += rfmColumns()
        var filter: PostgresQuery = ""
        if let profileFilter { filter = " AND \(profileFilter)" }
        return """
            SELECT \(PostgresQuery.joined(columns, separator: ",\n       "))
            FROM cdp.events AS e
            WHERE e.profile_id IS NOT NULL AND e.seq <= \(unescaped: String(through))\(filter)
            GROUP BY e.profile_id
            """
    }

    /// The RFM inputs over the event row `e` (`rfm_last`, `rfm_orders`, `rfm_revenue`); none when RFM is off.
    func rfmColumns() -> [PostgresQuery] {
        guard definitions.rfm.enabled else { return [] }
        let event: PostgresQuery = "e.event = \(definitions.rfm.event)"
        let revenue: PostgresQuery = "cdp.jsonb_numeric(e.properties -> \(definitions.rfm.revenueProperty))"
        return [
            "max(e.timestamp) FILTER (WHERE \(event)) AS rfm_last",
            "count(*) FILTER (WHERE \(event)) AS rfm_orders",
            "coalesce(sum(\(revenue)) FILTER (WHERE \(event)), 0) AS rfm_revenue",
        ]
    }

    /// The `computed` jsonb of a row `a` of ``aggregateSQL(asOf:through:profileFilter:)``, with the RFM scores of
    /// the row `s` of ``rfmScoresSQL(asOf:row:thresholds:)``.
    /// Each trait's name is a bind, cast to `text` (`jsonb_build_object` takes any type, so an untyped parameter
    /// would be refused).
    public func computedObjectSQL(row a: String = "a", scores s: String = "s") -> PostgresQuery {
        var pairs: [PostgresQuery] = []
        for (index, trait) in definitions.computedTraits.enumerated() {
            pairs.append("\(trait.name)::text, \(unescaped: a).t\(unescaped: String(index))")
        }
        if definitions.rfm.enabled {
            pairs.append(PostgresQuery(unsafeSQL: "'rfm_recency', \(s).r"))
            pairs.append(PostgresQuery(unsafeSQL: "'rfm_frequency', \(s).f"))
            pairs.append(PostgresQuery(unsafeSQL: "'rfm_monetary', \(s).m"))
            pairs.append(PostgresQuery(unsafeSQL: "'rfm_score', \(s).r::text || \(s).f::text || \(s).m::text"))
        }
        if pairs.isEmpty { return "'{}'::jsonb" }
        return Self.jsonbObject(pairs, perCall: 40)
    }

    /// `jsonb_build_object(pairs…) || …`: one call per `perCall` pairs (the function takes at most 100 arguments).
    package static func jsonbObject(_ pairs: [PostgresQuery], perCall: Int) -> PostgresQuery {
        PostgresQuery.joined(
            stride(from: 0, to: pairs.count, by: perCall).map {
                "jsonb_build_object(\(PostgresQuery.joined(pairs[$0..<min($0 + perCall, pairs.count)])))" as PostgresQuery
            }, separator: " || ")
    }

    /// `CROSS JOIN LATERAL (...) AS s`: the RFM scores (r, f, m) of the aggregate row `a` against the thresholds row
    /// `th` (columns recency, frequency, monetary; NULL before the first bulk recompute). Empty when RFM is off.
    public func rfmScoresSQL(row a: String = "a", thresholds th: String = "th", as s: String = "s") -> PostgresQuery {
        guard definitions.rfm.enabled else { return "" }
        return PostgresQuery(
            unsafeSQL: """
                CROSS JOIN LATERAL (
                    SELECT CASE WHEN \(a).rfm_orders > 0 THEN cdp.rfm_score(extract(epoch FROM \(a).rfm_last), \(th).recency, true) END AS r,
                           CASE WHEN \(a).rfm_orders > 0 THEN cdp.rfm_score(\(a).rfm_orders, \(th).frequency, true) END AS f,
                           CASE WHEN \(a).rfm_orders > 0 THEN cdp.rfm_score(\(a).rfm_revenue, \(th).monetary, true) END AS m
                ) AS \(s)
                """)
    }

    /// The same definitions restricted to what changes with time alone (windowed and days-since traits, RFM): what
    /// the scheduled recompute needs, since everything else changes only with events, which the stage handles.
    public var timeDependent: ComputedTraitCompiler {
        ComputedTraitCompiler(
            ComputedTraitDefinitions(
                computedTraits: definitions.computedTraits.filter(\.isTimeDependent), rfm: definitions.rfm))
    }

    /// The RFM threshold arrays (20/40/60/80th percentiles) over profiles with at least one purchase in `aggregates`.
    /// Recency boundaries are times of last purchase (epoch seconds), not ages, so a profile scored between two bulk
    /// recomputes gets the score the last one would have given it.
    public func thresholdsSQL(aggregates: String) -> PostgresQuery {
        let quintiles = "ARRAY[0.2, 0.4, 0.6, 0.8]"
        return PostgresQuery(
            unsafeSQL: """
                SELECT percentile_cont(\(quintiles)) WITHIN GROUP (ORDER BY extract(epoch FROM rfm_last)) AS recency,
                       percentile_cont(\(quintiles)) WITHIN GROUP (ORDER BY rfm_orders) AS frequency,
                       percentile_cont(\(quintiles)) WITHIN GROUP (ORDER BY rfm_revenue::float8) AS monetary
                FROM \(aggregates) WHERE rfm_orders > 0
                HAVING count(*) > 0
                """)
    }

    /// The parts of one trait's aggregate over the event row `e`: the conditions an event must meet (event names,
    /// types, window, property conditions) and the property's JSON expression, if the trait reads one.
    func parts(_ trait: ComputedTrait, now: PostgresQuery) throws -> (conditions: [PostgresQuery], property: PostgresQuery?) {
        var conditions: [PostgresQuery] = []
        if let events = trait.events {
            conditions.append(
                events.count == 1
                    ? "e.event = \(events[0])"
                    : "e.event IN (\(PostgresQuery.joined(events.map { "\($0)" as PostgresQuery })))")
        }
        if let types = trait.types {
            conditions.append("e.type IN (\(PostgresQuery.joined(types.map { "\($0)" as PostgresQuery })))")
        }
        if let window = trait.within {
            conditions.append("e.timestamp > \(SQLRenderer().daysBefore(now, window.days))")
        }
        for condition in trait.where ?? [] {
            conditions.append(try Self.condition(condition))
        }
        return (conditions, trait.property.map { SQLRenderer().eventProperty($0, row: "e") })
    }

    /// ` FILTER (WHERE …)` of `conditions` and `extra`, or nothing when there are none.
    static func filter(_ conditions: [PostgresQuery], _ extra: [PostgresQuery] = []) -> PostgresQuery {
        let all = conditions + extra
        return all.isEmpty ? "" : " FILTER (WHERE \(PostgresQuery.joined(all, separator: " AND ")))"
    }

    /// One trait's aggregate expression over the event row `e`.
    func aggregate(_ trait: ComputedTrait, now: PostgresQuery) throws -> PostgresQuery {
        let (conditions, property) = try parts(trait, now: now)
        func filter(_ extra: [PostgresQuery] = []) -> PostgresQuery { Self.filter(conditions, extra) }
        let present: [PostgresQuery] = property.map { ["jsonb_typeof(\($0)) <> 'null'"] } ?? []
        switch trait.aggregate {
        case .count: return "count(*)\(filter())"
        case .sum: return "sum(cdp.jsonb_numeric(\(property!)))\(filter())"
        case .average: return "avg(cdp.jsonb_numeric(\(property!)))\(filter())"
        case .min: return "min(cdp.jsonb_numeric(\(property!)))\(filter())"
        case .max: return "max(cdp.jsonb_numeric(\(property!)))\(filter())"
        case .first: return "(array_agg(\(property!) ORDER BY e.timestamp, e.seq)\(filter(present)))[1]"
        case .last: return "(array_agg(\(property!) ORDER BY e.timestamp DESC, e.seq DESC)\(filter(present)))[1]"
        case .distinctCount: return "count(DISTINCT \(property!))\(filter(present))"
        case .mostFrequent: return "mode() WITHIN GROUP (ORDER BY \(property!))\(filter(present))"
        case .daysSinceFirst: return "floor(extract(epoch FROM (\(now) - min(e.timestamp)\(filter()))) / 86400)::bigint"
        case .daysSinceLast: return "floor(extract(epoch FROM (\(now) - max(e.timestamp)\(filter()))) / 86400)::bigint"
        }
    }

    /// A property condition over the event row `e`.
    static func condition(_ condition: PropertyCondition) throws -> PostgresQuery {
        try SQLRenderer().eventCondition(condition, row: "e")
    }
}
