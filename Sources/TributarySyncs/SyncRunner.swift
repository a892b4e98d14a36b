import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributarySegments

/// How a failed batch is tried again: exponential backoff with full jitter, at least what `Retry-After` asked for.
public struct RetryPolicy: Sendable {
    /// The first wait's upper bound; it doubles with every try.
    public var base: Duration
    /// The longest wait for backoff.
    public var cap: Duration
    /// The longest `Retry-After` honoured.
    public var maxRetryAfter: Duration

    public init(base: Duration = .milliseconds(500), cap: Duration = .seconds(30), maxRetryAfter: Duration = .seconds(300)) {
        self.base = base
        self.cap = cap
        self.maxRetryAfter = maxRetryAfter
    }

    /// The wait before try `attempt + 1` (attempt counts from 1).
    public func delay(after attempt: Int, retryAfter: Duration?) -> Duration {
        let ceiling = min(cap, base * (1 << min(attempt - 1, 20)))
        let jittered = ceiling * Double.random(in: 0...1)
        guard let retryAfter else { return jittered }
        return max(min(retryAfter, maxRetryAfter), jittered)
    }
}

/// Request slots per destination account, shared by every sync this process runs: syncs to one account (a Braze
/// workspace, a webhook URL) spend one budget instead of each taking the account's whole rate limit.
actor RequestSpacing {
    private var next: [String: ContinuousClock.Instant] = [:]

    /// The moment the next request to `account` may start; the one after it `interval` later.
    func slot(_ account: String, interval: Duration) -> ContinuousClock.Instant {
        let now = ContinuousClock.now
        let at = max(now, next[account] ?? now)
        next[account] = at + interval
        if next.count > 10_000 { next = next.filter { $0.value > now } }
        return at
    }
}

/// Runs syncs: builds the diff in SQL, streams it to the destination in batches, and advances the delivered state only
/// for rows the destination confirmed.
///
/// A run holds the session advisory lock of its sync on its own connection, so a sync never runs twice at once (a
/// second worker skips it); a crash releases the lock with the connection, and the next run sends again whatever was
/// not confirmed (with the same idempotency keys).
public struct SyncRunner: Sendable {
    /// Request slots per destination account, for the whole process.
    static let spacing = RequestSpacing()
    let client: PostgresClient
    let logger: Logger
    let registry: DestinationRegistry
    public var retry: RetryPolicy
    /// Recorded in `cdp.sync_runs.worker`.
    public var worker: String
    public var environment: [String: String]

    public init(
        client: PostgresClient, logger: Logger, registry: DestinationRegistry, retry: RetryPolicy = RetryPolicy(),
        worker: String = "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)",
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.client = client
        self.logger = logger
        self.registry = registry
        self.retry = retry
        self.worker = worker
        self.environment = environment
    }

    /// What one run did.
    public struct Report: Sendable, Equatable {
        public enum Status: String, Sendable { case succeeded, partial, failed, cancelled, skipped }
        public var runID: Int64 = 0
        public var status: Status = .succeeded
        public var added = 0, changed = 0, removed = 0
        public var delivered = 0, rejected = 0, failed = 0
        public var batches = 0, attempts = 0
        public var error: String?
        public var duration: Duration = .zero
        public init() {}
    }

    package static func lockKey(_ sync: String) -> AdvisoryLockKey { AdvisoryLockKey(name: "tributary.sync." + sync) }

    /// Runs the sync `name` now. A dry run computes the diff and hands each change to `preview` (in order) without
    /// sending anything or changing any state. Returns `.skipped` when the sync is running elsewhere.
    ///
    /// - Parameter profiles: for a real-time sync, compare only these profiles (the ones whose memberships changed);
    ///   nil compares the whole source.
    /// - Parameter keys: compare only these keys (texts as `cdp.sync_state.key` holds them): a replay.
    public func run(
        _ name: String, trigger: String = "manual", dryRun: Bool = false, profiles: [UUID]? = nil, keys: [String]? = nil,
        preview: (@Sendable (SyncChange) -> Void)? = nil
    ) async throws -> Report {
        let started = ContinuousClock.now
        return try await client.withConnection { db in
            guard
                let text = try await db.query("SELECT definition::text FROM cdp.syncs WHERE name = \(name)").first?[0].decode(
                    String.self)
            else {
                throw SyncError("no sync named '\(name)' (tributary syncs list shows them)")
            }
            let definition = try SyncDefinitions.stored(text, name: name, registry: registry)
            let lock = Self.lockKey(name)
            guard try await db.query("SELECT pg_try_advisory_lock(\(lock.value))").first![0].decode(Bool.self) else {
                var report = Report()
                report.status = .skipped
                return report
            }
            do {
                var diff = SyncDiff(definition)
                if definition.realtime, case .segment(let segment) = definition.source {
                    let realtime = try await db.query(
                        "SELECT realtime FROM cdp.segment_definitions WHERE name = \(segment)"
                    ).first?[0].decode(Bool.self)
                    guard realtime == true else {
                        throw SyncError(
                            "sync '\(name)': its segment '\(segment)' is not applied as a real-time segment (\"realtime\": true): "
                                + "run tributary segments apply")
                    }
                    // Compiled from the stored definitions, as the segment's view was; never stored SQL text.
                    diff = SyncDiff(definition, members: try await SegmentStore.compiler(db).members(segment))
                }
                var report = try await run(
                    diff, profiles: profiles, keys: keys, on: db, trigger: trigger, dryRun: dryRun, preview: preview)
                report.duration = ContinuousClock.now - started
                try await finishRun(report, definition, db)
                _ = try? await db.query("SELECT pg_advisory_unlock(\(lock.value))")
                return report
            } catch {
                // Cancelled or failed: release the lock in a task that is not cancelled (a cancelled task's queries never
                // reach the server, and the connection goes back to the pool still holding the lock).
                await Task { _ = try? await db.query("SELECT pg_advisory_unlock(\(lock.value))") }.value
                throw error
            }
        }
    }

    /// What a replay did: which run's rows it sent again, how many, and the run it made.
    public struct Replay: Sendable {
        /// The run whose rows were replayed.
        public var sourceRun: Int64
        /// Rows selected (rejected, or rejected and failed, by that run).
        public var rows: Int
        /// The replay's own run (nil when there was nothing to replay).
        public var report: Report?
        /// Selected rows the replay did not send: delivered since, or gone from the source.
        public var settled: Int { max(0, rows - ((report?.added ?? 0) + (report?.changed ?? 0) + (report?.removed ?? 0))) }
    }

    /// `tributary syncs replay`: sends again the rows a run rejected (and, unless `rejectedOnly`, those it failed
    /// to deliver), with their current values from the source, as a run of their keys only (trigger `replay`).
    /// `run` nil picks the sync's latest run that has such rows. Rows delivered since (or gone from the source) are
    /// not sent again.
    public func replay(_ name: String, run: Int64? = nil, rejectedOnly: Bool = false) async throws -> Replay {
        let outcomes = rejectedOnly ? ["rejected"] : ["rejected", "failed"]
        let (sourceRun, keys): (Int64?, [String]) = try await client.withConnection { db in
            guard try await db.query("SELECT EXISTS (SELECT 1 FROM cdp.syncs WHERE name = \(name))").scalar(Bool.self) else {
                throw SyncError("no sync named '\(name)' (tributary syncs list shows them)")
            }
            let chosen: Int64?
            if let run {
                guard
                    try await db.query("SELECT EXISTS (SELECT 1 FROM cdp.sync_runs WHERE run_id = \(run) AND sync = \(name))")
                        .scalar(Bool.self)
                else { throw SyncError("sync '\(name)' has no run \(run) (tributary syncs runs \(name) lists them)") }
                chosen = run
            } else {
                chosen = try await db.query(
                    """
                    SELECT max(run_id) FROM cdp.sync_run_rows WHERE sync = \(name) AND outcome = ANY(\(outcomes)::text[])
                    """
                ).first?[0].decode(Int64?.self)
            }
            guard let chosen else { return (nil, []) }
            let keys = try await db.query(
                """
                SELECT key FROM cdp.sync_run_rows WHERE run_id = \(chosen) AND outcome = ANY(\(outcomes)::text[]) ORDER BY key
                """
            ).map { try $0[0].decode(String.self) }
            return (chosen, keys)
        }
        guard let sourceRun else { return Replay(sourceRun: 0, rows: 0, report: nil) }
        guard !keys.isEmpty else { return Replay(sourceRun: sourceRun, rows: 0, report: nil) }
        return Replay(sourceRun: sourceRun, rows: keys.count, report: try await self.run(name, trigger: "replay", keys: keys))
    }

    private func run(
        _ diff: SyncDiff, profiles: [UUID]?, keys: [String]?, on db: PostgresConnection, trigger: String, dryRun: Bool,
        preview: (@Sendable (SyncChange) -> Void)?
    ) async throws -> Report {
        let sync = diff.sync
        let started = ContinuousClock.now
        var report = Report()
        // Runs left 'running' by a worker that died (we hold the lock now, so none is really running).
        try await db.execute(
            """
            UPDATE cdp.sync_runs SET status = 'abandoned', finished_at = now() WHERE sync = \(sync.name) AND status = 'running'
            """)
        report.runID = try await db.query(
            """
            INSERT INTO cdp.sync_runs (sync, trigger, dry_run, status, worker) VALUES (\(sync.name), \(trigger), \(dryRun), 'running', \(worker))
            RETURNING run_id
            """
        ).first![0].decode(Int64.self)
        do {
            try await computeDiff(diff, profiles: profiles, keys: keys, db, &report)
            if !dryRun && profiles == nil && keys == nil {
                // A rejected row is offered again by every full diff while it is in the source; one that is not in the
                // diff has left the source (or its consent) or matches what the destination holds: its error is settled.
                try await db.execute(
                    """
                    DELETE FROM cdp.sync_errors AS e
                    WHERE e.sync = \(sync.name) AND NOT EXISTS (SELECT 1 FROM pg_temp.tributary_sync_diff AS d WHERE d.key = e.key)
                    """)
            }
            if dryRun {
                try await page(sync, db, batchSize: sync.batchSize, runID: report.runID) { batch, _ in
                    batch.forEach { preview?($0) }
                }
                return report
            }
            let destination = try await registry.make(
                DestinationContext(
                    sync: sync.name, runID: report.runID, settings: sync.destination, environment: environment, client: client,
                    logger: logger))
            do {
                try await deliver(sync, to: destination, db, &report)
                await destination.close()
            } catch {
                await destination.close()
                throw error
            }
        } catch let error as CancellationError {
            report.status = .cancelled
            report.error = "cancelled (worker stopping); undelivered rows are sent by the next run"
            report.duration = ContinuousClock.now - started
            let final = report
            await Task { try? await finishRun(final, sync, db) }.value
            throw error
        } catch {
            report.status = .failed
            report.error = "\(error)"
            report.duration = ContinuousClock.now - started
            let final = report
            await Task { try? await finishRun(final, sync, db) }.value
            throw error
        }
        return report
    }

    /// Fills the session's diff table and counts it.
    private func computeDiff(
        _ diff: SyncDiff, profiles: [UUID]?, keys: [String]?, _ db: PostgresConnection, _ report: inout Report
    ) async throws {
        let sync = diff.sync
        try await db.execute(PostgresQuery(unsafeSQL: SyncDiff.createSQL))
        try await db.execute("TRUNCATE pg_temp.tributary_sync_diff RESTART IDENTITY")
        // A replay compares its keys; a real-time run its profiles; anything else the whole source.
        let scope: SyncDiff.Scope =
            if let keys { .keys(keys) } else if let profiles, diff.members != nil { .profiles(profiles) } else { .all }
        let insert = try diff.insert(scope)
        let removedFields = diff.removedFields()
        do {
            try await db.withTransaction { tx in
                // The source is the analyst's SQL: read it read-only (the session's temporary table takes the diff).
                try await tx.execute("SET TRANSACTION READ ONLY")
                // The connection's JIT-off stays on even for a `query` source: the statement is Tributary's diff around
                // the analyst's query, and JIT-compiling it cost seconds per run (the sync tests timed out in parallel).
                try await tx.execute("SET LOCAL work_mem = '64MB'")
                try await tx.execute(insert)
                if sync.tracksRemovals { try await tx.execute(removedFields) }
            }
        } catch let error as PostgresError {
            if error.sqlState == .uniqueViolation {
                throw SyncError(
                    "sync '\(sync.name)': the source has more than one row with the same primary key (\(sync.primaryKey.joined(separator: ", "))): \(error.detail ?? error.message)"
                )
            }
            throw SyncError("sync '\(sync.name)': reading the source failed: \(error.message)")
        }
        if sync.mode == .audience { try await db.execute(diff.previousPayload()) }
        try await db.execute("ANALYZE pg_temp.tributary_sync_diff")
        for row in try await db.query("SELECT kind, count(*) FROM pg_temp.tributary_sync_diff GROUP BY kind") {
            let (kind, count) = try row.decode((String, Int).self)
            switch kind {
            case "added": report.added = count
            case "changed": report.changed = count
            default: report.removed += count
            }
        }
    }

    /// Reads the diff table in order, a batch at a time (never the whole diff in memory).
    private func page(
        _ sync: SyncDefinition, _ db: PostgresConnection, batchSize: Int, runID: Int64,
        _ body: ([SyncChange], [Int]) async throws -> Void
    ) async throws {
        var last = 0
        while true {
            try Task.checkCancellation()
            let rows = try await db.query(
                """
                SELECT n, kind, key, key_object::text, payload::text, hash::text, previous_run, pending_hash::text, pending_operation,
                       pending_key, previous_payload::text
                FROM pg_temp.tributary_sync_diff WHERE n > \(last) ORDER BY n LIMIT \(batchSize)
                """)
            if rows.isEmpty { return }
            var changes: [SyncChange] = []
            var numbers: [Int] = []
            for row in rows {
                let (n, kind, key, keyObject, payload, hash, previous) = try row.decode(
                    (Int, String, String, String, String, String, Int64).self)
                let (pendingHash, pendingOperation, pendingKey) = (
                    try row[7].decode(String?.self), try row[8].decode(String?.self), try row[9].decode(String?.self)
                )
                last = n
                guard let diff = DiffKind(rawValue: kind), let operation = sync.operation(for: diff) else { continue }
                let idempotency = Self.idempotencyKey(
                    sync: sync.name, key: key, operation: operation, hash: hash, previousRun: previous,
                    pending: pendingKey.map { ($0, pendingHash ?? "", pendingOperation ?? "") })
                let previousFields = try row[10].decode(String?.self).map { try JSONParser.parse(Array($0.utf8)) }
                changes.append(
                    SyncChange(
                        operation: operation, key: try JSONParser.parse(Array(keyObject.utf8)),
                        fields: try JSONParser.parse(Array(payload.utf8)), idempotencyKey: idempotency,
                        previousFields: previousFields))
                numbers.append(n)
            }
            try await body(changes, numbers)
        }
    }

    /// The idempotency key of a change: the same for the same change sent again (a retry, or a run after an
    /// unconfirmed one), different for any other change of the row. A change after an unconfirmed different one is
    /// keyed after that one, so a receiver that drops repeated keys never drops it.
    static func idempotencyKey(
        sync: String, key: String, operation: SyncOperation, hash: String, previousRun: Int64,
        pending: (key: String, hash: String, operation: String)?
    ) -> String {
        if let pending, pending.hash == hash, pending.operation == operation.rawValue { return pending.key }
        let after = pending.map { "\u{1}after \($0.key)" } ?? ""
        return sha256Hex(
            Data("\(sync)\u{1}\(key)\u{1}\(operation.rawValue)\u{1}\(hash)\u{1}\(previousRun)\(after)".utf8), bytes: 16)
    }

    /// Records a batch as sent, before sending it (committed): until confirmed, the destination may hold it.
    private func markPending(
        _ sync: String, _ batch: [SyncChange], _ numbers: [Int], runID: Int64, _ db: PostgresConnection
    ) async throws {
        try await db.execute(
            """
            INSERT INTO cdp.sync_pending AS p (sync, key, key_object, payload, hash, operation, idempotency_key, run_id)
            SELECT \(sync), d.key, d.key_object, d.payload, d.hash, x.operation, x.idempotency_key, \(runID)
            FROM unnest(\(numbers)::bigint[], \(batch.map(\.operation.rawValue))::text[], \(batch.map(\.idempotencyKey))::text[])
                 AS x (n, operation, idempotency_key)
            JOIN pg_temp.tributary_sync_diff AS d ON d.n = x.n
            ON CONFLICT (sync, key) DO UPDATE SET key_object = excluded.key_object, payload = excluded.payload, hash = excluded.hash,
                operation = excluded.operation, idempotency_key = excluded.idempotency_key, run_id = excluded.run_id, sent_at = excluded.sent_at
            """)
    }

    private func deliver(
        _ sync: SyncDefinition, to destination: any Destination, _ db: PostgresConnection, _ report: inout Report
    ) async throws {
        let batchSize = max(1, min(sync.batchSize, destination.maxBatchSize))
        let interval = sync.requestsPerSecond.map { Duration.milliseconds(Int64((1000 / $0).rounded(.up))) }
        let account = destination.account ?? "sync:\(sync.name)"
        var gaveUp: (error: DestinationError, tries: Int)?
        if destination.confirmsAtFinish {
            try await db.execute("DROP TABLE IF EXISTS pg_temp.tributary_sync_confirmed")
            try await db.execute("CREATE TEMP TABLE tributary_sync_confirmed (n bigint PRIMARY KEY, operation text NOT NULL)")
        }
        // The counts go straight into `report`: if the loop throws (cancelled), the run's row tells what it did.
        try await page(sync, db, batchSize: batchSize, runID: report.runID) { batch, numbers in
            // After a batch gave up, the rest is not sent: counted as failed (the next run sends it).
            if gaveUp != nil {
                report.failed += batch.count
                return
            }
            guard !batch.isEmpty else { return }
            var attempt = 0
            var results: [ChangeResult]?
            try await markPending(sync.name, batch, numbers, runID: report.runID, db)
            while results == nil {
                attempt += 1
                if let interval {
                    let slot = await Self.spacing.slot(account, interval: interval)
                    if slot > ContinuousClock.now { try await Task.sleep(until: slot) }
                }
                report.attempts += 1
                do {
                    let answer = try await destination.send(batch)
                    guard answer.count == batch.count else {
                        throw DestinationError(
                            "the destination answered \(answer.count) results for \(batch.count) changes", retryable: false)
                    }
                    results = answer
                } catch let error as DestinationError {
                    guard error.retryable, attempt < sync.maxAttempts else {
                        gaveUp = (error, attempt)
                        report.failed += batch.count
                        logger.warning("sync \(sync.name): batch failed after \(attempt) tries: \(error)")
                        try await recordRows(
                            sync, runID: report.runID,
                            zip(numbers, batch).map {
                                RowOutcome(n: $0, operation: $1.operation, outcome: "failed", reason: error.description)
                            },
                            db)
                        return
                    }
                    let wait = retry.delay(after: attempt, retryAfter: error.retryAfter)
                    logger.info("sync \(sync.name): batch failed (\(error)); try \(attempt + 1) in \(wait)")
                    try await Task.sleep(for: wait)
                }
            }
            report.batches += 1
            var delivered: [Int] = []
            var deliveredOperations: [SyncOperation] = []
            var rejected: [(Int, SyncChange, String)] = []
            for (index, result) in results!.enumerated() {
                switch result {
                case .delivered:
                    delivered.append(numbers[index])
                    deliveredOperations.append(batch[index].operation)
                case .rejected(let reason): rejected.append((numbers[index], batch[index], reason))
                }
            }
            report.delivered += delivered.count
            report.rejected += rejected.count
            if destination.confirmsAtFinish {
                try await db.execute(
                    """
                    INSERT INTO pg_temp.tributary_sync_confirmed
                    SELECT * FROM unnest(\(delivered)::bigint[], \(deliveredOperations.map(\.rawValue))::text[])
                    """)
            } else {
                try await confirm(sync.name, delivered, runID: report.runID, db)
                try await recordRows(
                    sync, runID: report.runID,
                    zip(delivered, deliveredOperations).map {
                        RowOutcome(n: $0, operation: $1, outcome: "delivered", reason: nil)
                    },
                    db)
            }
            try await recordRejections(sync.name, rejected, runID: report.runID, db)
            try await recordRows(
                sync, runID: report.runID,
                rejected.map { RowOutcome(n: $0.0, operation: $0.1.operation, outcome: "rejected", reason: $0.2) }, db)
        }
        if let gaveUp {
            report.status = .failed
            report.error =
                "a batch failed after \(gaveUp.tries) \(gaveUp.tries == 1 ? "try" : "tries"): \(gaveUp.error.description)"
            // What was confirmed stays confirmed; the rest is sent by the next run. A destination that confirms at its
            // finish confirmed nothing: what it was sent counts as failed.
            if destination.confirmsAtFinish {
                report.failed += report.delivered
                report.delivered = 0
                try await recordConfirmedRows(sync, runID: report.runID, outcome: "failed", reason: gaveUp.error.description, db)
            }
            return
        }
        try await destination.finish()
        if destination.confirmsAtFinish {
            try await confirm(
                sync.name,
                from: "SELECT d.* FROM pg_temp.tributary_sync_diff AS d JOIN pg_temp.tributary_sync_confirmed USING (n)",
                runID: report.runID, db)
            try await recordConfirmedRows(sync, runID: report.runID, outcome: "delivered", reason: nil, db)
        }
        report.status = report.rejected > 0 ? .partial : .succeeded
    }

    /// Advances the delivered state for confirmed rows (the diff's numbers) and clears their errors, in one transaction.
    private func confirm(_ sync: String, _ numbers: [Int], runID: Int64, _ db: PostgresConnection) async throws {
        guard !numbers.isEmpty else { return }
        try await confirm(
            sync, from: "SELECT * FROM pg_temp.tributary_sync_diff WHERE n = ANY(\(numbers)::bigint[])", runID: runID, db)
    }

    /// The same for the diff rows `rows` selects.
    private func confirm(_ sync: String, from rows: PostgresQuery, runID: Int64, _ db: PostgresConnection) async throws {
        try await db.execute(
            """
            WITH d AS (\(rows)),
            saved AS (
                INSERT INTO cdp.sync_state AS s (sync, key, key_object, payload, hash, removed, run_id)
                SELECT \(sync), key, key_object, payload, hash, kind IN ('removed', 'withdrawn'), \(runID) FROM d
                ON CONFLICT (sync, key) DO UPDATE SET key_object = excluded.key_object, payload = excluded.payload,
                    hash = excluded.hash, removed = excluded.removed, run_id = excluded.run_id, delivered_at = excluded.delivered_at
                RETURNING 1
            ),
            settled AS (DELETE FROM cdp.sync_pending AS p USING d WHERE p.sync = \(sync) AND p.key = d.key RETURNING 1)
            DELETE FROM cdp.sync_errors AS e USING d WHERE e.sync = \(sync) AND e.key = d.key
            """)
    }

    private func recordRejections(
        _ sync: String, _ rejected: [(Int, SyncChange, String)], runID: Int64, _ db: PostgresConnection
    ) async throws {
        guard !rejected.isEmpty else { return }
        // Refused: the destination does not hold them, so they are no longer pending.
        try await db.execute(
            """
            DELETE FROM cdp.sync_pending AS p USING pg_temp.tributary_sync_diff AS d
            WHERE p.sync = \(sync) AND d.n = ANY(\(rejected.map(\.0))::bigint[]) AND p.key = d.key
            """)
        try await db.execute(
            """
            INSERT INTO cdp.sync_errors AS e (sync, key, key_object, operation, reason, last_run_id)
            SELECT \(sync), d.key, d.key_object, r.operation, r.reason, \(runID)
            FROM unnest(\(rejected.map(\.0))::bigint[], \(rejected.map(\.1.operation.rawValue))::text[], \(rejected.map(\.2))::text[])
                 AS r (n, operation, reason)
            JOIN pg_temp.tributary_sync_diff AS d ON d.n = r.n
            ON CONFLICT (sync, key) DO UPDATE SET operation = excluded.operation, reason = excluded.reason,
                attempts = e.attempts + 1, last_failed_at = excluded.last_failed_at, last_run_id = excluded.last_run_id
            """)
    }

    /// What became of one row a run sent.
    struct RowOutcome {
        var n: Int
        var operation: SyncOperation
        var outcome: String
        var reason: String?
    }

    /// Records rows of this run (the diff's numbers) with their outcome in `cdp.sync_run_rows`, unless the sync keeps
    /// no row history.
    private func recordRows(_ sync: SyncDefinition, runID: Int64, _ rows: [RowOutcome], _ db: PostgresConnection) async throws {
        guard sync.rowHistoryDays > 0, !rows.isEmpty else { return }
        try await db.execute(
            """
            INSERT INTO cdp.sync_run_rows (run_id, sync, key, key_object, operation, outcome, reason)
            SELECT \(runID), \(sync.name), d.key, d.key_object, r.operation, r.outcome, r.reason
            FROM unnest(\(rows.map(\.n))::bigint[], \(rows.map(\.operation.rawValue))::text[], \(rows.map(\.outcome))::text[],
                        \(rows.map(\.reason))::text[]) AS r (n, operation, outcome, reason)
            JOIN pg_temp.tributary_sync_diff AS d ON d.n = r.n
            ON CONFLICT (run_id, key) DO UPDATE SET operation = excluded.operation, outcome = excluded.outcome,
                reason = excluded.reason, recorded_at = excluded.recorded_at
            """)
    }

    /// The same for the rows a confirm-at-finish destination accepted during the run.
    private func recordConfirmedRows(
        _ sync: SyncDefinition, runID: Int64, outcome: String, reason: String?, _ db: PostgresConnection
    ) async throws {
        guard sync.rowHistoryDays > 0 else { return }
        try await db.execute(
            """
            INSERT INTO cdp.sync_run_rows (run_id, sync, key, key_object, operation, outcome, reason)
            SELECT \(runID), \(sync.name), d.key, d.key_object, c.operation, \(outcome), \(reason)
            FROM pg_temp.tributary_sync_confirmed AS c JOIN pg_temp.tributary_sync_diff AS d USING (n)
            ON CONFLICT (run_id, key) DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason, recorded_at = excluded.recorded_at
            """)
    }

    private func finishRun(_ report: Report, _ sync: SyncDefinition, _ db: PostgresConnection) async throws {
        let status = report.status == .skipped ? "succeeded" : report.status.rawValue
        let millis = report.duration.milliseconds
        try await db.execute(
            """
            UPDATE cdp.sync_runs SET status = \(status), added = \(report.added), changed = \(report.changed),
                removed = \(report.removed), delivered = \(report.delivered), rejected = \(report.rejected), failed = \(report.failed),
                batches = \(report.batches), attempts = \(report.attempts), error = nullif(\(report.error ?? ""), ''),
                finished_at = now(), duration_ms = \(millis)
            WHERE run_id = \(report.runID)
            """)
        // Row history older than the sync keeps it goes (all of it when it keeps none).
        try await db.execute(
            """
            DELETE FROM cdp.sync_run_rows
            WHERE sync = \(sync.name) AND recorded_at < now() - \(sync.rowHistoryDays) * interval '1 day'
            """)
        // One line per finished run, for alerting on logs: a warning when rows were refused or the run failed.
        let level: Logger.Level = report.status == .succeeded ? .info : report.status == .partial ? .warning : .error
        logger.log(
            level: level, "sync run finished",
            metadata: [
                "sync": "\(sync.name)", "run_id": "\(report.runID)", "status": "\(status)", "added": "\(report.added)",
                "changed": "\(report.changed)", "removed": "\(report.removed)", "delivered": "\(report.delivered)",
                "rejected": "\(report.rejected)", "failed": "\(report.failed)", "duration_ms": "\(millis)",
                "error": "\(report.error ?? "")",
            ])
    }
}
