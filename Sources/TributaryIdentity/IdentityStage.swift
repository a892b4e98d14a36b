import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryModel
import TributaryRuntime

/// The real-time identity stage: consumes `cdp.events` in receive order from its checkpoint, assigns each event a
/// `profile_id`, creates and merges profiles, detects hubs and splits what they had merged.
///
/// Each batch is one transaction holding the `tributary.identity.processor` advisory lock, and reads and advances
/// the checkpoint inside it; so any number of processes may run the stage: one works, the others wait their turn,
/// and the result is exactly that of a single processor (merge decisions depend on receive order, so the stage is
/// serial by design). A crash loses nothing: the transaction rolls back and the batch is done again.
public struct IdentityStage: StreamStage {
    /// Notified when a batch commits (events stamped, `cdp.profile_merge_log` and `cdp.profile_changes` written): the
    /// stage's hand-off to whatever follows it (the profile stage listens).
    public static let channel = "tributary_identity"

    public struct BatchReport: StageBatchReport, Equatable {
        /// Events stamped in this batch.
        public var events = 0
        public var identifiersCreated = 0
        public var profilesCreated = 0
        public var merges = 0
        public var ignored = 0
        public var hubsDetected = 0
        /// The checkpoint after the batch.
        public var checkpoint: Int64 = 0
        /// Another processor held the lock; nothing was done.
        public var busy = false

        public init() {}

        public var caughtUp: Bool { events == 0 }

        public mutating func add(_ other: BatchReport) {
            events += other.events
            identifiersCreated += other.identifiersCreated
            profilesCreated += other.profilesCreated
            merges += other.merges
            ignored += other.ignored
            hubsDetected += other.hubsDetected
            checkpoint = max(checkpoint, other.checkpoint)
        }
    }

    public let client: PostgresClient
    public let logger: Logger
    public var name: String { "identity" }
    public var wakeChannel: String { EventWriter.eventsChannel }
    public typealias Report = BatchReport
    public var lagCheckpoint: Checkpoint? { .identity }
    /// Most events per batch (one transaction).
    public var batchSize: Int
    /// The graph's nodes this stage has met, kept between its batches (see ``IdentifierCache``).
    let cache: IdentifierCache

    /// Guesses of incoming events' profiles from what this stage has met, for an event writer in the same process
    /// (``EventWriter/init(client:maxQueuedEvents:maxConcurrentFlushes:profileHints:logger:onFlush:)``): events
    /// guessed right are stored stamped and this stage does not rewrite them.
    public var profileHints: any ProfileHints { cache }

    public init(client: PostgresClient, logger: Logger, batchSize: Int = 5000) {
        self.client = client
        self.logger = logger
        self.batchSize = batchSize
        self.cache = IdentifierCache()
    }

    /// Processes the next batch of events after the checkpoint, if any, in one transaction.
    public func processBatch() async throws -> BatchReport {
        try await processBatch(prefetched: nil, prefetchNext: false).report
    }

    /// The identifiers of the batch after `after`, extracted ahead on another connection while the current batch
    /// writes. Used only if the checkpoint and rules still match when the batch starts; events never change, so
    /// that is all it takes for it to be exactly what the batch would extract itself.
    package struct Prefetch: Sendable {
        var after: Int64
        var through: Int64
        var rules: String
        var events: [ExtractedEvent]
    }

    /// With `prefetchNext`, the next batch's extraction starts on another connection while this one writes; the
    /// caller owns that task and must await it (or pass it to the next batch) before it lets go of the client.
    func processBatch(
        prefetched: Task<Prefetch?, Never>?, prefetchNext: Bool
    ) async throws -> (report: BatchReport, next: Task<Prefetch?, Never>?) {
        do {
            let (report, next, update) = try await client.withConnection { db in
                try await db.withTransaction { tx -> (BatchReport, Task<Prefetch?, Never>?, IdentifierCache.Update?) in
                    guard
                        try await tx.query("SELECT pg_try_advisory_xact_lock(\(IdentityStore.processorLock.value))").scalar(
                            Bool.self)
                    else {
                        var report = BatchReport()
                        report.busy = true
                        return (report, nil, nil)
                    }
                    return try await process(tx, prefetched: await prefetched?.value, prefetchNext: prefetchNext)
                }
            }
            // Committed: the cache may now hold what the batch wrote.
            if let update { cache.commit(update) }
            return (report, next)
        } catch {
            cache.forget()
            throw error
        }
    }

    /// Processes batches until no events are left after the checkpoint (waiting for a busy peer), and reports the total.
    public func catchUp() async throws -> BatchReport {
        // The next batch's extraction runs while this one writes; it is handed from batch to batch (kept while a
        // busy peer holds the lock: it is checked before use).
        var prefetched: Task<Prefetch?, Never>?
        do {
            return try await drain {
                let (report, next) = try await processBatch(prefetched: prefetched, prefetchNext: true)
                if !report.busy { prefetched = next }
                return report
            }
        } catch {
            // Never leave an extraction running on the client after returning.
            _ = await prefetched?.value
            throw error
        }
    }

    /// Extracts the identifiers of the next batch after `after` on a connection of its own.
    func prefetch(after: Int64, document: PostgresJSON) -> Task<Prefetch?, Never> {
        let client = client, batchSize = batchSize
        return Task {
            try? await client.withConnection { db in
                let through = try await db.query(
                    """
                    SELECT max(seq) FROM (SELECT seq FROM cdp.events WHERE seq > \(after) ORDER BY seq LIMIT \(batchSize)) AS next
                    """
                ).scalar(Int64?.self)
                guard let through else { return nil }
                let events = try await IdentityStore.extract(db, document: document, .range(after: after, through: through))
                return Prefetch(after: after, through: through, rules: document.text, events: events)
            }
        }
    }

    /// Runs until the task is cancelled: catches up, then waits for `NOTIFY tributary_events` (or at most
    /// `pollInterval`) before looking again.
    public func run(pollInterval: Duration = .seconds(1)) async throws {
        logger.info("identity: stage running")
        await runLoop(pollInterval: pollInterval) {
            let report = try await catchUp()
            if report.events > 0 {
                logger.info(
                    "identity: processed",
                    metadata: [
                        "events": "\(report.events)", "profiles_created": "\(report.profilesCreated)",
                        "merges": "\(report.merges)", "hubs": "\(report.hubsDetected)", "checkpoint": "\(report.checkpoint)",
                    ])
            }
        }
    }

    /// One batch, inside the caller's transaction, holding the processor lock. Reads the stage's cache but leaves it
    /// alone: the update it returns is for the caller to apply once the transaction has committed.
    package func process(
        _ tx: PostgresConnection, prefetched: Prefetch?, prefetchNext: Bool
    ) async throws -> (report: BatchReport, next: Task<Prefetch?, Never>?, update: IdentifierCache.Update?) {
        var report = BatchReport()
        var timings = StepTimings()
        defer {
            if report.events > 0 {
                logger.debug("identity: batch timings", metadata: ["events": "\(report.events)", "steps": "\(timings)"])
            }
        }
        let (rules, document) = try await IdentityStore.rules(tx)
        let checkpoint = try await Checkpoint.identity.seq(tx)
        let epoch = try await IdentityStore.graphEpoch(tx)
        report.checkpoint = checkpoint
        let last: Int64
        var events: [ExtractedEvent]
        if let prefetched, prefetched.after == checkpoint, prefetched.rules == document.text {
            (last, events) = (prefetched.through, prefetched.events)
        } else {
            let end = try await tx.query(
                """
                SELECT max(seq) FROM (SELECT seq FROM cdp.events WHERE seq > \(checkpoint) ORDER BY seq LIMIT \(batchSize)) AS next
                """
            ).scalar(Int64?.self)
            guard let end else { return (report, nil, nil) }
            last = end
            events = try await IdentityStore.extract(tx, document: document, .range(after: checkpoint, through: last))
        }
        let next = prefetchNext ? prefetch(after: last, document: document) : nil
        // Here, not in the (possibly prefetched) extraction: the rule reads nodes the previous batch may have written.
        try await IdentityStore.resolveAliases(tx, &events)
        report.events = events.count
        report.ignored = try await IdentityStore.recordIgnored(tx, events, logger: logger)
        timings.mark("extract")

        // Load what the graph knows about this batch's identifiers.
        var seen: [Identifier: (first: Int64, last: Int64, firstSeq: Int64)] = [:]
        for event in events {
            for identifier in event.identifiers {
                if let known = seen[identifier] {
                    seen[identifier] = (min(known.first, event.micros), max(known.last, event.micros), known.firstSeq)
                } else {
                    seen[identifier] = (event.micros, event.micros, event.seq)
                }
            }
        }
        // Known identifiers from the cache (when nothing else changed the graph since its last batch), the rest from
        // the table.
        var nodes = cache.nodes(seen.keys, checkpoint: checkpoint, epoch: epoch)
        let cached = nodes.count
        for (identifier, node) in try await IdentityStore.nodes(tx, seen.keys.filter { nodes[$0] == nil }) {
            nodes[identifier] = node
        }
        timings.mark("load nodes (\(cached) of \(seen.count) cached)")
        var engine = IdentityEngine(rules: rules)
        for (identifier, node) in nodes where !node.isHub { engine.load(identifier: identifier, profile: node.profile) }
        let resolverEvents = events.map { event in
            Self.resolverEvent(event, rules: rules, isHub: { nodes[$0]?.isHub == true })
        }
        // Profiles matter only where an event carries several identifiers (a merge or a limit to check).
        var neededProfiles = Set<UUID>()
        for event in resolverEvents where IdentityEngine.needsProfiles(event, known: { nodes[$0]?.profile }) {
            for identifier in event.identifiers { if let node = nodes[identifier] { neededProfiles.insert(node.profile) } }
        }
        try await IdentityStore.loadProfiles(tx, neededProfiles, into: &engine)
        let loadedProfiles = Set(nodes.values.filter { !$0.isHub }.map(\.profile))
        timings.mark("load profiles")

        for event in resolverEvents { engine.process(event) }
        timings.mark("engine")

        // Merges of profiles that existed before this batch: move their identifiers and events to the survivor.
        let losers = engine.mergedAway.intersection(loadedProfiles).sorted { $0.uuidString < $1.uuidString }
        if !losers.isEmpty {
            let survivors = losers.map { engine.find($0) }
            try await tx.execute(
                """
                UPDATE cdp.identity_nodes AS n SET profile_id = m.into_id
                FROM unnest(\(losers)::uuid[], \(survivors)::uuid[]) AS m (from_id, into_id)
                WHERE n.profile_id = m.from_id AND n.profile_id = ANY(\(losers)::uuid[])
                """)
            try await tx.execute(
                """
                UPDATE cdp.events AS e SET profile_id = m.into_id
                FROM unnest(\(losers)::uuid[], \(survivors)::uuid[]) AS m (from_id, into_id)
                WHERE e.profile_id = m.from_id AND e.profile_id = ANY(\(losers)::uuid[])
                """)
            try await tx.execute("DELETE FROM cdp.identity_profiles WHERE profile_id = ANY(\(losers))")
        }
        let foundedAlive = engine.founded.filter { engine.find($0) == $0 }
        try await IdentityStore.storeProfiles(tx, Array(foundedAlive), of: engine, replacing: false)
        report.profilesCreated = foundedAlive.count
        if !engine.merges.isEmpty {
            let merges = engine.merges
            try await tx.execute(
                """
                INSERT INTO cdp.profile_merge_log (from_profile_id, into_profile_id, reason, seq, message_id, kind, value)
                SELECT m.from_id, m.into_id, 'identifier', m.seq, m.message_id, m.kind, m.value
                FROM unnest(\(merges.map(\.from))::uuid[], \(merges.map(\.into))::uuid[], \(merges.map { Int($0.seq) })::int8[],
                            \(merges.map { $0.messageID ?? "" })::text[], \(merges.map(\.identifier.kind))::text[],
                            \(merges.map(\.identifier.value))::text[]) AS m (from_id, into_id, seq, message_id, kind, value)
                """)
        }
        report.merges = engine.merges.count
        try await IdentityStore.refreshRedirects(tx, touched: losers + foundedAlive + engine.merges.map(\.from))
        timings.mark("merges")

        // New identifiers, and the time range of those already known.
        let created = engine.created.keys.sorted { $0.kind == $1.kind ? $0.value < $1.value : $0.kind < $1.kind }
        if !created.isEmpty {
            let rows = try await tx.query(
                """
                INSERT INTO cdp.identity_nodes (kind, value, profile_id, first_seq, first_seen_at, last_seen_at)
                SELECT kind, value, profile_id, first_seq, timestamptz 'epoch' + first_us * interval '1 microsecond',
                       timestamptz 'epoch' + last_us * interval '1 microsecond'
                FROM unnest(\(created.map(\.kind))::text[], \(created.map(\.value))::text[],
                            \(created.map { engine.profile(of: $0)! })::uuid[], \(created.map { Int(seen[$0]!.firstSeq) })::int8[],
                            \(created.map { Int(seen[$0]!.first) })::int8[],
                            \(created.map { Int(seen[$0]!.last) })::int8[]) AS c (kind, value, profile_id, first_seq, first_us, last_us)
                RETURNING node_id, kind, value, profile_id
                """)
            for row in rows {
                let (id, kind, value, profile) = try row.decode((Int64, String, String, UUID).self)
                nodes[Identifier(kind: kind, value: value)] = StoredNode(id: id, profile: profile, isHub: false)
            }
        }
        report.identifiersCreated = created.count
        timings.mark("insert nodes")
        let known = seen.keys.filter { engine.created[$0] == nil }
        if !known.isEmpty {
            try await tx.execute(
                """
                UPDATE cdp.identity_nodes AS n
                SET first_seen_at = least(n.first_seen_at, s.first_seen), last_seen_at = greatest(n.last_seen_at, s.last_seen)
                FROM (SELECT node_id, timestamptz 'epoch' + first_us * interval '1 microsecond' AS first_seen,
                             timestamptz 'epoch' + last_us * interval '1 microsecond' AS last_seen
                      FROM unnest(\(known.map { Int(nodes[$0]!.id) })::int8[], \(known.map { Int(seen[$0]!.first) })::int8[],
                                  \(known.map { Int(seen[$0]!.last) })::int8[]) AS u (node_id, first_us, last_us)) AS s
                WHERE n.node_id = s.node_id AND n.node_id = ANY(\(known.map { Int(nodes[$0]!.id) })::int8[])
                  AND (s.first_seen < n.first_seen_at OR s.last_seen > n.last_seen_at)
                """)
        }
        timings.mark("seen times")

        // Stamp every event of the batch with its final profile, NULL for those without a usable identifier: after a
        // rebuild the stage goes over events it had stamped before, and a stale stamp must not survive. Events stored
        // with a guess (``ProfileHints``) that was right are not rewritten: only the stamps that differ are sent.
        var stored: [Int64: UUID] = [:]
        for row in try await tx.query(
            """
            SELECT seq, profile_id FROM cdp.events WHERE seq > \(checkpoint) AND seq <= \(last) AND profile_id IS NOT NULL
            """)
        {
            let (seq, profile) = try row.decode((Int64, UUID).self)
            stored[seq] = profile
        }
        let stamped = engine.finalStamps.filter { stored[$0.seq] != $0.profile }
        if !stamped.isEmpty {
            try await tx.execute(
                """
                UPDATE cdp.events AS e SET profile_id = s.profile_id
                FROM unnest(\(stamped.map { Int($0.seq) })::int8[], \(stamped.map(\.profile))::uuid[]) AS s (seq, profile_id)
                WHERE e.seq = s.seq AND e.seq > \(checkpoint) AND e.seq <= \(last) AND e.profile_id IS DISTINCT FROM s.profile_id
                """)
        }
        timings.mark("stamp events")

        // Edges between identifiers seen together, then hub detection on the nodes that gained edges.
        var edges: [Int64: [Int64: Int64]] = [:]
        for event in events {
            let ids = Set(event.identifiers.compactMap { nodes[$0]?.id }).sorted()
            for i in ids.indices {
                for j in (i + 1)..<ids.count where edges[ids[i], default: [:]][ids[j]] == nil {
                    edges[ids[i], default: [:]][ids[j]] = event.seq
                }
            }
        }
        let pairs = edges.flatMap { a, targets in targets.map { (a, $0.key, $0.value) } }
        if !pairs.isEmpty {
            let inserted = try await tx.query(
                """
                INSERT INTO cdp.identity_edges (a, b, first_seq)
                SELECT * FROM unnest(\(pairs.map { Int($0.0) })::int8[], \(pairs.map { Int($0.1) })::int8[], \(pairs.map { Int($0.2) })::int8[])
                ON CONFLICT DO NOTHING
                RETURNING a, b
                """)
            var gained = Set<Int64>()
            for row in inserted {
                let (a, b) = try row.decode((Int64, Int64).self)
                gained.insert(a)
                gained.insert(b)
            }
            timings.mark("edges")
            let hubs = try await IdentitySplits.detectHubs(tx, among: Array(gained), rules: rules)
            timings.mark("hub check")
            if !hubs.isEmpty {
                report.hubsDetected = hubs.count
                try await IdentitySplits.split(
                    tx, rules: rules, document: document, hubs: hubs, blocked: [], through: last, logger: logger)
            }
        }
        try await Checkpoint.identity.set(tx, seq: last)
        // Wakes the profile stage when this batch commits.
        try await tx.execute("SELECT pg_notify(\(Self.channel), '')")
        let update = IdentifierCache.Update(
            nodes: nodes, redirects: Dictionary(uniqueKeysWithValues: losers.map { ($0, engine.find($0)) }),
            checkpoint: last, epoch: try await IdentityStore.graphEpoch(tx), forget: report.hubsDetected > 0, rules: rules)
        timings.mark("finish")
        report.checkpoint = last
        return (report, next, update)
    }

    /// An extracted event as the engine takes it: usable identifiers and hub values apart, each in priority order.
    static func resolverEvent(_ event: ExtractedEvent, rules: IdentityRules, isHub: (Identifier) -> Bool) -> ResolverEvent {
        var usable: [Identifier] = []
        var hubs: [Identifier] = []
        var seen = Set<Identifier>()
        for identifier in event.identifiers where seen.insert(identifier).inserted {
            if isHub(identifier) { hubs.append(identifier) } else { usable.append(identifier) }
        }
        usable.sort(by: rules.precedes)
        hubs.sort(by: rules.precedes)
        return ResolverEvent(seq: event.seq, messageID: event.messageID, identifiers: usable, hubs: hubs)
    }
}
