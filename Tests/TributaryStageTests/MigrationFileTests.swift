import Foundation
import Testing
@testable import TributaryService

/// Migration files, read and checked without a database.
@Suite struct MigrationFileTests {
    @Test func namesFollowTheConvention() throws {
        let migration = try Migration(fileName: "0042_add_events.sql", sql: "SELECT 1;")
        #expect(migration.version == 42)
        #expect(migration.name == "add_events")
        #expect(migration.runsInTransaction)
        for bad in ["42_x.sql", "00042_x.sql", "abcd_x.sql", "0001_.sql", "0001x.sql", "0001_x y.sql", "0001_x.SQL"] {
            #expect(throws: MigrationError.self, "\(bad) must be refused") { try Migration(fileName: bad, sql: "") }
        }
    }

    @Test func checksumIsSHA256AndIgnoresLineEndings() throws {
        #expect(Migration.checksum(of: "") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Migration.checksum(of: "a\r\nb\r\n") == Migration.checksum(of: "a\nb\n"))
        #expect(Migration.checksum(of: "a\nb\n") != Migration.checksum(of: "a\nb \n"))
    }

    @Test func noTransactionMarker() throws {
        let migration = try Migration(fileName: "0002_index.sql", sql: "-- tributary:no-transaction\nCREATE INDEX CONCURRENTLY …")
        #expect(!migration.runsInTransaction)
    }

    @Test func loadingSortsAndRefusesDuplicateVersions() throws {
        let directory = try TemporaryProject()
        try directory.write("migrations/0002_b.sql", "SELECT 2;")
        try directory.write("migrations/0001_a.sql", "SELECT 1;")
        try directory.write("migrations/README.md", "not a migration")
        #expect(try Migration.load(from: directory.files.migrationsDirectory).map(\.version) == [1, 2])
        try directory.write("migrations/0002_c.sql", "SELECT 3;")
        #expect(throws: MigrationError.self) { try Migration.load(from: directory.files.migrationsDirectory) }
    }

    @Test func theShippedMigrationsLoad() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let migrations = try Migration.load(from: root.appendingPathComponent("migrations"))
        #expect(migrations.first?.version == 1)
        #expect(Set(migrations.map(\.version)).count == migrations.count)
    }
}

/// A temporary directory laid out like a Tributary checkout (migrations/ and sql/), removed on deinit.
final class TemporaryProject {
    let root: URL
    var files: ProjectFiles { ProjectFiles(root: root) }

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("tributary-project-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("migrations"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: root.appendingPathComponent("sql"), withIntermediateDirectories: true)
    }

    func write(_ path: String, _ text: String) throws {
        try text.write(to: root.appendingPathComponent(path), atomically: true, encoding: .utf8)
    }

    func remove(_ path: String) throws {
        try FileManager.default.removeItem(at: root.appendingPathComponent(path))
    }

    /// Copies the real migrations/ and sql/ in.
    func copyShippedFiles() throws {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        for directory in ["migrations", "sql"] {
            for file in try FileManager.default.contentsOfDirectory(atPath: source.appendingPathComponent(directory).path) {
                try FileManager.default.copyItem(
                    at: source.appendingPathComponent("\(directory)/\(file)"),
                    to: root.appendingPathComponent("\(directory)/\(file)"))
            }
        }
    }

    deinit { try? FileManager.default.removeItem(at: root) }
}
