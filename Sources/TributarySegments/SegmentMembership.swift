import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryIdentity
import TributaryModel

/// Keeps `cdp.segment_members` current and records every entry and exit in `cdp.segment_changes`.
///
/// - ``refresh(_:)``: set-based, per segment, from its view (the schedule, and after `segments apply`).
/// - ``reevaluate(_:profiles:)``: the per-profile form of the real-time segments for the profiles a profile-stage
///   batch changed, in that batch's transaction.
///
/// Both hold the `tributary.segments` advisory lock while they change memberships, so an entry is never recorded
/// twice.
public struct SegmentMembership: Sendable {
    /// Notified when entries into or exits from segments are committed to `cdp.segment_changes` (by a refresh here, or
    /// by the profile stage's re-evaluation): the segments' hand-off to real-time activation, which listens.
    public static let changesChannel = "tributary_segments"

    package static let lock = AdvisoryLockKey(name: "tributary.segments")

    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// What a refresh changed.
    public struct Report: Sendable, Equatable {
        public var segments = 0
        public var entered = 0
        public var exited = 0
        public var members = 0
        public init() {}
    }

    /// Refreshes the members of `names` (nil: every segment) from their views, one transaction per segment.
    @discardableResult
    public func refresh(_ names: [String]? = nil) async throws -> Report {
        let all = try await client.query("SELECT name FROM cdp.segment_definitions ORDER BY position").map {
            try $0.decode(String.self)
        }
        var report = Report()
        for name in all where names?.contains(name) ?? true {
            let started = ContinuousClock.now
            let (entered, exited, members) = try await client.withTransaction { tx in
                try await tx.advisoryTransactionLock(Self.lock)
                try await tx.execute("SET LOCAL work_mem = '64MB'")
                // The segment may have been removed since the list was read.
                guard try await tx.query("SELECT 1 FROM cdp.segment_definitions WHERE name = \(name)").first != nil else {
                    return (0, 0, 0)
                }
                try await tx.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS tributary_segment_current (profile_id uuid PRIMARY KEY) ON COMMIT DROP")
                let view = try Segment.view(name)
                let members =
                    try await tx.execute("INSERT INTO tributary_segment_current SELECT profile_id FROM \(unescaped: view)") ?? 0
                try await tx.execute("ANALYZE tributary_segment_current")
                let (entered, exited) = try await tx.query(
                    """
                    WITH entered AS (
                        -- ON CONFLICT rather than NOT EXISTS: the statement fills the table it would anti-join, and a
                        -- plan made while it was empty rescans what it inserted for every row (25 s for 69k members).
                        INSERT INTO cdp.segment_members (segment, profile_id)
                        SELECT \(name), c.profile_id FROM tributary_segment_current AS c
                        ON CONFLICT (segment, profile_id) DO NOTHING
                        RETURNING profile_id
                    ), exited AS (
                        DELETE FROM cdp.segment_members AS m
                        WHERE m.segment = \(name)
                          AND NOT EXISTS (SELECT 1 FROM tributary_segment_current AS c WHERE c.profile_id = m.profile_id)
                        RETURNING profile_id
                    ), recorded AS (
                        INSERT INTO cdp.segment_changes (segment, profile_id, change, reason)
                        SELECT \(name), profile_id, 'entered', 'refresh' FROM entered
                        UNION ALL
                        SELECT \(name), profile_id, 'exited', 'refresh' FROM exited
                    )
                    SELECT (SELECT count(*) FROM entered), (SELECT count(*) FROM exited)
                    """
                ).first!.decode((Int, Int).self)
                if entered + exited > 0 { try await tx.execute("SELECT pg_notify(\(Self.changesChannel), '')") }
                let millis = (ContinuousClock.now - started).milliseconds
                try await tx.execute(
                    """
                    UPDATE cdp.segment_definitions SET refreshed_at = now(), refresh_ms = \(millis) WHERE name = \(name)
                    """)
                return (entered, exited, members)
            }
            report.segments += 1
            report.entered += entered
            report.exited += exited
            report.members += members
        }
        return report
    }

    /// Refreshes every segment now and then every `interval`, until cancelled; failures are logged and retried at
    /// the next interval.
    public func run(every interval: Duration) async {
        while !Task.isCancelled {
            do {
                let started = ContinuousClock.now
                let report = try await refresh()
                if report.segments > 0 {
                    logger.info(
                        "segments: refreshed",
                        metadata: [
                            "segments": "\(report.segments)", "entered": "\(report.entered)", "exited": "\(report.exited)",
                            "duration": "\(ContinuousClock.now - started)",
                        ])
                }
            } catch is CancellationError {
                return
            } catch {
                logger.error("segments: refresh failed: \(error)")
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// Re-evaluates the real-time segments for `profiles`, inside the caller's transaction; profiles among them
    /// that no longer exist (merged away) leave every segment, real-time or not. Returns the entries and exits
    /// recorded.
    public static func reevaluate(_ tx: PostgresConnection, profiles: [UUID]) async throws -> Int {
        guard !profiles.isEmpty else { return 0 }
        let stored = try await tx.query("SELECT definition::text, realtime FROM cdp.segment_definitions ORDER BY position")
            .map { try $0.decode((String, Bool).self) }
        guard !stored.isEmpty else { return 0 }
        try await tx.advisoryTransactionLock(lock)
        var changes = try await tx.query(
            """
            WITH gone AS (
                DELETE FROM cdp.segment_members AS m
                WHERE m.profile_id = ANY(\(profiles)::uuid[])
                  AND NOT EXISTS (SELECT 1 FROM cdp.profile_data AS d WHERE d.profile_id = m.profile_id)
                RETURNING m.segment, m.profile_id
            ), recorded AS (
                INSERT INTO cdp.segment_changes (segment, profile_id, change, reason)
                SELECT segment, profile_id, 'exited', 'profile' FROM gone
                RETURNING 1
            )
            SELECT count(*) FROM recorded
            """
        ).first!.decode(Int.self)
        guard stored.contains(where: { $0.1 }) else { return changes }
        let definitions = SegmentDefinitions(try stored.map { try SegmentStore.decode($0.0) })
        let compiler = SegmentCompiler(definitions)
        for segment in definitions.segments where segment.realtime {
            let members = try compiler.perProfile(segment.name, profiles: profiles)
            let name = segment.name
            changes += try await tx.query(
                """
                WITH current AS (
                \(members)
                ), entered AS (
                    INSERT INTO cdp.segment_members (segment, profile_id)
                    SELECT \(name), profile_id FROM current
                    ON CONFLICT (segment, profile_id) DO NOTHING
                    RETURNING profile_id
                ), exited AS (
                    DELETE FROM cdp.segment_members AS m
                    WHERE m.segment = \(name) AND m.profile_id = ANY(\(profiles)::uuid[])
                      AND m.profile_id NOT IN (SELECT profile_id FROM current)
                    RETURNING profile_id
                ), recorded AS (
                    INSERT INTO cdp.segment_changes (segment, profile_id, change, reason)
                    SELECT \(name), profile_id, 'entered', 'profile' FROM entered
                    UNION ALL
                    SELECT \(name), profile_id, 'exited', 'profile' FROM exited
                    RETURNING 1
                )
                SELECT count(*) FROM recorded
                """
            ).first!.decode(Int.self)
        }
        return changes
    }
}
