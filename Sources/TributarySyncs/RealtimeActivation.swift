import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryIdentity
import TributaryRuntime
import TributarySegments

/// Real-time activation: delivers the entries into and exits from real-time segments to the syncs that follow them
/// (`"realtime": true`), moments after the event that caused them.
///
/// The path, each hop woken by `NOTIFY` rather than a poll:
///
/// ```
/// HTTP 200 (events committed) ─NOTIFY tributary_events─► identity stage ─NOTIFY tributary_identity─► profile stage
///   (traits, computed traits, real-time segments re-evaluated for the changed profiles; entries and exits written
///    to cdp.segment_changes in the same transaction) ─NOTIFY tributary_segments─► this loop ─► destination
/// ```
///
/// For each real-time sync, the loop reads the changes of its segment after the sync's checkpoint
/// (`cdp.sync_realtime`), runs the sync restricted to the profiles involved (the same diff against the delivered
/// state as a scheduled run, so an entry becomes an upsert or audience add, an exit a delete or remove), and moves
/// the checkpoint past them once the run succeeded. A crash anywhere repeats the last step without sending anything
/// twice: changes already confirmed make no diff, and changes sent but unconfirmed are sent again with the same
/// idempotency key. A sync seen for the first time is run in full (every current member), then followed.
public struct RealtimeActivation: StreamStage {
    public let client: PostgresClient
    public let logger: Logger
    let runner: SyncRunner
    public var name: String { "realtime" }
    public var wakeChannel: String { SegmentMembership.changesChannel }
    /// Each sync has its own position in `cdp.segment_changes` (`cdp.sync_realtime`): no single lag.
    public var lagCheckpoint: Checkpoint? { nil }
    /// Most segment changes handled per run of a sync.
    public var batchSize: Int

    public init(client: PostgresClient, logger: Logger, runner: SyncRunner, batchSize: Int = 1000) {
        self.client = client
        self.logger = logger
        self.runner = runner
        self.batchSize = batchSize
    }

    /// What one pass did.
    public struct Report: StageBatchReport, Equatable {
        /// Segment changes followed (checkpoints moved past them).
        public var changes = 0
        /// Runs made (restricted or, for a sync seen the first time, full).
        public var runs = 0
        /// Rows delivered by those runs.
        public var delivered = 0
        /// Runs that failed; their changes are tried again next pass.
        public var failed = 0
        public init() {}

        public var events: Int { changes }
        /// A pass works through every sync; peers are kept apart per sync, never made to wait.
        public var busy: Bool { false }
        /// One pass follows every sync until it caught up (or failed, to be retried next round).
        public var caughtUp: Bool { true }

        public mutating func add(_ other: Report) {
            changes += other.changes
            runs += other.runs
            delivered += other.delivered
            failed += other.failed
        }
    }

    /// Follows every enabled real-time sync until it has caught up with `cdp.segment_changes` (or a run failed).
    public func catchUp() async throws -> Report {
        var report = Report()
        let syncs = try await client.query(
            """
            SELECT s.name, d.segment, r.change_id
            FROM cdp.syncs AS s
            CROSS JOIN LATERAL (SELECT s.definition -> 'source' ->> 'segment' AS segment) AS d
            LEFT JOIN cdp.sync_realtime AS r ON r.sync = s.name
            WHERE s.enabled AND s.definition -> 'realtime' = 'true'::jsonb
            ORDER BY s.position
            """
        ).map { try $0.decode((String, String, Int64?).self) }
        for (name, segment, checkpoint) in syncs {
            try Task.checkCancellation()
            do {
                try await follow(name, segment: segment, from: checkpoint, &report)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                report.failed += 1
                logger.error("realtime: sync \(name) failed; its changes are tried again", metadata: ["error": "\(error)"])
            }
        }
        return report
    }

    private func follow(_ name: String, segment: String, from checkpoint: Int64?, _ report: inout Report) async throws {
        guard var mark = checkpoint else {
            // First sight: every current member, then the changes after what that run saw.
            let latest = try await client.query("SELECT coalesce(max(change_id), 0) FROM cdp.segment_changes").scalar(Int64.self)
            let run = try await runner.run(name, trigger: "realtime")
            guard record(run, name, &report) else { return }
            try await save(name, latest)
            return
        }
        while true {
            try Task.checkCancellation()
            let rows = try await client.query(
                """
                SELECT change_id, profile_id FROM cdp.segment_changes
                WHERE segment = \(segment) AND change_id > \(mark) ORDER BY change_id LIMIT \(batchSize)
                """
            ).map { try $0.decode((Int64, UUID).self) }
            guard let last = rows.last?.0 else { return }
            let profiles = Array(Set(rows.map(\.1)))
            let run = try await runner.run(name, trigger: "realtime", profiles: profiles)
            guard record(run, name, &report) else { return }
            try await save(name, last)
            report.changes += rows.count
            mark = last
            if rows.count < batchSize { return }
        }
    }

    /// Counts a run; false when the checkpoint must not move (the run failed or another process holds the sync).
    private func record(_ run: SyncRunner.Report, _ name: String, _ report: inout Report) -> Bool {
        switch run.status {
        case .succeeded, .partial:
            report.runs += 1
            report.delivered += run.delivered
            return true
        case .skipped:
            return false
        case .failed, .cancelled:
            report.failed += 1
            logger.warning("realtime: sync \(name) \(run.status.rawValue): \(run.error ?? "")")
            return false
        }
    }

    private func save(_ name: String, _ changeID: Int64) async throws {
        try await client.execute(
            """
            INSERT INTO cdp.sync_realtime (sync, change_id) VALUES (\(name), \(changeID))
            ON CONFLICT (sync) DO UPDATE SET change_id = greatest(cdp.sync_realtime.change_id, excluded.change_id), updated_at = excluded.updated_at
            """)
    }

    /// Runs until cancelled: catches up whenever segment changes are committed (`NOTIFY tributary_segments`, or every
    /// `pollInterval`; failed runs are retried then).
    public func run(pollInterval: Duration = .seconds(5)) async {
        logger.info("realtime: following real-time syncs")
        await runLoop(pollInterval: pollInterval) {
            let report = try await drain { try await catchUp() }
            if report.runs > 0 || report.failed > 0 {
                logger.info(
                    "realtime: delivered",
                    metadata: [
                        "changes": "\(report.changes)", "runs": "\(report.runs)", "delivered": "\(report.delivered)",
                        "failed": "\(report.failed)",
                    ])
            }
        }
    }
}
