import Foundation
@testable import Postgres
import PostgresTesting
import Testing

@Suite struct PoolTests {
    /// Holds a leased connection until `release` is called.
    final class Gate: @unchecked Sendable {
        private let lock = NSLock()
        private var continuations: [CheckedContinuation<Void, Never>] = []
        private var opened = false
        func wait() async {
            await withCheckedContinuation { continuation in
                lock.lock()
                if opened {
                    lock.unlock()
                    continuation.resume()
                } else {
                    continuations.append(continuation)
                    lock.unlock()
                }
            }
        }
        func open() {
            lock.lock()
            opened = true
            let waiting = continuations
            continuations = []
            lock.unlock()
            waiting.forEach { $0.resume() }
        }
    }

    /// Leases both connections of a two-connection pool until the returned gate is opened.
    func holdBoth(_ client: PostgresClient) async throws -> (Gate, [Task<Void, any Error>]) {
        let gate = Gate()
        let holders = (0..<2).map { _ in
            Task { try await client.withConnection { _ in await gate.wait() } }
        }
        while true {
            let stats = await client.statistics()
            if stats.open == 2 && stats.idle == 0 { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        return (gate, holders)
    }

    @Test(.timeLimit(.minutes(6)))
    func exhaustionTimesOutNamingTheLimit() async throws {
        try await TestDatabase.withFreshDatabase { (base) async throws in
            let client = PostgresClient(
                configuration: base.configuration,
                options: .init(maxConnections: 2, leaseTimeout: .milliseconds(300)), logger: TestDatabase.logger)
            let (gate, holders) = try await holdBoth(client)
            do {
                try await client.query("SELECT 1")
                Issue.record("a third lease must time out while two are held")
            } catch let error as PostgresError {
                #expect(error.kind == .poolTimeout)
                #expect(error.message.contains("all 2 are in use"))
            }
            gate.open()
            for holder in holders { try await holder.value }
            // Once connections come back, leases succeed again.
            #expect(try await client.query("SELECT 1").scalar(Int.self) == 1)
            await client.shutdown()
            await #expect(throws: PostgresError.self) { try await client.query("SELECT 1") }
        }
    }

    @Test(.timeLimit(.minutes(6)))
    func aWaiterIsServedWhenAConnectionIsReturned() async throws {
        try await TestDatabase.withFreshDatabase { (base) async throws in
            let client = PostgresClient(
                configuration: base.configuration, options: .init(maxConnections: 2, leaseTimeout: .seconds(50)),
                logger: TestDatabase.logger)
            let (gate, holders) = try await holdBoth(client)
            let waiter = Task { try await client.query("SELECT 42").scalar(Int.self) }
            while await client.statistics().waiting < 1 { try await Task.sleep(for: .milliseconds(5)) }
            gate.open()
            for holder in holders { try await holder.value }
            #expect(try await waiter.value == 42)
            let stats = await client.statistics()
            #expect(stats.open == 2 && stats.idle == 2 && stats.waiting == 0)
            await client.shutdown()
        }
    }

    @Test func connectionsLeftInATransactionAreNotReused() async throws {
        try await TestDatabase.withFreshDatabase(maxConnections: 1) { (client) async throws in
            let firstPID = try await client.withConnection { (connection) async throws in
                try await connection.execute("BEGIN")
                return await connection.backendPID
            }
            let secondPID = try await client.withConnection { (connection) async throws in
                #expect(await connection.transactionStatus == .idle)
                return await connection.backendPID
            }
            #expect(firstPID != secondPID)
        }
    }

    /// libpq blocks its thread; that thread must be the connection's own. Four connections blocked on a lock at
    /// once leave Swift's cooperative pool (two threads on a 2-core machine) free to run other work.
    @Test(.timeLimit(.minutes(6)))
    func blockingCallsStayOffTheCooperativePool() async throws {
        try await TestDatabase.withFreshDatabase(maxConnections: 6) { (client) async throws in
            let key = AdvisoryLockKey(name: "block")
            let holder = try await PostgresConnection.connect(configuration: client.configuration, logger: TestDatabase.logger)
            try await holder.execute("SELECT pg_advisory_lock(\(key.value))")
            let blocked = (0..<4).map { _ in
                Task { try await client.withConnection { try await $0.withAdvisoryLock(key) { _ in 1 } } }
            }
            while try await holder.query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).scalar(Int.self) < 4 {
                try await Task.sleep(for: .milliseconds(10))
            }
            // With four libpq calls blocked, plain async work still runs.
            let work = await withTaskGroup(of: Int.self) { group in
                for n in 1...8 { group.addTask { (1...1000).reduce(0, +) + n } }
                return await group.reduce(0, +)
            }
            #expect(work == 8 * 500_500 + 36)
            #expect(await holder.runsOnOwnThread())
            try await holder.execute("SELECT pg_advisory_unlock(\(key.value))")
            var total = 0
            for task in blocked { total += try await task.value }
            #expect(total == 4)
            await holder.close()
        }
    }

    @Test(.timeLimit(.minutes(6)))
    func poolRecoversAfterTheServerRestarts() async throws {
        try await TestDatabase.withPrivateCluster { (server) async throws in
            let configuration = try await server.start()
            let client = PostgresClient(
                configuration: configuration, options: .init(maxConnections: 3), logger: TestDatabase.logger)
            try await client.execute("CREATE TABLE IF NOT EXISTS marks (n int)")
            try await client.execute("INSERT INTO marks VALUES (1)")
            let pidBefore = try await client.query("SELECT pg_backend_pid()").scalar(Int.self)
            #expect(try await server.stop())
            do {
                try await client.query("SELECT 1")
                Issue.record("queries must fail while the server is down")
            } catch let error as PostgresError {
                #expect(error.kind == .connection)
            }
            _ = try await server.start()
            // Idle connections the server closed are replaced without a failed query.
            #expect(try await client.query("SELECT count(*) FROM marks").scalar(Int.self) == 1)
            let pidAfter = try await client.query("SELECT pg_backend_pid()").scalar(Int.self)
            #expect(pidBefore != pidAfter)
            await client.shutdown()
        }
    }

    @Test func wrongPasswordIsNamed() async throws {
        try await TestDatabase.withPrivateCluster { (server) async throws in
            let configuration = try await server.start()
            try await PostgresConnection.connect(configuration: configuration, logger: TestDatabase.logger).script(
                """
                SET password_encryption = 'scram-sha-256';
                CREATE ROLE app LOGIN PASSWORD 'right-password';
                """)
            let hba = try server.layout().dataDirectory + "/pg_hba.conf"
            let original = try String(contentsOfFile: hba, encoding: .utf8)
            try ("local all app scram-sha-256\n" + original).write(toFile: hba, atomically: false, encoding: .utf8)
            // A restart (rather than a reload, which applies asynchronously) makes the new rule certain to be in force.
            try await server.stop()
            try await server.start()
            var wrong = configuration
            wrong.overrides["user"] = "app"
            wrong.overrides["password"] = "wrong-password"
            do {
                _ = try await PostgresConnection.connect(configuration: wrong, logger: TestDatabase.logger)
                Issue.record("a wrong password must be refused")
            } catch let error as PostgresError {
                #expect(error.sqlState == .invalidPassword)
                #expect(error.message.contains("password authentication failed for user \"app\""))
                #expect(!error.description.contains("wrong-password"))
                #expect(error.hint?.contains("pgpass") == true)
            }
            var right = wrong
            right.overrides["password"] = "right-password"
            let connection = try await PostgresConnection.connect(configuration: right, logger: TestDatabase.logger)
            #expect(try await connection.query("SELECT current_user").scalar(String.self) == "app")
        }
    }
}
