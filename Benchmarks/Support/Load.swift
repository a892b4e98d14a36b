// Shared by the benchmarks that load the whole pipeline (realtime, pipeline): paced background traffic, the
// pipeline's progress (checkpoints, drains), statistics and the machine's description.
import AsyncHTTPClient
import Foundation
import Logging
import Postgres
import TributaryDestinations
import TributaryModel
import TributarySegments
import TributarySyncs

// MARK: - Background load

/// Background traffic: `/v1/batch` requests of 100 events each (`batch` makes request `index` of phase `tag`), paced.
public struct Load: Sendable {
    public let http: HTTPClient
    public let url: String
    public let authorization: String
    public let batch: @Sendable (_ tag: String, _ index: Int) -> String

    public init(http: HTTPClient, url: String, authorization: String, batch: @escaping @Sendable (String, Int) -> String) {
        (self.http, self.url, self.authorization, self.batch) = (http, url, authorization, batch)
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var next = 0, done = 0, failures = 0
        private var firstError: String?
        func take() -> Int {
            lock.withLock {
                next += 1; return next - 1
            }
        }
        func finished(_ error: String?) {
            lock.withLock {
                if let error { failures += 1; firstError = firstError ?? error } else { done += 1 }
            }
        }
        var result: (done: Int, failures: Int, error: String?) { lock.withLock { (done, failures, firstError) } }
    }

    /// Sends from `senders` clients, paced to `rate` events/s (nil: as fast as they can), until `limit` requests were
    /// sent or the next one would be due after `end`. Returns the events answered 200.
    public func run(
        tag: String, rate: Double?, senders: Int, requests limit: Int?, until end: ContinuousClock.Instant?
    ) async throws -> (events: Int, failures: Int) {
        let counter = Counter()
        let start = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<senders {
                group.addTask {
                    while !Task.isCancelled {
                        let index = counter.take()
                        if let limit, index >= limit { return }
                        if let rate {
                            let due = start + .nanoseconds(Int64(Double(index) * 100 / rate * 1e9))
                            if let end, due >= end { return }
                            if due > .now { try? await Task.sleep(until: due) }
                        }
                        // Behind the pace (the API answers slower than the rate): nothing starts after the end.
                        if let end, ContinuousClock.now >= end { return }
                        counter.finished(await post(http, url, authorization, batch(tag, index)))
                    }
                }
            }
        }
        let result = counter.result
        if let error = result.error { say("background: \(result.failures) requests failed; first: \(error)") }
        return (result.done * 100, result.failures)
    }
}

/// Runs `body` with a ``Load`` from `senders` connections and a ``Prober`` against the collection API on `port`, then
/// shuts their HTTP clients down. Probes have a client of their own: they never queue behind the load for a connection.
public func withLoad<T>(
    port: Int, writeKey: String, senders: Int, probes: Probes, batch: @escaping @Sendable (String, Int) -> String,
    _ body: (Load, Prober) async throws -> T
) async throws -> T {
    let url = "http://127.0.0.1:\(port)/v1/batch"
    let authorization = "Basic " + Data("\(writeKey):".utf8).base64EncodedString()
    var configuration = HTTPClient.Configuration()
    configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = senders
    let loadHTTP = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    let probeHTTP = HTTPClient(eventLoopGroupProvider: .singleton)
    let result: T
    do {
        result = try await body(
            Load(http: loadHTTP, url: url, authorization: authorization, batch: batch),
            Prober(http: probeHTTP, url: url, authorization: authorization, probes: probes))
    } catch {
        try? await loadHTTP.shutdown()
        try? await probeHTTP.shutdown()
        throw error
    }
    try await loadHTTP.shutdown()
    try await probeHTTP.shutdown()
    return result
}

// MARK: - The pipeline's progress

/// The pipeline's progress in the database, and the real-time segment `carts` with its sync `carts_hook` that probes
/// travel through.
public struct PipelineProgress: Sendable {
    public let client: PostgresClient

    public init(client: PostgresClient) { self.client = client }

    /// Applies the real-time segment `carts` (added to cart in the last 30 days, has an email; field email) and the
    /// real-time audience sync `carts_hook` of it to the webhook `base`/hook (a ``ProbeReceiver``).
    public func applyCartsSync(webhook base: String, logger: Logger) async throws {
        try await SegmentStore(client: client, logger: logger).apply(
            SegmentDefinitions([
                Segment("carts", realtime: true, fields: [.trait("email")]) {
                    Event("Added to Cart", within: .days(30)).occurred
                    Trait<String>("email").exists
                }
            ]))
        let store = SyncStore(client: client, logger: logger, registry: .standard())
        try await store.apply(
            try await store.load(
                Data(
                    """
                    {"syncs": [{"name": "carts_hook", "source": {"segment": "carts"}, "primaryKey": ["profile_id"], "mode": "audience",
                      "realtime": true, "destination": {"type": "webhook", "url": "\(base)/hook", "secret": "s"}}]}
                    """.utf8)))
        say("segment carts (real-time) and sync carts_hook (real-time audience, webhook \(base)/hook) applied")
    }

    public func lastSeq() async throws -> Int64 {
        try await client.query("SELECT coalesce(max(seq), 0) FROM cdp.events").scalar(Int64.self)
    }

    /// The checkpoint of `stage` (`identity`, `profiles`) in `cdp.stage_checkpoints`.
    public func checkpoint(_ stage: String) async throws -> Int64 {
        try await client.query("SELECT coalesce((SELECT seq FROM cdp.stage_checkpoints WHERE stage = \(stage)), 0)").scalar(
            Int64.self)
    }

    public func profilesCheckpoint() async throws -> Int64 { try await checkpoint("profiles") }

    /// Events stored but not yet through the profile stage.
    public func backlog() async throws -> Int64 { try await lastSeq() - profilesCheckpoint() }

    /// The real-time runs since `start`: how many, their duration, changes delivered.
    public func runs(since start: Date) async throws -> String {
        let (runs, p50, max, delivered) = try await client.query(
            """
            SELECT count(*), coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms), 0)::bigint,
                   coalesce(max(duration_ms), 0)::bigint, coalesce(sum(delivered), 0)::bigint
            FROM cdp.sync_runs WHERE trigger = 'realtime' AND started_at >= \(start)
            """
        ).first!.decode((Int, Int, Int, Int).self)
        return "\(runs) real-time runs (duration p50 \(p50) ms, max \(max) ms), \(delivered) changes delivered"
    }

    public func syncFollowed() async throws -> Bool {
        try await client.query("SELECT count(*) FROM cdp.sync_realtime WHERE sync = 'carts_hook'").scalar(Int.self) > 0
    }

    public func waitForProfiles(through seq: Int64, timeout: Duration) async throws -> Bool {
        try await wait("profiles", through: seq, timeout: timeout)
    }

    /// Waits (up to `timeout`) until the checkpoint of `stage` is at `seq`; false if it is not by then.
    public func wait(_ stage: String, through seq: Int64, timeout: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while try await checkpoint(stage) < seq {
            if ContinuousClock.now > deadline { return false }
            try await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// The last sequence number drawn for an event, and the identity and profile stages' checkpoints, at one moment.
    public struct Sample: Sendable {
        public var last: Int64, identity: Int64, profiles: Int64
        public func checkpoint(_ stage: String) -> Int64 { stage == "identity" ? identity : profiles }
    }

    /// A cheap ``Sample`` (the sequence's last value, not max(seq)).
    public func sample() async throws -> Sample {
        let (last, identity, profiles) = try await client.query(
            """
            SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM cdp.events_seq),
                   coalesce((SELECT seq FROM cdp.stage_checkpoints WHERE stage = 'identity'), 0),
                   coalesce((SELECT seq FROM cdp.stage_checkpoints WHERE stage = 'profiles'), 0)
            """
        ).first!.decode((Int64, Int64, Int64).self)
        return Sample(last: last, identity: identity, profiles: profiles)
    }

    /// Events stored with a seq in (`after`, `through`].
    public func events(after: Int64, through: Int64) async throws -> Int {
        try await client.query("SELECT count(*) FROM cdp.events WHERE seq > \(after) AND seq <= \(through)").scalar(Int.self)
    }

    /// Waits until the sync's checkpoint is at the last segment change.
    public func waitForActivation(timeout: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            let behind = try await client.query(
                """
                SELECT coalesce((SELECT max(change_id) FROM cdp.segment_changes WHERE segment = 'carts'), 0)
                     > coalesce((SELECT change_id FROM cdp.sync_realtime WHERE sync = 'carts_hook'), 0)
                """
            ).scalar(Bool.self)
            if !behind { return true }
            if ContinuousClock.now > deadline { return false }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

public enum Stats {
    public static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// The `p` quantile of sorted seconds, in ms with one decimal ("-" when empty).
    public static func ms(_ sorted: [Double], _ p: Double) -> String {
        guard !sorted.isEmpty else { return "-" }
        return String(format: "%.1f", sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000)
    }
}

public enum Machine {
    /// `uname -a`, nproc, the CPU model and the memory.
    public static func describe() -> String {
        let uname = Process()
        uname.executableURL = URL(fileURLWithPath: "/bin/uname")
        uname.arguments = ["-a"]
        let pipe = Pipe()
        uname.standardOutput = pipe
        try? uname.run()
        uname.waitUntilExit()
        let kernel = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let cpu = field("/proc/cpuinfo", "model name") ?? "unknown CPU"
        let memory =
            field("/proc/meminfo", "MemTotal").flatMap { Double($0.split(separator: " ").first ?? "") }
            .map { String(format: "%.0f GiB", $0 / 1_048_576) } ?? "memory unknown"
        return
            "\(ProcessInfo.processInfo.activeProcessorCount) cores (nproc), \(cpu), \(memory); \(kernel); load average \(loadAverage())"
    }

    public static func field(_ file: String, _ key: String) -> String? {
        let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return nil }
        return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) }
    }

    public static func loadAverage() -> String {
        ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").prefix(3).joined(
            separator: " ")
    }
}
