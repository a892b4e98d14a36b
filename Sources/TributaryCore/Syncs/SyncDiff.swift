import Foundation
import Postgres

/// The SQL of a sync's diff: the source, keyed and hashed, against the delivered state in `cdp.sync_state`.
///
/// ```sql
/// INSERT INTO pg_temp.tributary_sync_diff (kind, key, key_object, payload, hash, previous_run)
/// SELECT CASE WHEN st.key IS NULL OR st.removed THEN 'added' WHEN src.key IS NULL THEN 'removed' ELSE 'changed' END, …
/// FROM (SELECT jsonb_build_array(s."profile_id")::text AS key, …, jsonb_build_object('email', s."email") AS payload
///       FROM (SELECT * FROM "segments"."vip") AS s) AS src
/// FULL JOIN (SELECT … FROM cdp.sync_state … FULL JOIN cdp.sync_pending …) AS k ON k.key = src.key
/// WHERE …
/// ```
///
/// Every name goes through ``SQLQuoting``; an analyst's `query` source is used as written, inside a read-only
/// transaction.
public struct SyncDiff: Sendable {
    public let sync: SyncDefinition

    public init(_ sync: SyncDefinition) { self.sync = sync }

    /// The source as a subquery.
    public func sourceSQL() throws -> String {
        switch sync.source {
        case .segment(let name): return "SELECT * FROM \(try SQLQuoting.qualified("segments", name))"
        case .relation(let schema, let name):
            return "SELECT * FROM \(try schema.map { try SQLQuoting.qualified($0, name) } ?? SQLQuoting.identifier(name))"
        case .query(let text): return text
        }
    }

    /// `key` (JSON array text of the key columns), `key_object`, `payload` (the mapped fields) and `hash` of each
    /// source row with no NULL in its key.
    public func keyedSourceSQL() throws -> String {
        let keys = try sync.primaryKey.map { "s.\(try SQLQuoting.identifier($0))" }
        let keyObject = try sync.primaryKey.map { "\(try SQLQuoting.literal($0)), s.\(try SQLQuoting.identifier($0))" }
        let payload: String
        if let fields = sync.fields {
            let pairs = try fields.map { "\(try SQLQuoting.literal($0.0)), s.\(try SQLQuoting.identifier($0.1))" }
            // jsonb_build_object takes at most 100 arguments.
            payload = stride(from: 0, to: pairs.count, by: 40)
                .map { "jsonb_build_object(\(pairs[$0..<min($0 + 40, pairs.count)].joined(separator: ", ")))" }
                .joined(separator: " || ")
        } else {
            payload = "to_jsonb(s)"
        }
        return """
            SELECT k.key, k.key_object, k.payload, md5(k.payload::text)::uuid AS hash
            FROM (
                SELECT jsonb_build_array(\(keys.joined(separator: ", ")))::text AS key,
                       jsonb_build_object(\(keyObject.joined(separator: ", "))) AS key_object,
                       \(payload) AS payload
                FROM (\(try sourceSQL())) AS s
                WHERE \(keys.map { "\($0) IS NOT NULL" }.joined(separator: " AND "))
            ) AS k
            """
    }

    /// Fills `pg_temp.tributary_sync_diff` with the rows to send in this sync's mode; `$1` is the sync's name.
    ///
    /// The source is compared with what is known of the destination: the confirmed state (`cdp.sync_state`) and
    /// changes sent but not confirmed (`cdp.sync_pending`). A row with a pending change is always sent again (the
    /// destination may hold the unconfirmed value even if the source went back to the confirmed one).
    public func insertSQL() throws -> String {
        let join = sync.tracksRemovals ? "FULL JOIN" : "LEFT JOIN"
        var conditions = ["(src.key IS NULL OR k.key IS NULL OR k.removed OR k.hash IS DISTINCT FROM src.hash OR k.pending)"]
        if sync.tracksRemovals {
            conditions.append("(src.key IS NOT NULL OR NOT k.removed OR k.pending)")
        }
        if sync.mode == .insert {
            conditions.append("(k.key IS NULL OR k.removed)")
        }
        return """
            INSERT INTO pg_temp.tributary_sync_diff (kind, key, key_object, payload, hash, previous_run, pending_hash, pending_operation, pending_key)
            SELECT CASE WHEN src.key IS NULL THEN 'removed' WHEN k.key IS NULL OR k.removed THEN 'added' ELSE 'changed' END,
                   coalesce(src.key, k.key), coalesce(src.key_object, k.key_object), coalesce(src.payload, k.payload),
                   coalesce(src.hash, k.hash, k.pending_hash), coalesce(k.run_id, 0), k.pending_hash, k.pending_operation, k.pending_key
            FROM (
            \(try keyedSourceSQL())
            ) AS src
            \(join) (
                SELECT coalesce(st.key, p.key) AS key, coalesce(st.key_object, p.key_object) AS key_object,
                       coalesce(st.payload, p.payload) AS payload, st.hash, coalesce(st.removed, true) AS removed, st.run_id,
                       p.key IS NOT NULL AS pending, p.hash AS pending_hash, p.operation AS pending_operation, p.idempotency_key AS pending_key
                FROM (SELECT key, key_object, payload, hash, removed, run_id FROM cdp.sync_state WHERE sync = $1) AS st
                FULL JOIN (SELECT key, key_object, payload, hash, operation, idempotency_key FROM cdp.sync_pending WHERE sync = $1) AS p
                    ON p.key = st.key
            ) AS k ON k.key = src.key
            WHERE \(conditions.joined(separator: "\n  AND "))
            """
    }

    static let createSQL = """
        CREATE TEMP TABLE IF NOT EXISTS tributary_sync_diff (
            n            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind         text NOT NULL,
            key          text NOT NULL UNIQUE,
            key_object   jsonb NOT NULL,
            payload      jsonb NOT NULL,
            hash         uuid NOT NULL,
            previous_run bigint NOT NULL,
            pending_hash uuid,
            pending_operation text,
            pending_key  text
        )
        """
}
