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

    /// Which events a query of ``rowsSQL(_:asOf:)`` aggregates.
    package enum Scope {
        /// Profiles with events in `after < seq <= through`: their stored state combined with those events; except
        /// the profiles of bind `$1` (`uuid[]`), computed from all their events with `seq <= through`. With windowed
        /// traits, bind `$2` (`uuid[]`) lists every profile involved.
        case batch(after: Int64, through: Int64)
        /// Every profile, from all its events with `seq <= through`.
        case all(through: Int64)
    }

    /// ``rowsSQL(_:asOf:)`` of a batch with its parameters: `full` (profiles computed from all their events: merged,
    /// split, or without a state of the current definitions) and `involved` (every profile of the batch, read only
    /// when a trait has a time window). The statement's placeholders and their values are decided here.
    package func batchRows(after: Int64, through: Int64, full: [UUID], involved: [UUID], asOf: Date) throws -> PostgresQuery {
        var binds = [try full.postgresBind()]
        if hasWindowedTraits { binds.append(try involved.postgresBind()) }
        return PostgresQuery(unsafeSQL: try rowsSQL(.batch(after: after, through: through), asOf: asOf), binds: binds)
    }

    /// Whether any trait is computed from its window's events (``Scope/batch(after:through:)`` then takes bind `$2`).
    package var hasWindowedTraits: Bool { definitions.computedTraits.contains { Self.kind($0) == .windowed } }

    /// Rows of `profile_id, first_seen_at, last_seen_at, event_count, t0, t1, …, rfm_last, rfm_orders, rfm_revenue`
    /// (the columns of ``ComputedTraitCompiler/aggregateSQL(asOf:through:profileFilter:)``) and `aggregates` (the
    /// state to store), for the profiles of `scope`, at `asOf`.
    package func rowsSQL(_ scope: Scope, asOf: Date) throws -> String {
        let now = ComputedTraitCompiler.timestamp(asOf)
        let state: String
        let windowScope: String
        switch scope {
        case .batch(let after, let through):
            // `NOT EXISTS` over the set, not `<> ALL($1)`: the array is compared linearly for every event otherwise.
            let batch = """
                e.seq > \(after) AND e.seq <= \(through) AND e.profile_id IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM unnest($1::uuid[]) AS f (id) WHERE f.id = e.profile_id)
                """
            let full = "e.profile_id = ANY($1::uuid[]) AND e.seq <= \(through)"
            state = """
                WITH b AS MATERIALIZED (
                    SELECT true AS incremental, p.* FROM (\(try partialSQL(scope: batch, now: now))) AS p
                    UNION ALL
                    SELECT false, p.* FROM (\(try partialSQL(scope: full, now: now))) AS p
                )
                SELECT \(combinedColumns(stored: "d.aggregates", batch: "b").joined(separator: ",\n       "))
                FROM b LEFT JOIN cdp.profile_data AS d ON b.incremental AND d.profile_id = b.profile_id
                """
            windowScope = "e.profile_id = ANY($2::uuid[]) AND e.seq <= \(through)"
        case .all(let through):
            state = try partialSQL(scope: "e.profile_id IS NOT NULL AND e.seq <= \(through)", now: now)
            windowScope = "e.profile_id IS NOT NULL AND e.seq <= \(through)"
        }
        var windowJoin = ""
        let windowed = definitions.computedTraits.enumerated().filter { Self.kind($0.element) == .windowed }
        if let widest = windowed.compactMap(\.element.within?.days).max() {
            let columns = try windowed.map { "\(try compiler.aggregate($0.element, now: now)) AS t\($0.offset)" }
            windowJoin = """
                LEFT JOIN (
                    SELECT e.profile_id, \(columns.joined(separator: ", "))
                    FROM cdp.events AS e
                    WHERE \(windowScope) AND e.timestamp > \(try SQLRenderer().daysBefore(now, widest))
                    GROUP BY e.profile_id
                ) AS w ON w.profile_id = a.profile_id
                """
        }
        return """
            SELECT \(try finalColumns(now: now).joined(separator: ",\n       "))
            FROM (\(state)) AS a
            \(windowJoin)
            """
    }

    /// `SELECT profile_id, first_seen_at, last_seen_at, event_count, p0, [q0,] …, rfm_*`: the partial aggregates, per
    /// profile, of the events `e` matching `scope`.
    func partialSQL(scope: String, now: String) throws -> String {
        var columns = [
            "e.profile_id", "min(e.timestamp) AS first_seen_at", "max(e.timestamp) AS last_seen_at", "count(*) AS event_count",
        ]
        var outer = ["g.*"]
        var joins: [String] = []
        for (i, trait) in definitions.computedTraits.enumerated() {
            let (conditions, property) = try compiler.parts(trait, now: now)
            let present = property.map { ["jsonb_typeof(\($0)) <> 'null'"] } ?? []
            let filter = ComputedTraitCompiler.filter(conditions)
            let number = property.map { "cdp.jsonb_numeric(\($0))" } ?? "NULL::numeric"
            switch Self.kind(trait) {
            case .windowed: continue
            case .count: columns.append("count(*)\(filter) AS p\(i)")
            case .sum: columns.append("sum(\(number))\(filter) AS p\(i)")
            case .average:
                columns.append("sum(\(number))\(filter) AS p\(i)")
                columns.append("count(\(number))\(filter) AS q\(i)")
            case .min: columns.append("min(\(number))\(filter) AS p\(i)")
            case .max: columns.append("max(\(number))\(filter) AS p\(i)")
            case .first, .last:
                let order = Self.kind(trait) == .first ? "e.timestamp, e.seq" : "e.timestamp DESC, e.seq DESC"
                columns.append(
                    """
                    (array_agg(jsonb_build_array(e.timestamp, e.seq, \(property!)) ORDER BY \(order))\
                    \(ComputedTraitCompiler.filter(conditions, present)))[1] AS p\(i)
                    """)
            case .earliest: columns.append("min(e.timestamp)\(filter) AS p\(i)")
            case .latest: columns.append("max(e.timestamp)\(filter) AS p\(i)")
            case .values:
                let conditions = ([scope] + conditions + present).joined(separator: " AND ")
                joins.append(
                    """
                    LEFT JOIN (
                        SELECT v.profile_id, jsonb_object_agg(v.value, v.n) AS m
                        FROM (SELECT e.profile_id, (\(property!))::text AS value, count(*) AS n
                              FROM cdp.events AS e WHERE \(conditions) GROUP BY 1, 2) AS v
                        GROUP BY v.profile_id
                    ) AS m\(i) ON m\(i).profile_id = g.profile_id
                    """)
                outer.append("m\(i).m AS p\(i)")
            }
        }
        columns += try compiler.rfmColumns()
        return """
            SELECT \(outer.joined(separator: ", "))
            FROM (SELECT \(columns.joined(separator: ",\n        "))
                  FROM cdp.events AS e WHERE \(scope)
                  GROUP BY e.profile_id) AS g
            \(joins.joined(separator: "\n"))
            """
    }

    /// The columns of ``partialSQL(scope:now:)`` for the stored state `stored` (jsonb, NULL for none) combined with
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

    /// The output columns of ``rowsSQL(_:asOf:)`` from the state row `a` and the windowed row `w`.
    func finalColumns(now: String) throws -> [String] {
        var columns = ["a.profile_id", "a.first_seen_at", "a.last_seen_at", "a.event_count"]
        var state: [String] = [
            try SQLQuoting.literal("d"), try SQLQuoting.literal(fingerprint), "'f'", "a.first_seen_at", "'l'", "a.last_seen_at",
            "'n'", "a.event_count",
        ]
        for (i, trait) in definitions.computedTraits.enumerated() {
            let p = "a.p\(i)"
            let value: String
            switch Self.kind(trait) {
            case .windowed:
                let zero = trait.aggregate == .count || trait.aggregate == .distinctCount
                columns.append(zero ? "coalesce(w.t\(i), 0) AS t\(i)" : "w.t\(i) AS t\(i)")
                continue
            case .count, .sum, .min, .max: value = p
            case .average: value = "CASE WHEN a.q\(i) > 0 THEN \(p) / a.q\(i)::numeric END"
            case .first, .last: value = "\(p) -> 2"
            case .earliest, .latest: value = "floor(extract(epoch FROM (\(now) - \(p))) / 86400)::bigint"
            case .values:
                value =
                    trait.aggregate == .distinctCount
                    ? "(SELECT count(*) FROM jsonb_object_keys(\(p)))"
                    : "(SELECT key::jsonb FROM jsonb_each_text(\(p)) ORDER BY value::bigint DESC, key::jsonb LIMIT 1)"
            }
            columns.append("\(value) AS t\(i)")
            state += ["'p\(i)'", p]
            if Self.kind(trait) == .average { state += ["'q\(i)'", "a.q\(i)"] }
        }
        if definitions.rfm.enabled {
            columns += ["a.rfm_last", "a.rfm_orders", "a.rfm_revenue"]
            state += ["'rl'", "a.rfm_last", "'ro'", "a.rfm_orders", "'rr'", "a.rfm_revenue"]
        }
        // jsonb_build_object takes at most 100 arguments.
        let object = stride(from: 0, to: state.count, by: 80)
            .map { "jsonb_build_object(\(state[$0..<min($0 + 80, state.count)].joined(separator: ", ")))" }
            .joined(separator: " || ")
        columns.append("jsonb_strip_nulls(\(object)) AS aggregates")
        return columns
    }
}
