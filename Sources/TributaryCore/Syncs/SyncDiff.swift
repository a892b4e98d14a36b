import Foundation
import Postgres

/// The SQL of a sync's diff: the source, keyed and hashed, against the delivered state in `cdp.sync_state`.
///
/// ```sql
/// INSERT INTO pg_temp.tributary_sync_diff (kind, key, key_object, payload, hash, previous_run)
/// SELECT CASE WHEN st.key IS NULL OR st.removed THEN 'added' WHEN src.key IS NULL THEN 'removed' ELSE 'changed' END, …
/// FROM (SELECT jsonb_build_array(s."profile_id")::text AS key, …, jsonb_build_object('email', s."email") AS payload
///       FROM (SELECT * FROM "segments"."vip") AS s) AS src
/// FULL JOIN (SELECT … FROM cdp.sync_state WHERE sync = $1) AS st ON st.key = src.key
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
    public func insertSQL() throws -> String {
        let join = sync.tracksRemovals ? "FULL JOIN" : "LEFT JOIN"
        var conditions = ["(src.key IS NULL OR st.key IS NULL OR st.removed OR st.hash <> src.hash)"]
        if sync.tracksRemovals {
            conditions.append("(src.key IS NOT NULL OR NOT st.removed)")
        }
        if sync.mode == .insert {
            conditions.append("(st.key IS NULL OR st.removed)")
        }
        return """
            INSERT INTO pg_temp.tributary_sync_diff (kind, key, key_object, payload, hash, previous_run)
            SELECT CASE WHEN src.key IS NULL THEN 'removed' WHEN st.key IS NULL OR st.removed THEN 'added' ELSE 'changed' END,
                   coalesce(src.key, st.key), coalesce(src.key_object, st.key_object), coalesce(src.payload, st.payload),
                   coalesce(src.hash, st.hash), coalesce(st.run_id, 0)
            FROM (
            \(try keyedSourceSQL())
            ) AS src
            \(join) (SELECT key, key_object, payload, hash, removed, run_id FROM cdp.sync_state WHERE sync = $1) AS st
                ON st.key = src.key
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
            previous_run bigint NOT NULL
        )
        """
}
