import Foundation
import Logging
import Postgres
import TributaryModel

/// Upserts into a PostgreSQL table, in the Tributary database or another one (`url`).
///
/// Settings: `table` (required, `name` or `schema.name`), `url` (a connection string, or `env:NAME`; default: the
/// Tributary database), `create` (default true: create the table when missing, with the key columns as `text` and
/// every field as `jsonb`, primary key on the key columns). An existing table needs a unique constraint on the key
/// columns; values are converted to its column types (`jsonb_to_recordset`). Operations: upsert and add →
/// `INSERT … ON CONFLICT DO UPDATE`; insert → `ON CONFLICT DO NOTHING`; update → `UPDATE`; delete and remove →
/// `DELETE`. A batch is one transaction; when PostgreSQL refuses a value, the batch is written row by row so only the
/// bad rows are rejected (with PostgreSQL's message).
public final class TableDestination: Destination, @unchecked Sendable {
    let client: PostgresClient
    let ownsClient: Bool
    let schema: String?
    let table: String
    let create: Bool
    private var columns: [(name: String, type: String)]?
    private let lock = NSLock()

    public var maxBatchSize: Int { 5_000 }

    init(client: PostgresClient, ownsClient: Bool, schema: String?, table: String, create: Bool) {
        self.client = client
        self.ownsClient = ownsClient
        self.schema = schema
        self.table = table
        self.create = create
    }

    public static func validate(_ settings: JSONValue) throws {
        guard case .string(let table)? = settings["table"], !table.isEmpty else {
            throw SyncError("destination.table: required, NAME or SCHEMA.NAME")
        }
        if table.split(separator: ".", omittingEmptySubsequences: false).count > 2 || table.hasPrefix(".") || table.hasSuffix(".")
        {
            throw SyncError("destination.table: '\(table)' is not NAME or SCHEMA.NAME")
        }
        if let create = settings["create"], create != .null {
            guard case .bool = create else { throw SyncError("destination.create: must be true or false") }
        }
        if let unknown = settings.objectKeys.first(where: { !["type", "table", "url", "create"].contains($0) }) {
            throw SyncError("destination.\(unknown): unknown setting for a postgres destination (table, url, create)")
        }
    }

    public static func make(_ context: DestinationContext) async throws -> TableDestination {
        try validate(context.settings)
        let parts = try context.string("table")!.split(separator: ".").map(String.init)
        let create: Bool = if case .bool(let flag)? = context.settings["create"] { flag } else { true }
        if let url = try context.string("url", required: false) {
            let configuration = try PostgresConfiguration(connectionString: url)
            let client = PostgresClient(configuration: configuration, options: .init(maxConnections: 1), logger: context.logger)
            return TableDestination(
                client: client, ownsClient: true, schema: parts.count == 2 ? parts[0] : nil, table: parts.last!, create: create)
        }
        guard let client = context.client else { throw SyncError("destination: no database to write to") }
        return TableDestination(
            client: client, ownsClient: false, schema: parts.count == 2 ? parts[0] : nil, table: parts.last!, create: create)
    }

    var qualified: String {
        get throws { try schema.map { try SQLQuoting.qualified($0, table) } ?? SQLQuoting.identifier(table) }
    }

    /// The table's columns and types, creating the table from the first batch's shape if needed.
    private func columns(for sample: SyncChange, _ db: PostgresConnection) async throws -> [(name: String, type: String)] {
        if let columns = lock.withLock({ self.columns }) { return columns }
        let name = try qualified
        func load() async throws -> [(String, String)] {
            try await db.query(
                """
                SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a
                WHERE a.attrelid = to_regclass(\(name)) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
                """
            ).map { try $0.decode((String, String).self) }
        }
        var found = try await load()
        if found.isEmpty {
            guard create else {
                throw DestinationError("the table \(name) does not exist (set \"create\": true to create it)", retryable: false)
            }
            let keys = sample.key.objectKeys
            let fields = sample.fields.objectKeys.filter { !keys.contains($0) }
            let definitions =
                try keys.map { "\(try SQLQuoting.identifier($0)) text NOT NULL" }
                + fields.map { "\(try SQLQuoting.identifier($0)) jsonb" }
            try await db.execute(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE TABLE IF NOT EXISTS \(name) (\(definitions.joined(separator: ", ")), \
                        PRIMARY KEY (\(try keys.map(SQLQuoting.identifier).joined(separator: ", "))))
                        """))
            found = try await load()
        }
        let result = found.map { (name: $0.0, type: $0.1) }
        lock.withLock { self.columns = result }
        return result
    }

    public func send(_ batch: [SyncChange]) async throws -> [ChangeResult] {
        do {
            return try await client.withConnection { db in
                let columns = try await columns(for: batch[0], db)
                do {
                    try await db.withTransaction { tx in try await write(batch, columns: columns, tx) }
                    return Array(repeating: .delivered, count: batch.count)
                } catch let error as PostgresError
                    where error.kind == .server && ["22", "23"].contains(error.sqlState.map { String($0.code.prefix(2)) } ?? "")
                {
                    // A value PostgreSQL refuses: find the rows, one transaction each.
                    var results: [ChangeResult] = []
                    for change in batch {
                        do {
                            try await db.withTransaction { tx in try await write([change], columns: columns, tx) }
                            results.append(.delivered)
                        } catch let error as PostgresError where error.kind == .server {
                            results.append(.rejected(error.message))
                        }
                    }
                    return results
                }
            }
        } catch let error as PostgresError {
            throw DestinationError("writing \((try? qualified) ?? table): \(error.message)", retryable: error.kind != .server)
        }
    }

    private func write(_ batch: [SyncChange], columns: [(name: String, type: String)], _ tx: PostgresConnection) async throws {
        let name = try qualified
        let keys = batch[0].key.objectKeys
        let known = Set(columns.map(\.name))
        for key in keys where !known.contains(key) {
            throw DestinationError("the table \(name) has no column \(key) for the primary key", retryable: false)
        }
        let used = columns.filter { column in keys.contains(column.name) || batch.contains { $0.fields[column.name] != nil } }
        let recordType = try used.map { "\(try SQLQuoting.identifier($0.name)) \($0.type)" }.joined(separator: ", ")
        let list = try used.map { try SQLQuoting.identifier($0.name) }.joined(separator: ", ")
        let keyList = try keys.map(SQLQuoting.identifier).joined(separator: ", ")
        let updates = try used.filter { !keys.contains($0.name) }.map {
            "\(try SQLQuoting.identifier($0.name)) = excluded.\(try SQLQuoting.identifier($0.name))"
        }
        let keyMatch = try keys.map { "t.\(try SQLQuoting.identifier($0)) = r.\(try SQLQuoting.identifier($0))" }.joined(
            separator: " AND ")
        for operation in SyncOperation.allCases {
            let rows = batch.filter { $0.operation == operation }
            guard !rows.isEmpty else { continue }
            let records = JSONValue.array(
                rows.map { change in
                    // Key columns first, then the fields (a field named like a key column does not override the key).
                    .object(change.key.objectMembers + change.fields.objectMembers.filter { !keys.contains($0.0) })
                }
            ).serialized
            let source: PostgresQuery = "jsonb_to_recordset(\(records)::jsonb) AS r (\(unescaped: recordType))"
            let query: PostgresQuery
            let target = "\(name) AS t"
            switch operation {
            case .upsert, .add:
                let conflict = updates.isEmpty ? "DO NOTHING" : "DO UPDATE SET \(updates.joined(separator: ", "))"
                query = """
                    INSERT INTO \(unescaped: target) (\(unescaped: list)) SELECT \(unescaped: list) FROM \(source) \
                    ON CONFLICT (\(unescaped: keyList)) \(unescaped: conflict)
                    """
            case .insert:
                query = """
                    INSERT INTO \(unescaped: target) (\(unescaped: list)) SELECT \(unescaped: list) FROM \(source) \
                    ON CONFLICT (\(unescaped: keyList)) DO NOTHING
                    """
            case .update:
                let sets = try used.filter { !keys.contains($0.name) }.map {
                    "\(try SQLQuoting.identifier($0.name)) = r.\(try SQLQuoting.identifier($0.name))"
                }
                if sets.isEmpty { continue }
                query = """
                    UPDATE \(unescaped: target) SET \(unescaped: sets.joined(separator: ", ")) FROM \(source) \
                    WHERE \(unescaped: keyMatch)
                    """
            case .delete, .remove:
                query = "DELETE FROM \(unescaped: target) USING \(source) WHERE \(unescaped: keyMatch)"
            }
            try await tx.execute(query)
        }
    }

    public func close() async {
        if ownsClient { await client.shutdown() }
    }
}
