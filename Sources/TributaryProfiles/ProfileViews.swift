import Foundation
import Postgres
import TributaryModel

/// Generates `cdp.profiles`: the fixed columns of the analyst contract plus one typed column per catalog trait and
/// per computed trait, read from the jsonb with functions that give NULL (never an error) for a value of another type.
public enum ProfileViews {
    /// The columns every version of `cdp.profiles` starts with.
    public static let fixedColumns = [
        "profile_id", "traits", "computed_traits", "first_seen_at", "last_seen_at", "event_count", "updated_at",
    ]

    /// The SELECT defining `cdp.profiles` for this catalog and these computed traits (trait keys and names are binds;
    /// the view is created from ``PostgresQuery/inlined()``).
    public static func definition(catalog: Catalog?, computed: ComputedTraitDefinitions?) throws -> PostgresQuery {
        var columns: [PostgresQuery] = [
            "p.profile_id",
            "coalesce(d.traits, '{}'::jsonb) AS traits",
            "coalesce(d.computed, '{}'::jsonb) AS computed_traits",
            "d.first_seen_at",
            "d.last_seen_at",
            "coalesce(d.event_count, 0) AS event_count",
            "d.updated_at",
        ]
        var owners: [String: String] = Dictionary(uniqueKeysWithValues: fixedColumns.map { ($0, "a built-in column") })
        func add(_ column: String, _ expression: PostgresQuery, owner: String) throws {
            if let other = owners[column] {
                throw ProfileError(
                    "\(owner) would be the column '\(column)' of cdp.profiles, which is already \(other); give one of them another name"
                )
            }
            owners[column] = owner
            columns.append("\(expression) AS \(identifier: column)")
        }
        for key in (catalog?.traits.keys).map({ $0.sorted() }) ?? [] {
            guard let type = catalog?.traitType(key), let column = catalog?.columnName(forTrait: key) else { continue }
            try add(column, typed("d.traits -> \(key)", type), owner: "catalog trait '\(key)'")
        }
        if let computed {
            for trait in computed.computedTraits {
                let value: PostgresQuery = "d.computed -> \(trait.name)"
                let expression = trait.valueType(catalog: catalog).map { typed(value, $0) } ?? "nullif(\(value), 'null'::jsonb)"
                try add(trait.name, expression, owner: "computed trait '\(trait.name)'")
            }
            if computed.rfm.enabled {
                for name in RFMSettings.traitNames {
                    let value: PostgresQuery = "d.computed -> \(name)"
                    try add(name, name == "rfm_score" ? typed(value, .string) : "cdp.jsonb_bigint(\(value))::int", owner: "RFM")
                }
            }
        }
        // Predictive traits through LEFT JOINs on unique keys: a query that reads none of their columns does not join
        // (PostgreSQL removes such joins), one that filters on them joins once instead of probing per row.
        var joins: [PostgresQuery] = []
        for trait in computed?.predictions ?? [] {
            let owner = "predictive trait '\(trait.name)'"
            switch trait.source {
            case .customerBase(let column):
                if !joins.contains(Self.customerBaseJoin) { joins.append(Self.customerBaseJoin) }
                try add(trait.name, "cb.\(identifier: column)", owner: owner)
            case .propensity(let name):
                let alias = PostgresQuery(unsafeSQL: "pr\(joins.count)")
                joins.append(
                    "LEFT JOIN cdp.profile_propensities AS \(alias) ON \(alias).profile_id = p.profile_id AND \(alias).name = \(name)"
                )
                try add(trait.name, "\(alias).probability", owner: owner)
            case .recommendations(let top):
                joins.append("LEFT JOIN cdp.profile_recommendation_lists AS rl ON rl.profile_id = p.profile_id")
                try add(
                    trait.name,
                    "coalesce(rl.product_ids[1:\(unescaped: String(top))], \(unescaped: PredictionSource.popularSQL(top: top)))",
                    owner: owner)
            }
        }
        return """

            SELECT \(PostgresQuery.joined(columns, separator: ",\n       "))
            FROM cdp.identity_profiles AS p
            LEFT JOIN cdp.profile_data AS d ON d.profile_id = p.profile_id
            \(PostgresQuery.joined(joins.map { "\($0)\n" as PostgresQuery }, separator: ""))
            """
    }

    static let customerBaseJoin: PostgresQuery = "LEFT JOIN cdp.profile_predictions AS cb ON cb.profile_id = p.profile_id"

    /// A jsonb expression read as a column of `type`.
    static func typed(_ value: PostgresQuery, _ type: ValueType) -> PostgresQuery {
        switch type {
        case .string: "cdp.jsonb_text(\(value))"
        case .integer: "cdp.jsonb_bigint(\(value))"
        case .double: "cdp.jsonb_float8(\(value))"
        case .boolean: "cdp.jsonb_boolean(\(value))"
        case .timestamp: "cdp.jsonb_timestamptz(\(value))"
        case .object: "CASE WHEN jsonb_typeof(\(value)) = 'object' THEN \(value) END"
        case .array: "CASE WHEN jsonb_typeof(\(value)) = 'array' THEN \(value) END"
        }
    }

    /// The definition of `cdp.profiles` for the catalog and computed trait definitions stored in the database,
    /// compiled now (never read back from stored SQL).
    public static func storedDefinition(_ db: PostgresConnection) async throws -> PostgresQuery {
        let catalog = try await ProfileConfig.catalog(db)
        let computed = try await ProfileConfig.load(ComputedTraitDefinitions.self, "computed_traits", db)
        return try definition(catalog: catalog, computed: computed)
    }

    /// Regenerates `cdp.profiles` from the catalog and computed trait definitions stored in the database; run inside
    /// the transaction that stores either, so a definition that cannot become a view is refused as a whole. The
    /// view is created from the definition compiled here; `cdp.generated_views` keeps its text as a record (what
    /// changed, and when), never executed. With `always` (every migrate) the view is created even when the
    /// definition did not change (this version's generator, say, adds a fixed column).
    public static func refresh(_ db: PostgresConnection, always: Bool = false) async throws {
        let definition = try await storedDefinition(db)
        let sql = try definition.inlined().sql
        let changed = try await db.execute(
            """
            INSERT INTO cdp.generated_views (name, definition) VALUES ('cdp.profiles', \(sql))
            ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at
            WHERE cdp.generated_views.definition <> excluded.definition
            """)
        if (changed ?? 0) > 0 || always {
            try await createView(
                "cdp.profiles", definition,
                comment:
                    "Tributary: one row per profile: merged traits (jsonb), computed traits (jsonb), first/last seen, event count, and typed columns for catalog traits, computed traits and predictive traits",
                db)
        }
    }

    /// `CREATE OR REPLACE VIEW name AS select`, or, when its columns changed in a way `OR REPLACE` cannot follow (a
    /// column removed, renamed or retyped), the view dropped and created again; then its comment. `name` is a
    /// schema-qualified name written by Tributary (not user input); `select` is compiled SQL, its binds inlined as
    /// literals (a view takes no parameters). Runs in the caller's transaction (a savepoint isolates the first attempt).
    public static func createView(
        _ name: String, _ select: PostgresQuery, comment: String, _ db: PostgresConnection
    ) async throws {
        let statement = try ("VIEW \(unescaped: name) AS \(select)" as PostgresQuery).inlined().sql
        try await db.execute("SAVEPOINT tributary_view")
        do {
            try await db.execute(PostgresQuery(unsafeSQL: "CREATE OR REPLACE " + statement))
            try await db.execute("RELEASE SAVEPOINT tributary_view")
        } catch let error as PostgresError
            where [SQLState("42P16"), SQLState("0A000"), SQLState("42804")].contains(error.sqlState)
        {
            // invalid_table_definition, feature_not_supported, datatype_mismatch: the columns changed.
            try await db.execute("ROLLBACK TO SAVEPOINT tributary_view")
            try await db.execute(PostgresQuery(unsafeSQL: "DROP VIEW IF EXISTS \(name)"))
            try await db.execute(PostgresQuery(unsafeSQL: "CREATE " + statement))
        }
        try await db.execute("COMMENT ON VIEW \(unescaped: name) IS \(literal: comment)")
    }
}

/// The configuration documents of `cdp.profile_config` (the catalog, the computed trait definitions).
public enum ProfileConfig {
    /// The stored document `name` as JSON text; nil if none was applied.
    static func document(_ name: String, _ db: PostgresConnection) async throws -> String? {
        try await db.query("SELECT document::text FROM cdp.profile_config WHERE name = \(name)").first?[0].decode(String.self)
    }

    /// The typed catalog in force (read as `tributary catalog apply` reads a file); nil if none was applied.
    public static func catalog(_ db: PostgresConnection) async throws -> Catalog? {
        try await document("catalog", db).map { try Catalog.parse(Data($0.utf8)) }
    }

    /// The stored document `name`, decoded; nil if none was applied.
    public static func load<T: Decodable>(_ type: T.Type, _ name: String, _ db: PostgresConnection) async throws -> T? {
        guard let text = try await document(name, db) else { return nil }
        do {
            return try JSONValueDecoder().decode(T.self, from: Data(text.utf8))
        } catch let error as DecodingError {
            throw ProfileError("the stored \(name) cannot be read: \(describe(error)); apply it again")
        }
    }

    /// Stores `document` as `name`; returns false if the same document was already in force.
    @discardableResult
    public static func store(_ name: String, json: Data, _ db: PostgresConnection) async throws -> Bool {
        let text = String(decoding: json, as: UTF8.self)
        let checksum = sha256Hex(json)
        let stored = try await db.execute(
            """
            INSERT INTO cdp.profile_config (name, document, checksum) VALUES (\(name), \(text)::jsonb, \(checksum))
            ON CONFLICT (name) DO UPDATE SET document = excluded.document, checksum = excluded.checksum, applied_at = excluded.applied_at
            WHERE cdp.profile_config.checksum <> excluded.checksum
            """)
        return (stored ?? 0) > 0
    }
}
