import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryModel
import TributaryRuntime

#if canImport(Glibc)
    /// glibc's `malloc_trim` (not in Swift's Glibc module): returns freed heap memory to the system.
    @_silgen_name("malloc_trim") private func mallocTrim(_ pad: Int) -> Int32
#endif

/// `tributary identity rebuild`: recomputes the whole identity graph from `cdp.events` and swaps it in atomically,
/// while ingestion and the real-time stage go on.
///
/// 1. Every event up to the current end of the stream (`H`) is run through `cdp.event_identifiers`
///    (`cdp.identity_candidates` and both forms of an alias call's previousId, of which the alias rule keeps one), by
///    several sessions side by side, streamed here with COPY.
/// 2. The graph is computed in this process (``RebuildGraph``): identifiers interned to integers, edges, hubs,
///    components by union-find (``IdentityComponents``), founders, the replay of components over a limit through the
///    `IdentityEngine` the real-time stage uses, event stamps. The recursive definition stays the definition
///    (`cdp.resolve_profile`, `identity explain`); a test checks that the components agree with it.
/// 3. One transaction (holding the real-time stage's lock) reads the stored graph with COPY, compares it here and
///    writes only the differences to nodes, edges, profiles and event stamps, records each profile id that
///    disappeared in `cdp.profile_merge_log` (reason `rebuild`) and sets the stage's checkpoint to `H`; events after
///    `H` are then processed by the real-time stage as usual.
///
/// When the events would need more than ``memoryBudget`` in this process (about ``bytesPerEvent`` each), the same
/// graph is computed set-based in PostgreSQL instead (`IdentityRebuild+Database.swift`), with only the components
/// computed here; both ways give the same graph (tested).
public struct IdentityRebuild: Sendable {
    public struct Report: Sendable {
        public var events = 0
        public var lastSeq: Int64 = 0
        public var identifiers = 0
        public var edges = 0
        public var hubs = 0
        public var components = 0
        public var conflictComponents = 0
        public var profiles = 0
        public var nodesChanged = 0
        public var eventsRestamped = 0
        /// Whether the graph was computed in this process (within ``IdentityRebuild/memoryBudget``) or in PostgreSQL.
        public var inMemory = false
        /// Seconds per phase, in order.
        public var phases: [(String, Double)] = []
        public var seconds: Double { phases.reduce(0) { $0 + $1.1 } }
    }

    static let rebuildLock = AdvisoryLockKey(name: "tributary.identity.rebuild")

    /// Told one line per finished phase (name, seconds, rows, elapsed), for a terminal watching a long rebuild.
    public var progress: (@Sendable (String) -> Void)?

    /// The most memory the rebuild may use in this process, in bytes. The graph is computed here (the fast way)
    /// when the events, at ``bytesPerEvent`` each, fit; otherwise in PostgreSQL, with only the components computed
    /// here (about 14 bytes per identifier). Default 1 GiB: about 10 million events in memory.
    public var memoryBudget = 1 << 30

    /// What the in-memory rebuild holds per event at its peak, a cold rebuild (every stamp and identifier written):
    /// 1.05 GB measured for 10M generated events (9.7M identifiers, 10.9M edges; 0.88–0.91 GB with the graph current)
    /// and about 160 MB for the benchmark's 1.1M (a fixed ~40 MB included).
    public static let bytesPerEvent = 105

    /// Identifiers per engine when the in-memory rebuild replays components over a limit (whole components per
    /// engine: they never share an event). Tests set it low to replay every component alone.
    package var replayBatch = 20_000

    /// Sessions that extract identifiers side by side (one per core is the useful most).
    public var extractionConnections = max(1, min(8, ProcessInfo.processInfo.activeProcessorCount))

    /// The phases of a rebuild as they finish: kept for the report, told to `progress` as one line each.
    final class PhaseLog: @unchecked Sendable {
        private(set) var phases: [(String, Double)] = []
        private var clock = ContinuousClock.now
        private let started = ContinuousClock.now
        let progress: (@Sendable (String) -> Void)?
        let logger: Logger

        /// The most memory this process has held so far (VmHWM), in MB (10^6 bytes), where the system says.
        static func peakResidentMegabytes() -> Int? {
            guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
                let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
                let kilobytes = Int(line.dropFirst(6).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
            else { return nil }
            return kilobytes * 1024 / 1_000_000
        }

        init(progress: (@Sendable (String) -> Void)?, logger: Logger) {
            self.progress = progress
            self.logger = logger
        }

        func phase(_ name: String, rows: Int? = nil) {
            let now = ContinuousClock.now
            let seconds = (now - clock).seconds
            phases.append((name, seconds))
            clock = now
            let count = rows.map { ", \($0) rows" } ?? ""
            let peak = Self.peakResidentMegabytes().map { ", peak RSS \($0) MB" } ?? ""
            progress?(
                "identity rebuild: \(name) \(String(format: "%.2f", seconds)) s\(count) (\(String(format: "%.1f", (now - started).seconds)) s so far\(peak))"
            )
            logger.debug("identity rebuild: \(name) done")
        }
    }

    /// Runs `body` once per `(after, through]` range of `1...last` (``split(through:into:)``), side by side, each on a
    /// session of its own (``extractionConnections`` of them): the extraction's per-event function runs in one backend
    /// per statement, and PostgreSQL does not parallelize it.
    func onExtractionSessions(
        through last: Int64, _ body: @escaping @Sendable (PostgresConnection, Int64, Int64) async throws -> Void
    ) async throws {
        let configuration = configuration, logger = logger
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (from, through) in Self.split(through: last, into: extractionConnections) {
                group.addTask {
                    try await PostgresConnection.withConnection(configuration: configuration, logger: logger) {
                        try await body($0, from, through)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// `(after, through]` ranges of sequence numbers covering `1...last` in `parts` pieces.
    static func split(through last: Int64, into parts: Int) -> [(Int64, Int64)] {
        let size = max(1, (last + Int64(parts) - 1) / Int64(parts))
        return stride(from: Int64(0), to: last, by: Int(size)).map { ($0, min(last, $0 + size)) }
    }

    let configuration: PostgresConfiguration
    let logger: Logger

    public init(configuration: PostgresConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws -> Report {
        try await PostgresConnection.withConnection(configuration: configuration, logger: logger) { db in
            do {
                return try await rebuild(db)
            } catch {
                try? await db.script("DROP SCHEMA IF EXISTS \(Self.schema) CASCADE")
                throw error
            }
        }
    }

    private func rebuild(_ db: PostgresConnection) async throws -> Report {
        var report = Report()
        let log = PhaseLog(progress: progress, logger: logger)
        guard try await db.tryAdvisoryLock(Self.rebuildLock) else {
            throw IdentityError("another identity rebuild is running")
        }
        try await db.script(
            """
            SET temp_buffers = '2GB';
            SET work_mem = '256MB';
            SET max_parallel_workers_per_gather = 2;
            SET maintenance_work_mem = '256MB';
            SET synchronous_commit = off;
            """)
        let (rules, document) = try await IdentityStore.rules(db)
        let last = try await db.query("SELECT coalesce(max(seq), 0) FROM cdp.events").scalar(Int64.self)
        report.lastSeq = last
        report.events = try await db.query("SELECT count(*) FROM cdp.events WHERE seq <= \(last)").scalar(Int.self)
        // The graph in memory packs sequence numbers in 32 bits.
        report.inMemory = report.events * Self.bytesPerEvent <= memoryBudget && last < Int64(UInt32.max)
        if report.inMemory {
            try await rebuildInMemory(db, rules: rules, document: document, last: last, report: &report, log: log)
        } else {
            try await rebuildInDatabase(db, rules: rules, document: document, last: last, report: &report, log: log)
        }
        _ = try await db.advisoryUnlock(Self.rebuildLock)
        report.phases = log.phases
        return report
    }

    /// The rebuild with the graph held in this process (``RebuildGraph``): the fast way, for data within the
    /// memory budget.
    private func rebuildInMemory(
        _ db: PostgresConnection, rules: IdentityRules, document: PostgresJSON, last: Int64, report: inout Report,
        log: PhaseLog
    ) async throws {
        func phase(_ name: String, rows: Int? = nil) { log.phase(name, rows: rows) }
        // 1. Identifiers of every event up to `last`, extracted by `extractionConnections` sessions side by side
        //    (the per-event function runs in one backend per statement; PostgreSQL does not parallelize it) and
        //    streamed to this process with COPY. Both forms of each alias call's previousId come too (via_alias);
        //    the graph keeps one.
        let rows = ExtractedRows(expectedRows: report.events * 2 + 1024)
        try await onExtractionSessions(through: last) { worker, from, through in
            try await worker.execute("SET jit = off")
            // COPY takes no parameters: the rules document and the range are inlined as literals. The userId and
            // anonymousId columns go through cdp.column_identifiers (plain text, a third of the generic path's cost);
            // the generic path runs only for events that can name more (traits or context.traits with an identifier
            // key, context.externalIds, alias calls).
            let extraction: PostgresQuery = """
                COPY (SELECT e.seq, (extract(epoch FROM e.timestamp) * 1000000)::int8, c.kind, c.value, false
                      FROM cdp.events AS e
                      CROSS JOIN LATERAL cdp.column_identifiers(e.user_id, e.anonymous_id, \(document)) AS c
                      WHERE e.seq > \(from) AND e.seq <= \(through)
                      UNION ALL
                      SELECT e.seq, (extract(epoch FROM e.timestamp) * 1000000)::int8, c.kind, c.value, c.via_alias
                      FROM cdp.events AS e
                      CROSS JOIN (SELECT ARRAY['email', 'phone']
                                         || array(SELECT jsonb_object_keys(coalesce(\(document)::jsonb -> 'traitKeys', '{}')))
                                  AS names) AS keys
                      CROSS JOIN LATERAL cdp.event_identifiers(e.type, NULL, NULL, e.previous_id, e.traits, e.context,
                                                               \(document)) AS c
                      WHERE e.seq > \(from) AND e.seq <= \(through) AND c.problem IS NULL
                        AND (e.type = 'alias' OR e.traits ?| keys.names OR coalesce((e.context -> 'traits') ?| keys.names, false)
                             OR e.context ? 'externalIds')) TO STDOUT
                """
            try await worker.copyOut(try extraction.inlined()) { chunk in
                var parsed: [(seq: Int64, micros: Int64, kind: ArraySlice<UInt8>, value: ArraySlice<UInt8>, alias: Bool)] = []
                var index = 0
                while index < chunk.count {
                    let seq = Self.parseDecimal(chunk, &index)
                    let micros = Self.parseSignedDecimal(chunk, &index)
                    let kind = Self.copyFieldBytes(chunk, &index)
                    let value = Self.copyFieldBytes(chunk, &index)
                    let alias = Self.parseBool(chunk, &index)
                    parsed.append((seq, micros, kind, value, alias))
                }
                rows.add(parsed)
            }
        }
        phase("extract identifiers", rows: rows.count)

        // 2–4. Nodes, edges, hubs, components, founders, replays and event stamps, in memory (RebuildGraph).
        let graph = RebuildGraph(rows: rows, rules: rules, replayBatch: replayBatch)
        report.identifiers = graph.identifiers
        report.edges = graph.edgeCount
        report.hubs = graph.hubs
        report.components = graph.components
        report.conflictComponents = graph.conflictComponents
        report.profiles = graph.profileCount
        phase("graph in memory", rows: graph.identifiers)
        // What the extraction and the replays freed goes back to the system before the swap adds its own: glibc keeps
        // freed small blocks in the process otherwise (190 MB of 1.3 GB at 10M events).
        #if canImport(Glibc)
            _ = mallocTrim(0)
        #endif

        // 5. Swap in, in one transaction holding the real-time stage's lock: the stored graph is read (under the
        //    lock, so nothing changes it meanwhile) and compared with the computed one as it streams in, and only the
        //    differences are written. An identifier keeps its stored node id; a new one draws from the table's
        //    sequence.
        try await db.withTransaction { tx in
            try await tx.advisoryTransactionLock(IdentityStore.processorLock)
            // A second session, opened once the lock is held, reads half the event stamps and then the profiles
            // alongside.
            var changes = try await PostgresConnection.withConnection(configuration: configuration, logger: logger) {
                try await Changes.compare(tx, reader: $0, through: last, graph: graph)
            }
            phase("swap in: stored graph read and compared", rows: changes.rowsRead)
            report.nodesChanged = changes.nodesUpdated.count + changes.nodesInserted.count
            report.eventsRestamped = changes.restampCount
            let written = changes.rowsChanged
            try await changes.write(tx, graph: graph, through: last)
            try await Checkpoint.identity.set(tx, seq: last)
            // Stages after identity rebuild from events rather than replay this rebuild's changes one by one.
            try await Checkpoint.identity.advanceGeneration(tx)
            phase("swap in: changes written", rows: written)
        }
        phase("swap in: committed")
    }

    /// The nodes of a graph and their components, read with two `COPY … TO STDOUT` statements: `nodes` yields
    /// `id<TAB>kind` rows in ascending id order (the nodes that may merge: hubs left out), `edges` yields `a<TAB>b`
    /// rows (an edge touching a node not listed joins nothing). Used by the rebuild, and by tests that compare it
    /// with the recursive definition.
    package static func components(
        _ db: PostgresConnection, nodes: PostgresQuery, edges: PostgresQuery, capacity: Int = 0
    ) async throws -> (finder: IdentityComponents, kindNames: [String]) {
        var ids: [Int64] = []
        var kinds: [UInt16] = []
        ids.reserveCapacity(capacity)
        kinds.reserveCapacity(capacity)
        var kindNames: [String] = []
        var kindIndex: [[UInt8]: UInt16] = [:]
        try await db.copyOut(nodes) { chunk in
            var index = 0
            while index < chunk.count {
                let id = Self.parseDecimal(chunk, &index)
                let start = index
                while index < chunk.count && chunk[index] != 0x0A { index += 1 }
                let name = Array(chunk[start..<index])
                index += 1
                let kind: UInt16
                if let known = kindIndex[name] {
                    kind = known
                } else {
                    guard kindNames.count < Int(UInt16.max) else { throw IdentityError("too many identifier kinds") }
                    kind = UInt16(kindNames.count)
                    kindIndex[name] = kind
                    kindNames.append(String(decoding: name, as: UTF8.self))
                }
                ids.append(id)
                kinds.append(kind)
            }
        }
        var finder = IdentityComponents(nodes: ids, kinds: kinds)
        ids = []
        kinds = []
        try await db.copyOut(edges) { chunk in
            var index = 0
            while index < chunk.count {
                let a = Self.parseDecimal(chunk, &index)
                let b = Self.parseDecimal(chunk, &index)
                finder.union(a, b)
            }
        }
        return (finder, kindNames)
    }

    /// Reads a non-negative decimal at `index` and steps past it and the one separator byte after it.
    static func parseDecimal(_ bytes: [UInt8], _ index: inout Int) -> Int64 {
        var value: Int64 = 0
        while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 {
            value = value &* 10 &+ Int64(bytes[index] &- 0x30)
            index += 1
        }
        index += 1
        return value
    }

    /// Reads a boolean field of COPY's text format (`t` or `f`) at `index` and steps past it and its separator.
    static func parseBool(_ bytes: [UInt8], _ index: inout Int) -> Bool {
        defer { index += 2 }
        return bytes[index] == UInt8(ascii: "t")
    }

    /// Reads a decimal that may be negative at `index` and steps past it and the one separator byte after it.
    static func parseSignedDecimal(_ bytes: [UInt8], _ index: inout Int) -> Int64 {
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") {
            index += 1
            return -parseDecimal(bytes, &index)
        }
        return parseDecimal(bytes, &index)
    }

    /// Reads one field of COPY's text format at `index` (up to a tab or newline), undoing its backslash escapes, and
    /// steps past it and its separator.
    static func copyField(_ bytes: [UInt8], _ index: inout Int) -> String {
        String(decoding: copyFieldBytes(bytes, &index), as: UTF8.self)
    }

    /// Reads a UUID field of COPY's text format (36 characters, or `\N` for NULL) at `index` without making a
    /// `String`, and steps past it and its separator.
    static func parseUUID(_ bytes: [UInt8], _ index: inout Int) -> UUID? {
        func nibble(_ byte: UInt8) -> UInt8? {
            switch byte {
            case 0x30...0x39: byte - 0x30
            case 0x61...0x66: byte - 0x61 + 10
            case 0x41...0x46: byte - 0x41 + 10
            default: nil
            }
        }
        guard index + 36 < bytes.count, bytes[index + 36] == 0x09 || bytes[index + 36] == 0x0A else {
            return UUID(uuidString: copyField(bytes, &index))  // NULL (\N), or not in the canonical form
        }
        var raw: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var position = index
        let parsed = withUnsafeMutableBytes(of: &raw) { out -> Bool in
            for byte in 0..<16 {
                if byte == 4 || byte == 6 || byte == 8 || byte == 10 {
                    guard bytes[position] == 0x2D else { return false }
                    position += 1
                }
                guard let high = nibble(bytes[position]), let low = nibble(bytes[position + 1]) else { return false }
                out[byte] = high << 4 | low
                position += 2
            }
            return true
        }
        guard parsed else { return UUID(uuidString: copyField(bytes, &index)) }
        index = position + 1
        return UUID(uuid: raw)
    }

    /// ``copyField(_:_:)`` as bytes.
    static func copyFieldBytes(_ bytes: [UInt8], _ index: inout Int) -> ArraySlice<UInt8> {
        let start = index
        var escaped = false
        while index < bytes.count, bytes[index] != 0x09, bytes[index] != 0x0A {
            if bytes[index] == 0x5C {
                escaped = true
                index += 1
            }
            index += 1
        }
        let end = min(index, bytes.count)
        index += 1
        guard escaped else { return bytes[start..<end] }
        var out: [UInt8] = []
        out.reserveCapacity(end - start)
        var position = start
        while position < end {
            let byte = bytes[position]
            position += 1
            guard byte == 0x5C, position < end else {
                out.append(byte)
                continue
            }
            let next = bytes[position]
            position += 1
            switch next {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "v"): out.append(0x0B)
            default: out.append(next)
            }
        }
        return out[...]
    }

    /// Writes one COPY row per element of `rows` (`row` appends the row's fields, without the newline).
    static func copyRows(
        _ db: PostgresConnection, _ statement: PostgresQuery, _ rows: Range<Int>, _ row: (Int, inout [UInt8]) -> Void
    ) async throws {
        try await db.copyIn(statement) { writer in
            var line: [UInt8] = []
            line.reserveCapacity(64 * 1024)
            for position in rows {
                row(position, &line)
                line.append(0x0A)
                if line.count >= 60 * 1024 {
                    try await writer.write(line)
                    line.removeAll(keepingCapacity: true)
                }
            }
            try await writer.write(line)
        }
    }

    /// Appends `value` (non-negative) in decimal.
    static func appendDecimal(_ value: Int64, to bytes: inout [UInt8]) {
        if value < 10 {
            bytes.append(0x30 + UInt8(value))
            return
        }
        appendDecimal(value / 10, to: &bytes)
        bytes.append(0x30 + UInt8(value % 10))
    }

    /// An ARRAY[...] literal of kind names (validated kinds, quoted through SQLQuoting).
    static func arrayLiteral(_ values: [String]) throws -> String {
        "ARRAY[" + (try values.map { try SQLQuoting.literal($0) }).joined(separator: ",") + "]"
    }
}
