import Foundation
import Logging
import Postgres
import TributaryModel

/// Stores accepted calls durably, sharing one transaction among all the requests waiting at the same time
/// (group commit), and returns to each caller only after that transaction has committed.
///
/// Each flush, in one transaction, records the waiting events' message ids in `cdp.event_message_ids` (so a retried
/// message is stored once, however late) and stores the new ones in `cdp.events` with receive sequence numbers drawn
/// under an advisory lock held until the COMMIT has returned, so sequence numbers become visible in increasing order
/// for the stages that consume them (on one server and on Citus alike; see ``SequenceLock``).
/// While nothing is suppressed, the ids are recorded before the lock and only the new events' COPY into `cdp.events`
/// runs under it; otherwise whole events are staged so the insert can check their identifiers. The queue is bounded: when it is full, ``write(_:sourceID:)``
/// fails at once with ``Overloaded`` rather than buffering without limit.
///
/// Events carrying an identifier of a deleted person (``PrivacyRequests``, `cdp.suppressions`) are dropped by the
/// insert itself, under the lock a deletion also takes, so none slips in while a deletion commits; the caller still
/// gets its outcome (``Outcome/suppressed``), and each suppression's `events_dropped` counts them. While nothing is
/// suppressed this costs one `EXISTS` per flush; otherwise the batch's identifiers are extracted under the identity
/// rules in force (read at most every two seconds).
public actor EventWriter {
    /// The queue is full; the caller should answer 503 with `Retry-After`.
    public struct Overloaded: Error, Sendable, CustomStringConvertible {
        public var queued: Int
        public var description: String { "the event writer is overloaded (\(queued) events waiting); retry shortly" }
    }

    /// What happened to one request's events.
    public struct Outcome: Sendable {
        /// Events stored now.
        public var stored: Int
        /// Events already stored before (retries), left alone.
        public var duplicates: Int
        /// Events dropped, not stored, because they carry a suppressed identifier (a deleted person's).
        public var suppressed: Int = 0
    }

    private struct Pending {
        var sourceID: String
        var events: [IncomingEvent]
        var continuation: CheckedContinuation<Outcome, any Error>
    }

    private let client: PostgresClient
    private let logger: Logger
    /// The most events waiting at once.
    public let maxQueuedEvents: Int
    private var pending: [Pending] = []
    private var queuedEvents = 0
    /// Flushes running now; up to ``maxConcurrentFlushes`` overlap, so one group's COPY proceeds while another commits.
    private var activeFlushes = 0
    /// The most group commits in flight at once from this writer.
    public let maxConcurrentFlushes: Int
    private var knownMonths: Set<String> = []
    /// Recent calls not stored (duplicates, suppressed), oldest first.
    private var notStored: [NotStored] = []
    /// The identity rules (to extract identifiers as the identity stage does) and whether any identifier is suppressed,
    /// read at most every ``suppressionRefresh``. Only a hint: the insert itself checks `cdp.suppressions`.
    private var suppressionHint: (rules: String, any: Bool, readAt: ContinuousClock.Instant)?
    /// How long the rules and the suppression hint are reused.
    static let suppressionRefresh: Duration = .seconds(2)
    /// Called after each flush with the number of events stored and the time it took (for metrics).
    private let onFlush: @Sendable (Int, Int, Duration) -> Void
    /// Guesses of each new event's profile, stored with it (see ``ProfileHints``); nil: events are stored unstamped.
    private let profileHints: (any ProfileHints)?

    /// - Parameter profileHints: guesses of the events' profiles, stored with them so the identity stage need not
    ///   rewrite the events it guessed right (`tributary serve` passes the identity stage's cache).
    public init(
        client: PostgresClient, maxQueuedEvents: Int = 50_000, maxConcurrentFlushes: Int = 2,
        profileHints: (any ProfileHints)? = nil, logger: Logger,
        onFlush: @escaping @Sendable (_ stored: Int, _ duplicates: Int, _ took: Duration) -> Void = { _, _, _ in }
    ) {
        self.client = client
        self.maxQueuedEvents = maxQueuedEvents
        self.maxConcurrentFlushes = max(1, maxConcurrentFlushes)
        self.profileHints = profileHints
        self.logger = logger
        self.onFlush = onFlush
    }

    /// Events waiting to be written (for the writer-queue-depth metric).
    public var queueDepth: Int { queuedEvents }

    /// Stores `events` of one source; returns once they are committed.
    public func write(_ events: [IncomingEvent], sourceID: String) async throws -> Outcome {
        if events.isEmpty { return Outcome(stored: 0, duplicates: 0) }
        if queuedEvents + events.count > maxQueuedEvents { throw Overloaded(queued: queuedEvents) }
        queuedEvents += events.count
        return try await withCheckedThrowingContinuation { continuation in
            pending.append(Pending(sourceID: sourceID, events: events, continuation: continuation))
            if activeFlushes < maxConcurrentFlushes {
                activeFlushes += 1
                Task { await self.flushLoop() }
            }
        }
    }

    private func flushLoop() async {
        while !pending.isEmpty {
            let batch = pending
            pending = []
            let count = batch.reduce(0) { $0 + $1.events.count }
            let started = ContinuousClock.now
            do {
                let outcomes = try await flush(batch)
                queuedEvents -= count
                // Suppressed events (a deleted person's) are neither stored nor duplicates.
                onFlush(
                    outcomes.reduce(0) { $0 + $1.stored }, outcomes.reduce(0) { $0 + $1.duplicates },
                    ContinuousClock.now - started)
                for (request, outcome) in zip(batch, outcomes) { request.continuation.resume(returning: outcome) }
            } catch {
                queuedEvents -= count
                logger.error("storing events failed", metadata: ["events": "\(count)", "error": "\(error)"])
                for request in batch { request.continuation.resume(throwing: error) }
            }
        }
        activeFlushes -= 1
    }

    /// Writes one group of requests in one transaction; returns each request's outcome.
    private func flush(_ batch: [Pending]) async throws -> [Outcome] {
        // Within the group, a message id seen twice (a retry racing its original) is stored once.
        var seen = Set<String>()
        var rows: [(sourceID: String, event: IncomingEvent)] = []
        var keys: [String] = []
        var firstOfKey: [Bool] = []
        for request in batch {
            for event in request.events {
                let key = request.sourceID + "\u{1}" + event.messageID
                keys.append(key)
                let isFirst = seen.insert(key).inserted
                firstOfKey.append(isFirst)
                if isFirst { rows.append((request.sourceID, event)) }
            }
        }
        try await ensurePartitions(for: rows.map(\.event.timestamp))
        let hint = try await suppressionState()
        var stored: (Set<String>, Set<String>)? = nil
        if !hint.any {
            do {
                stored = try await flushDirect(rows)
            } catch let error as PostgresError where error.sqlState == .deadlockDetected {
                // A retry raced its original across the two paths (the checking path records ids under the lock,
                // this one before it); the server broke the cycle by rolling this flush back. Check every event.
                logger.info(
                    "writer: a flush met a concurrent one recording the same message ids; retrying it",
                    metadata: ["error": "\(error)"])
            }
        }
        let (storedKeys, droppedKeys): (Set<String>, Set<String>) =
            if let stored { stored } else {
                try await client.withConnection { connection in
                    try await connection.execute(Self.stagingSQL)
                    return try await Self.inOrder(connection) { tx, sequenceLock in
                        try await tx.copyIn("COPY tributary_incoming FROM STDIN") { writer in
                            var buffer: [UInt8] = []
                            buffer.reserveCapacity(256 * 1024)
                            for (ordinal, (sourceID, event)) in rows.enumerated() {
                                Self.appendCopyLine(to: &buffer, ordinal: ordinal, sourceID: sourceID, event)
                                if buffer.count >= 240 * 1024 {
                                    try await writer.write(buffer)
                                    buffer.removeAll(keepingCapacity: true)
                                }
                            }
                            try await writer.write(buffer)
                        }
                        try await sequenceLock.take()
                        // The statement's snapshot is taken under the lock a deletion also takes, so a suppression committed
                        // before we got it is seen.
                        let inserted = try await tx.query(
                            Self.insertQuery(rules: hint.rules))
                        var keys = Set<String>()
                        var dropped = Set<String>()
                        for row in inserted {
                            let (source, message, stored) = try row.decode((String, String, Bool).self)
                            if stored {
                                keys.insert(source + "\u{1}" + message)
                            } else {
                                dropped.insert(source + "\u{1}" + message)
                            }
                        }
                        // Wake the stream stages (identity, ...) on commit; they also poll, so this only cuts latency.
                        if !keys.isEmpty {
                            try await tx.execute(Self.countQuery(keys.map { String($0.prefix { $0 != "\u{1}" }) }))
                            try await tx.execute("SELECT pg_notify(\(Self.eventsChannel), '')")
                        }
                        return (keys, dropped)
                    }
                }
            }
        if !droppedKeys.isEmpty {
            logger.info(
                "dropped events carrying suppressed identifiers (deleted people)", metadata: ["events": "\(droppedKeys.count)"])
        }
        var outcomes = batch.map { _ in Outcome(stored: 0, duplicates: 0) }
        var position = 0
        for (requestIndex, request) in batch.enumerated() {
            for event in request.events {
                if firstOfKey[position] && storedKeys.contains(keys[position]) {
                    outcomes[requestIndex].stored += 1
                } else if droppedKeys.contains(keys[position]) {
                    outcomes[requestIndex].suppressed += 1
                    remember(NotStored(request.sourceID, event, outcome: .suppressed))
                } else {
                    outcomes[requestIndex].duplicates += 1
                    remember(NotStored(request.sourceID, event, outcome: .duplicate))
                }
                position += 1
            }
        }
        return outcomes
    }

    /// A call this writer answered without storing it: a retry of a stored message, or a deleted person's call. Only
    /// what tells it apart is kept — never its identifiers or payload.
    public struct NotStored: Sendable {
        public enum Outcome: String, Sendable { case duplicate, suppressed }
        public var sourceID: String
        public var messageID: String
        public var type: String
        public var name: String?
        public var receivedAt: Date
        public var outcome: Outcome

        init(_ sourceID: String, _ event: IncomingEvent, outcome: Outcome) {
            self.sourceID = sourceID
            // A deleted person's message id could be anything they chose: keep it only for retries.
            messageID = outcome == .duplicate ? event.messageID : "(suppressed)"
            type = event.type.rawValue
            name = event.event ?? event.name
            receivedAt = event.receivedAt
            self.outcome = outcome
        }
    }

    /// The newest calls this writer did not store (at most ``notStoredKept``), newest first: the console's live screen.
    public var recentlyNotStored: [NotStored] { notStored.reversed() }
    public static let notStoredKept = 200

    private func remember(_ call: NotStored) {
        notStored.append(call)
        if notStored.count > Self.notStoredKept { notStored.removeFirst(notStored.count - Self.notStoredKept) }
    }

    /// The path taken while nothing is suppressed. The message ids are recorded first, before the sequence lock: the
    /// unique index of `cdp.event_message_ids` decides which events are new (a retry racing its original in another
    /// flush waits here for that flush to commit or roll back, never while either holds the lock). Then, under the
    /// lock, sequence numbers are drawn for the new events and they are COPYed straight into `cdp.events`, each
    /// written once. Only that part is serialized across flushes. Returns nil (nothing written) if a suppression
    /// exists once the lock is held (one committed since the hint was read): the caller then takes the checking path.
    private func flushDirect(_ rows: [(sourceID: String, event: IncomingEvent)]) async throws -> (Set<String>, Set<String>)? {
        var timings = StepTimings()
        defer { logger.debug("writer: flush timings", metadata: ["events": "\(rows.count)", "steps": "\(timings)"]) }
        /// Thrown to roll the transaction back (the ids recorded so far with it) when a suppression is found.
        struct SuppressionFound: Error {}
        // Outside the transaction: the guesses are plain Swift work, and only the COPY below is serialized.
        let profiles = profileHints?.profiles(for: rows.map(\.event))
        timings.mark("profile hints")
        do {
            return try await client.withConnection { connection in
                try await Self.inOrder(connection) { tx, sequenceLock in
                    timings.mark("connection")
                    var recorded = Set<String>()
                    recorded.reserveCapacity(rows.count)
                    for row in try await tx.query(
                        """
                        INSERT INTO cdp.event_message_ids (source_id, message_id, received_at)
                        SELECT * FROM unnest(\(rows.map(\.sourceID))::text[], \(rows.map(\.event.messageID))::text[],
                                             \(rows.map { PostgresTime.format($0.event.receivedAt) })::timestamptz[])
                        ON CONFLICT DO NOTHING
                        RETURNING source_id, message_id
                        """)
                    {
                        let (source, message) = try row.decode((String, String).self)
                        recorded.insert(source + "\u{1}" + message)
                    }
                    timings.mark("record ids")
                    guard !recorded.isEmpty else { return ([], []) }
                    // Before the lock: the statement that adds them to cdp.event_counts (run last, under it).
                    let counts = Self.countQuery(recorded.map { String($0.prefix { $0 != "\u{1}" }) })
                    // Under the lock a deletion also takes: a suppression committed before it is seen here.
                    try await sequenceLock.take()
                    timings.mark("lock")
                    var sequence: [Int64] = []
                    sequence.reserveCapacity(recorded.count)
                    for row in try await tx.query(
                        """
                        WITH blocked AS MATERIALIZED (SELECT EXISTS (SELECT 1 FROM cdp.suppressions) AS found)
                        SELECT -1::int8 WHERE (SELECT found FROM blocked)
                        UNION ALL
                        SELECT nextval('cdp.events_seq') FROM generate_series(1, \(recorded.count)) WHERE NOT (SELECT found FROM blocked)
                        """)
                    {
                        let seq = try row.decode(Int64.self)
                        if seq < 0 { throw SuppressionFound() }  // something is suppressed now: roll back, check every event
                        sequence.append(seq)
                    }
                    // Every drawer of cdp.events_seq holds the lock, so these are the next numbers, in order.
                    sequence.sort()
                    timings.mark("draw seqs")
                    try await tx.copyIn(
                        PostgresQuery(unsafeSQL: "COPY cdp.events (seq, \(Self.eventColumns), profile_id) FROM STDIN")
                    ) { writer in
                        var buffer: [UInt8] = []
                        buffer.reserveCapacity(256 * 1024)
                        var next = sequence.makeIterator()
                        for (index, (sourceID, event)) in rows.enumerated()
                        where recorded.contains(sourceID + "\u{1}" + event.messageID) {
                            let guess: UUID? = profiles?[index] ?? nil
                            Self.appendCopyLine(
                                to: &buffer, ordinal: Int(next.next()!), sourceID: sourceID, event, profile: .some(guess))
                            if buffer.count >= 240 * 1024 {
                                try await writer.write(buffer)
                                buffer.removeAll(keepingCapacity: true)
                            }
                        }
                        try await writer.write(buffer)
                    }
                    timings.mark("copy events")
                    try await tx.execute(counts)
                    try await tx.execute("SELECT pg_notify(\(Self.eventsChannel), '')")
                    return (recorded, [])
                }
            }
        } catch is SuppressionFound {
            return nil
        }
    }

    /// Creates the monthly partitions a batch needs, in their own short transactions, before the insert.
    private func ensurePartitions(for timestamps: [Date]) async throws {
        var months = Set<String>()
        for timestamp in timestamps { months.insert(String(PostgresTime.format(timestamp).prefix(7)) + "-01") }
        let missing = months.subtracting(knownMonths)
        guard !missing.isEmpty else { return }
        for month in missing.sorted() {
            try await client.execute("SELECT cdp.ensure_event_partition(\(month)::date)")
            knownMonths.insert(month)
        }
    }

    /// The identity rules document and whether any identifier is suppressed, re-read when older than
    /// ``suppressionRefresh``.
    private func suppressionState() async throws -> (rules: String, any: Bool) {
        if let hint = suppressionHint, ContinuousClock.now - hint.readAt < Self.suppressionRefresh {
            return (hint.rules, hint.any)
        }
        let row = try await client.query(
            """
            SELECT coalesce((SELECT rules FROM cdp.identity_rules WHERE id = 1), '{}')::text, EXISTS (SELECT 1 FROM cdp.suppressions)
            """)[0]
        let (rules, any) = try row.decode((String, Bool).self)
        suppressionHint = (rules, any, ContinuousClock.now)
        return (rules, any)
    }

    /// Adds the events just stored (one source id per event) to `cdp.event_counts`, in the storing transaction.
    static func countQuery(_ sources: [String]) -> PostgresQuery {
        var counts: [String: Int] = [:]
        for source in sources { counts[source, default: 0] += 1 }
        let ordered = counts.sorted { $0.key < $1.key }
        return """
            INSERT INTO cdp.event_counts AS c (source_id, minute, events)
            SELECT s, date_trunc('minute', now()), n FROM unnest(\(ordered.map(\.key))::text[], \(ordered.map(\.value))::int8[]) AS u (s, n)
            ON CONFLICT (source_id, minute) DO UPDATE SET events = c.events + excluded.events
            """
    }

    package static let sequenceLock = AdvisoryLockKey(name: "tributary.events.sequence")

    /// ``sequenceLock`` held from ``take()`` until the transaction's COMMIT has returned (a session-level lock,
    /// released by ``inOrder(_:_:)``). A transaction-level lock is released at the server's own commit; on Citus that
    /// is the coordinator's, before the workers' COMMIT PREPARED make the events visible, so a later batch could become
    /// visible first and a stage pass over the earlier one. Held through COMMIT, it cannot: the coordinator returns
    /// from COMMIT after the workers have committed.
    final class SequenceLock {
        let connection: PostgresConnection
        private(set) var held = false

        init(_ connection: PostgresConnection) { self.connection = connection }

        /// Waits for the lock (once per transaction).
        func take() async throws {
            guard !held else { return }
            try await connection.advisoryLock(EventWriter.sequenceLock)
            held = true
        }

        func release() async throws {
            guard held else { return }
            held = false
            try await connection.advisoryUnlock(EventWriter.sequenceLock)
        }
    }

    /// Runs `body` in a transaction on `connection`, releasing the sequence lock it took only after COMMIT (or
    /// ROLLBACK) has returned.
    static func inOrder<T>(
        _ connection: PostgresConnection, _ body: (PostgresConnection, SequenceLock) async throws -> T
    ) async throws -> T {
        let lock = SequenceLock(connection)
        let value: T
        do {
            value = try await connection.withTransaction { try await body($0, lock) }
        } catch {
            try? await lock.release()
            throw error
        }
        try await lock.release()
        return value
    }

    /// The channel notified when new events are committed.
    public static let eventsChannel = "tributary_events"

    static let stagingSQL: PostgresQuery = """
        CREATE TEMP TABLE IF NOT EXISTS tributary_incoming (
            ordinal int, source_id text, message_id text, type text, event text, name text, user_id text,
            anonymous_id text, group_id text, previous_id text, timestamp timestamptz, original_timestamp timestamptz,
            sent_at timestamptz, received_at timestamptz, properties jsonb, traits jsonb, context jsonb, integrations jsonb
        ) ON COMMIT DELETE ROWS
        """

    /// The columns of `cdp.events` a COPY line of ``appendCopyLine(to:ordinal:sourceID:_:profile:)`` fills after its first
    /// (and before `profile_id`, which the direct path adds).
    static let eventColumns = """
        source_id, message_id, type, event, name, user_id, anonymous_id, group_id, previous_id, timestamp, \
        original_timestamp, sent_at, received_at, properties, traits, context, integrations
        """

    /// Stores the staged events, except those carrying a suppressed identifier (extracted and normalized by
    /// `cdp.event_identifiers` under the rules document `rules`, as the identity stage does, an alias call's previousId
    /// both as a user id and as an anonymous id), which are counted per
    /// suppression instead. Returns `(source_id, message_id, stored)`: stored true for events stored now, false for
    /// events dropped. With nothing suppressed, the extraction is not run.
    static func insertQuery(rules: String) -> PostgresQuery {
        """
        WITH suppressed AS MATERIALIZED (
            SELECT i.ordinal, s.identifier_hash
            FROM tributary_incoming AS i
            CROSS JOIN LATERAL cdp.event_identifiers(i.type, i.user_id, i.anonymous_id, i.previous_id, i.traits, i.context,
                                                     \(rules)::jsonb) AS c
            JOIN cdp.suppressions AS s ON s.identifier_hash = cdp.identifier_hash(c.kind, c.value)
            WHERE EXISTS (SELECT 1 FROM cdp.suppressions)
        ), counted AS (
            UPDATE cdp.suppressions AS s SET events_dropped = s.events_dropped + m.events, last_dropped_at = now()
            FROM (SELECT identifier_hash, count(DISTINCT ordinal) AS events FROM suppressed GROUP BY identifier_hash) AS m
            WHERE s.identifier_hash = m.identifier_hash
        ), fresh AS (
            INSERT INTO cdp.event_message_ids (source_id, message_id, received_at)
            SELECT source_id, message_id, received_at FROM tributary_incoming
            WHERE ordinal NOT IN (SELECT ordinal FROM suppressed)
            ON CONFLICT DO NOTHING
            RETURNING source_id, message_id
        ), stored AS (
            INSERT INTO cdp.events (seq, message_id, source_id, type, event, name, user_id, anonymous_id, group_id,
                                    previous_id, timestamp, original_timestamp, sent_at, received_at, properties, traits,
                                    context, integrations)
            SELECT nextval('cdp.events_seq'), i.message_id, i.source_id, i.type, i.event, i.name, i.user_id,
                   i.anonymous_id, i.group_id, i.previous_id, i.timestamp, i.original_timestamp, i.sent_at,
                   i.received_at, i.properties, i.traits, i.context, i.integrations
            FROM (SELECT i.* FROM tributary_incoming i JOIN fresh f USING (source_id, message_id) ORDER BY i.ordinal) i
            RETURNING source_id, message_id
        )
        SELECT source_id, message_id, true FROM stored
        UNION ALL
        SELECT i.source_id, i.message_id, false FROM tributary_incoming AS i WHERE i.ordinal IN (SELECT ordinal FROM suppressed)
        """
    }

    /// Appends one row in COPY text format; with `profile` (a ``ProfileHints`` guess, `.some(nil)` for none), one
    /// more column for `profile_id`.
    static func appendCopyLine(
        to out: inout [UInt8], ordinal: Int, sourceID: String, _ e: IncomingEvent, profile: UUID?? = .none
    ) {
        out.append(contentsOf: String(ordinal).utf8)
        func text(_ value: String?) {
            out.append(0x09)
            if let value { CopyText.appendEscaped(value, to: &out) } else { out.append(contentsOf: [0x5C, UInt8(ascii: "N")]) }
        }
        func time(_ value: Date?) {
            out.append(0x09)
            if let value { PostgresTime.append(value, to: &out) } else { out.append(contentsOf: [0x5C, UInt8(ascii: "N")]) }
        }
        for value in [sourceID, e.messageID, e.type.rawValue, e.event, e.name, e.userID, e.anonymousID, e.groupID, e.previousID] {
            text(value)
        }
        time(e.timestamp)
        time(e.originalTimestamp)
        time(e.sentAt)
        time(e.receivedAt)
        for value in [e.properties, e.traits, e.context, e.integrations] { text(value) }
        if let profile { text(profile?.uuidString) }
        out.append(0x0A)
    }
}
