import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryIdentity
@testable import TributaryProfiles
@testable import TributarySegments
@testable import TributaryRuntime

/// Tributary's connections set their session once at connect (JIT off, a name per role, timeouts), so no hot
/// statement is JIT-compiled even on a server that JIT-compiles everything, while SQL users write keeps the server's
/// settings.
@Suite struct SessionSettingsTests {
    /// Whether PostgreSQL JIT-compiled `query` when run with EXPLAIN (ANALYZE, FORMAT JSON) on `db` (rolled back).
    static func jitCompiled(
        _ query: PostgresQuery, on db: PostgresConnection, serverDefaults: Bool = false
    ) async throws -> Bool {
        try await db.execute("BEGIN")
        do {
            if serverDefaults { try await db.useServerDefaults() }
            let plan = try await db.query("EXPLAIN (ANALYZE, FORMAT JSON) \(query)").scalar(String.self)
            try await db.execute("ROLLBACK")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(plan.utf8)) as? [[String: Any]])
            return json.first?["JIT"] != nil
        } catch {
            _ = try? await db.execute("ROLLBACK")
            throw error
        }
    }

    /// A database whose sessions JIT-compile every statement unless told otherwise.
    static func withJITEverywhere(_ body: (PostgresClient, PostgresConfiguration) async throws -> Void) async throws {
        try await TestDatabase.withFreshDatabase { client in
            try await IdentityFixture.migrated(client)
            let name = try await client.query("SELECT current_database()").scalar(String.self)
            for setting in ["jit = on", "jit_above_cost = 0", "jit_inline_above_cost = 0", "jit_optimize_above_cost = 0"] {
                try await client.execute(
                    PostgresQuery(unsafeSQL: "ALTER DATABASE \(try SQLQuoting.identifier(name)) SET \(setting)"))
            }
            try await body(client, try await TestDatabase.serverConfiguration().with(database: name))
        }
    }

    @Test func hotStatementsAreNotJITCompiledOnAServerThatCompilesEverything() async throws {
        try await Self.withJITEverywhere { _, server in
            // Stage the ingest statement's input: a batch in the writer's temporary table, one identifier suppressed
            // (the statement's most expensive form).
            let insert = EventWriter.insertQuery(rules: "{}")
            func prepared(_ configuration: PostgresConfiguration) async throws -> PostgresConnection {
                let db = try await PostgresConnection.connect(configuration: configuration, logger: TestDatabase.logger)
                try await db.execute(EventWriter.stagingSQL)
                return db
            }
            // Without Tributary's settings the server compiles it: the test can fail.
            var plain = server
            plain.sessionSettings = []
            let user = try await prepared(plain)
            #expect(try await Self.jitCompiled(insert, on: user))
            await user.close()

            for configuration in [
                server.forCollection(process: "serve"), server.forStage("identity", process: "serve"),
                server.forStage("profiles", process: "serve"), server,
            ] {
                let db = try await prepared(configuration)
                #expect(try await db.query("SHOW jit").scalar(String.self) == "off")
                #expect(try await Self.jitCompiled(insert, on: db) == false)
                // SQL users write (a sync's source query) runs with the server's setting.
                #expect(try await Self.jitCompiled("SELECT count(*) FROM cdp.events", on: db, serverDefaults: true))
                #expect(try await db.query("SHOW application_name").scalar(String.self) == configuration.applicationName)
                await db.close()
            }
        }
    }

    @Test func rolesSetTheirTimeoutsAndANamedApplication() async throws {
        let server = try await TestDatabase.serverConfiguration()
        let stage = try await PostgresConnection.connect(
            configuration: server.forStage("identity", process: "serve"), logger: TestDatabase.logger)
        #expect(try await stage.query("SHOW application_name").scalar(String.self) == "tributary serve: identity")
        #expect(try await stage.query("SHOW lock_timeout").scalar(String.self) == "1min")
        #expect(try await stage.query("SHOW statement_timeout").scalar(String.self) == "0")
        await stage.close()
        let writer = try await PostgresConnection.connect(
            configuration: server.forCollection(process: "serve"), logger: TestDatabase.logger)
        #expect(try await writer.query("SHOW statement_timeout").scalar(String.self) == "2min")
        await writer.close()
        // A name the connection string gives wins over the role's; the role's settings still apply.
        let named = try PostgresConfiguration(connectionString: server.resolvedConnectionString + " application_name=etl")
        let mine = try await PostgresConnection.connect(
            configuration: named.forStage("identity", process: "serve"), logger: TestDatabase.logger)
        #expect(try await mine.query("SHOW application_name").scalar(String.self) == "etl")
        #expect(try await mine.query("SHOW jit").scalar(String.self) == "off")
        await mine.close()
    }

    @Test func aBadSessionSettingIsRefusedNamingIt() async throws {
        var server = try await TestDatabase.serverConfiguration()
        server.sessionSettings.append(.init("no_such_setting_here", "1"))
        await #expect {
            _ = try await PostgresConnection.connect(configuration: server, logger: TestDatabase.logger)
        } throws: { error in
            "\(error)".contains("no_such_setting_here")
        }
    }

    /// The whole pipeline on a server that JIT-compiles everything: ingest, identity and profiles work and agree.
    @Test func thePipelineRunsOnAJITEverywhereServer() async throws {
        try await Self.withJITEverywhere { _, server in
            let client = PostgresClient(configuration: server.forStage("test", process: "tests"), logger: TestDatabase.logger)
            try await IdentityFixture.write(
                [
                    IdentityFixture.event(anonymous: "a-1", user: "u-1", traits: #"{"email": "A@x.io"}"#),
                    IdentityFixture.event(anonymous: "a-2", traits: #"{"email": "a@x.io"}"#),
                ], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            let report = try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()])
                .catchUp()
            #expect(report.events == 2)
            #expect(try await client.query("SELECT count(DISTINCT profile_id) FROM cdp.events").scalar(Int.self) == 1)
            await client.shutdown()
        }
    }
}
