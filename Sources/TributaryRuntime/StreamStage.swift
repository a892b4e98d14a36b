import Logging
import Postgres

/// What a stage's batch reports, as far as the shared catch-up loop needs it.
public protocol StageBatchReport: Sendable {
    init()
    /// Events the batch processed (counted in `tributary_stage_events_total`).
    var events: Int { get }
    /// Another processor held the stage's lock: nothing was done; the loop tries again shortly.
    var busy: Bool { get }
    /// Nothing was left to do: the stage has caught up with its producer.
    var caughtUp: Bool { get }
    /// Adds another batch's counts to this one.
    mutating func add(_ other: Self)
}

/// A stream stage: it follows what its producer wrote after its checkpoint, in batches of one transaction each, and
/// wakes on its producer's channel. Conforming gives a stage the same catch-up loop, run loop, lag gauge and
/// metrics as every other stage; a stage only says how to do one batch.
///
/// | stage | follows (channel) | checkpoint |
/// |---|---|---|
/// | identity | collection (`tributary_events`) | `Checkpoint.identity` |
/// | profiles | identity (`tributary_identity`) | `Checkpoint.profiles` |
/// | realtime activation | segments (`tributary_segments`) | one per sync, `cdp.sync_realtime` |
///
/// Lock order, wherever more than one is held: per-sync locks (a deletion takes them before its transaction), then
/// the identity stage's processor lock, the profile stage's, the segments lock (real-time segments take it inside the
/// profile stage's batch), and `EventWriter.sequenceLock` last. A privacy deletion takes all of them in that order.
public protocol StreamStage: Sendable {
    associatedtype Report: StageBatchReport
    /// The stage's name in logs and metrics (`identity`, `profiles`, `realtime`).
    var name: String { get }
    /// The producer's channel: a notification on it means new work.
    var wakeChannel: String { get }
    /// The stage's checkpoint in `cdp.events`, for the lag gauge; nil if its position is not one sequence number.
    var lagCheckpoint: Checkpoint? { get }
    var client: PostgresClient { get }
    var logger: Logger { get }
}

extension StreamStage {
    /// Runs `batch` until it reports the stage caught up, waiting while a peer holds the stage's lock, and records
    /// each batch in the stage's metrics. Returns the batches' reports added up.
    package func drain(_ batch: () async throws -> Report) async throws -> Report {
        var total = Report()
        while true {
            try Task.checkCancellation()
            let started = ContinuousClock.now
            let report = try await batch()
            if report.busy {
                try await Task.sleep(for: .milliseconds(50))
                continue
            }
            total.add(report)
            StageMetrics.current?.batch(events: report.events, duration: ContinuousClock.now - started)
            if report.caughtUp { return total }
        }
    }

    /// Runs `round` now and whenever the producer's channel is notified (or every `pollInterval`), until the task is
    /// cancelled; a failed round is logged and retried (see ``StageLoop``).
    package func runLoop(pollInterval: Duration, _ round: () async throws -> Void) async {
        await StageLoop(name: name, channel: wakeChannel, client: client, logger: logger, lagCheckpoint: lagCheckpoint)
            .run(pollInterval: pollInterval, round)
    }
}
