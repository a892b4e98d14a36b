import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryGovernance
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributarySegments
import TributarySyncs

/// Applies `migrations/` in order and then re-applies `sql/`, recording each migration in
/// `cdp.schema_migrations` with its SHA-256 checksum and how long it took.
///
/// Runs under a session advisory lock, so any number of processes may migrate at once: one applies, the others
/// wait and then find nothing to do. A migration that was changed after it was applied is refused.
public struct Migrator: Sendable {
    public let files: ProjectFiles
    let logger: Logger

    /// The advisory lock every migrating process takes.
    public static let lockKey = AdvisoryLockKey(name: "tributary.migrate")

    public init(files: ProjectFiles, logger: Logger) {
        self.files = files
        self.logger = logger
    }

    /// Where a migration stands.
    public enum State: Sendable, Equatable {
        case applied(at: Date, durationMilliseconds: Double)
        case pending
        /// Applied, but the file's checksum no longer matches the recorded one.
        case changed(recorded: String, current: String)
        /// Recorded in the database, with no file in this build (the database is newer than the code).
        case unknown(name: String)
    }

    public struct Entry: Sendable, Equatable {
        public let version: Int
        public let name: String
        public let state: State
    }

    /// What `migrate` did.
    public struct Report: Sendable {
        public var applied: [Migration] = []
        public var sqlFiles: [String] = []
        public var alreadyApplied = 0
        /// What bringing the stored identity rules up to this version's built-in ones did (`.unchanged` mostly).
        public var identityRules: IdentityAdmin.ApplyOutcome = .unchanged
        /// The layout of the tables (`.single` unless Citus or its stand-in).
        public var distribution: DistributionMode = .single
        /// What laying them out changed this time, one line per table.
        public var distributionChanges: [String] = []
    }

    /// Lists applied, pending, changed and unknown migrations, without changing anything.
    public func status(_ client: PostgresClient) async throws -> [Entry] {
        let migrations = try Migration.load(from: files.migrationsDirectory)
        let recorded = try await client.withConnection { try await recordedMigrations($0) }
        return compare(migrations, recorded)
    }

    /// Applies pending migrations, each in its own transaction, then every file of `sql/` in one transaction.
    ///
    /// `distribution` lays the tables out for Citus or its test stand-in (`Distributor`) between the two; `nil`
    /// keeps the layout the database has (Citus if the extension is installed and nothing was chosen before).
    @discardableResult
    public func migrate(_ client: PostgresClient, distribution: DistributionMode? = nil) async throws -> Report {
        let migrations = try Migration.load(from: files.migrationsDirectory)
        let sqlFiles = try loadSQLFiles()
        var report = try await client.withConnection { connection in
            try await connection.withAdvisoryLock(Self.lockKey) { connection in
                try await connection.script(Self.bootstrapSQL)
                let entries = compare(migrations, try await recordedMigrations(connection))
                try refuseInconsistencies(entries)
                var report = Report()
                for migration in migrations {
                    guard entries.first(where: { $0.version == migration.version })?.state == .pending else {
                        report.alreadyApplied += 1
                        continue
                    }
                    try await apply(migration, on: connection)
                    report.applied.append(migration)
                }
                report.distribution = try await Distributor.resolve(requested: distribution, on: connection)
                report.distributionChanges = try await Distributor(files: files, logger: logger)
                    .apply(report.distribution, on: connection).changes
                try await connection.withTransaction { tx in
                    for (name, sql) in sqlFiles {
                        do {
                            try await tx.script(sql)
                        } catch let error as PostgresError {
                            throw MigrationError(Self.describe(error, in: "sql/\(name)", sql: sql) + "; sql/ was left as it was")
                        }
                    }
                    // Generated views follow this version's generator (a new fixed column, say), compiled from the
                    // stored definitions; no stored SQL runs.
                    if try await tx.query("SELECT to_regclass('cdp.generated_views') IS NOT NULL").scalar(Bool.self) {
                        try await ProfileViews.refresh(tx, always: true)
                        try await AnalystViews.refreshProfiles(tx)
                    }
                }
                report.sqlFiles = sqlFiles.map(\.name)
                return report
            }
        }
        // Built-in identity rules of this version (new placeholder values, say) take effect on the graph.
        if try await client.query("SELECT to_regclass('cdp.identity_rules') IS NOT NULL").scalar(Bool.self) {
            report.identityRules = try await IdentityAdmin(client: client, logger: logger).upgradeStoredRules()
        }
        return report
    }

    private func apply(_ migration: Migration, on connection: PostgresConnection) async throws {
        logger.info("applying migration", metadata: ["migration": "\(migration.fileName)"])
        let started = ContinuousClock.now
        func record() -> PostgresQuery {
            let elapsed = ContinuousClock.now - started
            let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
            return """
                INSERT INTO cdp.schema_migrations (version, name, checksum, duration_ms)
                VALUES (\(migration.version), \(migration.name), \(migration.checksum), \(milliseconds))
                """
        }
        do {
            if migration.runsInTransaction {
                try await connection.withTransaction { tx in
                    try await tx.script(migration.sql)
                    try await tx.execute(record())
                }
            } else {
                try await connection.script(migration.sql)
                try await connection.execute(record())
            }
        } catch let error as PostgresError {
            let outcome = migration.runsInTransaction ? "nothing from it was applied" : "it ran without a transaction"
            throw MigrationError(Self.describe(error, in: "migration \(migration.fileName)", sql: migration.sql) + "; \(outcome)")
        }
    }

    private func refuseInconsistencies(_ entries: [Entry]) throws {
        for entry in entries {
            switch entry.state {
            case .changed(let recorded, let current):
                throw MigrationError(
                    "migration \(String(format: "%04d", entry.version))_\(entry.name).sql was changed after it was applied "
                        + "(recorded checksum \(recorded.prefix(12))…, file now \(current.prefix(12))…); released migrations "
                        + "are never edited: restore the file and put the change in a new migration")
            case .unknown(let name):
                throw MigrationError(
                    "the database has migration \(String(format: "%04d", entry.version))_\(name), which this build of "
                        + "Tributary does not have; run a newer Tributary against this database")
            default:
                continue
            }
        }
    }

    private func compare(_ migrations: [Migration], _ recorded: [Int: RecordedMigration]) -> [Entry] {
        var entries = migrations.map { migration -> Entry in
            guard let row = recorded[migration.version] else {
                return Entry(version: migration.version, name: migration.name, state: .pending)
            }
            if row.checksum != migration.checksum {
                return Entry(
                    version: migration.version, name: migration.name,
                    state: .changed(recorded: row.checksum, current: migration.checksum))
            }
            return Entry(
                version: migration.version, name: migration.name,
                state: .applied(at: row.appliedAt, durationMilliseconds: row.durationMilliseconds))
        }
        let known = Set(migrations.map(\.version))
        for (version, row) in recorded where !known.contains(version) {
            entries.append(Entry(version: version, name: row.name, state: .unknown(name: row.name)))
        }
        return entries.sorted { $0.version < $1.version }
    }

    struct RecordedMigration {
        var name: String
        var checksum: String
        var appliedAt: Date
        var durationMilliseconds: Double
    }

    private func recordedMigrations(_ connection: PostgresConnection) async throws -> [Int: RecordedMigration] {
        let exists = try await connection.query("SELECT to_regclass('cdp.schema_migrations') IS NOT NULL").scalar(Bool.self)
        guard exists else { return [:] }
        let rows = try await connection.query(
            "SELECT version, name, checksum, applied_at, duration_ms FROM cdp.schema_migrations ORDER BY version")
        var result: [Int: RecordedMigration] = [:]
        for row in rows {
            let (version, name, checksum, at, duration) = try row.decode((Int, String, String, Date, Double).self)
            result[version] = RecordedMigration(name: name, checksum: checksum, appliedAt: at, durationMilliseconds: duration)
        }
        return result
    }

    private func loadSQLFiles() throws -> [(name: String, sql: String)] {
        let directory = files.sqlDirectory
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return try names.filter { $0.hasSuffix(".sql") }.sorted().map {
            ($0, try Migration.readText(directory.appendingPathComponent($0)))
        }
    }

    /// "migration 0002_x.sql failed at line 7: relation "y" does not exist (SQLSTATE 42P01)"
    static func describe(_ error: PostgresError, in place: String, sql: String) -> String {
        var text = "\(place) failed"
        if let position = error.position {
            let prefix = sql.prefix(max(position - 1, 0))
            text += " at line \(prefix.reduce(1) { $1 == "\n" ? $0 + 1 : $0 })"
        }
        return text + ": \(error)"
    }

    /// Creates the history table; runs under the lock, before anything else.
    static let bootstrapSQL = """
        CREATE SCHEMA IF NOT EXISTS cdp;
        CREATE TABLE IF NOT EXISTS cdp.schema_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now(),
            duration_ms double precision NOT NULL,
            applied_by  text NOT NULL DEFAULT current_user
        );
        COMMENT ON TABLE cdp.schema_migrations IS
            'Tributary migrations applied to this database: one row per migrations/NNNN_name.sql, with its SHA-256';
        """
}
