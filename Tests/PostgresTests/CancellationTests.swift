import Foundation
import Postgres
import PostgresTesting
import Testing

/// Cancelling a task cancels its statement on the server, and only that statement.
@Suite struct CancellationTests {
    @Test(.timeLimit(.minutes(6)))
    func cancellingTheTaskCancelsTheRunningStatement() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let connection = try await PostgresConnection.connect(
                configuration: client.configuration, logger: TestDatabase.logger)
            let pid = await connection.backendPID
            let sleeper = Task { try await connection.query("SELECT pg_sleep(300)") }
            // Wait until the server is running it, then cancel.
            while try await client.query(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = \(Int(pid)) AND query LIKE 'SELECT pg_sleep%' AND state = 'active'"
            ).scalar(Int.self) == 0 {
                try await Task.sleep(for: .milliseconds(20))
            }
            sleeper.cancel()
            await #expect(throws: CancellationError.self) { try await sleeper.value }
            // The connection is usable, and a later statement is not hit by the old cancel.
            let after = try await connection.query("SELECT 'alive'").scalar(String.self)
            #expect(after == "alive")
            await connection.close()
        }
    }

    @Test func aTaskCancelledBeforeItsStatementStartsNeverRunsIt() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await client.execute("CREATE TABLE hits (n int)")
            let connection = try await PostgresConnection.connect(
                configuration: client.configuration, logger: TestDatabase.logger)
            let task = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await connection.execute("INSERT INTO hits VALUES (1)")
            }
            await #expect(throws: CancellationError.self) { try await task.value }
            #expect(try await client.query("SELECT count(*) FROM hits").scalar(Int.self) == 0)
            await connection.close()
        }
    }
}
