import Foundation
import Postgres
import PostgresTesting
import Testing

@Suite struct NotifyTests {
    @Test(.timeLimit(.minutes(6)))
    func listenAndNotifyAcrossTwoConnections() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let configuration = client.configuration
            let listener = try await PostgresConnection.connect(configuration: configuration, logger: TestDatabase.logger)
            let sender = try await PostgresConnection.connect(configuration: configuration, logger: TestDatabase.logger)
            let channel = "profile changed \"quoted\""
            try await listener.listen(channel)
            try await sender.notify(channel, payload: "p-1 🌊")
            var received: [PostgresNotification] = []
            while received.isEmpty {
                received += try await listener.waitForNotifications(timeout: .seconds(5))
            }
            #expect(received == [PostgresNotification(channel: channel, payload: "p-1 🌊", senderPID: await sender.backendPID)])

            // Inside a transaction, delivery waits for the commit.
            try await sender.withTransaction { (tx) async throws in
                try await tx.notify(channel, payload: "in-tx")
                #expect(try await listener.waitForNotifications(timeout: .milliseconds(300)).isEmpty)
            }
            var afterCommit: [PostgresNotification] = []
            while afterCommit.isEmpty {
                afterCommit += try await listener.waitForNotifications(timeout: .seconds(5))
            }
            #expect(afterCommit.map(\.payload) == ["in-tx"])
            await listener.close()
            await sender.close()
        }
    }

    @Test(.timeLimit(.minutes(6)))
    func notificationStreamDeliversInOrder() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            let listener = try await PostgresConnection.connect(configuration: client.configuration, logger: TestDatabase.logger)
            try await listener.listen("events")
            let stream = listener.notifications(wakeInterval: .milliseconds(50))
            for n in 1...20 { try await client.execute("SELECT pg_notify('events', \(String(n)))") }
            var payloads: [String] = []
            for try await note in stream {
                payloads.append(note.payload)
                if payloads.count == 20 { break }
            }
            #expect(payloads == (1...20).map(String.init))
            await listener.close()
        }
    }
}
