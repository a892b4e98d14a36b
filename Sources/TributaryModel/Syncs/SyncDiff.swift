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
    /// For a real-time sync: the segment's members query (`cdp.segment_definitions.members_sql`), its source.
    public let membersSQL: String?
    /// Only these profiles are compared (bound as `$2`, a `uuid[]`): a real-time sync following a few changes.
    public let restricted: Bool
    /// Only these keys are compared (bound as `$2`, a `text[]` of key texts as `cdp.sync_state.key` holds them): a
    /// replay of some rows.
    public let keyed: Bool

    public init(_ sync: SyncDefinition, membersSQL: String? = nil, restricted: Bool = false, keyed: Bool = false) {
        precondition(!(restricted && keyed), "a diff is restricted to profiles or to keys, not both")
        self.sync = sync
        self.membersSQL = membersSQL
        self.restricted = restricted
        self.keyed = keyed
    }

    /// The source as a subquery.
    public func sourceSQL() throws -> String {
        if let membersSQL {
            return restricted ? "SELECT * FROM (\(membersSQL)) AS m WHERE m.profile_id = ANY($2::uuid[])" : membersSQL
        }
        switch sync.source {
        case .segment(let name): return "SELECT * FROM \(try Segment.view(name))"
        case .relation(let schema, let name):
            return "SELECT * FROM \(try schema.map { try SQLQuoting.qualified($0, name) } ?? SQLQuoting.identifier(name))"
        case .query(let text): return text
        }
    }

    /// `key` (JSON array text of the key columns), `hash` (of the mapped columns, typed: `hash_record_extended`),
    /// `consented` (the profile granted every purpose of the sync; true without purposes) and `r` (the source row) of
    /// each source row with no NULL in its key. The jsonb of the key and fields is built later, for changed rows only.
    ///
    /// The hash is seeded with the field mapping, so changing a mapping or a transform sends every row again.
    public func keyedSourceSQL() throws -> String {
        let keys = try sync.primaryKey.map { "s.\(try SQLQuoting.identifier($0))" }
        let hashed =
            try sync.fields.map { fields in
                "ROW(\(try fields.map { "s.\(try SQLQuoting.identifier($0.column))" }.joined(separator: ", ")))"
            } ?? "s"
        var consented = "true", consentJoin = ""
        if !sync.purposes.isEmpty {
            let purposes = try sync.purposes.map(SQLQuoting.literal).joined(separator: ", ")
            consented = "c.profile_id IS NOT NULL"
            consentJoin = """

                LEFT JOIN (
                    SELECT profile_id FROM cdp.profile_consent WHERE granted AND purpose IN (\(purposes))
                    GROUP BY profile_id HAVING count(*) = \(sync.purposes.count)
                ) AS c ON c.profile_id = s.\(try SQLQuoting.identifier(sync.profileColumn))::uuid
                """
        }
        return """
            SELECT jsonb_build_array(\(keys.joined(separator: ", ")))::text AS key, hash_record_extended(\(hashed), \(hashSeed)) AS hash,
                   \(consented) AS consented, s AS r
            FROM (\(try sourceSQL())) AS s\(consentJoin)
            WHERE \(keys.map { "\($0) IS NOT NULL" }.joined(separator: " AND "))\(keyed ? "\n  AND jsonb_build_array(\(keys.joined(separator: ", ")))::text = ANY($2::text[])" : "")
            """
    }

    /// A 64-bit seed derived from the field mapping (0 without one).
    var hashSeed: Int64 {
        guard let fields = sync.fields else { return 0 }
        let spec = fields.map { "\($0.name)\u{0}\($0.column)\u{0}\($0.transform?.rawValue ?? "")" }.joined(separator: "\u{1}")
        return Int64(bitPattern: UInt64(sha256Hex(Data(spec.utf8), bytes: 8), radix: 16)!)
    }

    /// A field's value as sent: the column, hashed or masked as the mapping says.
    static func fieldSQL(_ field: SyncDefinition.Field) throws -> String {
        let column = "(src.r).\(try SQLQuoting.identifier(field.column))"
        // to_jsonb(…) #>> '{}' is the column's plain text whatever its type (a jsonb string without its quotes).
        let text = "to_jsonb(\(column)) #>> '{}'"
        return switch field.transform {
        case nil: column
        case .hash?: "cdp.pii_hash(\(text), 'text')"
        case .hashEmail?: "cdp.pii_hash(\(text), 'email')"
        case .hashPhone?: "cdp.pii_hash(\(text), 'phone')"
        case .mask?: "cdp.pii_mask(\(text))"
        }
    }

    /// The key's jsonb object and the mapped fields' jsonb, of the source row `src.r`.
    func jsonSQL() throws -> (key: String, payload: String) {
        let keyObject = try sync.primaryKey.map { "\(try SQLQuoting.literal($0)), (src.r).\(try SQLQuoting.identifier($0))" }
        let payload: String
        if let fields = sync.fields {
            let pairs = try fields.map { "\(try SQLQuoting.literal($0.name)), \(try Self.fieldSQL($0))" }
            // jsonb_build_object takes at most 100 arguments.
            payload = stride(from: 0, to: pairs.count, by: 40)
                .map { "jsonb_build_object(\(pairs[$0..<min($0 + 40, pairs.count)].joined(separator: ", ")))" }
                .joined(separator: " || ")
        } else {
            payload = "to_jsonb(src.r)"
        }
        return ("jsonb_build_object(\(keyObject.joined(separator: ", ")))", payload)
    }

    /// Fills `pg_temp.tributary_sync_diff` with the rows to send in this sync's mode; `$1` is the sync's name.
    ///
    /// The source is compared with what is known of the destination: the confirmed state (`cdp.sync_state`, only key
    /// and hash are read) and changes sent but not confirmed (`cdp.sync_pending`, few rows). A row with a pending
    /// change is always sent again (the destination may hold the unconfirmed value even if the source went back to the
    /// confirmed one). Removed rows get their key and fields from the state afterwards (``removedFieldsSQL``).
    ///
    /// A source row whose profile does not consent to the sync's purposes counts as absent, except that it is sent
    /// as `withdrawn` (a removal in every mode) if the destination may hold it.
    public func insertSQL() throws -> String {
        let join = sync.tracksRemovals ? "FULL JOIN" : "LEFT JOIN"
        var present = "(st.key IS NULL OR st.removed OR st.hash IS DISTINCT FROM src.hash OR p.key IS NOT NULL)"
        if sync.mode == .insert { present += " AND (st.key IS NULL OR st.removed)" }
        // Absent (removed, or consent withdrawn): only what the destination may hold is sent.
        let absent = "NOT coalesce(st.removed, true) OR p.key IS NOT NULL"
        let (keyObject, payload) = try jsonSQL()
        // Restricted: the state of those profiles' keys only.
        let keys =
            restricted
            ? " AND key = ANY(ARRAY(SELECT jsonb_build_array(x)::text FROM unnest($2::uuid[]) AS x))"
            : keyed ? " AND key = ANY($2::text[])" : ""
        return """
            INSERT INTO pg_temp.tributary_sync_diff (kind, key, key_object, payload, hash, previous_run, pending_hash, pending_operation, pending_key)
            SELECT CASE WHEN src.key IS NULL THEN 'removed' WHEN NOT src.consented THEN 'withdrawn'
                        WHEN st.key IS NULL OR st.removed THEN 'added' ELSE 'changed' END,
                   coalesce(src.key, st.key, p.key),
                   CASE WHEN src.key IS NOT NULL THEN \(keyObject) END,
                   CASE WHEN src.key IS NOT NULL THEN \(payload) END,
                   coalesce(src.hash, st.hash, p.hash), coalesce(st.run_id, 0), p.hash, p.operation, p.idempotency_key
            FROM (
            \(try keyedSourceSQL())
            ) AS src
            \(join) (SELECT key, hash, removed, run_id FROM cdp.sync_state WHERE sync = $1\(keys)) AS st ON st.key = src.key
            \(join) (SELECT key, hash, operation, idempotency_key FROM cdp.sync_pending WHERE sync = $1\(keys)) AS p
                ON p.key = coalesce(src.key, st.key)
            WHERE CASE WHEN src.key IS NULL OR NOT src.consented THEN \(absent)
                       ELSE \(present) END
            """
    }

    /// ``insertSQL()`` with its parameters: the sync's name, and for a restricted diff the profiles compared (for a
    /// keyed one the keys). The statement the runner executes; the diff's placeholders and their values are decided
    /// here, in one place.
    public func insertStatement(profiles: [UUID], keys: [String] = []) throws -> PostgresQuery {
        var binds = [try sync.name.postgresBind()]
        if restricted { binds.append(try profiles.postgresBind()) }
        if keyed { binds.append(try keys.postgresBind()) }
        return PostgresQuery(unsafeSQL: try insertSQL(), binds: binds)
    }

    /// ``removedFieldsSQL`` with the sync's name bound.
    public func removedFieldsStatement() throws -> PostgresQuery {
        PostgresQuery(unsafeSQL: Self.removedFieldsSQL, binds: [try sync.name.postgresBind()])
    }

    /// Fills in the key and fields of removed and withdrawn rows: what was last sent (pending), else last confirmed.
    package static let removedFieldsSQL = """
        UPDATE pg_temp.tributary_sync_diff AS d
        SET key_object = coalesce(p.key_object, st.key_object), payload = coalesce(p.payload, st.payload)
        FROM pg_temp.tributary_sync_diff AS r
        LEFT JOIN cdp.sync_state AS st ON st.sync = $1 AND st.key = r.key
        LEFT JOIN cdp.sync_pending AS p ON p.sync = $1 AND p.key = r.key
        WHERE r.kind IN ('removed', 'withdrawn') AND d.n = r.n
        """

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
    /// can remove identifiers that changed; `$1` is the sync's name.
    package static let previousPayloadSQL = """
        UPDATE pg_temp.tributary_sync_diff AS d SET previous_payload = st.payload
        FROM cdp.sync_state AS st
        WHERE st.sync = $1 AND st.key = d.key AND d.kind = 'changed' AND NOT st.removed
        """

    /// ``previousPayloadSQL`` with the sync's name bound.
    public func previousPayloadStatement() throws -> PostgresQuery {
        PostgresQuery(unsafeSQL: Self.previousPayloadSQL, binds: [try sync.name.postgresBind()])
    }
}
