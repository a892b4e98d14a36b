import Foundation
@testable import Postgres
import PostgresTesting
import Testing

/// Queries built from fragments: placeholders renumbered as PostgreSQL's lexer sees them, and the literal form for DDL.
@Suite struct QueryFragmentTests {
    @Test func embeddedFragmentsKeepTheirBindsInOrder() {
        let since = "2026-01-01"
        let recent: PostgresQuery = "timestamp > \(since) AND n < \(5)"
        let query: PostgresQuery = "SELECT \(1) WHERE event = \("Signed Up") AND \(recent) AND x = \(7)"
        #expect(query.sql == "SELECT $1 WHERE event = $2 AND timestamp > $3 AND n < $4 AND x = $5")
        #expect(query.binds.map { $0.bytes.map { String(decoding: $0, as: UTF8.self) } } == ["1", "Signed Up", since, "5", "7"])
    }

    @Test func handNumberedFragmentsAreRenumberedToo() throws {
        let fragment = PostgresQuery(
            unsafeSQL: "a = $1 AND b = $2 AND c = $1", binds: [try 10.postgresBind(), try 20.postgresBind()])
        let query: PostgresQuery = "SELECT \(0), \(fragment)"
        #expect(query.sql == "SELECT $1, a = $2 AND b = $3 AND c = $2")
        #expect(query.binds.count == 3)
    }

    /// `$n` inside strings, quoted identifiers, comments, dollar quotes and names is text, not a placeholder.
    @Test func onlyRealPlaceholdersAreRenumbered() {
        let text = """
            SELECT $1, '$1', E'it\\'s $1', "col$1", a$1, -- $1
            /* $1 /* nested $1 */ $1 */ $$ $1 $$, $tag$ $1 $x$ $tag$, $2, $10, 7$1
            """
        let expected = """
            SELECT $4, '$1', E'it\\'s $1', "col$1", a$1, -- $1
            /* $1 /* nested $1 */ $1 */ $$ $1 $$, $tag$ $1 $x$ $tag$, $5, $13, 7$4
            """
        var query: PostgresQuery = "\(1)\(2)\(3)"
        query.append(PostgresQuery(unsafeSQL: text))
        #expect(query.sql == "$1$2$3" + expected)
    }

    /// A value interpolated where a name belongs, or parameters on COPY: refused with what to do instead (debug
    /// builds, where tests run), rather than PostgreSQL's "syntax error at or near $1".
    @Test func misplacedBindsAreNamed() throws {
        let schema = "pg_temp"
        let copy: PostgresQuery = "COPY \(schema).final_nodes FROM STDIN"
        #expect(throws: PostgresError.self) { try copy.validated() }
        do {
            _ = try copy.validated()
        } catch let error as PostgresError {
            #expect(error.message.contains("bind parameter $1 stands where a name belongs"), "\(error)")
        }
        let copyWithValue: PostgresQuery = "COPY (SELECT \(1)) TO STDOUT"
        #expect(throws: PostgresError.self) { try copyWithValue.validated() }
        #expect(try copyWithValue.inlined().validated().sql == "COPY (SELECT '1'::int8) TO STDOUT")
        let fine: PostgresQuery = "SELECT \(unescaped: schema).x, ($1).y, \(2.5)::float8"
        #expect(throws: Never.self) { try fine.validated() }
    }

    @Test func joinedFragmentsNumberAcrossTheList() {
        let parts: [PostgresQuery] = ["a = \(1)", "b = \(2)", "c"]
        let joined = PostgresQuery.joined(parts, separator: " AND ")
        #expect(joined.sql == "a = $1 AND b = $2 AND c")
        #expect(joined.binds.count == 2)
    }

    @Test func aBuildErrorInAFragmentIsThrownWhenTheQueryRuns() async throws {
        let bad: PostgresQuery = "x = \("nul\u{0}byte")"
        let query: PostgresQuery = "SELECT \(bad)"
        #expect(throws: PostgresError.self) { try query.inlined() }
    }

    /// Fragments and the literal form against a real server: the same values come back either way.
    @Test func fragmentsAndInlinedQueriesMeanTheSameOnRealPostgres() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let id = UUID()
            let values: PostgresQuery =
                "\("it's \"quoted\" $1 -- not a comment"), \(42), \(Optional<String>.none), \(id), \(Data([0, 1, 254, 255])), \(2.5)"
            let query: PostgresQuery = "SELECT \(values), \("tail")"
            let expected = ("it's \"quoted\" $1 -- not a comment", 42, String?.none, id, Data([0, 1, 254, 255]), 2.5, "tail")
            for form in [query, try query.inlined()] {
                let row = try await client.query(form).first!
                let decoded = try row.decode((String, Int, String?, UUID, Data, Double, String).self)
                #expect(decoded.0 == expected.0 && decoded.1 == expected.1 && decoded.2 == nil && decoded.3 == expected.3)
                #expect(decoded.4 == expected.4 && decoded.5 == expected.5 && decoded.6 == expected.6)
            }
            #expect(try query.inlined().binds.isEmpty)
            // The literal form is what DDL needs: a view over values that were binds.
            let view: PostgresQuery = "CREATE VIEW v (a, b, c, d, e, f, g) AS \(try query.inlined())"
            try await client.execute(view)
            let fromView = try await client.query("SELECT * FROM v").first!.decode((String, Int).self)
            #expect(fromView.0 == expected.0 && fromView.1 == 42)
        }
    }
}
