import Foundation
import Postgres

/// The per-profile aggregate state the profile stage keeps in `cdp.profile_data.aggregates`, so that a batch reads
/// only its own events instead of every event of every profile it touches.
///
/// Each computed trait without a time window keeps a partial aggregate that two sets of events combine into exactly
/// what one aggregate over both would give: counts and sums add; an average is a sum and a count; minimum, maximum,
/// earliest and latest take the least or greatest; first and last keep `[timestamp, seq, value]` and the earlier or
/// later wins; distinct counts and most-frequent values keep a map of value → occurrences. First/last seen, the
/// event count and the RFM inputs (last purchase, purchases, revenue) are kept the same way. A batch computes the
/// partial aggregates of its own events (`GROUP BY profile_id` over one range of `seq`), combines them with the
/// stored state, and derives the traits from the result.
///
/// Traits with a window (`within`) are not decomposable as time passes, so they are still computed from the touched
/// profiles' events, but only those inside the window (an index range on `(profile_id, timestamp)`).
///
/// A profile's state is recomputed from all its events when it was merged or split, when it has none yet, or when it
/// was computed for other definitions (each state carries the fingerprint of the definitions, key `d`). The rebuild
/// computes every state from events with the same SQL, so the rebuild and the real-time path agree by construction.
package struct ProfileAggregates: Sendable {
    let compiler: ComputedTraitCompiler
    /// Identifies the definitions a stored state was computed for.
    package let fingerprint: String

    package init(_ compiler: ComputedTraitCompiler) {
        self.compiler = compiler
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        fingerprint = "v1-" + sha256Hex((try? encoder.encode(compiler.definitions)) ?? Data(), bytes: 8)
    }

    var definitions: ComputedTraitDefinitions { compiler.definitions }

    /// How one trait's partial aggregate is kept.
    package enum Kind: Equatable {
        case count, sum, average, min, max, first, last, values, earliest, latest
        /// Computed from the events inside its window, not kept.
        case windowed
    }

    static func kind(_ trait: ComputedTrait) -> Kind {
        if trait.within != nil { return .windowed }
        switch trait.aggregate {
        case .count: return .count
        case .sum: return .sum
        case .average: return .average
        case .min: return .min
        case .max: return .max
        case .first: return .first
        case .last: return .last
        case .distinctCount, .mostFrequent: return .values
        case .daysSinceFirst: return .earliest
        case .daysSinceLast: return .latest
        }
    }

    /// Which events a query of ``rows(_:asOf:)`` aggregates.
    package enum Scope {
        /// Profiles with events in `after < seq <= through`: their stored state combined with those events; except
        /// the profiles in `full` (merged, split, or without a state of the current definitions), computed from all
        /// their events with `seq <= through`. `involved` lists every profile of the batch (read only when a trait
        /// has a time window).
        case batch(after: Int64, through: Int64, full: [UUID], involved: [UUID])
        /// Every profile, from all its events with `seq <= through`.
        case all(through: Int64)
    }

    /// Rows of `profile_id, first_seen_at, last_seen_at, event_count, t0, t1, …, rfm_last, rfm_orders, rfm_revenue`
    /// (the columns of ``ComputedTraitCompiler/aggregateSQL(asOf:through:profileFilter:)``) and `aggregates` (the
    /// state to store), for the profiles of `scope`, at `asOf`.
    package func rows(_ scope: Scope, asOf: Date) throws -> PostgresQuery {
        let now = SQLRenderer.timestamp(asOf)
        let state: PostgresQuery
        let windowScope: PostgresQuery
        switch scope {
        case .batch(let after, let through, let full, let involved):
            let through = PostgresQuery(unsafeSQL: String(through))
            // `NOT EXISTS` over the set, not `<> ALL(array)`: the array is compared linearly for every event otherwise.
            let batch: PostgresQuery = """
                e.seq > \(unescaped: String(after)) AND e.seq <= \(through) AND e.profile_id IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM unnest(\(full)::uuid[]) AS f (id) WHERE f.id = e.profile_id)
                """
            let all: PostgresQuery = "e.profile_id = ANY(\(full)::uuid[]) AND e.seq <= \(through)"
            state = """
                WITH b AS MATERIALIZED (
                    SELECT true AS incremental, p.* FROM (\(try partial(scope: batch, now: now))) AS p
                    UNION ALL
                    SELECT false, p.* FROM (\(try partial(scope: all, now: now))) AS p
                )
                SELECT \(unescaped: combinedColumns(stored: "d.aggregates", batch: "b").joined(separator: ",\n       "))
                FROM b LEFT JOIN cdp.profile_data AS d ON b.incremental AND d.profile_id = b.profile_id
                """
            windowScope = "e.profile_id = ANY(\(involved)::uuid[]) AND e.seq <= \(through)"
        case .all(let through):
            let scope = PostgresQuery(unsafeSQL: "e.profile_id IS NOT NULL AND e.seq <= \(through)")
            state = try partial(scope: scope, now: now)
            windowScope = scope
        }
        var windowJoin: PostgresQuery = ""
        let windowed = definitions.computedTraits.enumerated().filter { Self.kind($0.element) == .windowed }
        if let widest = windowed.compactMap(\.element.within?.days).max() {
            let columns = try windowed.map {
                "\(try compiler.aggregate($0.element, now: now)) AS t\(unescaped: String($0.offset))" as PostgresQuery
            }
            windowJoin = """
                LEFT JOIN (
                    SELECT e.profile_id, \(PostgresQuery.joined(columns))
                    FROM cdp.events AS e
                    WHERE \(windowScope) AND e.timestamp > \(SQLRenderer().daysBefore(now, widest))
                    GROUP BY e.profile_id
                ) AS w ON w.profile_id = a.profile_id
                """
        }
        return """
            SELECT \(PostgresQuery.joined(finalColumns(now: now), separator: ",\n       "))
            FROM (\(state)) AS a
            \(windowJoin)
            """
    }

    /// `SELECT profile_id, first_seen_at, last_seen_at, event_count, p0, [q0,] …, rfm_*`: the partial aggregates, per
    /// profile, of the events `e` matching `scope`.
    func partial(scope: PostgresQuery, now: PostgresQuery) throws -> PostgresQuery {
        var columns: [PostgresQuery] = [
            "e.profile_id", "min(e.timestamp) AS first_seen_at", "max(e.timestamp) AS last_seen_at", "count(*) AS event_count",
        ]
        var outer: [PostgresQuery] = ["g.*"]
        var joins: [PostgresQuery] = []
        for (i, trait) in definitions.computedTraits.enumerated() {
            let (conditions, property) = try compiler.parts(trait, now: now)
            let present: [PostgresQuery] = property.map { ["jsonb_typeof(\($0)) <> 'null'"] } ?? []
            let filter = ComputedTraitCompiler.filter(conditions)
            let number: PostgresQuery = property.map { "cdp.jsonb_numeric(\($0))" } ?? "NULL::numeric"
            let p = PostgresQuery(unsafeSQL: "p\(i)"), q = PostgresQuery(unsafeSQL: "q\(i)")
            switch Self.kind(trait) {
            case .windowed: continue
            case .count: columns.append("count(*)\(filter) AS \(p)")
            case .sum: columns.append("sum(\(number))\(filter) AS \(p)")
            case .average:
                columns.append("sum(\(number))\(filter) AS \(p)")
                columns.append("count(\(number))\(filter) AS \(q)")
            case .min: columns.append("min(\(number))\(filter) AS \(p)")
            case .max: columns.append("max(\(number))\(filter) AS \(p)")
            case .first, .last:
                let order: PostgresQuery = Self.kind(trait) == .first ? "e.timestamp, e.seq" : "e.timestamp DESC, e.seq DESC"
                columns.append(
                    """
                    (array_agg(jsonb_build_array(e.timestamp, e.seq, \(property!)) ORDER BY \(order))\
                    \(ComputedTraitCompiler.filter(conditions, present)))[1] AS \(p)
                    """)
            case .earliest: columns.append("min(e.timestamp)\(filter) AS \(p)")
            case .latest: columns.append("max(e.timestamp)\(filter) AS \(p)")
            case .values:
                let conditions = PostgresQuery.joined([scope] + conditions + present, separator: " AND ")
                let m = PostgresQuery(unsafeSQL: "m\(i)")
                joins.append(
                    """
                    LEFT JOIN (
                        SELECT v.profile_id, jsonb_object_agg(v.value, v.n) AS m
                        FROM (SELECT e.profile_id, (\(property!))::text AS value, count(*) AS n
                              FROM cdp.events AS e WHERE \(conditions) GROUP BY 1, 2) AS v
                        GROUP BY v.profile_id
                    ) AS \(m) ON \(m).profile_id = g.profile_id
                    """)
                outer.append("\(m).m AS \(p)")
            }
        }
        columns += compiler.rfmColumns()
        return """
            SELECT \(PostgresQuery.joined(outer))
            FROM (SELECT \(PostgresQuery.joined(columns, separator: ",\n        "))
                  FROM cdp.events AS e WHERE \(scope)
                  GROUP BY e.profile_id) AS g
            \(PostgresQuery.joined(joins, separator: "\n"))
            """
    }

    /// The columns of ``partial(scope:now:)`` for the stored state `stored` (jsonb, NULL for none) combined with
    /// the partial row `batch`.
    func combinedColumns(stored s: String, batch b: String) -> [String] {
        func text(_ key: String) -> String { "(\(s) ->> '\(key)')" }
        func sum(_ key: String, _ type: String) -> String {
            "CASE WHEN \(text(key)) IS NULL THEN \(b).\(key) WHEN \(b).\(key) IS NULL THEN \(text(key))::\(type) "
                + "ELSE \(text(key))::\(type) + \(b).\(key) END AS \(key)"
        }
        func count(_ key: String) -> String { "coalesce(\(text(key))::bigint, 0) + \(b).\(key) AS \(key)" }
        func pick(_ key: String, _ function: String, _ type: String) -> String {
            "\(function)(\(text(key))::\(type), \(b).\(key)) AS \(key)"
        }
        var columns = [
            "\(b).profile_id",
            "least(\(text("f"))::timestamptz, \(b).first_seen_at) AS first_seen_at",
            "greatest(\(text("l"))::timestamptz, \(b).last_seen_at) AS last_seen_at",
            "coalesce(\(text("n"))::bigint, 0) + \(b).event_count AS event_count",
        ]
        for (i, trait) in definitions.computedTraits.enumerated() {
            let p = "p\(i)", stored = "\(s) -> '\(p)'", new = "\(b).\(p)"
            switch Self.kind(trait) {
            case .windowed: continue
            case .count: columns.append(count(p))
            case .sum: columns.append(sum(p, "numeric"))
            case .average:
                columns.append(sum(p, "numeric"))
                columns.append(count("q\(i)"))
            case .min: columns.append(pick(p, "least", "numeric"))
            case .max: columns.append(pick(p, "greatest", "numeric"))
            case .earliest: columns.append(pick(p, "least", "timestamptz"))
            case .latest: columns.append(pick(p, "greatest", "timestamptz"))
            case .first, .last:
                // [timestamp, seq, value]: the earlier (first) or later (last) event's value wins.
                let keep = Self.kind(trait) == .first ? "<=" : ">="
                columns.append(
                    """
                    CASE WHEN \(stored) IS NULL THEN \(new) WHEN \(new) IS NULL THEN \(stored)
                         WHEN ((\(stored) ->> 0)::timestamptz, (\(stored) ->> 1)::int8) \(keep) ((\(new) ->> 0)::timestamptz, (\(new) ->> 1)::int8)
                         THEN \(stored) ELSE \(new) END AS \(p)
                    """)
            case .values:
                columns.append(
                    """
                    CASE WHEN \(stored) IS NULL THEN \(new) WHEN \(new) IS NULL THEN \(stored)
                         ELSE (SELECT jsonb_object_agg(x.key, x.n) FROM (
                                   SELECT key, sum(value::bigint) AS n
                                   FROM (SELECT * FROM jsonb_each_text(\(stored)) UNION ALL SELECT * FROM jsonb_each_text(\(new))) AS y
                                   GROUP BY key) AS x)
                    END AS \(p)
                    """)
            }
        }
        if definitions.rfm.enabled {
            columns.append("greatest(\(text("rl"))::timestamptz, \(b).rfm_last) AS rfm_last")
            columns.append("coalesce(\(text("ro"))::bigint, 0) + \(b).rfm_orders AS rfm_orders")
            columns.append("coalesce(\(text("rr"))::numeric, 0) + \(b).rfm_revenue AS rfm_revenue")
        }
        return columns
    }

    /// The output columns of ``rows(_:asOf:)`` from the state row `a` and the windowed row `w`.
    func finalColumns(now: PostgresQuery) -> [PostgresQuery] {
        var columns: [PostgresQuery] = ["a.profile_id", "a.first_seen_at", "a.last_seen_at", "a.event_count"]
        // Key-value pairs of the stored state.
        var state: [PostgresQuery] = [
            "'d', \(fingerprint)::text", "'f', a.first_seen_at", "'l', a.last_seen_at", "'n', a.event_count",
        ]
        for (i, trait) in definitions.computedTraits.enumerated() {
            let p = PostgresQuery(unsafeSQL: "a.p\(i)")
            let value: PostgresQuery
            switch Self.kind(trait) {
            case .windowed:
                let zero = trait.aggregate == .count || trait.aggregate == .distinctCount
                columns.append(PostgresQuery(unsafeSQL: zero ? "coalesce(w.t\(i), 0) AS t\(i)" : "w.t\(i) AS t\(i)"))
                continue
            case .count, .sum, .min, .max: value = p
            case .average: value = "CASE WHEN a.q\(unescaped: String(i)) > 0 THEN \(p) / a.q\(unescaped: String(i))::numeric END"
            case .first, .last: value = "\(p) -> 2"
            case .earliest, .latest: value = "floor(extract(epoch FROM (\(now) - \(p))) / 86400)::bigint"
            case .values:
                value =
                    trait.aggregate == .distinctCount
                    ? "(SELECT count(*) FROM jsonb_object_keys(\(p)))"
                    : "(SELECT key::jsonb FROM jsonb_each_text(\(p)) ORDER BY value::bigint DESC, key::jsonb LIMIT 1)"
            }
            columns.append("\(value) AS t\(unescaped: String(i))")
            state.append(PostgresQuery(unsafeSQL: "'p\(i)', a.p\(i)"))
            if Self.kind(trait) == .average { state.append(PostgresQuery(unsafeSQL: "'q\(i)', a.q\(i)")) }
        }
        if definitions.rfm.enabled {
            columns += ["a.rfm_last", "a.rfm_orders", "a.rfm_revenue"]
            state += ["'rl', a.rfm_last", "'ro', a.rfm_orders", "'rr', a.rfm_revenue"]
        }
        columns.append("jsonb_strip_nulls(\(ComputedTraitCompiler.jsonbObject(state, perCall: 40))) AS aggregates")
        return columns
    }
}
