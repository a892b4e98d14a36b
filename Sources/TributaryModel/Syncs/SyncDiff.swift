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
    /// For a real-time sync: the segment's members query (``SegmentCompiler/members(_:)``), its source.
    public let members: PostgresQuery?

    /// Which rows a diff compares.
    public enum Scope: Sendable, Equatable {
        /// The whole source against the whole state.
        case all
        /// Only these profiles (a real-time sync following a few changes; needs ``members``).
        case profiles([UUID])
        /// Only these keys, as `cdp.sync_state.key` holds them (a replay of some rows).
        case keys([String])
    }

    public init(_ sync: SyncDefinition, members: PostgresQuery? = nil) {
        self.sync = sync
        self.members = members
    }

    /// The source as a subquery.
    public func source(_ scope: Scope = .all) throws -> PostgresQuery {
        if let members {
            guard case .profiles(let profiles) = scope else { return members }
            return "SELECT * FROM (\(members)) AS m WHERE m.profile_id = ANY(\(profiles)::uuid[])"
        }
        if case .profiles = scope { throw SyncError("sync '\(sync.name)': only a real-time sync compares some profiles") }
        switch sync.source {
        case .segment(let name): return "SELECT * FROM \(unescaped: try Segment.view(name))"
        case .relation(let schema, let name):
            return
                "SELECT * FROM \(unescaped: try schema.map { try SQLQuoting.qualified($0, name) } ?? SQLQuoting.identifier(name))"
        case .query(let text): return PostgresQuery(unsafeSQL: text)
        }
    }

    /// `key` (JSON array text of the key columns), `hash` (of the mapped columns, typed: `hash_record_extended`),
    /// `consented` (the profile granted every purpose of the sync; true without purposes) and `r` (the source row) of
    /// each source row with no NULL in its key. The jsonb of the key and fields is built later, for changed rows only.
    ///
    /// The hash is seeded with the field mapping, so changing a mapping or a transform sends every row again.
    public func keyedSource(_ scope: Scope = .all) throws -> PostgresQuery {
        let keyList = try sync.primaryKey.map { "s.\(try SQLQuoting.identifier($0))" }.joined(separator: ", ")
        let keys = PostgresQuery(unsafeSQL: keyList)
        let hashed = PostgresQuery(
            unsafeSQL: try sync.fields.map { fields in
                "ROW(\(try fields.map { "s.\(try SQLQuoting.identifier($0.column))" }.joined(separator: ", ")))"
            } ?? "s")
        var consented: PostgresQuery = "true", consentJoin: PostgresQuery = ""
        if !sync.purposes.isEmpty {
            consented = "c.profile_id IS NOT NULL"
            consentJoin = """

                LEFT JOIN (
                    SELECT profile_id FROM cdp.profile_consent WHERE granted AND purpose IN (\(PostgresQuery.joined(sync.purposes.map { "\($0)" as PostgresQuery })))
                    GROUP BY profile_id HAVING count(*) = \(unescaped: String(sync.purposes.count))
                ) AS c ON c.profile_id = s.\(identifier: sync.profileColumn)::uuid
                """
        }
        let notNull = try sync.primaryKey.map { "s.\(try SQLQuoting.identifier($0)) IS NOT NULL" }.joined(separator: " AND ")
        var query: PostgresQuery = """
            SELECT jsonb_build_array(\(keys))::text AS key, hash_record_extended(\(hashed), \(unescaped: String(hashSeed))) AS hash,
                   \(consented) AS consented, s AS r
            FROM (\(try source(scope))) AS s\(consentJoin)
            WHERE \(unescaped: notNull)
            """
        if case .keys(let only) = scope { query.append("\n  AND jsonb_build_array(\(keys))::text = ANY(\(only)::text[])") }
        return query
    }

    /// A 64-bit seed derived from the field mapping (0 without one).
    var hashSeed: Int64 {
        guard let fields = sync.fields else { return 0 }
        let spec = fields.map { "\($0.name)\u{0}\($0.column)\u{0}\($0.transform?.rawValue ?? "")" }.joined(separator: "\u{1}")
        return Int64(bitPattern: UInt64(sha256Hex(Data(spec.utf8), bytes: 8), radix: 16)!)
    }

    /// A field's value as sent: the column, hashed or masked as the mapping says.
    static func fieldSQL(_ field: SyncDefinition.Field) throws -> PostgresQuery {
        let column: PostgresQuery = "(src.r).\(identifier: field.column)"
        // to_jsonb(…) #>> '{}' is the column's plain text whatever its type (a jsonb string without its quotes).
        let text: PostgresQuery = "to_jsonb(\(column)) #>> '{}'"
        return switch field.transform {
        case nil: column
        case .hash?: "cdp.pii_hash(\(text), 'text')"
        case .hashEmail?: "cdp.pii_hash(\(text), 'email')"
        case .hashPhone?: "cdp.pii_hash(\(text), 'phone')"
        case .mask?: "cdp.pii_mask(\(text))"
        }
    }

    /// The key's jsonb object and the mapped fields' jsonb, of the source row `src.r`. Names are binds cast to
    /// `text` (`jsonb_build_object` takes any type).
    func jsonSQL() throws -> (key: PostgresQuery, payload: PostgresQuery) {
        let keyObject = sync.primaryKey.map { "\($0)::text, (src.r).\(identifier: $0)" as PostgresQuery }
        let payload: PostgresQuery
        if let fields = sync.fields {
            let pairs = try fields.map { "\($0.name)::text, \(try Self.fieldSQL($0))" as PostgresQuery }
            payload = ComputedTraitCompiler.jsonbObject(pairs, perCall: 40)
        } else {
            payload = "to_jsonb(src.r)"
        }
        return ("jsonb_build_object(\(PostgresQuery.joined(keyObject)))", payload)
    }

    /// Fills `pg_temp.tributary_sync_diff` with the rows to send in this sync's mode, for `scope`.
    ///
    /// The source is compared with what is known of the destination: the confirmed state (`cdp.sync_state`, only key
    /// and hash are read) and changes sent but not confirmed (`cdp.sync_pending`, few rows). A row with a pending
    /// change is always sent again (the destination may hold the unconfirmed value even if the source went back to the
    /// confirmed one). Removed rows get their key and fields from the state afterwards (``removedFields()``).
    ///
    /// A source row whose profile does not consent to the sync's purposes counts as absent, except that it is sent
    /// as `withdrawn` (a removal in every mode) if the destination may hold it.
    public func insert(_ scope: Scope = .all) throws -> PostgresQuery {
        let join: PostgresQuery = sync.tracksRemovals ? "FULL JOIN" : "LEFT JOIN"
        var present = "(st.key IS NULL OR st.removed OR st.hash IS DISTINCT FROM src.hash OR p.key IS NOT NULL)"
        if sync.mode == .insert { present += " AND (st.key IS NULL OR st.removed)" }
        // Absent (removed, or consent withdrawn): only what the destination may hold is sent.
        let absent = "NOT coalesce(st.removed, true) OR p.key IS NOT NULL"
        let (keyObject, payload) = try jsonSQL()
        // The state and pending rows of this sync (and scope).
        func state(_ columns: String, _ table: String) -> PostgresQuery {
            let rows: PostgresQuery = "SELECT \(unescaped: columns) FROM cdp.\(unescaped: table) WHERE sync = \(sync.name)"
            switch scope {
            case .all: return rows
            case .profiles(let profiles):
                return "\(rows) AND key = ANY(ARRAY(SELECT jsonb_build_array(x)::text FROM unnest(\(profiles)::uuid[]) AS x))"
            case .keys(let keys): return "\(rows) AND key = ANY(\(keys)::text[])"
            }
        }
        return """
            INSERT INTO pg_temp.tributary_sync_diff (kind, key, key_object, payload, hash, previous_run, pending_hash, pending_operation, pending_key)
            SELECT CASE WHEN src.key IS NULL THEN 'removed' WHEN NOT src.consented THEN 'withdrawn'
                        WHEN st.key IS NULL OR st.removed THEN 'added' ELSE 'changed' END,
                   coalesce(src.key, st.key, p.key),
                   CASE WHEN src.key IS NOT NULL THEN \(keyObject) END,
                   CASE WHEN src.key IS NOT NULL THEN \(payload) END,
                   coalesce(src.hash, st.hash, p.hash), coalesce(st.run_id, 0), p.hash, p.operation, p.idempotency_key
            FROM (
            \(try keyedSource(scope))
            ) AS src
            \(join) (\(state("key, hash, removed, run_id", "sync_state"))) AS st ON st.key = src.key
            \(join) (\(state("key, hash, operation, idempotency_key", "sync_pending"))) AS p
                ON p.key = coalesce(src.key, st.key)
            WHERE CASE WHEN src.key IS NULL OR NOT src.consented THEN \(unescaped: absent)
                       ELSE \(unescaped: present) END
            """
    }

    /// Fills in the key and fields of removed and withdrawn rows: what was last sent (pending), else last confirmed.
    public func removedFields() -> PostgresQuery {
        """
        UPDATE pg_temp.tributary_sync_diff AS d
        SET key_object = coalesce(p.key_object, st.key_object), payload = coalesce(p.payload, st.payload)
        FROM pg_temp.tributary_sync_diff AS r
        LEFT JOIN cdp.sync_state AS st ON st.sync = \(sync.name) AND st.key = r.key
        LEFT JOIN cdp.sync_pending AS p ON p.sync = \(sync.name) AND p.key = r.key
        WHERE r.kind IN ('removed', 'withdrawn') AND d.n = r.n
        """
    }

    package static let createSQL = """
        CREATE TEMP TABLE IF NOT EXISTS tributary_sync_diff (
            n            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind         text NOT NULL,
            key          text NOT NULL UNIQUE,
            key_object   jsonb,
            payload      jsonb,
            hash         bigint NOT NULL,
            previous_run bigint NOT NULL,
            pending_hash bigint,
            pending_operation text,
            pending_key  text,
            previous_payload jsonb
        )
        """

    /// In `audience` mode, the fields last confirmed for each changed member (`previous_payload`), so the destination
    /// can remove identifiers that changed.
    public func previousPayload() -> PostgresQuery {
        """
        UPDATE pg_temp.tributary_sync_diff AS d SET previous_payload = st.payload
        FROM cdp.sync_state AS st
        WHERE st.sync = \(sync.name) AND st.key = d.key AND d.kind = 'changed' AND NOT st.removed
        """
    }
}
