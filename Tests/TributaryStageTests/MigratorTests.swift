import Foundation
import Logging
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryGovernance
@testable import TributaryIdentity
@testable import TributarySegments
@testable import TributaryService
@testable import TributarySyncs

/// The migration runner against real PostgreSQL, one fresh database per test.
@Suite struct MigratorTests {
    let shipped = ProjectFiles(root: TestDatabase.packageRoot)

    func migrator(_ files: ProjectFiles) -> Migrator { Migrator(files: files, logger: TestDatabase.logger) }

    @Test func appliesEverythingOnceAndRecordsChecksums() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let migrations = try Migration.load(from: shipped.migrationsDirectory)
            let first = try await migrator(shipped).migrate(client)
            #expect(first.applied.map(\.version) == migrations.map(\.version))
            #expect(!first.sqlFiles.isEmpty)
            let second = try await migrator(shipped).migrate(client)
            #expect(second.applied.isEmpty)
            #expect(second.alreadyApplied == migrations.count)

            let rows = try await client.query("SELECT version, checksum, duration_ms FROM cdp.schema_migrations ORDER BY version")
            #expect(rows.count == migrations.count)
            for (row, migration) in zip(rows, migrations) {
                let (version, checksum, duration) = try row.decode((Int, String, Double).self)
                #expect(version == migration.version)
                #expect(checksum == migration.checksum)
                #expect(duration >= 0)
            }
            let version = try await client.query("SELECT version FROM cdp.schema_version").scalar(Int.self)
            #expect(version == migrations.last!.version)
            let status = try await migrator(shipped).status(client)
            #expect(status.allSatisfy { if case .applied = $0.state { true } else { false } })
        }
    }

    @Test(.timeLimit(.minutes(6)))
    func concurrentMigrationsAreSafe() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let configuration = client.configuration
            let reports = try await withThrowingTaskGroup(of: Migrator.Report.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        let own = PostgresClient(configuration: configuration, logger: TestDatabase.logger)
                        defer { Task { await own.shutdown() } }
                        return try await Migrator(
                            files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger
                        )
                        .migrate(own)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let count = try Migration.load(from: shipped.migrationsDirectory).count
            #expect(reports.map(\.applied.count).reduce(0, +) == count, "each migration applied exactly once")
            #expect(try await client.query("SELECT count(*) FROM cdp.schema_migrations").scalar(Int.self) == count)
        }
    }

    @Test func aChangedMigrationIsRefused() async throws {
        let project = try TemporaryProject()
        try project.copyShippedFiles()
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await migrator(project.files).migrate(client)
            let path = "migrations/0001_foundation.sql"
            let original = try String(contentsOf: project.root.appendingPathComponent(path), encoding: .utf8)
            try project.write(path, original + "\n-- an edit after release\n")
            do {
                try await migrator(project.files).migrate(client)
                Issue.record("a changed migration must be refused")
            } catch let error as MigrationError {
                #expect(error.description.contains("0001_foundation.sql was changed after it was applied"))
                #expect(error.description.contains("new migration"))
            }
            let status = try await migrator(project.files).status(client)
            guard case .changed = status.first?.state else {
                Issue.record("status should show the change")
                return
            }
        }
    }

    @Test func aFailingMigrationNamesItsLineAndLeavesNothingBehind() async throws {
        let project = try TemporaryProject()
        try project.write("migrations/0001_ok.sql", "CREATE TABLE ok (id int);")
        try project.write("migrations/0002_bad.sql", "CREATE TABLE half (id int);\n\nSELECT nope FROM ok;\n")
        try await TestDatabase.withFreshDatabase { (client) async throws in
            do {
                try await migrator(project.files).migrate(client)
                Issue.record("a broken migration must fail")
            } catch let error as MigrationError {
                #expect(error.description.contains("migration 0002_bad.sql failed at line 3"))
                #expect(error.description.contains("42703"))
                #expect(error.description.contains("nothing from it was applied"))
            }
            #expect(try await client.query("SELECT to_regclass('ok') IS NOT NULL").scalar(Bool.self))
            #expect(try await client.query("SELECT to_regclass('half') IS NULL").scalar(Bool.self))
            #expect(try await client.query("SELECT array_agg(version) FROM cdp.schema_migrations").scalar([Int].self) == [1])
            // Fixed (it was never applied, so it may still change), it applies.
            try project.write("migrations/0002_bad.sql", "CREATE TABLE half (id int);\n")
            let report = try await migrator(project.files).migrate(client)
            #expect(report.applied.map(\.version) == [2])
        }
    }

    @Test func aDatabaseNewerThanTheCodeIsRefused() async throws {
        let project = try TemporaryProject()
        try project.write("migrations/0001_ok.sql", "CREATE TABLE ok (id int);")
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await migrator(project.files).migrate(client)
            try await client.execute(
                "INSERT INTO cdp.schema_migrations (version, name, checksum, duration_ms) VALUES (9, 'future', 'x', 1)")
            do {
                try await migrator(project.files).migrate(client)
                Issue.record("an unknown applied migration must be refused")
            } catch let error as MigrationError {
                #expect(error.description.contains("0009_future"))
            }
        }
    }

    @Test func sqlFilesAreReappliedAtomically() async throws {
        let project = try TemporaryProject()
        try project.write("migrations/0001_ok.sql", "CREATE TABLE ok (id int);")
        try project.write("sql/a.sql", "CREATE OR REPLACE VIEW v AS SELECT 1 AS n;")
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await migrator(project.files).migrate(client)
            try project.write("sql/a.sql", "CREATE OR REPLACE VIEW v AS SELECT 2 AS n;")
            try project.write("sql/b.sql", "CREATE OR REPLACE VIEW w AS SELECT * FROM missing_table;")
            do {
                try await migrator(project.files).migrate(client)
                Issue.record("a broken sql/ file must fail")
            } catch let error as MigrationError {
                #expect(error.description.contains("sql/b.sql failed"))
                #expect(error.description.contains("missing_table"))
            }
            #expect(try await client.query("SELECT n FROM v").scalar(Int.self) == 1)
            try project.remove("sql/b.sql")
            try await migrator(project.files).migrate(client)
            #expect(try await client.query("SELECT n FROM v").scalar(Int.self) == 2)
        }
    }

    @Test func noTransactionMigrationsCanBuildIndexesConcurrently() async throws {
        let project = try TemporaryProject()
        try project.write("migrations/0001_t.sql", "CREATE TABLE t (id int);")
        try project.write(
            "migrations/0002_index.sql", "-- tributary:no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n")
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let report = try await migrator(project.files).migrate(client)
            #expect(report.applied.count == 2)
            #expect(try await client.query("SELECT to_regclass('t_id') IS NOT NULL").scalar(Bool.self))
        }
    }
}
