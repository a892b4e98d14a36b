import Foundation
import Logging
import Postgres

/// Real PostgreSQL for tests: the server named by `DATABASE_URL`/`PG*` if set, otherwise an embedded server
/// started with the same launcher the `tributary` command uses (data under `.tributary/test-pgdata`, or
/// `TRIBUTARY_TEST_PGDATA`). Each test gets a database of its own, dropped afterwards.
///
/// ```swift
/// @Test func roundTrip() async throws {
///     try await TestDatabase.withFreshDatabase { client in
///         #expect(try await client.query("SELECT 1").scalar(Int.self) == 1)
///     }
/// }
/// ```
public enum TestDatabase {
    /// The package's root directory (holding Package.swift, migrations/ and sql/).
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A logger that stays quiet unless `TRIBUTARY_TEST_LOG` names a level.
    public static var logger: Logger {
        var logger = Logger(label: "tributary.tests")
        logger.logLevel =
            ProcessInfo.processInfo.environment["TRIBUTARY_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        return logger
    }

    private static let shared = SharedServer()

    /// The configuration of the server tests use, starting the embedded one on first use.
    public static func serverConfiguration() async throws -> PostgresConfiguration {
        try await shared.configuration()
    }

    /// Creates an empty database, runs `body` with a client connected to it, then drops the database.
    public static func withFreshDatabase<T>(
        maxConnections: Int = 4,
        _ body: (PostgresClient) async throws -> T
    ) async throws -> T {
        let server = try await serverConfiguration()
        let name = "test_\(getpid())_\(UUID().uuidString.prefix(8).lowercased())"
        // The admin connection is held only to create and to drop: with every test in flight holding one, a parallel
        // run used more than half of the server's connections for idle admin sessions.
        try await PostgresConnection.withConnection(configuration: server.with(database: "postgres"), logger: logger) {
            try await $0.execute("CREATE DATABASE \(identifier: name)")
        }
        let client = PostgresClient(
            configuration: server.with(database: name), options: .init(maxConnections: maxConnections), logger: logger)
        do {
            let value = try await body(client)
            await client.shutdown()
            try await drop(name, server: server)
            return value
        } catch {
            await client.shutdown()
            _ = try? await drop(name, server: server)
            throw error
        }
    }

    /// Drops a test database over a connection of its own.
    static func drop(_ name: String, server: PostgresConfiguration) async throws {
        try await PostgresConnection.withConnection(configuration: server.with(database: "postgres"), logger: logger) {
            try await drop(name, $0)
        }
    }

    /// Drops a test database. `WITH (FORCE)` terminates its sessions but waits only 5 s for them to exit; on a machine
    /// busy with checkpoints from many parallel tests a backend can take longer, so "in use" is retried a few times.
    static func drop(_ name: String, _ admin: PostgresConnection) async throws {
        for attempt in 1... {
            do {
                try await admin.execute("DROP DATABASE \(identifier: name) WITH (FORCE)")
                return
            } catch let error as PostgresError where error.sqlState == .objectInUse && attempt < 4 {
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Settings of every cluster the tests start (the shared one and private ones), never of a user's server.
    ///
    /// `fsync = off`: each test creates and drops a database of its own, and `DROP DATABASE` waits for an immediate
    /// checkpoint, which fsyncs every file the run has dirtied. With ~40,000 files from a parallel run that took 60 s,
    /// during which every test creating or dropping a database waited and the two-minute time limits of the sync tests
    /// were exceeded (CI failed so at 07a89bb). Test data is thrown away; a stopped or killed *server* still keeps
    /// every commit (the WAL is written at commit, only not forced to disk), so crash and restart tests mean what they did.
    public static let clusterSettings = ["fsync": "off"]

    /// A separate embedded cluster in a temporary directory, for tests that stop and restart the server or change
    /// its authentication. Removed (after being stopped) when `body` ends.
    public static func withPrivateCluster<T>(
        settings: [String: String] = [:], _ body: (EmbeddedPostgres) async throws -> T
    ) async throws -> T {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent(
            "tributary-cluster-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        // As root the server runs as `postgres`, which must be able to enter the directory.
        _ = chmod(base.path, 0o755)
        var server = EmbeddedPostgres(dataDirectory: base.appendingPathComponent("pgdata").path, logger: logger)
        server.settings = clusterSettings.merging(settings) { $1 }
        do {
            let value = try await body(server)
            _ = try? await server.stop()
            try? FileManager.default.removeItem(at: base)
            return value
        } catch {
            _ = try? await server.stop()
            try? FileManager.default.removeItem(at: base)
            throw error
        }
    }

    actor SharedServer {
        private var started: Task<PostgresConfiguration, any Error>?

        func configuration() async throws -> PostgresConfiguration {
            if let started { return try await started.value }
            let task = Task {
                if let configured = try PostgresConfiguration.fromEnvironment() { return configured }
                let environment = ProcessInfo.processInfo.environment
                let directory =
                    environment["TRIBUTARY_TEST_PGDATA"].flatMap { $0.isEmpty ? nil : $0 }
                    ?? packageRoot.appendingPathComponent(".tributary/test-pgdata").path
                var server = EmbeddedPostgres(dataDirectory: directory, logger: TestDatabase.logger)
                server.settings = TestDatabase.clusterSettings
                return try await server.start()
            }
            started = task
            return try await task.value
        }
    }
}
