import Foundation
import Postgres
import PostgresTesting
import Testing

/// The `tributary` executable, run as a user would: exit codes, output, and one-line errors.
@Suite struct CLITests {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// The built executable, next to the test bundle.
    static let executable: URL = {
        let bundleDirectory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        return bundleDirectory.appendingPathComponent("tributary")
    }()

    /// Runs `tributary` with `arguments` on a thread of its own; the environment is the test's minus any database
    /// settings, plus `environment`.
    func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> Run {
        var env = ProcessInfo.processInfo.environment
        for key in PostgresConfiguration.environmentKeys { env.removeValue(forKey: key) }
        env.merge(environment) { $1 }
        let output = try await ProcessRunner.runDetached(
            Self.executable.path, arguments, environment: env, directory: TestDatabase.packageRoot.path,
            separateErrors: true)
        return Run(status: output.status, stdout: output.text, stderr: output.errorText)
    }

    /// A fresh database's connection string, for DATABASE_URL.
    func withDatabaseURL(_ body: (String) async throws -> Void) async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await body(client.configuration.resolvedConnectionString)
        }
    }

    func expectOneLineError(_ run: Run, containing parts: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(run.status == 1, sourceLocation: sourceLocation)
        let lines = run.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(run.stderr)", sourceLocation: sourceLocation)
        #expect(run.stderr.hasPrefix("error: "), sourceLocation: sourceLocation)
        for part in parts {
            #expect(run.stderr.contains(part), "stderr should mention \(part): \(run.stderr)", sourceLocation: sourceLocation)
        }
    }

    @Test func versionAndHelp() async throws {
        let version = try await run(["version"])
        #expect(version.status == 0)
        #expect(version.stdout.hasPrefix("tributary 0."))
        let help = try await run(["--help"])
        #expect(help.status == 0)
        for command in ["demo", "migrate", "db", "version"] { #expect(help.stdout.contains(command)) }
        let dbHelp = try await run(["db", "--help"])
        for command in ["start", "stop", "status", "url"] { #expect(dbHelp.stdout.contains(command)) }
        let unknown = try await run(["frobnicate"])
        #expect(unknown.status != 0)
    }

    @Test func malformedDatabaseURL() async throws {
        let result = try await run(["migrate"], environment: ["DATABASE_URL": "postgresql://app:s3cret@[::1/db"])
        expectOneLineError(result, containing: ["DATABASE_URL is not a valid connection string", "IPv6"])
        #expect(!result.stderr.contains("s3cret"))
    }

    @Test func unreachableServer() async throws {
        let result = try await run(
            ["migrate"], environment: ["DATABASE_URL": "postgresql://app:s3cret@127.0.0.1:1/db?connect_timeout=3"])
        expectOneLineError(result, containing: ["cannot connect to PostgreSQL", "127.0.0.1", "is PostgreSQL running"])
        #expect(!result.stderr.contains("s3cret"))
    }

    @Test func missingServerBinaries() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "tributary-cli-\(UUID().uuidString.prefix(8))")
        let result = try await run(
            ["demo", "--data-dir", directory.path], environment: ["TRIBUTARY_PG_BIN": "/nonexistent/pg/bin"])
        expectOneLineError(result, containing: ["TRIBUTARY_PG_BIN", "/nonexistent/pg/bin", "pg_ctl"])
    }

    @Test func migrateAndStatusAgainstAConfiguredDatabase() async throws {
        try await withDatabaseURL { url in
            let status = try await run(["migrate", "status"], environment: ["DATABASE_URL": url])
            #expect(status.status == 0, "\(status.stderr)")
            #expect(status.stdout.contains("pending  0001_foundation"))

            // Two processes at once: both succeed, each migration is applied once.
            async let first = run(["migrate"], environment: ["DATABASE_URL": url])
            async let second = run(["migrate"], environment: ["DATABASE_URL": url])
            let runs = try await [first, second]
            #expect(runs.allSatisfy { $0.status == 0 }, "\(runs.map(\.stderr))")
            #expect(runs.filter { $0.stdout.contains("applied  0001_foundation.sql") }.count == 1)

            let after = try await run(
                ["migrate", "status", "--log-format", "json", "--log-level", "debug"], environment: ["DATABASE_URL": url])
            #expect(after.stdout.contains("applied  0001_foundation"))
            #expect(after.stdout.contains("0 pending"))
            for line in after.stderr.split(separator: "\n") {
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                #expect(object?["message"] != nil, "every log line is a JSON object: \(line)")
            }
        }
    }

    @Test(.timeLimit(.minutes(6)))
    func embeddedServerLifecycle() async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("tributary-cli-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        _ = chmod(base.path, 0o755)
        defer { try? FileManager.default.removeItem(at: base) }
        let data = ["--data-dir", base.appendingPathComponent("pgdata").path]
        defer { _ = try? ProcessRunner.run(Self.executable.path, ["db", "stop"] + data) }  // if a check failed midway

        #expect(try await run(["db", "status"] + data).stdout.contains("state:      not created"))
        let notRunning = try await run(["db", "url"] + data)
        expectOneLineError(notRunning, containing: ["not running", "tributary db start"])

        let start = try await run(["db", "start"] + data)
        #expect(start.status == 0, "\(start.stderr)")
        #expect(start.stdout.hasPrefix("postgresql://tributary@/tributary?host="))
        #expect(try await run(["db", "status"] + data).stdout.contains("state:      running"))
        // A second start reuses the running server.
        #expect(try await run(["db", "start"] + data).stdout == start.stdout)

        let demo = try await run(["demo"] + data)
        #expect(demo.status == 0, "\(demo.stderr)")
        // The demo's sample traffic goes through the HTTP API: everything stored once, every retry ignored.
        let collection = try #require(demo.stdout.split(separator: "\n").first { $0.contains("collection") })
        let stored =
            Int(collection.components(separatedBy: "batches over HTTP: ")[1].components(separatedBy: " events stored")[0]) ?? 0
        #expect(stored > 100)
        #expect(collection.contains("\(stored) retried duplicates ignored"))
        let migrations = try FileManager.default.contentsOfDirectory(
            atPath: TestDatabase.packageRoot.appendingPathComponent("migrations").path
        ).filter { $0.hasSuffix(".sql") }.count
        #expect(demo.stdout.contains("schema version \(migrations)"))
        // The real-time tour: every live event reaches the webhook through the stages and the real-time sync.
        #expect(demo.stdout.contains("10 live events, 10 delivered to the webhook"), "\(demo.stdout)")
        #expect(demo.stdout.contains("  summary "))

        #expect(try await run(["db", "stop"] + data).stdout == "stopped\n")
        #expect(try await run(["db", "status"] + data).stdout.contains("state:      stopped"))
        #expect(try await run(["db", "stop"] + data).stdout == "not running\n")
        // The next command starts it again, with the data kept.
        let again = try await run(["demo"] + data)
        #expect(again.stdout.contains("0 applied now, \(migrations) already applied"))
        // The second demo sends the same messages again: nothing new is stored.
        #expect(again.stdout.contains("0 events stored"))
        #expect(try await run(["db", "stop"] + data).stdout == "stopped\n")
    }
}
