import Foundation
import Postgres
import PostgresTesting
import Testing

/// Results streamed row by row (libpq's single-row mode), never held whole.
@Suite struct StreamTests {
    @Test func rowsArriveInBatchesAndAllOfThemCome() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            var sum = 0
            var seen = 0
            let count = try await client.withConnection { (connection) async throws in
                try await connection.forEachRow(
                    "SELECT g AS n, repeat('x', (g % 7)::int) AS pad FROM generate_series(1, \(50_000)) g", batchSize: 500
                ) { row in
                    sum += try row["n"].decode(Int.self)
                    seen += 1
                    #expect(try row["pad"].decode(String.self).count == seen % 7)
                }
            }
            #expect(count == 50_000 && seen == 50_000)
            #expect(sum == 50_000 * 50_001 / 2)
            let none = try await client.withConnection { (connection) async throws in
                try await connection.forEachRow("SELECT 1 WHERE false") { _ in Issue.record("no rows expected") }
            }
            #expect(none == 0)
        }
    }

    @Test func stoppingEarlyCancelsAndLeavesTheConnectionUsable() async throws {
        struct Enough: Error {}
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.withConnection { (connection) async throws in
                var taken = 0
                await #expect(throws: Enough.self) {
                    try await connection.forEachRow("SELECT g FROM generate_series(1, 5000000) g") { _ in
                        taken += 1
                        if taken == 10 { throw Enough() }
                    }
                }
                #expect(taken == 10)
                let after = try await connection.query("SELECT 'still usable'").scalar(String.self)
                #expect(after == "still usable")
            }
        }
    }

    @Test func aServerErrorMidStreamIsThrownAfterTheRowsBeforeIt() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.withConnection { (connection) async throws in
                var delivered = 0
                do {
                    try await connection.forEachRow("SELECT 1 / (3000 - g) FROM generate_series(1, 5000) g") { _ in
                        delivered += 1
                    }
                    Issue.record("division by zero must fail")
                } catch let error as PostgresError {
                    #expect(error.sqlState == SQLState("22012"))
                }
                #expect(delivered > 0 && delivered < 3000)
                let after = try await connection.query("SELECT 1").scalar(Int.self)
                #expect(after == 1)
            }
        }
    }
}
