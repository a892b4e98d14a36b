import Foundation
import Logging
import Postgres
import TributaryModel
import TributarySegments

/// Applying sync definitions (`cdp.syncs`), and what operators read back: the list, runs and errors.
public struct SyncStore: Sendable {
    let client: PostgresClient
    let logger: Logger
    let registry: DestinationRegistry

    public init(client: PostgresClient, logger: Logger, registry: DestinationRegistry) {
        self.client = client
        self.logger = logger
        self.registry = registry
    }

    /// Reads a syncs file and checks each source against the database: it must run, and have the key and mapped
    /// columns (`SELECT … LIMIT 0`, read-only).
    public func load(_ data: Data) async throws -> SyncDefinitions {
        let definitions = try SyncDefinitions.parse(data, registry: registry)
        for (index, sync) in definitions.syncs.enumerated() {
            try await check(sync, at: "syncs[\(index)]")
        }
        return definitions
    }

    func check(_ sync: SyncDefinition, at path: String) async throws {
        if sync.realtime, case .segment(let segment) = sync.source {
            let realtime = try await client.query(
                """
                SELECT realtime FROM cdp.segment_definitions WHERE name = \(segment)
                """
            ).first?[0].decode(Bool.self)
            guard let realtime else { throw SyncError("\(path).source.segment: no segment named '\(segment)' is applied") }
            guard realtime else {
                throw SyncError(
                    "\(path).realtime: segment '\(segment)' is not real-time; mark it \"realtime\": true and run segments apply")
            }
        }
        let source = try SyncDiff(sync).keyedSource()
        do {
            try await client.withTransaction { tx in
                try await tx.execute("SET TRANSACTION READ ONLY")
                try await tx.execute("SELECT * FROM (\(source)) AS checked LIMIT 0")
            }
        } catch let error as PostgresError where error.kind == .server {
            let source: String =
                switch sync.source {
                case .segment(let name): "the segment view segments.\"\(name)\" (is the segment applied?)"
                case .relation(let schema, let name): schema.map { "\($0).\(name)" } ?? name
                case .query: "the query"
                }
            throw SyncError("\(path).source: reading \(source) failed: \(error.message)")
        }
    }

    public struct Change: Sendable {
        public enum Kind: String, Sendable { case added, changed, removed, unchanged }
        public var name: String
        public var kind: Kind
    }

    /// Puts `definitions` in force in one transaction. New syncs and syncs whose schedule changed are due now; a
    /// removed sync loses its delivered state (a sync of the same name later starts from scratch).
    @discardableResult
    public func apply(_ definitions: SyncDefinitions) async throws -> [Change] {
        try await client.withTransaction { tx in
            let stored = try await tx.query("SELECT name, definition::text FROM cdp.syncs").map {
                try $0.decode((String, String).self)
            }
            let old = Dictionary(uniqueKeysWithValues: stored.map { ($0.0, $0.1) })
            var changes: [Change] = []
            for (position, sync) in definitions.syncs.enumerated() {
                let json = sync.document.serialized
                let previous = try old[sync.name].map { try SyncDefinitions.stored($0, name: sync.name, registry: registry) }
                let kind: Change.Kind = previous == nil ? .added : previous == sync ? .unchanged : .changed
                changes.append(Change(name: sync.name, kind: kind))
                let next: Date? = sync.schedule == .manual || !sync.enabled ? nil : Date()
                let reschedule = previous?.schedule != sync.schedule || previous?.enabled != sync.enabled
                try await tx.execute(
                    """
                    INSERT INTO cdp.syncs (name, definition, position, enabled, next_run_at)
                    VALUES (\(sync.name), \(json)::jsonb, \(position), \(sync.enabled), \(next))
                    ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, position = excluded.position,
                        enabled = excluded.enabled, applied_at = excluded.applied_at,
                        next_run_at = CASE WHEN \(reschedule) THEN excluded.next_run_at ELSE cdp.syncs.next_run_at END
                    """)
            }
            for (name, _) in stored where definitions[name] == nil {
                try await tx.execute("DELETE FROM cdp.syncs WHERE name = \(name)")
                changes.append(Change(name: name, kind: .removed))
            }
            return changes
        }
    }

    /// The syncs in force, in file order.
    public func current() async throws -> SyncDefinitions {
        SyncDefinitions(
            try await client.query("SELECT name, definition::text FROM cdp.syncs ORDER BY position").map {
                let (name, text) = try $0.decode((String, String).self)
                return try SyncDefinitions.stored(text, name: name, registry: registry)
            })
    }

    /// A row of `tributary syncs list`.
    public struct Summary: Sendable {
        public var name: String
        public var mode: String
        public var destination: String
        public var enabled: Bool
        public var nextRunAt: Date?
        public var delivered: Int
        public var errors: Int
        public var lastStatus: String?
        public var lastRunAt: Date?
    }

    public func list() async throws -> [Summary] {
        try await client.query(
            """
            SELECT s.name, coalesce(s.definition ->> 'mode', 'upsert'), s.definition -> 'destination' ->> 'type', s.enabled, s.next_run_at,
                   (SELECT count(*) FROM cdp.sync_state AS st WHERE st.sync = s.name AND NOT st.removed),
                   (SELECT count(*) FROM cdp.sync_errors AS e WHERE e.sync = s.name),
                   r.status, r.started_at
            FROM cdp.syncs AS s
            LEFT JOIN LATERAL (SELECT status, started_at FROM cdp.sync_runs WHERE sync = s.name ORDER BY run_id DESC LIMIT 1) AS r ON true
            ORDER BY s.position
            """
        ).map {
            let (name, mode, destination, enabled, next, delivered, errors, status, last) =
                try $0.decode((String, String, String, Bool, Date?, Int, Int, String?, Date?).self)
            return Summary(
                name: name, mode: mode, destination: destination, enabled: enabled, nextRunAt: next, delivered: delivered,
                errors: errors, lastStatus: status, lastRunAt: last)
        }
    }

    /// One recorded run.
    public struct Run: Sendable {
        public var runID: Int64, sync: String, trigger: String, dryRun: Bool, status: String
        public var added: Int, changed: Int, removed: Int, delivered: Int, rejected: Int, failed: Int
        public var startedAt: Date, durationMilliseconds: Int?, error: String?
    }

    /// The latest runs (of one sync, or all), newest first.
    public func runs(_ name: String? = nil, limit: Int = 20) async throws -> [Run] {
        try await client.query(
            """
            SELECT run_id, sync, trigger, dry_run, status, added, changed, removed, delivered, rejected, failed, started_at, duration_ms, error
            FROM cdp.sync_runs WHERE \(name)::text IS NULL OR sync = \(name) ORDER BY run_id DESC LIMIT \(limit)
            """
        ).map {
            let (id, sync, trigger, dry, status, added, changed, removed) = try $0.decode(
                (Int64, String, String, Bool, String, Int, Int, Int).self)
            let delivered = try $0[8].decode(Int.self), rejected = try $0[9].decode(Int.self),
                failed = try $0[10].decode(Int.self)
            let started = try $0[11].decode(Date.self), millis = try $0[12].decode(Int?.self),
                error = try $0[13].decode(String?.self)
            return Run(
                runID: id, sync: sync, trigger: trigger, dryRun: dry, status: status, added: added, changed: changed,
                removed: removed,
                delivered: delivered, rejected: rejected, failed: failed, startedAt: started, durationMilliseconds: millis,
                error: error)
        }
    }

    /// Rows a destination refused and that are waiting for a later run.
    public func errors(
        _ name: String? = nil, limit: Int = 20
    ) async throws -> [(sync: String, key: String, reason: String, attempts: Int)] {
        try await client.query(
            """
            SELECT sync, key_object::text, reason, attempts FROM cdp.sync_errors WHERE \(name)::text IS NULL OR sync = \(name)
            ORDER BY last_failed_at DESC LIMIT \(limit)
            """
        ).map { try $0.decode((String, String, String, Int).self) }.map { (sync: $0.0, key: $0.1, reason: $0.2, attempts: $0.3) }
    }

    /// The rows run `runID` sent and what became of each (`cdp.sync_run_rows`): refused and failed ones first.
    public func runRows(
        _ runID: Int64, limit: Int = 20
    ) async throws -> [(key: String, operation: String, outcome: String, reason: String?)] {
        try await client.query(
            """
            SELECT coalesce(key_object::text, key), operation, outcome, reason FROM cdp.sync_run_rows WHERE run_id = \(runID)
            ORDER BY outcome = 'delivered', key LIMIT \(limit)
            """
        ).map { try $0.decode((String, String, String, String?).self) }.map {
            (key: $0.0, operation: $0.1, outcome: $0.2, reason: $0.3)
        }
    }
}

/// Runs due syncs until cancelled. Any number of workers may run: each claims a due sync with
/// `FOR UPDATE SKIP LOCKED` and moves its next run on before running it; the sync's advisory lock keeps a sync from
/// running twice at once (a manual `syncs run` included).
public struct SyncWorker: Sendable {
    let client: PostgresClient
    let logger: Logger
    let runner: SyncRunner
    let registry: DestinationRegistry

    public init(client: PostgresClient, logger: Logger, runner: SyncRunner, registry: DestinationRegistry) {
        self.client = client
        self.logger = logger
        self.runner = runner
        self.registry = registry
    }

    /// Claims the next due sync and schedules its next run; nil when none is due.
    func claim() async throws -> String? {
        try await client.withTransaction { tx in
            guard
                let row = try await tx.query(
                    """
                    SELECT name, definition::text FROM cdp.syncs WHERE enabled AND next_run_at <= now()
                    ORDER BY next_run_at, position FOR UPDATE SKIP LOCKED LIMIT 1
                    """
                ).first
            else { return nil }
            let (name, text) = try row.decode((String, String).self)
            let next: Date?
            do {
                next = try SyncDefinitions.stored(text, name: name, registry: registry).schedule.next(after: Date())
            } catch {
                logger.error("sync \(name): cannot be read (\(error)); disabled until applied again")
                try await tx.execute("UPDATE cdp.syncs SET enabled = false WHERE name = \(name)")
                return nil
            }
            try await tx.execute("UPDATE cdp.syncs SET next_run_at = \(next) WHERE name = \(name)")
            return name
        }
    }

    /// Runs every sync that is due now, one after another; returns how many ran.
    public func runDue() async throws -> Int {
        var ran = 0
        while let name = try await claim() {
            try Task.checkCancellation()
            do {
                let report = try await runner.run(name, trigger: "schedule")
                ran += 1
                logger.info(
                    "sync \(name): \(report.status.rawValue)",
                    metadata: [
                        "added": "\(report.added)", "changed": "\(report.changed)", "removed": "\(report.removed)",
                        "delivered": "\(report.delivered)", "rejected": "\(report.rejected)", "failed": "\(report.failed)",
                        "duration": "\(report.duration)",
                    ])
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                logger.error("sync \(name): run failed: \(error)")
            }
        }
        return ran
    }

    /// Runs due syncs every `pollInterval` until cancelled.
    public func run(pollInterval: Duration = .seconds(5)) async {
        logger.info("worker: running due syncs")
        while !Task.isCancelled {
            do {
                _ = try await runDue()
            } catch is CancellationError {
                return
            } catch {
                logger.error("worker: \(error)")
            }
            try? await Task.sleep(for: pollInterval)
        }
    }
}
