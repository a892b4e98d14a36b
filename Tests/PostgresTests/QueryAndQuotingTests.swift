import Foundation
import Postgres
import PostgresTesting
import Testing

@Suite struct QueryAndQuotingTests {
    static let hostile = [
        "plain", "it's", "\"double\"", "\"; DROP TABLE victims; --", "'; DROP TABLE victims; --", "back\\slash",
        "\\'", "trailing\\", "--", "/* comment", ";", "ünïcødé 🌊", "$1", "$$dollar$$", "E'x'", "\u{202E}rtl",
        "new\nline", "tab\t", String(repeating: "x", count: 63),
    ]

    @Test func interpolationBindsValuesAndNeverInlinesThem() {
        let email = "a'b@example.com"
        let query: PostgresQuery = "SELECT * FROM \(identifier: "my table") WHERE email = \(email) AND n > \(3)"
        #expect(query.sql == #"SELECT * FROM "my table" WHERE email = $1 AND n > $2"#)
        #expect(query.binds.count == 2)
        #expect(query.binds[0].bytes == Array(email.utf8))
        #expect(query.binds[1].type == .int8)
    }

    @Test func optionalsAreBindParametersNilIsNull() {
        let missing: Date? = nil
        let present: String? = "it's"
        let query: PostgresQuery = "SELECT \(missing), \(present)"
        #expect(query.sql == "SELECT $1, $2")
        #expect(query.binds.count == 2 && query.binds[0].bytes == nil && query.binds[1].bytes == Array("it's".utf8))
    }

    @Test func identifiersAreQuotedInOnePlace() throws {
        #expect(try SQLQuoting.identifier("events") == #""events""#)
        #expect(try SQLQuoting.identifier(#"a"b"#) == #""a""b""#)
        #expect(try SQLQuoting.qualified("cdp", "x\"y") == #""cdp"."x""y""#)
        #expect(throws: PostgresError.self) { try SQLQuoting.identifier("") }
        #expect(throws: PostgresError.self) { try SQLQuoting.identifier("a\u{0}b") }
        #expect(throws: PostgresError.self) { try SQLQuoting.identifier(String(repeating: "x", count: 64)) }
        #expect(throws: PostgresError.self) { try SQLQuoting.identifier(String(repeating: "é", count: 32)) }  // 64 bytes
    }

    @Test func literalsAreQuotedInOnePlace() throws {
        #expect(try SQLQuoting.literal("it's") == "'it''s'")
        #expect(try SQLQuoting.literal(#"a\b"#) == #" E'a\\b'"#)
        #expect(throws: PostgresError.self) { try SQLQuoting.literal("nul\u{0}") }
    }

    /// Hostile names create real objects and hostile literals come back unchanged, with
    /// standard_conforming_strings on and off: nothing is injected and no statement fails.
    @Test func hostileNamesAndLiteralsAgainstRealPostgres() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.execute("CREATE TABLE victims (id int)")
            try await client.withConnection { (connection) async throws in
                for setting in ["on", "off"] {
                    try await connection.execute("SET standard_conforming_strings TO \(unescaped: setting)")
                    for value in Self.hostile {
                        let literal = try SQLQuoting.literal(value)
                        let back = try await connection.query(PostgresQuery(unsafeSQL: "SELECT \(literal) AS v")).scalar(
                            String.self)
                        #expect(back == value, "literal \(literal) with standard_conforming_strings=\(setting)")
                        let bound = try await connection.query("SELECT \(value)::text").scalar(String.self)
                        #expect(bound == value)
                    }
                }
                try await connection.execute("RESET standard_conforming_strings")
                for name in Self.hostile {
                    try await connection.execute("CREATE TABLE \(identifier: name) (\(identifier: name) text)")
                    try await connection.execute("INSERT INTO \(identifier: name) (\(identifier: name)) VALUES (\(name))")
                    let stored = try await connection.query("SELECT \(identifier: name) FROM \(identifier: name)").scalar(
                        String.self)
                    #expect(stored == name)
                    let found = try await connection.query(
                        "SELECT count(*) FROM pg_class WHERE relname = \(name) AND relkind = 'r'"
                    ).scalar(Int.self)
                    #expect(found == 1, "table \(name) should exist under exactly that name")
                }
            }
            let survivors = try await client.query("SELECT count(*) FROM victims").scalar(Int.self)
            #expect(survivors == 0)
            let tables = try await client.query(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).scalar(Int.self)
            #expect(tables == Self.hostile.count + 1)
        }
    }

    @Test func scriptsRunManyStatementsAndStopAtTheFirstError() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.withConnection { (connection) async throws in
                try await connection.script("CREATE TABLE a (x int); INSERT INTO a VALUES (1); INSERT INTO a VALUES (2);")
                #expect(try await connection.query("SELECT sum(x) FROM a").scalar(Int.self) == 3)
                do {
                    try await connection.script("INSERT INTO a VALUES (10); SELECT nope FROM a; INSERT INTO a VALUES (20);")
                    Issue.record("the script should fail")
                } catch let error as PostgresError {
                    #expect(error.sqlState == .undefinedColumn)
                    #expect(error.position == 35)
                }
                // A multi-statement simple query is one implicit transaction: nothing from the failed script stays.
                #expect(try await connection.query("SELECT sum(x) FROM a").scalar(Int.self) == 3)
            }
        }
    }
}
