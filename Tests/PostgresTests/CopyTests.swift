import Foundation
import Postgres
import PostgresTesting
import Testing

@Suite struct CopyTests {
    static let rowCount = 100_000

    @Test func copyHundredThousandRowsInAndOut() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.execute("CREATE TABLE items (id int8 PRIMARY KEY, name text, tags jsonb)")
            let copied = try await client.withConnection { (connection) async throws in
                try await connection.copyIn("COPY items (id, name, tags) FROM STDIN") { (writer) async throws in
                    for id in 1...Self.rowCount {
                        try await writer.write("\(id)\tname \(id) é\\t\\\\\t{\"n\": \(id)}\n")
                    }
                }
            }
            #expect(copied == Self.rowCount)
            let sum = try await client.query(
                "SELECT sum(id), count(*) FROM items WHERE name = format('name %s é', id) || E'\\t\\\\'"
            ).first!
            #expect(try sum.decode((Int, Int).self) == (Self.rowCount * (Self.rowCount + 1) / 2, Self.rowCount))

            var lines = 0
            var idSum = 0
            var chunks = 0
            var pending = [UInt8]()
            let out = try await client.withConnection { (connection) async throws in
                try await connection.copyOut("COPY (SELECT id, name FROM items ORDER BY id) TO STDOUT", chunkSize: 64 * 1024) {
                    chunk in
                    chunks += 1
                    #expect(chunk.count <= 64 * 1024 + 200)
                    pending.append(contentsOf: chunk)
                    while let newline = pending.firstIndex(of: 10) {
                        let line = String(decoding: pending[..<newline], as: UTF8.self)
                        pending.removeSubrange(...newline)
                        let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
                        idSum += Int(fields[0])!
                        #expect(fields[1] == "name \(fields[0]) é\\t\\\\")
                        lines += 1
                    }
                }
            }
            #expect(out == Self.rowCount)
            #expect(lines == Self.rowCount)
            #expect(idSum == Self.rowCount * (Self.rowCount + 1) / 2)
            #expect(chunks > 10, "COPY TO should stream in chunks, not one buffer")
            #expect(pending.isEmpty)
        }
    }

    @Test func aThrowingWriterAbortsTheCopyAndStoresNothing() async throws {
        struct Stop: Error {}
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.execute("CREATE TABLE t (id int)")
            try await client.withConnection { (connection) async throws in
                await #expect(throws: Stop.self) {
                    try await connection.copyIn("COPY t FROM STDIN", bufferSize: 1024) { (writer) async throws in
                        for id in 1...10_000 { try await writer.write("\(id)\n") }
                        throw Stop()
                    }
                }
                // The connection is usable afterwards.
                let count = try await connection.query("SELECT count(*) FROM t").scalar(Int.self)
                #expect(count == 0)
            }
        }
    }

    @Test func badCopyDataIsAServerErrorNamingTheLine() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.execute("CREATE TABLE t (id int PRIMARY KEY)")
            try await client.execute("INSERT INTO t VALUES (1)")
            try await client.withConnection { (connection) async throws in
                do {
                    try await connection.copyIn("COPY t FROM STDIN") { (writer) async throws in
                        try await writer.write("2\n3\nnot-a-number\n4\n")
                    }
                    Issue.record("bad data must fail")
                } catch let error as PostgresError {
                    #expect(error.sqlState == .invalidTextRepresentation)
                    #expect(error.description.contains("not-a-number"))
                }
                #expect(try await connection.query("SELECT array_agg(id ORDER BY id) FROM t").scalar([Int].self) == [1])
            }
        }
    }

    @Test func stoppingACopyOutEarlyLeavesTheConnectionUsable() async throws {
        struct Enough: Error {}
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.withConnection { (connection) async throws in
                await #expect(throws: Enough.self) {
                    try await connection.copyOut("COPY (SELECT g FROM generate_series(1, 2000000) g) TO STDOUT") {
                        (_) async throws in
                        throw Enough()
                    }
                }
                let seven = try await connection.query("SELECT 7").scalar(Int.self)
                #expect(seven == 7)
            }
        }
    }

    @Test func ordinaryQueriesRefuseCopyStatements() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.execute("CREATE TABLE t (id int)")
            await #expect(throws: PostgresError.self) { try await client.query("COPY t FROM STDIN") }
            await #expect(throws: PostgresError.self) { try await client.query("COPY t TO STDOUT") }
            #expect(try await client.query("SELECT count(*) FROM t").scalar(Int.self) == 0)
        }
    }
}
