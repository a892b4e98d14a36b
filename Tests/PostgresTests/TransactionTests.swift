import Foundation
import Postgres
import PostgresTesting
import Testing

@Suite struct TransactionTests {
    struct Boom: Error {}

    @Test func commitOnReturnRollbackOnThrow() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.execute("CREATE TABLE t (id int)")
            try await client.withTransaction { (tx) async throws in
                try await tx.execute("INSERT INTO t VALUES (1)")
            }
            await #expect(throws: Boom.self) {
                try await client.withTransaction { (tx) async throws in
                    try await tx.execute("INSERT INTO t VALUES (2)")
                    throw Boom()
                }
            }
            // A server error inside the transaction also rolls it back.
            await #expect(throws: PostgresError.self) {
                try await client.withTransaction { (tx) async throws in
                    try await tx.execute("INSERT INTO t VALUES (3)")
                    try await tx.execute("INSERT INTO t VALUES ('x')")
                }
            }
            #expect(try await client.query("SELECT array_agg(id) FROM t").scalar([Int].self) == [1])
        }
    }

    @Test func savepointsRollBackOnlyTheirOwnWork() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.execute("CREATE TABLE t (id int PRIMARY KEY)")
            try await client.withTransaction { (tx) async throws in
                try await tx.execute("INSERT INTO t VALUES (1)")
                do {
                    try await tx.withSavepoint { (sp) async throws in
                        try await sp.execute("INSERT INTO t VALUES (2)")
                        try await sp.execute("INSERT INTO t VALUES (1)")  // unique violation
                    }
                    Issue.record("the savepoint body should fail")
                } catch let error as PostgresError {
                    #expect(error.sqlState == .uniqueViolation)
                }
                // A nested transaction is a savepoint too.
                try await tx.withTransaction { inner in try await inner.execute("INSERT INTO t VALUES (3)") }
                await #expect(throws: Boom.self) {
                    try await tx.withTransaction { (inner) async throws in
                        try await inner.execute("INSERT INTO t VALUES (4)")
                        throw Boom()
                    }
                }
                try await tx.execute("INSERT INTO t VALUES (5)")
            }
            #expect(try await client.query("SELECT array_agg(id ORDER BY id) FROM t").scalar([Int].self) == [1, 3, 5])
        }
    }

    @Test func serializableIsolationIsApplied() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let level = try await client.withTransaction(isolation: .serializable) { (tx) async throws in
                try await tx.query("SHOW transaction_isolation").scalar(String.self)
            }
            #expect(level == "serializable")
        }
    }

    @Test(.timeLimit(.minutes(6)))
    func advisoryLocksExcludeOtherSessions() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let key = AdvisoryLockKey(name: "tests.lock")
            #expect(key == AdvisoryLockKey(name: "tests.lock"))
            #expect(key != AdvisoryLockKey(name: "tests.lock2"))
            let other = try await PostgresConnection.connect(configuration: client.configuration, logger: TestDatabase.logger)
            try await client.withConnection { (connection) async throws in
                try await connection.withAdvisoryLock(key) { (_) async throws in
                    #expect(try await other.tryAdvisoryLock(key) == false)
                }
                #expect(try await other.tryAdvisoryLock(key) == true)
                #expect(try await connection.tryAdvisoryLock(key) == false)
                #expect(try await other.advisoryUnlock(key) == true)
                // Transaction-level locks end with the transaction.
                try await connection.withTransaction { (tx) async throws in
                    try await tx.advisoryTransactionLock(key)
                    #expect(try await other.tryAdvisoryLock(key) == false)
                }
                #expect(try await other.tryAdvisoryLock(key) == true)
            }
            await other.close()
        }
    }
}
