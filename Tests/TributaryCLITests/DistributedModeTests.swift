import Foundation
import Postgres
import PostgresTesting
import Testing
import TributaryService

/// The whole product on the Citus stand-in: `tributary demo` (collection over HTTP, identity, profiles, computed and
/// predictive traits, segments, scheduled and real-time syncs) and the operator commands run on a database laid out
/// with `--distribution standin`, and every statement they sent (read back from `pg_stat_statements`, which also
/// records the statements inside SQL and PL/pgSQL functions) passes `DistributedSQLLint`.
@Suite struct DistributedModeTests {
    let cli = CLITests()

    /// Statement shapes Citus refuses that stay, each with why. The test fails when a new one appears and when one of
    /// these disappears (then remove it here).
    static let known: Set<String> = [
        // The recursive definition of a redirect, which tests compare cdp.profile_redirects with; the product never
        // calls it (analysts may, on a single server).
        "recursive CTE on cdp.profile_merge_log in: sql/0300_identity.sql cdp.resolve_profile_by_log"
    ]

    @Test(.timeLimit(.minutes(6)))
    func theProductRunsOnTheStandInAndSendsNothingCitusRefuses() async throws {
        let settings = [
            "shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all",
            "pg_stat_statements.max": "20000", "pg_stat_statements.track_utility": "off",
        ]
        try await TestDatabase.withPrivateCluster(settings: settings) { server in
            let configuration = try await server.start()
            let url = configuration.resolvedConnectionString
            let environment = ["DATABASE_URL": url]
            let migrate = try await cli.run(["migrate", "--distribution", "standin"], environment: environment)
            #expect(migrate.status == 0, "\(migrate.stderr)")
            #expect(migrate.stdout.contains("layout: standin"))

            let client = PostgresClient(
                configuration: configuration, options: .init(maxConnections: 2), logger: TestDatabase.logger)
            defer { Task { await client.shutdown() } }
            try await client.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            try await client.execute("SELECT pg_stat_statements_reset()")

            // A rules change that blocks an email the demo merged profiles through: the split path.
            let rules = FileManager.default.temporaryDirectory.appendingPathComponent("standin-rules-\(getpid()).json")
            try Data(#"{"blocked": ["^person\\.14@example\\.com$"]}"#.utf8).write(to: rules)
            defer { try? FileManager.default.removeItem(at: rules) }
            for arguments in [
                ["demo", "--people", "120", "--live", "5"],
                ["identity", "rules", "apply", rules.path],
                ["identity", "rebuild"],
                ["identity", "explain", "email:person.12@example.com"],
                ["profiles", "show", "email:person.12@example.com"],
                ["profiles", "rebuild"],
                ["privacy", "export", "email:person.12@example.com"],
                ["privacy", "consent", "email:person.13@example.com", "--deny", "Marketing"],
                ["privacy", "delete", "email:person.12@example.com"],
                ["retention", "set", "--events", "13months"],
                ["retention", "apply"],
            ] {
                let run = try await cli.run(arguments, environment: environment)
                #expect(run.status == 0, "tributary \(arguments.joined(separator: " ")): \(run.stderr)")
            }

            // Functions of cdp that are not IMMUTABLE count as such in the lint.
            var nonImmutable = DistributedSQLLint.builtinNonImmutable
            for row in try await client.query(
                "SELECT 'cdp.' || proname, provolatile = 'v' FROM pg_proc WHERE pronamespace = 'cdp'::regnamespace AND provolatile <> 'i'"
            ) {
                let (name, volatile) = try row.decode((String, Bool).self)
                nonImmutable[name] = volatile
            }
            let lint = DistributedSQLLint.forPlan(nonImmutable: nonImmutable)
            let statements = try await client.query(
                """
                SELECT query FROM pg_stat_statements
                WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                """
            ).map { try $0[0].decode(String.self) }
            #expect(statements.count > 200, "pg_stat_statements recorded \(statements.count) statements")
            var found: [String: String] = [:]
            for statement in statements {
                let start = statement.split(whereSeparator: \.isWhitespace).prefix(8).joined(separator: " ")
                for finding in lint.check(statement) {
                    found["\(finding.rule) on \(finding.table) in: \(start)"] = statement
                }
            }
            // Functions of sql/ that the run did not reach, read from the files.
            let directory = TestDatabase.packageRoot.appendingPathComponent("sql")
            for file in try FileManager.default.contentsOfDirectory(atPath: directory.path) where file.hasSuffix(".sql") {
                let text = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
                for (function, finding) in lint.checkScript(text) {
                    found["\(finding.rule) on \(finding.table) in: sql/\(file) \(function ?? "")"] = finding.detail
                }
            }
            // Triggers on distributed tables fire on each shard, on the workers (and only with
            // citus.enable_unsafe_triggers): what they do must move into the statements that need it.
            for row in try await client.query(
                """
                SELECT c.relname, t.tgname FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
                WHERE c.relnamespace = 'cdp'::regnamespace AND NOT t.tgisinternal AND NOT c.relispartition
                """
            ) {
                let (table, trigger) = try row.decode((String, String).self)
                if DistributionPlan.placement(of: table)?.column != nil {
                    found["trigger on cdp.\(table): \(trigger)"] = "a trigger on a distributed table"
                }
            }
            let new = Set(found.keys).subtracting(Self.known)
            for key in new.sorted() {
                Issue.record("\(key), in:\n\(found[key]!)")
            }
            let gone = Self.known.subtracting(found.keys)
            #expect(gone.isEmpty, "no longer sent (remove from DistributedModeTests.known): \(gone.sorted())")
        }
    }
}
