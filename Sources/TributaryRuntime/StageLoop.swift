import Logging
import Postgres

/// The run loop of a stream stage: do the work waiting now, then sleep until a `NOTIFY` on `channel` (or at most
/// `pollInterval`), until the task is cancelled. A failed round is logged and retried after `pollInterval`; if the
/// listening connection is lost (a server restart), the loop polls and reconnects.
///
/// The loop makes the stage's ``StageMetrics`` (current to `round`, which records its batches) and, for a stage with
/// a checkpoint in `cdp.stage_checkpoints`, samples its lag every second.
package struct StageLoop: Sendable {
    /// The stage's name in log messages (`identity`, `profiles`).
    let name: String
    /// The channel whose notifications mean new work.
    let channel: String
    let client: PostgresClient
    let logger: Logger
    /// The stage's row in `cdp.stage_checkpoints` (a sequence number of `cdp.events`), for the lag gauge; nil: no lag.
    var lagCheckpoint: Checkpoint? = nil

    package init(name: String, channel: String, client: PostgresClient, logger: Logger, lagCheckpoint: Checkpoint? = nil) {
        self.name = name
        self.channel = channel
        self.client = client
        self.logger = logger
        self.lagCheckpoint = lagCheckpoint
    }

    package func run(pollInterval: Duration, _ round: () async throws -> Void) async {
        let metrics = StageMetrics(stage: name)
        let sampler = lagCheckpoint.map { checkpoint in
            Task { [client] in await metrics.sampleLag(checkpoint: checkpoint, client: client, every: .seconds(1)) }
        }
        defer { sampler?.cancel() }
        await StageMetrics.$current.withValue(metrics) { await loop(pollInterval: pollInterval, round) }
    }

    private func loop(pollInterval: Duration, _ round: () async throws -> Void) async {
        var listener: PostgresConnection?
        while !Task.isCancelled {
            // Listen before each round's work: a notification sent while the round runs is then queued, never lost
            // (listening only after the first round would miss what arrived during it, until the next poll).
            if listener == nil {
                do {
                    let connection = try await PostgresConnection.connect(configuration: client.configuration, logger: logger)
                    try await connection.listen(channel)
                    listener = connection
                } catch {
                    logger.warning("\(name): not listening on \(channel); polling", metadata: ["error": "\(error)"])
                }
            }
            do {
                try await round()
            } catch is CancellationError {
                break
            } catch {
                logger.error("\(name): batch failed; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: pollInterval)
            }
            guard let connection = listener else {
                try? await Task.sleep(for: pollInterval)
                continue
            }
            do {
                // In slices, so a cancelled task (a stopping server) stops waiting promptly; a notification still
                // ends the wait the moment it arrives.
                let deadline = ContinuousClock.now + pollInterval
                while !Task.isCancelled, ContinuousClock.now < deadline {
                    let slice = min(.milliseconds(250), deadline - ContinuousClock.now)
                    if !(try await connection.waitForNotifications(timeout: slice)).isEmpty { break }
                }
            } catch {
                await connection.close()
                listener = nil
                logger.warning(
                    "\(name): lost the connection listening on \(channel); reconnecting", metadata: ["error": "\(error)"])
            }
        }
        await listener?.close()
    }
}
