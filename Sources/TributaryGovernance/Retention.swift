import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryIdentity
import TributaryModel
import TributarySegments
import TributarySyncs

/// How long events are kept: a number of months or days (`13months`, `400d`, `2y`).
public struct RetentionAge: Sendable, Equatable, CustomStringConvertible {
    public var months: Int
    public var days: Int

    public init(months: Int = 0, days: Int = 0) {
        self.months = months
        self.days = days
    }

    /// Reads `13months`, `13 months`, `13mo`, `2y`, `2 years`, `400d`, `400 days`, `8w` (any case).
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        let unit = trimmed.dropFirst(digits.count).trimmingCharacters(in: .whitespaces)
        guard let count = Int(digits), count >= 1, count <= 36_500 else {
            throw RetentionError(
                "'\(text)' is not a retention age: write a whole number of days, weeks, months or years, like 13months, 400d or 2y (or off)"
            )
        }
        switch unit {
        case "d", "day", "days": self.init(days: count)
        case "w", "week", "weeks": self.init(days: count * 7)
        case "mo", "mon", "mons", "month", "months": self.init(months: count)
        case "y", "year", "years": self.init(months: count * 12)
        default:
            throw RetentionError("'\(text)': unknown unit '\(unit)'; use d, w, months or y, like 13months, 400d or 2y (or off)")
        }
        guard months <= 1200 else { throw RetentionError("'\(text)': at most 100 years") }
    }

    /// `13 months`, `400 days`: the stored form, read back by ``init(parsing:)``.
    public var description: String {
        if days == 0 { return months == 1 ? "1 month" : "\(months) months" }
        if months == 0 { return days == 1 ? "1 day" : "\(days) days" }
        return "\(months) months \(days) days"
    }
}

/// Retention of `cdp.events`: whole monthly partitions whose every possible event is older than the configured age
/// are dropped (`tributary retention apply`, or once a day by ``runIfDue(client:logger:interval:)``).
///
/// - Only partitions whose upper bound is at or before the cutoff (`now() - age`) go, so a partition that may still
///   hold a newer event is never dropped. A DEFAULT partition (Tributary creates none) is never dropped.
/// - The idempotency rows (`cdp.event_message_ids`) of the dropped events that were received before the cutoff go
///   too; those received later (a recent historical import) stay, so re-importing the same file is still recognised.
/// - A late event for a dropped month re-creates its partition (writers create partitions on demand); the next run
///   drops it again.
/// - Nothing derived from the dropped events changes with the drop: identities, profiles, traits and consent stay
///   until something recomputes them from events (`identity rebuild`, `profiles rebuild`, a merge or split of a
///   profile, a computed-trait recompute), which then sees only the events that remain. Segment event conditions read
///   `cdp.events` directly: their next refresh sees only the remaining events.
/// - Only attached partitions are considered (`pg_inherits`); a detached one is left alone.
///
/// Settings live in `cdp.settings` (`retention`: `{"events": "13 months"}`; `retention.last_run`).
public struct Retention: Sendable {
    /// The retention settings.
    public struct Policy: Sendable, Equatable {
        /// How long events are kept; nil: forever (retention off).
        public var events: RetentionAge?
        public init(events: RetentionAge? = nil) { self.events = events }
    }

    /// A partition of `cdp.events`, with its range and row count.
    public struct Partition: Sendable, Equatable {
        public var name: String
        public var from: Date
        public var to: Date
        public var events: Int64
    }

    /// What a run dropped (or, dry, would drop).
    public struct Report: Sendable, Equatable {
        public var dryRun: Bool
        public var olderThan: RetentionAge
        /// Events with a timestamp before this may be dropped (only whole partitions are).
        public var cutoff: Date
        public var partitions: [Partition] = []
        /// `cdp.event_message_ids` rows removed with them.
        public var messageIds: Int64 = 0
        /// Partitions retention never drops (DEFAULT, or bounds it cannot read), by name.
        public var skipped: [String] = []
        public var events: Int64 { partitions.reduce(0) { $0 + $1.events } }
    }

    static let settingsKey = "retention"
    static let lastRunKey = "retention.last_run"
    static let lock = AdvisoryLockKey(name: "tributary.retention")

    let client: PostgresClient

    public init(client: PostgresClient) { self.client = client }

    /// The policy in force (off if never set).
    public func policy() async throws -> Policy {
        try await client.withConnection { try await Self.policy($0) }
    }

    static func policy(_ db: PostgresConnection) async throws -> Policy {
        let stored =
            try await db.query(
                """
                SELECT value ->> 'events' FROM cdp.settings WHERE key = \(settingsKey)
                """
            ).first?[0].decode(String?.self) ?? nil
        do {
            return Policy(events: try stored.map(RetentionAge.init(parsing:)))
        } catch let error as RetentionError {
            throw RetentionError(
                "the stored retention setting cannot be read (\(error)); set it again with `tributary retention set --events …`")
        }
    }

    /// Puts `policy` in force and records `retention.set`; returns false if it already was.
    @discardableResult
    public func set(_ policy: Policy, actor: AuditLog.Actor) async throws -> Bool {
        try await client.withTransaction { tx in
            try await tx.advisoryTransactionLock(Self.lock)
            let previous = try await Self.policy(tx)
            guard previous != policy else { return false }
            let value: JSONValue = ["events": policy.events.map { .string($0.description) } ?? .null]
            try await tx.execute(
                """
                INSERT INTO cdp.settings (key, value) VALUES (\(Self.settingsKey), \(value.serialized)::jsonb)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
                """)
            try await AuditLog.record(
                tx, actor: actor, action: "retention.set", target: "cdp.events",
                details: [
                    "events": policy.events.map { .string($0.description) } ?? "off",
                    "previous": previous.events.map { .string($0.description) } ?? "off",
                ])
            return true
        }
    }

    /// When retention last ran (not dry), if ever.
    public func lastRun() async throws -> Date? {
        try await client.query("SELECT updated_at FROM cdp.settings WHERE key = \(Self.lastRunKey)").first?[0].decode(Date.self)
    }

    /// Drops the partitions of `cdp.events` older than the policy's age, in one transaction, and records
    /// `retention.apply` in the audit log. Nil when retention is off. With `dryRun`, changes nothing and reports what
    /// would go.
    public func apply(dryRun: Bool = false, actor: AuditLog.Actor) async throws -> Report? {
        try await client.withTransaction { tx in
            try await tx.advisoryTransactionLock(Self.lock)
            return try await Self.apply(tx, dryRun: dryRun, actor: actor)
        }
    }

    /// Runs retention if it is on and has not run for `interval` (default a day); nil if it did not run. Any number
    /// of processes may call this: one runs, the others return nil at once (an advisory lock). Call it periodically,
    /// for example from the worker loop:
    ///
    /// ```swift
    /// if let report = try await Retention.runIfDue(client: client, logger: logger) { … }
    /// ```
    @discardableResult
    public static func runIfDue(
        client: PostgresClient, logger: Logger, interval: Duration = .seconds(86_400)
    ) async throws -> Report? {
        let report: Report? = try await client.withTransaction { tx in
            guard try await tx.query("SELECT pg_try_advisory_xact_lock(\(lock.value))").scalar(Bool.self) else { return nil }
            let due = try await tx.query(
                """
                SELECT coalesce((SELECT updated_at FROM cdp.settings WHERE key = \(lastRunKey))
                                <= now() - make_interval(secs => \(Double(interval.components.seconds))), true)
                """
            ).scalar(Bool.self)
            guard due else { return nil }
            return try await apply(tx, dryRun: false, actor: .system("retention"))
        }
        if let report, !report.partitions.isEmpty {
            logger.notice(
                "retention: dropped old event partitions",
                metadata: [
                    "partitions": "\(report.partitions.map(\.name).joined(separator: ","))", "events": "\(report.events)",
                    "message_ids": "\(report.messageIds)", "cutoff": "\(report.cutoff.formatted(.iso8601))",
                ])
        }
        return report
    }

    /// The partitions of `cdp.events` with their bounds (nil bounds: DEFAULT or unreadable), oldest first.
    public func partitions() async throws -> [(name: String, from: Date?, to: Date?)] {
        try await client.withConnection { try await Self.partitions($0) }.map { ($0.name, $0.from, $0.to) }
    }

    static func partitions(_ db: PostgresConnection) async throws -> [(schema: String, name: String, from: Date?, to: Date?)] {
        try await db.query(
            """
            SELECT n.nspname, c.relname,
                   (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz,
                   (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz
            FROM pg_inherits AS i
            JOIN pg_class AS c ON c.oid = i.inhrelid
            JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE i.inhparent = 'cdp.events'::regclass
            ORDER BY 4 NULLS LAST, 2
            """
        ).map { try $0.decode((String, String, Date?, Date?).self) }.map { ($0.0, $0.1, $0.2, $0.3) }
    }

    static func apply(_ tx: PostgresConnection, dryRun: Bool, actor: AuditLog.Actor) async throws -> Report? {
        guard let age = try await policy(tx).events else { return nil }
        let cutoff = try await tx.query(
            """
            SELECT now() - make_interval(months => \(age.months)::int, days => \(age.days)::int)
            """
        ).scalar(Date.self)
        var report = Report(dryRun: dryRun, olderThan: age, cutoff: cutoff)
        // Waiting long for cdp.events (a long query holds it) would stall ingestion queued behind this lock.
        try await tx.execute("SET LOCAL lock_timeout = '30s'")
        for partition in try await partitions(tx) {
            guard let from = partition.from, let to = partition.to else {
                report.skipped.append(partition.name)
                continue
            }
            guard to <= cutoff else { continue }
            let table = try SQLQuoting.qualified(partition.schema, partition.name)
            do {
                let events = try await tx.query("SELECT count(*) FROM \(unescaped: table)").scalar(Int64.self)
                if dryRun {
                    report.messageIds += try await tx.query(
                        """
                        SELECT count(*) FROM cdp.event_message_ids AS m JOIN \(unescaped: table) AS e
                        ON m.source_id = e.source_id AND m.message_id = e.message_id WHERE m.received_at < \(cutoff)
                        """
                    ).scalar(Int64.self)
                } else {
                    report.messageIds += Int64(
                        try await tx.execute(
                            """
                            DELETE FROM cdp.event_message_ids AS m USING \(unescaped: table) AS e
                            WHERE m.source_id = e.source_id AND m.message_id = e.message_id AND m.received_at < \(cutoff)
                            """) ?? 0)
                    try await tx.execute("DROP TABLE \(unescaped: table)")
                }
                report.partitions.append(Partition(name: partition.name, from: from, to: to, events: events))
            } catch let error as PostgresError where error.sqlState == .lockNotAvailable {
                throw RetentionError(
                    """
                    could not lock cdp.events within 30 s to drop \(partition.name) (a long query or import holds it); \
                    nothing was dropped; try again
                    """)
            }
        }
        guard !dryRun else { return report }
        let dropped: JSONValue = ["partitions": .array(report.partitions.map { .string($0.name) })]
        try await tx.execute(
            """
            INSERT INTO cdp.settings (key, value) VALUES (\(lastRunKey), \(dropped.serialized)::jsonb)
            ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
            """)
        try await AuditLog.record(
            tx, actor: actor, action: "retention.apply", target: "cdp.events",
            details: [
                "older_than": .string(age.description),
                "cutoff": .string(cutoff.formatted(.iso8601)),
                "partitions": .array(report.partitions.map { .string($0.name) }),
                "events": .number(String(report.events)),
                "message_ids": .number(String(report.messageIds)),
            ])
        return report
    }
}

/// A retention setting or run that cannot be done, with what to do about it.
public struct RetentionError: ReportedError, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
