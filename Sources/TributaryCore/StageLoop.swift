import Logging
import Postgres

/// The run loop of a stream stage: do the work waiting now, then sleep until a `NOTIFY` on `channel` (or at most
/// `pollInterval`), until the task is cancelled. A failed round is logged and retried after `pollInterval`; if the
/// listening connection is lost (a server restart), the loop polls and reconnects.
struct StageLoop: Sendable {
    /// The stage's name in log messages (`identity`, `profiles`).
    let name: String
    /// The channel whose notifications mean new work.
    let channel: String
    let client: PostgresClient
    let logger: Logger

    func run(pollInterval: Duration, _ round: () async throws -> Void) async {
        var listener: PostgresConnection?
        while !Task.isCancelled {
            do {
                try await round()
            } catch is CancellationError {
                break
            } catch {
                logger.error("\(name): batch failed; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: pollInterval)
            }
            do {
                if listener == nil {
                    let connection = try await PostgresConnection.connect(configuration: client.configuration, logger: logger)
                    try await connection.listen(channel)
                    listener = connection
                }
                _ = try await listener?.waitForNotifications(timeout: pollInterval)
            } catch {
                await listener?.close()
                listener = nil
                logger.warning("\(name): not listening on \(channel); polling", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: pollInterval)
            }
        }
        await listener?.close()
    }
}
