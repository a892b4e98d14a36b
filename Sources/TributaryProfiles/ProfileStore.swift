import Foundation
import Postgres
import TributaryModel

/// The set-based SQL of the profile stage: trait merging, per-profile recomputes, profile data, bulk recomputes.
package struct ProfileStore: Sendable {
    let compiler: ComputedTraitCompiler
    let aggregates: ProfileAggregates
    let asOf: Date

    init(definitions: ComputedTraitDefinitions, asOf: Date) {
        self.compiler = ComputedTraitCompiler(definitions)
        self.aggregates = ProfileAggregates(compiler)
        self.asOf = asOf
    }

    /// The newest value per (profile, key) among trait values of events matching `filter` (an SQL condition on
    /// `cdp.event_trait_values`).
    static func latest(_ filter: PostgresQuery) -> PostgresQuery {
        """
        SELECT DISTINCT ON (profile_id, key) profile_id, key, value, event_timestamp, seq, message_id, source
        FROM cdp.event_trait_values WHERE \(filter)
        ORDER BY profile_id, key, event_timestamp DESC, seq DESC, source DESC
        """
    }

    /// Applies the trait values of events `after < seq <= through` (except those of `except`, recomputed whole) to the
    /// stored values: a value replaces the stored one only if its event is newer. Returns the trait changes recorded.
    func applyEvents(_ tx: PostgresConnection, after: Int64, through: Int64, except: [UUID]) async throws -> Int {
        let events: PostgresQuery = "seq > \(after) AND seq <= \(through) AND profile_id <> ALL(\(except)::uuid[])"
        return try await tx.query(
            """
            WITH latest AS (\(Self.latest(events))),
            changed AS (
                SELECT l.*, nullif(t.value, 'null') AS old_value
                FROM latest AS l
                LEFT JOIN cdp.profile_trait_values AS t ON t.profile_id = l.profile_id AND t.key = l.key
                WHERE t.profile_id IS NULL OR (l.event_timestamp, l.seq, l.source) > (t.event_timestamp, t.seq, t.source)
            ),
            history AS (
                INSERT INTO cdp.trait_history (profile_id, key, old_value, new_value, event_timestamp, seq, message_id, reason)
                SELECT profile_id, key, old_value, nullif(value, 'null'), event_timestamp, seq, message_id, 'event'
                FROM changed WHERE old_value IS DISTINCT FROM nullif(value, 'null')
                RETURNING 1
            ),
            upserted AS (
                INSERT INTO cdp.profile_trait_values AS t (profile_id, key, value, event_timestamp, seq, source)
                SELECT profile_id, key, value, event_timestamp, seq, source FROM changed
                ON CONFLICT (profile_id, key) DO UPDATE
                SET value = excluded.value, event_timestamp = excluded.event_timestamp, seq = excluded.seq, source = excluded.source
            )
            SELECT count(*) FROM history
            """
        ).scalar(Int.self)
    }

    /// Recomputes the trait values of `profiles` from all their events with `seq <= through` (deleting the state of
    /// those that no longer exist), then their profile data. Returns the trait changes recorded (reason `merge`).
    func recompute(_ tx: PostgresConnection, profiles: [UUID], through: Int64) async throws -> Int {
        guard !profiles.isEmpty else { return 0 }
        let live = try await tx.query(
            """
            SELECT profile_id FROM cdp.identity_profiles WHERE profile_id = ANY(\(profiles)::uuid[])
            """
        ).map { try $0.decode(UUID.self) }
        let dead = Array(Set(profiles).subtracting(live))
        if !dead.isEmpty {
            try await tx.execute("DELETE FROM cdp.profile_trait_values WHERE profile_id = ANY(\(dead)::uuid[])")
            try await tx.execute("DELETE FROM cdp.profile_data WHERE profile_id = ANY(\(dead)::uuid[])")
        }
        guard !live.isEmpty else { return 0 }
        let changes = try await replaceTraits(tx, of: live, through: through, reason: "merge")
        // A profile left without events (all moved to another by a split) has no data.
        try await tx.execute(
            """
            DELETE FROM cdp.profile_data AS d
            WHERE d.profile_id = ANY(\(live)::uuid[])
              AND NOT EXISTS (SELECT 1 FROM cdp.events AS e WHERE e.profile_id = d.profile_id AND e.seq <= \(through))
            """)
        return changes
    }

    /// Replaces the trait values of `profiles` (nil: every profile) by those computed from events with
    /// `seq <= through`, recording each effective change in the history with `reason`.
    private func replaceTraits(_ tx: PostgresConnection, of profiles: [UUID]?, through: Int64, reason: String) async throws -> Int
    {
        var scope: PostgresQuery = "true", scopeOnValues: PostgresQuery = "true"
        if let profiles {
            (scope, scopeOnValues) = ("profile_id = ANY(\(profiles)::uuid[])", "t.profile_id = ANY(\(profiles)::uuid[])")
        }
        return try await tx.query(
            """
            WITH latest AS (\(Self.latest("seq <= \(through) AND \(scope)"))),
            old AS (SELECT * FROM cdp.profile_trait_values AS t WHERE \(scopeOnValues)),
            diff AS (
                SELECT coalesce(l.profile_id, o.profile_id) AS profile_id, coalesce(l.key, o.key) AS key,
                       nullif(o.value, 'null') AS old_value, nullif(l.value, 'null') AS new_value,
                       l.event_timestamp, l.seq, l.message_id
                FROM latest AS l FULL JOIN old AS o ON o.profile_id = l.profile_id AND o.key = l.key
            ),
            history AS (
                INSERT INTO cdp.trait_history (profile_id, key, old_value, new_value, event_timestamp, seq, message_id, reason)
                SELECT profile_id, key, old_value, new_value, event_timestamp, seq, message_id, \(reason)
                FROM diff WHERE old_value IS DISTINCT FROM new_value
                RETURNING 1
            ),
            removed AS (
                DELETE FROM cdp.profile_trait_values AS t
                WHERE \(scopeOnValues)
                  AND NOT EXISTS (SELECT 1 FROM latest AS l WHERE l.profile_id = t.profile_id AND l.key = t.key)
            ),
            upserted AS (
                INSERT INTO cdp.profile_trait_values AS t (profile_id, key, value, event_timestamp, seq, source)
                SELECT profile_id, key, value, event_timestamp, seq, source FROM latest
                ON CONFLICT (profile_id, key) DO UPDATE
                SET value = excluded.value, event_timestamp = excluded.event_timestamp, seq = excluded.seq, source = excluded.source
                WHERE (t.value, t.event_timestamp, t.seq, t.source)
                      IS DISTINCT FROM (excluded.value, excluded.event_timestamp, excluded.seq, excluded.source)
            )
            SELECT count(*) FROM history
            """
        ).scalar(Int.self)
    }

    /// Brings `profile_data` up to date after the events `after < seq <= through`: traits from the stored values;
    /// computed traits, first/last seen, event count and RFM inputs from each profile's stored aggregate state
    /// combined with the batch's events (``ProfileAggregates``). The profiles of `recompute` (merged or split), and
    /// touched profiles without a state of the current definitions, are computed from all their events instead.
    /// Returns the number of rows changed.
    func refreshData(
        _ tx: PostgresConnection, touched: [UUID], recompute: [UUID], after: Int64, through: Int64
    ) async throws -> Int {
        guard !touched.isEmpty || !recompute.isEmpty else { return 0 }
        // A touched profile without a row has had no events before this batch (its first batch creates the row; merges
        // and splits are in `recompute`): the batch alone is its state. One with a row but no usable state needs all.
        let stale =
            touched.isEmpty
            ? []
            : try await tx.query(
                """
                SELECT d.profile_id FROM cdp.profile_data AS d
                WHERE d.profile_id = ANY(\(touched)::uuid[]) AND d.aggregates ->> 'd' IS DISTINCT FROM \(aggregates.fingerprint)
                """
            ).map { try $0.decode(UUID.self) }
        let full = Array(Set(recompute).union(stale))
        let rows = try aggregates.rows(
            .batch(after: after, through: through, full: full, involved: Array(Set(touched).union(full))), asOf: asOf)
        return try await tx.query(try upsertData(rows)).scalar(Int.self)
    }

    /// Writes the rows of `aggregates` (a query of ``ProfileAggregates``' columns) into `cdp.profile_data`, with the
    /// computed traits and RFM scores they give; returns the rows changed.
    private func upsertData(_ aggregates: PostgresQuery) throws -> PostgresQuery {
        """
        WITH written AS (
            INSERT INTO cdp.profile_data AS d (profile_id, traits, computed, first_seen_at, last_seen_at, event_count, computed_at,
                                               aggregates)
            SELECT a.profile_id, coalesce(t.traits, '{}'::jsonb), \(compiler.computedObjectSQL()),
                   a.first_seen_at, a.last_seen_at, a.event_count, \(SQLRenderer.timestamp(asOf)), a.aggregates
            FROM (\(aggregates)) AS a
            LEFT JOIN LATERAL (
                SELECT jsonb_object_agg(v.key, v.value) AS traits FROM cdp.profile_trait_values AS v
                WHERE v.profile_id = a.profile_id AND v.value <> 'null'
            ) AS t ON true
            LEFT JOIN cdp.rfm_thresholds AS th ON true
            \(compiler.rfmScoresSQL())
            ON CONFLICT (profile_id) DO UPDATE
            SET traits = excluded.traits, computed = excluded.computed, first_seen_at = excluded.first_seen_at,
                last_seen_at = excluded.last_seen_at, event_count = excluded.event_count,
                computed_at = excluded.computed_at, updated_at = excluded.updated_at, aggregates = excluded.aggregates
            WHERE (d.traits, d.computed, d.first_seen_at, d.last_seen_at, d.event_count, d.aggregates)
                  IS DISTINCT FROM (excluded.traits, excluded.computed, excluded.first_seen_at, excluded.last_seen_at, excluded.event_count,
                                    excluded.aggregates)
            RETURNING 1
        )
        SELECT count(*) FROM written
        """
    }

    /// Rebuilds all trait values (history reason `rebuild`) and profile data from events with `seq <= through`.
    func rebuild(_ tx: PostgresConnection, through: Int64) async throws -> (traitChanges: Int, profiles: Int) {
        try await tx.execute("SET LOCAL work_mem = '256MB'")
        try await tx.execute(
            """
            DELETE FROM cdp.profile_trait_values AS t
            WHERE NOT EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = t.profile_id)
            """)
        let changes = try await replaceTraits(tx, of: nil, through: through, reason: "rebuild")
        try await tx.execute(
            """
            DELETE FROM cdp.profile_data AS d
            WHERE NOT EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = d.profile_id)
               OR NOT EXISTS (SELECT 1 FROM cdp.events AS e WHERE e.profile_id = d.profile_id AND e.seq <= \(through))
            """)
        try await computeThresholds(
            tx, through: through, into: "rebuild_aggregates", sql: try aggregates.rows(.all(through: through), asOf: asOf))
        let profiles = try await tx.query(try upsertData("SELECT * FROM pg_temp.rebuild_aggregates")).scalar(Int.self)
        try await tx.execute("DROP TABLE pg_temp.rebuild_aggregates")
        return (changes, profiles)
    }

    /// Computes every profile's aggregates (of `compiler`'s traits) into the temporary table `name` and stores the
    /// RFM quintile boundaries.
    private func computeThresholds(
        _ tx: PostgresConnection, through: Int64, into name: String, compiler: ComputedTraitCompiler? = nil,
        sql: PostgresQuery? = nil
    ) async throws {
        let compiler = compiler ?? self.compiler
        let rows = try sql ?? compiler.aggregateSQL(asOf: asOf, through: through)
        // CREATE TABLE … AS takes no parameters: its values are inlined as literals.
        let create: PostgresQuery = "CREATE TEMPORARY TABLE \(identifier: name) ON COMMIT DROP AS \(rows)"
        try await tx.execute(try create.inlined())
        try await tx.execute("ANALYZE pg_temp.\(identifier: name)")
        guard compiler.definitions.rfm.enabled else {
            try await tx.execute("DELETE FROM cdp.rfm_thresholds")
            return
        }
        let stored = try await tx.execute(
            """
            INSERT INTO cdp.rfm_thresholds (id, recency, frequency, monetary, as_of)
            SELECT 1, recency, frequency, monetary, \(SQLRenderer.timestamp(asOf))
            FROM (\(compiler.thresholdsSQL(aggregates: "pg_temp.\(try SQLQuoting.identifier(name))"))) AS q
            ON CONFLICT (id) DO UPDATE SET recency = excluded.recency, frequency = excluded.frequency,
                monetary = excluded.monetary, as_of = excluded.as_of, computed_at = excluded.computed_at
            """)
        if (stored ?? 0) == 0 { try await tx.execute("DELETE FROM cdp.rfm_thresholds") }
    }

    /// Recomputes every profile's computed traits in bulk, with fresh RFM boundaries: all of them (`full`), or only
    /// those that change with time alone, merged into the stored object. Returns the rows changed.
    func recomputeComputed(_ tx: PostgresConnection, through: Int64, full: Bool) async throws -> Int {
        let compiler = full ? self.compiler : self.compiler.timeDependent
        try await computeThresholds(tx, through: through, into: "bulk_aggregates", compiler: compiler)
        let merged: PostgresQuery = full ? "c.computed" : "d.computed || c.computed"
        let changed = try await tx.execute(
            """
            UPDATE cdp.profile_data AS d SET computed = \(merged), computed_at = \(SQLRenderer.timestamp(asOf))
            FROM (SELECT a.profile_id, \(compiler.computedObjectSQL()) AS computed
                  FROM pg_temp.bulk_aggregates AS a LEFT JOIN cdp.rfm_thresholds AS th ON true
                  \(compiler.rfmScoresSQL())) AS c
            WHERE d.profile_id = c.profile_id AND d.computed IS DISTINCT FROM \(merged)
            """)
        try await tx.execute("DROP TABLE pg_temp.bulk_aggregates")
        return changed ?? 0
    }
}
