import Foundation
import Postgres
import PostgresTesting
import Testing

@Suite struct ErrorTests {
    @Test func uniqueViolationCarriesSQLStateDetailAndConstraint() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.execute("CREATE TABLE people (email text CONSTRAINT people_email_key UNIQUE)")
            try await client.execute("INSERT INTO people VALUES (\("a@example.com"))")
            do {
                try await client.execute("INSERT INTO people VALUES (\("a@example.com"))")
                Issue.record("a duplicate insert must fail")
            } catch let error as PostgresError {
                #expect(error.kind == .server)
                #expect(error.sqlState == .uniqueViolation)
                #expect(error.constraint == "people_email_key")
                #expect(error.table == "people")
                #expect(error.detail == "Key (email)=(a@example.com) already exists.")
                #expect(error.description.contains("SQLSTATE 23505"))
                #expect(!error.description.contains("\n"))
            }
        }
    }

    @Test func syntaxErrorsCarryPositionAndHint() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            do {
                try await client.query("SELEC 1")
                Issue.record("bad SQL must fail")
            } catch let error as PostgresError {
                #expect(error.sqlState == .syntaxError)
                #expect(error.position == 1)
            }
            do {
                try await client.query("SELECT lenght('x')")
                Issue.record("an unknown function must fail")
            } catch let error as PostgresError {
                #expect(error.sqlState == SQLState("42883"))
                #expect(error.hint?.contains("No function matches") == true)
            }
        }
    }

    @Test func malformedConnectionStringsAreNamed() throws {
        do {
            _ = try PostgresConfiguration(connectionString: "postgresql://user:secret@[::1/db")
            Issue.record("a bad port must be refused")
        } catch let error as PostgresError {
            #expect(error.kind == .configuration)
            #expect(error.message.contains("invalid"))
            #expect(!error.message.contains("secret"))
        }
        do {
            _ = try PostgresConfiguration.fromEnvironment(["DATABASE_URL": "postgresql://a:b@h/db?nosuchoption=1"])
            Issue.record("an unknown option must be refused")
        } catch let error as PostgresError {
            #expect(error.message.hasPrefix("DATABASE_URL is not a valid connection string"))
            #expect(error.message.contains("nosuchoption"))
        }
    }

    @Test func environmentSelection() throws {
        #expect(try PostgresConfiguration.fromEnvironment([:]) == nil)
        #expect(try PostgresConfiguration.fromEnvironment(["PGUSER": "x", "PGPASSWORD": "y"]) == nil)
        #expect(try PostgresConfiguration.fromEnvironment(["PGHOST": "/tmp"])?.connectionString == "")
        #expect(try PostgresConfiguration.fromEnvironment(["PGDATABASE": "cdp"]) != nil)
        let url = "postgresql://app:hunter2@db.internal:6543/cdp?sslmode=require"
        let configuration = try #require(try PostgresConfiguration.fromEnvironment(["DATABASE_URL": url, "PGHOST": "x"]))
        #expect(configuration.connectionString == url)
        #expect(configuration.description.contains("host=db.internal port=6543 dbname=cdp user=app sslmode=require"))
        #expect(!configuration.description.contains("hunter2"))
    }

    @Test func unreachableServerIsOneClearLine() async throws {
        let configuration = try PostgresConfiguration(connectionString: "host=127.0.0.1 port=1 dbname=x connect_timeout=3")
        do {
            _ = try await PostgresConnection.connect(configuration: configuration, logger: TestDatabase.logger)
            Issue.record("connecting to a closed port must fail")
        } catch let error as PostgresError {
            #expect(error.kind == .connection)
            #expect(error.message.contains("127.0.0.1") && error.message.contains("Connection refused"))
            #expect(error.hint?.contains("is PostgreSQL running") == true)
            #expect(!error.description.contains("\n"))
        }
    }

    @Test func missingDatabaseIsNamed() async throws {
        let server = try await TestDatabase.serverConfiguration()
        do {
            _ = try await PostgresConnection.connect(
                configuration: server.with(database: "no_such_db_\(getpid())"), logger: TestDatabase.logger)
            Issue.record("a missing database must fail")
        } catch let error as PostgresError {
            #expect(error.sqlState == .invalidCatalogName)
            #expect(error.message.contains("does not exist"))
        }
    }

    @Test func missingServerBinariesAreNamed() throws {
        do {
            _ = try EmbeddedPostgres.findBinaries(environment: ["TRIBUTARY_PG_BIN": "/nonexistent/bin"])
            Issue.record("a bad TRIBUTARY_PG_BIN must fail")
        } catch let error as PostgresError {
            #expect(error.kind == .embeddedServer)
            #expect(error.message.contains("/nonexistent/bin"))
        }
    }
}
