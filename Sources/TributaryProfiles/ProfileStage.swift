import Foundation
import Logging
import Postgres
import TributaryIdentity
import TributaryModel
import TributaryRuntime

/// The profile stage: follows the identity stage through `cdp.events` and keeps `cdp.profile_trait_values`,
/// `cdp.trait_history` and `cdp.profile_data` (merged traits, computed traits, first/last seen, event count) current.
///
/// Traits merge per key by event `timestamp` (then receive order; identify traits before `context.traits` of the same
/// event): the newest value wins, whatever order events arrive in, and JSON `null` removes a trait. A profile's traits
/// are therefore a function of its events alone, which is what makes merges simple and the rebuild exact: when the
/// identity stage merges or splits profiles (`cdp.profile_merge_log`), the profiles involved are recomputed from their
/// events; when the identity graph is rebuilt (its generation changes), all profiles are rebuilt.
///
/// Each batch is one transaction holding the `tributary.profiles.processor` advisory lock; any number of processes
/// may run the stage.
public struct ProfileStage: StreamStage {
    public struct BatchReport: StageBatchReport, Equatable {
        /// Events read in this batch.
        public var events = 0
        /// Profiles whose data was brought up to date.
        public var profilesUpdated = 0
        /// Profiles recomputed from all their events after a merge or split.
        public var profilesRecomputed = 0
        /// Trait changes recorded in `cdp.trait_history`.
        public var traitChanges = 0
        /// Consent changes recorded in `cdp.consent_changes`.
        public var consentChanges = 0
        /// Changes the stage's followers recorded for the profiles this batch changed (with
        /// `RealtimeSegments`: entries into and exits from real-time segments).
        public var segmentChanges = 0
        /// The whole profile state was rebuilt (the identity graph was rebuilt).
        public var rebuilt = false
        public var checkpoint: Int64 = 0
        /// Another processor held the lock; nothing was done.
        public var busy = false

        public init() {}

        public var caughtUp: Bool { events == 0 && profilesRecomputed == 0 && !rebuilt }

        public mutating func add(_ other: BatchReport) {
            events += other.events
            profilesUpdated += other.profilesUpdated
            profilesRecomputed += other.profilesRecomputed
            traitChanges += other.traitChanges
            consentChanges += other.consentChanges
            segmentChanges += other.segmentChanges
            rebuilt = rebuilt || other.rebuilt
            checkpoint = max(checkpoint, other.checkpoint)
        }
    }

    package static let processorLock = AdvisoryLockKey(name: "tributary.profiles.processor")

    public let client: PostgresClient
    public let logger: Logger
    public var name: String { "profiles" }
    public var wakeChannel: String { IdentityStage.channel }
    public typealias Report = BatchReport
    public var lagCheckpoint: Checkpoint? { .profiles }
    /// Most events per batch.
    public var batchSize: Int
    /// The clock computed traits are evaluated at (tests move it to check window expiry).
    public var clock: @Sendable () -> Date
    /// What runs in each batch's transaction for the profiles it changed, in order (see ``ProfileFollower``).
    public var followers: [any ProfileFollower]

    /// - Parameter followers: run in each batch's transaction once the changed profiles' data is current; pass
    ///   `[RealtimeSegments()]` (module TributarySegments) for real-time segments to follow their profiles, as
    ///   `tributary serve` does; `[]` for a stage that only computes profile data.
    public init(
        client: PostgresClient, logger: Logger, batchSize: Int = 5000, followers: [any ProfileFollower],
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.client = client
        self.logger = logger
        self.batchSize = batchSize
        self.followers = followers
        self.clock = clock
    }

    /// Processes the next batch after the checkpoint (events the identity stage has resolved), in one transaction.
    public func processBatch() async throws -> BatchReport {
        try await client.withTransaction { tx in
            guard try await tx.query("SELECT pg_try_advisory_xact_lock(\(Self.processorLock.value))").scalar(Bool.self) else {
                var report = BatchReport()
                report.busy = true
                return report
            }
            // The refresh of a batch's profiles sorts all their events; the 4 MB default spills a busy batch to disk.
            try await tx.execute("SET LOCAL work_mem = '64MB'")
            return try await process(tx)
        }
    }

    /// Processes batches until the stage has caught up with the identity stage.
    public func catchUp() async throws -> BatchReport {
        try await drain { try await processBatch() }
    }

    struct Checkpoints {
        var identity: Int64
        var identityGeneration: Int64
        var profiles: Int64
        var generation: Int64
        var merges: Int64
        var changes: Int64
    }

    static func checkpoints(_ db: PostgresConnection) async throws -> Checkpoints {
        let row = try await db.query(
            """
            SELECT \(Checkpoint.identity.seqSQL), \(Checkpoint.identity.generationSQL),
                   \(Checkpoint.profiles.seqSQL), \(Checkpoint.profiles.generationSQL),
                   \(Checkpoint.profileMerges.seqSQL), \(Checkpoint.profileChanges.seqSQL)
            """
        ).first!
        let (identity, identityGeneration, profiles, generation, merges, changes) =
            try row.decode((Int64, Int64, Int64, Int64, Int64, Int64).self)
        return Checkpoints(
            identity: identity, identityGeneration: identityGeneration, profiles: profiles, generation: generation,
            merges: merges,
            changes: changes)
    }

    func process(_ tx: PostgresConnection) async throws -> BatchReport {
        var report = BatchReport()
        // Merges and splits first, then the identity checkpoint: one committed in between is seen next batch.
        let (lastMerge, lastChange) = try await Self.lastChanges(tx)
        let marks = try await Self.checkpoints(tx)
        let definitions =
            try await ProfileConfig.load(ComputedTraitDefinitions.self, "computed_traits", tx) ?? ComputedTraitDefinitions()
        let store = ProfileStore(definitions: definitions, asOf: clock())
        report.checkpoint = marks.profiles

        if marks.generation != marks.identityGeneration || marks.profiles > marks.identity {
            // The identity graph was rebuilt: rebuild every profile from events rather than replay its changes.
            return try await rebuild(tx, marks: marks, lastMerge: lastMerge, lastChange: lastChange, store: store)
        }

        let (end, events) = try await tx.query(
            """
            SELECT max(seq), count(*) FROM (SELECT seq FROM cdp.events WHERE seq > \(marks.profiles) AND seq <= \(marks.identity)
                                            ORDER BY seq LIMIT \(batchSize)) AS next
            """
        ).first!.decode((Int64?, Int).self)
        let through = end ?? marks.profiles

        // Profiles merged or split since the last batch: recompute them from all their events.
        var recomputed: [UUID] = []
        if lastMerge > marks.merges || lastChange > marks.changes {
            recomputed = try await tx.query(
                """
                SELECT p FROM cdp.profile_merge_log AS m, LATERAL (VALUES (m.from_profile_id), (m.into_profile_id)) AS v (p)
                WHERE m.merge_id > \(marks.merges) AND m.merge_id <= \(lastMerge)
                UNION
                SELECT profile_id FROM cdp.profile_changes WHERE change_id > \(marks.changes) AND change_id <= \(lastChange)
                """
            ).map { try $0.decode(UUID.self) }
            report.traitChanges += try await store.recompute(tx, profiles: recomputed, through: through)
            report.consentChanges += try await Consent.replace(tx, profiles: recomputed, through: through, reason: "merge")
            report.profilesRecomputed = recomputed.count
            try await Checkpoint.profileMerges.set(tx, seq: lastMerge)
            try await Checkpoint.profileChanges.set(tx, seq: lastChange)
        }

        guard through > marks.profiles || !recomputed.isEmpty else { return report }
        report.events = events
        var timings = StepTimings()
        report.traitChanges += try await store.applyEvents(tx, after: marks.profiles, through: through, except: recomputed)
        timings.mark("traits")
        report.consentChanges += try await Consent.apply(tx, after: marks.profiles, through: through, except: recomputed)
        timings.mark("consent")
        let touched = try await tx.query(
            """
            SELECT DISTINCT profile_id FROM cdp.events
            WHERE seq > \(marks.profiles) AND seq <= \(through) AND profile_id IS NOT NULL
            """
        ).map { try $0.decode(UUID.self) }
        let changed = Array(Set(touched).union(recomputed))
        timings.mark("touched")
        report.profilesUpdated = try await store.refreshData(
            tx, touched: touched, recompute: recomputed, after: marks.profiles, through: through)
        timings.mark("aggregates")
        // Followers (real-time segments) in the same transaction: what they derive never runs ahead of its data.
        for follower in followers {
            report.segmentChanges += try await follower.profilesChanged(tx, profiles: changed)
        }
        timings.mark("followers")
        try await Checkpoint.profiles.set(tx, seq: through)
        report.checkpoint = through
        logger.debug(
            "profiles: batch timings",
            metadata: [
                "events": "\(events)", "recomputed": "\(recomputed.count)", "steps": "\(timings)",
            ])
        return report
    }

    /// The newest merge-log and profile-change ids.
    static func lastChanges(_ db: PostgresConnection) async throws -> (merges: Int64, changes: Int64) {
        try await db.query(
            """
            SELECT coalesce((SELECT max(merge_id) FROM cdp.profile_merge_log), 0),
                   coalesce((SELECT max(change_id) FROM cdp.profile_changes), 0)
            """
        ).first!.decode((Int64, Int64).self)
    }

    /// Rebuilds every profile's traits and data from events, in one transaction; history records what changed
    /// (reason `rebuild`). The result is the same as the real-time stage's.
    public func rebuild() async throws -> BatchReport {
        try await client.withTransaction { tx in
            try await tx.advisoryTransactionLock(Self.processorLock)
            let (lastMerge, lastChange) = try await Self.lastChanges(tx)
            let marks = try await Self.checkpoints(tx)
            let definitions =
                try await ProfileConfig.load(ComputedTraitDefinitions.self, "computed_traits", tx) ?? ComputedTraitDefinitions()
            let store = ProfileStore(definitions: definitions, asOf: clock())
            return try await rebuild(tx, marks: marks, lastMerge: lastMerge, lastChange: lastChange, store: store)
        }
    }

    /// The rebuild, through the identity stage's checkpoint, with every checkpoint of this stage moved past it.
    private func rebuild(
        _ tx: PostgresConnection, marks: Checkpoints, lastMerge: Int64, lastChange: Int64, store: ProfileStore
    ) async throws -> BatchReport {
        let summary = try await store.rebuild(tx, through: marks.identity)
        let consentChanges = try await Consent.replace(tx, profiles: nil, through: marks.identity, reason: "rebuild")
        try await Checkpoint.profiles.set(tx, seq: marks.identity, generation: marks.identityGeneration)
        try await Checkpoint.profileMerges.set(tx, seq: lastMerge)
        try await Checkpoint.profileChanges.set(tx, seq: lastChange)
        var report = BatchReport()
        report.rebuilt = true
        report.traitChanges = summary.traitChanges
        report.consentChanges = consentChanges
        report.profilesUpdated = summary.profiles
        report.checkpoint = marks.identity
        return report
    }

    /// Recomputes every profile's computed traits at the current time (time windows move on even when no event
    /// arrives), and the RFM quintile boundaries. With `full` false, only the traits that change with time alone
    /// (windows, days since, RFM) are recomputed: the others change only with events, which the stage applies.
    /// Returns the number of profiles whose computed traits changed.
    public func recomputeAll(full: Bool = true) async throws -> Int {
        try await client.withTransaction { tx in
            try await tx.advisoryTransactionLock(Self.processorLock)
            try await tx.execute("SET LOCAL work_mem = '256MB'")
            let marks = try await Self.checkpoints(tx)
            let definitions =
                try await ProfileConfig.load(ComputedTraitDefinitions.self, "computed_traits", tx) ?? ComputedTraitDefinitions()
            let changed = try await ProfileStore(definitions: definitions, asOf: clock()).recomputeComputed(
                tx, through: marks.profiles, full: full)
            try await Checkpoint.profileRecompute.set(tx, seq: marks.profiles)
            return changed
        }
    }

    /// Recomputes the traits that change with time alone if the last bulk recompute is older than `interval`, or
    /// RFM has no quintile boundaries yet while profiles have data and a purchase event arrived since the last bulk
    /// recompute (without one, the boundaries cannot appear: recomputing every round, as before, re-read every event
    /// in each round of a stage whose traffic had no purchase yet). Returns the profiles changed, nil if not due.
    @discardableResult
    public func recomputeIfDue(interval: Duration) async throws -> Int? {
        let (last, lastSeq, missingBoundaries) = try await client.query(
            """
            SELECT \(Checkpoint.profileRecompute.updatedAtSQL), \(Checkpoint.profileRecompute.seqSQL),
                   NOT EXISTS (SELECT 1 FROM cdp.rfm_thresholds) AND EXISTS (SELECT 1 FROM cdp.profile_data)
            """
        ).first!.decode((Date?, Int64, Bool).self)
        let stale = last.map { Date().timeIntervalSince($0) >= Double(interval.components.seconds) } ?? true
        if !stale {
            // Only then do the definitions matter: is RFM on?
            guard missingBoundaries else { return nil }
            let definitions =
                try await client.withConnection {
                    try await ProfileConfig.load(ComputedTraitDefinitions.self, "computed_traits", $0)
                } ?? ComputedTraitDefinitions()
            guard definitions.rfm.enabled else { return nil }
            // An index probe on (event, timestamp): no purchase at all costs nothing.
            let purchased = try await client.query(
                """
                SELECT EXISTS (SELECT 1 FROM cdp.events WHERE event = \(definitions.rfm.event) AND seq > \(lastSeq))
                """
            ).scalar(Bool.self)
            guard purchased else { return nil }
        }
        let started = ContinuousClock.now
        let changed = try await recomputeAll(full: false)
        logger.info(
            "profiles: computed traits recomputed",
            metadata: [
                "changed": "\(changed)", "duration": "\(ContinuousClock.now - started)",
            ])
        return changed
    }

    /// Runs until cancelled: catches up whenever the identity stage commits (`NOTIFY tributary_identity`, or every
    /// `pollInterval`), and recomputes computed traits in bulk every `recomputeInterval`.
    public func run(pollInterval: Duration = .seconds(1), recomputeInterval: Duration = .seconds(3600)) async throws {
        logger.info("profiles: stage running")
        await runLoop(pollInterval: pollInterval) {
            let report = try await catchUp()
            if report.events > 0 || report.rebuilt {
                logger.info(
                    "profiles: processed",
                    metadata: [
                        "events": "\(report.events)", "profiles": "\(report.profilesUpdated)",
                        "recomputed": "\(report.profilesRecomputed)", "trait_changes": "\(report.traitChanges)",
                        "rebuilt": "\(report.rebuilt)", "checkpoint": "\(report.checkpoint)",
                    ])
            }
            try await recomputeIfDue(interval: recomputeInterval)
        }
    }
}

extension Checkpoint {
    /// The profile stage's position in `cdp.events` (never past ``identity``); its generation is the identity
    /// generation it last rebuilt from.
    public static let profiles = Checkpoint("profiles")
    /// The last `cdp.profile_merge_log` entry the profile stage has recomputed profiles for.
    public static let profileMerges = Checkpoint("profiles.merges")
    /// The last `cdp.profile_changes` entry (splits) the profile stage has recomputed profiles for.
    public static let profileChanges = Checkpoint("profiles.changes")
    /// The last bulk recompute of computed traits: its time, and the events it covered.
    public static let profileRecompute = Checkpoint("profiles.recompute")
}
