import Foundation
import Postgres
import TributaryModel
import TributaryProfiles

/// `analyst.profiles`: the columns of `cdp.profiles` with personal data masked for the analyst role, generated from
/// the definition of `cdp.profiles` compiled now from the stored catalog and computed traits (no stored SQL is
/// executed). `traits` is masked by key; a typed column is masked when its name is a PII key at query time (a text or
/// jsonb column through `cdp.pii_mask`, any other type becomes NULL); `cdp.pii_keys` says which keys and whether the
/// reader may see them (`tributary_pii`).
public enum AnalystViews {
    /// The fixed columns of `cdp.profiles` that hold no personal data and pass through unmasked.
    static let plainColumns: Set<String> = [
        "profile_id", "computed_traits", "first_seen_at", "last_seen_at", "event_count", "updated_at",
    ]

    /// (Re)creates `analyst.profiles` after `cdp.profiles` (run in the same transaction), and grants the analyst
    /// views to `tributary_analyst` if that role exists.
    public static func refreshProfiles(_ db: PostgresConnection) async throws {
        let source = try await ProfileViews.storedDefinition(db)
        let traits = try await db.query("SELECT cdp.pii_mask_object_sql('p.traits')").scalar(String.self)
        let columns = try await db.query(
            """
            SELECT a.attname::text, a.atttypid = 'text'::regtype, a.atttypid = 'jsonb'::regtype
            FROM pg_attribute AS a
            WHERE a.attrelid = 'cdp.profiles'::regclass AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """
        ).map { try $0.decode((String, Bool, Bool).self) }
        let expressions = columns.map { name, isText, isJSON -> PostgresQuery in
            let column: PostgresQuery = "p.\(identifier: name)"
            let alias: PostgresQuery = "\(identifier: name)"
            // The masking expression of traits, written by cdp.pii_mask_object_sql (program text).
            if name == "traits" { return "\(unescaped: traits) AS traits" }
            if plainColumns.contains(name) { return column }
            let visible: PostgresQuery = "k.visible OR NOT (\(name) = ANY (k.keys))"
            if isText { return "CASE WHEN \(visible) THEN \(column) ELSE cdp.pii_mask(\(column)) END AS \(alias)" }
            if isJSON { return "CASE WHEN \(visible) THEN \(column) ELSE cdp.pii_mask_json(\(column)) END AS \(alias)" }
            return "CASE WHEN \(visible) THEN \(column) END AS \(alias)"
        }
        try await ProfileViews.createView(
            "analyst.profiles",
            "SELECT \(PostgresQuery.joined(expressions)) FROM (\(source)) AS p CROSS JOIN cdp.pii_keys AS k",
            comment: "Tributary: cdp.profiles with PII trait keys and PII typed columns masked (unless tributary_pii)", db)
        try await db.execute("SELECT cdp.grant_analyst_views()")
    }
}
