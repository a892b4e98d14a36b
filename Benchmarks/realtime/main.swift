// tributary-realtime-bench: real-time activation latency, from the HTTP 200 of an event to its webhook receipt.
//
//   swift build -c release --product tributary-realtime-bench && .build/release/tributary-realtime-bench
//
// On a fresh database `tributary_realtime_bench` (the bench server: DATABASE_URL/PG*, or the embedded one):
//   - a source, the real-time segment "carts" (added to cart in the last 30 days, has an email; field email) and a
//     real-time audience sync of it to a webhook: a Hummingbird receiver in this process that notes, by ContinuousClock
//     and wall clock, when each change arrives (by its `fields.email`) and the run that sent it;
//   - optionally (--seed-people) the SyntheticPeople data set, stored, resolved and profiled, so tables are not tiny;
//   - in this process, as `tributary serve` and `tributary syncs worker` run them: the collection API (port 0) with the
//     identity and profile stages (8 connections), and the real-time activation loop (4 connections);
//   - background load: --senders concurrent clients posting /v1/batch requests of 100 ordinary events (Product Viewed
//     tracks and page calls of --users known users; nobody qualifies for the segment), paced to a rate;
//   - probes, every --probe-interval ms: one /v1/batch with an identify (userId probe-N, email probe-N@bench.test) and
//     an "Added to Cart" track; latency = its webhook receipt − its HTTP 200 (both ContinuousClock).
//
// Phases (--phases):
//   peak      the end-to-end peak: --peak-events background events at full speed; the rate is those events over the
//             time from the first request to the profile stage's checkpoint reaching the last one's seq.
//   half      latency at half that peak (or at each of --rate's rates, comma-separated; 0 is half the peak): --warmup s
//             of load, then --seconds s of counted probes.
//   overload  latency at --overload-rate (default half the HTTP API's peak, 16,500 events/s) for --overload-seconds s,
//             per --window s window of probe sending time, then the drain (probes wait for the backlog).
// Each phase ends when the pipeline has drained (profile checkpoint at the last seq, the sync's checkpoint at the last
// segment change). For each received probe, the time is split with the database's timestamps (wall clock, same host):
// HTTP 200 → identity batch start (identity_profiles.created_at: the probe user's profile is new) → profile batch
// start (segment_changes.changed_at) → activation run start (sync_runs.started_at of the run that sent it) → receipt.
// --log-min-duration N has the server log this database's statements slower than N ms (diagnosis of the stages).
import ArgumentParser
import AsyncHTTPClient
import BenchmarkSupport
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Postgres
import TributaryCore
import TributaryDestinations
import TributaryServer

@main
struct RealtimeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-realtime-bench")

    @Option(help: "Comma-separated phases, in order: peak, half, overload.") var phases = "peak,half,overload"
    @Option(help: "People of the SyntheticPeople data set stored and resolved first (0: none).") var seedPeople = 50_000
    @Option(help: "Background events sent at full speed to measure the end-to-end peak.") var peakEvents = 200_000
    @Option(help: "Background rates (events/s) of the half phase, comma-separated, each measured in turn; 0: half the end-to-end peak.")
    var rate = "0"
    @Option(help: "Background rate (events/s) of the overload phase.") var overloadRate = 16_500.0
    @Option(help: "Seconds of load before probes count (half phase).") var warmup = 10
    @Option(name: .customLong("seconds"), help: "Seconds of counted probes (half phase).") var countedSeconds = 60
    @Option(help: "Seconds of load (overload phase).") var overloadSeconds = 60
    @Option(help: "Seconds per window of the overload report.") var window = 10
    @Option(help: "Concurrent background HTTP clients.") var senders = 16
    @Option(help: "Milliseconds between probes.") var probeInterval = 100
    @Option(help: "Distinct users of the background traffic (the seed's users first).") var users = 50_000
    @Option(help: "Most seconds to wait for the pipeline to drain after a phase.") var drainTimeout = 900
    @Option(help: "Embedded data directory used when DATABASE_URL/PG* are unset.") var dataDir = ".tributary/bench-pgdata"
    @Option(help: "Diagnosis: the server logs this database's statements slower than this many ms (-1: off).")
    var logMinDuration = -1

    static let database = "tributary_realtime_bench"

    func validate() throws {
        let known: Set = ["peak", "half", "overload"]
        guard !phaseList.isEmpty, phaseList.allSatisfy(known.contains) else { throw ValidationError("--phases: peak, half, overload") }
        guard senders > 0, probeInterval > 0, window > 0, users > 0, peakEvents >= 100 else {
            throw ValidationError("--senders, --probe-interval, --window, --users: positive; --peak-events at least 100")
        }
        guard !rates.isEmpty, rates.allSatisfy({ $0 >= 0 }) else { throw ValidationError("--rate: numbers, comma-separated") }
        if phaseList.contains("half"), !phaseList.contains("peak"), rates.contains(0) { throw ValidationError("half without peak needs --rate") }
    }

    var phaseList: [String] { phases.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
    var rates: [Double] { rate.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) } }

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let started = ContinuousClock.now
        let server = try await DatabaseTarget.resolve(dataDirectory: dataDir, logger: logger).configuration
        let files = try ProjectFiles.locate()
        let admin = try await PostgresConnection.connect(configuration: server.with(database: "postgres"), logger: logger)
        let settings = try await admin.query("""
            SELECT current_setting('server_version'), current_setting('shared_buffers'), current_setting('synchronous_commit')
            """).first!.decode((String, String, String).self)
        await admin.close()
        say("date: \(Date().formatted(Date.ISO8601FormatStyle()))")
        say("machine: \(Machine.describe())")
        say("server: PostgreSQL \(settings.0) (shared_buffers \(settings.1), synchronous_commit \(settings.2))")

        let configuration = try await freshDatabase(Self.database, on: server, files: files, logger: logger)
        if logMinDuration >= 0 {
            let connection = try await PostgresConnection.connect(configuration: configuration, logger: logger)
            try await connection.execute(PostgresQuery(unsafeSQL: "ALTER DATABASE \(Self.database) SET log_min_duration_statement = \(logMinDuration)"))
            await connection.close()
            say("diagnosis: the server logs statements of \(Self.database) over \(logMinDuration) ms")
        }
        // As `tributary serve` and `tributary syncs worker` size their pools.
        let serveClient = PostgresClient(configuration: configuration, options: .init(maxConnections: 8), logger: logger)
        let workerClient = PostgresClient(configuration: configuration, options: .init(maxConnections: 4), logger: logger)
        let (_, writeKey) = try await SourceStore(client: serveClient).create(name: "bench")

        let probes = Probes()
        let receiver = ProbeReceiver(probes: probes)
        try await receiver.serve { base in
            try await SegmentStore(client: serveClient, logger: logger).apply(SegmentDefinitions([
                Segment("carts", realtime: true, fields: [.trait("email")]) {
                    Event("Added to Cart", within: .days(30)).occurred
                    Trait<String>("email").exists
                },
            ]))
            let store = SyncStore(client: serveClient, logger: logger, registry: .standard())
            try await store.apply(try await store.load(Data("""
                {"syncs": [{"name": "carts_hook", "source": {"segment": "carts"}, "primaryKey": ["profile_id"], "mode": "audience",
                  "realtime": true, "destination": {"type": "webhook", "url": "\(base)/hook", "secret": "s"}}]}
                """.utf8)))
            say("segment carts (real-time) and sync carts_hook (real-time audience, webhook \(base)/hook) applied")
            let pool = try await seed(serveClient, logger: logger)
            try await measure(serveClient: serveClient, workerClient: workerClient, writeKey: writeKey, users: pool, probes: probes, logger: logger)
        }
        say("receiver: \(receiver.counts())")
        await workerClient.shutdown()
        await serveClient.shutdown()
        say("total: \(seconds(since: started)) s; load average \(Machine.loadAverage())")
    }

    /// Stores and resolves the seed data set; returns the background traffic's user ids.
    func seed(_ client: PostgresClient, logger: Logger) async throws -> [String] {
        var pool: [String] = []
        if seedPeople > 0 {
            let clock = ContinuousClock.now
            let data = SyntheticPeople.generate(SyntheticPeople.Options(people: seedPeople, seed: 42))
            try await ingest(data.events, into: client, writeSize: 2000, logger: logger)
            let identity = try await IdentityStage(client: client, logger: logger).catchUp()
            let profiles = try await ProfileStage(client: client, logger: logger).catchUp()
            try await client.execute("VACUUM ANALYZE")
            var seen = Set<String>()
            for event in data.events {
                guard let user = event.userID, pool.count < users, seen.insert(user).inserted else { continue }
                pool.append(user)
            }
            say("seed: \(seedPeople) people, \(data.events.count) events stored, resolved (\(identity.profilesCreated) profiles) "
                + "and profiled (\(profiles.profilesUpdated)) in \(seconds(since: clock)) s")
        }
        pool += (0..<max(0, users - pool.count)).map { "bench-user-\($0)" }
        return pool
    }

    // MARK: - The pipeline and the phases

    func measure(
        serveClient: PostgresClient, workerClient: PostgresClient, writeKey: String, users: [String], probes: Probes, logger: Logger
    ) async throws {
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        // The server's own logger is quiet: its shutdown logs cancellation errors.
        var serverLogger = logger
        serverLogger.logLevel = .critical
        let app = buildApplication(
            configuration: ServerConfiguration(port: 0), client: serveClient, logger: serverLogger, onListening: { portSink.yield($0) })
        let runner = SyncRunner(client: workerClient, logger: logger, registry: .standard())
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            group.addTask { try await IdentityStage(client: serveClient, logger: logger).run() }
            group.addTask { try await ProfileStage(client: serveClient, logger: logger).run() }
            group.addTask { await RealtimeActivation(client: workerClient, logger: logger, runner: runner).run() }
            defer { group.cancelAll() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw CancellationError() }
            let pipeline = Pipeline(client: serveClient)
            // The activation's first sight of the sync (a full run) before anything is measured.
            for _ in 0..<600 where try await !pipeline.syncFollowed() { try await Task.sleep(for: .milliseconds(100)) }
            say("pipeline: collection API on 127.0.0.1:\(port), identity and profile stages, real-time activation (in this process)")

            let url = "http://127.0.0.1:\(port)/v1/batch"
            let authorization = "Basic " + Data("\(writeKey):".utf8).base64EncodedString()
            var loadConfiguration = HTTPClient.Configuration()
            loadConfiguration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = senders
            let loadHTTP = HTTPClient(eventLoopGroupProvider: .singleton, configuration: loadConfiguration)
            // Probes have a client of their own: they never queue behind the background requests for a connection.
            let probeHTTP = HTTPClient(eventLoopGroupProvider: .singleton)
            let load = Load(http: loadHTTP, url: url, authorization: authorization, users: users)
            let prober = Prober(http: probeHTTP, url: url, authorization: authorization, probes: probes)
            do {
                var halfRate = 0.0
                for phase in phaseList {
                    switch phase {
                    case "peak":
                        let peak = try await measurePeak(load: load, pipeline: pipeline)
                        if halfRate <= 0 { halfRate = peak / 2 }
                    case "half":
                        for rate in rates {
                            try await measureLatency(
                                rate > 0 ? "steady \(Int(rate))" : "half", rate: rate > 0 ? rate : halfRate, warmup: warmup,
                                counted: countedSeconds, windows: false, load: load, prober: prober, pipeline: pipeline, probes: probes,
                                client: serveClient)
                        }
                    default:
                        try await measureLatency(
                            "overload", rate: overloadRate, warmup: 0, counted: overloadSeconds, windows: true, load: load,
                            prober: prober, pipeline: pipeline, probes: probes, client: serveClient)
                    }
                }
            } catch {
                try? await loadHTTP.shutdown()
                try? await probeHTTP.shutdown()
                throw error
            }
            try await loadHTTP.shutdown()
            try await probeHTTP.shutdown()
        }
    }

    /// Sends --peak-events at full speed; returns the end-to-end rate (events/s through the profile stage).
    func measurePeak(load: Load, pipeline: Pipeline) async throws -> Double {
        say("\n== peak: \(peakEvents) background events at full speed from \(senders) clients ==")
        let start = ContinuousClock.now
        let sent = try await load.run(tag: "peak", rate: nil, senders: senders, requests: peakEvents / 100, until: nil)
        let httpSeconds = elapsed(since: start)
        let last = try await pipeline.lastSeq()
        let drained = try await pipeline.waitForProfiles(through: last, timeout: .seconds(drainTimeout))
        let total = elapsed(since: start)
        guard drained else { throw CleanExit.message("the profile stage did not reach seq \(last) within \(drainTimeout) s") }
        let peak = Double(sent.events) / total
        say(String(format: "HTTP: %d events in %.1f s = %.0f events/s accepted; profile stage at the last seq after %.1f s",
                   sent.events, httpSeconds, Double(sent.events) / httpSeconds, total))
        say(String(format: "end-to-end peak: %.0f events/s (HTTP 200 through identity and profile stages); half: %.0f events/s",
                   peak, peak / 2))
        _ = try await pipeline.waitForActivation(timeout: .seconds(drainTimeout))
        return peak
    }

    /// Background load at `rate` with a probe every --probe-interval for `warmup` + `counted` seconds, then the drain.
    func measureLatency(
        _ name: String, rate: Double, warmup: Int, counted: Int, windows: Bool, load: Load, prober: Prober, pipeline: Pipeline,
        probes: Probes, client: PostgresClient
    ) async throws {
        say("\n== \(name): background \(Int(rate)) events/s from \(senders) clients, probes every \(probeInterval) ms, "
            + "\(warmup) s warm-up + \(counted) s ==")
        let start = ContinuousClock.now, startDate = Date()
        let countFrom = start + .seconds(warmup)
        let end = countFrom + .seconds(counted)
        async let background = load.run(tag: name, rate: rate, senders: senders, requests: nil, until: end)
        try await prober.run(phase: name, every: .milliseconds(probeInterval), from: countFrom, until: end)
        let sent = try await background
        let loadSeconds = elapsed(since: start)
        let backlog = try await pipeline.backlog()
        say(String(format: "background: %d events in %.1f s = %.0f events/s achieved (target %.0f); backlog at the end: %d events",
                   sent.events, loadSeconds, Double(sent.events) / loadSeconds, rate, backlog))
        let drainStart = ContinuousClock.now
        let last = try await pipeline.lastSeq()
        let profiles = try await pipeline.waitForProfiles(through: last, timeout: .seconds(drainTimeout))
        let activation = try await pipeline.waitForActivation(timeout: .seconds(drainTimeout))
        // The last webhook may still be in flight after the checkpoint moved.
        try await Task.sleep(for: .milliseconds(500))
        say("drain: \(profiles && activation ? "done" : "NOT done") in \(seconds(since: drainStart)) s; "
            + (try await pipeline.runs(since: startDate)) + "; load average \(Machine.loadAverage())")

        let phaseProbes = probes.all(phase: name)
        let splits = try await Splits.load(client, probes: phaseProbes)
        let measured = phaseProbes.filter(\.counted)
        report("\(name), all counted probes", measured, splits)
        if windows {
            for offset in stride(from: 0, to: counted, by: window) {
                let from = countFrom + .seconds(offset), to = countFrom + .seconds(min(counted, offset + window))
                report(String(format: "  sent at %3d–%3d s", offset, min(counted, offset + window)),
                       measured.filter { $0.sent >= from && $0.sent < to }, nil)
            }
        }
    }

    func report(_ label: String, _ list: [Probe], _ splits: Splits?) {
        let latencies = list.compactMap(\.latency).sorted()
        let failed = list.filter { $0.error != nil }.count
        let missing = list.filter { $0.error == nil && $0.latency == nil }.count
        let http = list.compactMap(\.httpLatency).sorted()
        say(String(format: "%@: probes sent %d, received %d, HTTP errors %d, never delivered %d; latency ms p50 %@ p90 %@ p99 %@ max %@; HTTP 200 p50 %@ p99 %@",
                   label as NSString, list.count, latencies.count, failed, missing, Stats.ms(latencies, 0.5) as NSString,
                   Stats.ms(latencies, 0.9) as NSString, Stats.ms(latencies, 0.99) as NSString, Stats.ms(latencies, 1) as NSString,
                   Stats.ms(http, 0.5) as NSString, Stats.ms(http, 0.99) as NSString))
        if let splits { splits.report(list) }
    }
}

// MARK: - Probes and the receiver

struct Probe: Sendable {
    var number: Int
    var phase: String
    /// Sent after the warm-up.
    var counted: Bool
    var sent: ContinuousClock.Instant
    var ok: ContinuousClock.Instant?
    var okDate: Date?
    var arrived: ContinuousClock.Instant?
    var arrivedDate: Date?
    var runID: Int64?
    var error: String?

    var email: String { "probe-\(number)@bench.test" }
    /// Webhook receipt − HTTP 200, in seconds.
    var latency: Double? {
        guard let ok, let arrived else { return nil }
        return Stats.seconds(arrived - ok)
    }
    var httpLatency: Double? { ok.map { Stats.seconds($0 - sent) } }
}

/// Every probe sent, by number, and what became of it.
final class Probes: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [Probe] = []
    private var unexpected = 0

    func add(phase: String, counted: Bool) -> Int {
        lock.withLock {
            list.append(Probe(number: list.count, phase: phase, counted: counted, sent: .now))
            return list.count - 1
        }
    }

    func answered(_ number: Int, error: String?) {
        let now = ContinuousClock.now, date = Date()
        lock.withLock {
            if let error { list[number].error = error } else {
                list[number].ok = now
                list[number].okDate = date
            }
        }
    }

    /// A change received for `email`; only the first receipt of a probe counts.
    func arrived(email: String, runID: Int64?, at now: ContinuousClock.Instant, date: Date) {
        guard email.hasPrefix("probe-"), email.hasSuffix("@bench.test"),
              let number = Int(email.dropFirst(6).dropLast(11))
        else {
            lock.withLock { unexpected += 1 }
            return
        }
        lock.withLock {
            guard number < list.count, list[number].arrived == nil else { return }
            list[number].arrived = now
            list[number].arrivedDate = date
            list[number].runID = runID
        }
    }

    func all(phase: String) -> [Probe] { lock.withLock { list.filter { $0.phase == phase } } }
    var unexpectedCount: Int { lock.withLock { unexpected } }
}

/// The webhook: notes the receipt of every added profile's email.
final class ProbeReceiver: @unchecked Sendable {
    let probes: Probes
    private let lock = NSLock()
    private var requests = 0, adds = 0, others = 0, bad = 0

    init(probes: Probes) { self.probes = probes }

    func counts() -> String {
        lock.withLock { "\(requests) requests, \(adds) adds, \(others) other changes, \(bad) unreadable bodies, \(probes.unexpectedCount) adds of non-probes" }
    }

    func record(_ body: [UInt8]) -> Bool {
        let now = ContinuousClock.now, date = Date()
        guard let document = try? JSONParser.parse(body), case .array(let changes)? = document["changes"] else {
            lock.withLock { bad += 1 }
            return false
        }
        let runID: Int64? = if case .number(let text)? = document["run_id"] { Int64(text) } else { nil }
        var added = 0
        for change in changes {
            guard case .string("add")? = change["op"], case .string(let email)? = change["fields"]?["email"] else { continue }
            added += 1
            probes.arrived(email: email, runID: runID, at: now, date: date)
        }
        lock.withLock {
            requests += 1
            adds += added
            others += changes.count - added
        }
        return true
    }

    /// Runs the receiver on 127.0.0.1 (a free port) while `body` runs with its base URL.
    func serve(_ body: (String) async throws -> Void) async throws {
        let router = Router()
        router.post("hook") { [self] request, _ -> Response in
            let ok = record(Array(try await request.body.collect(upTo: 64 << 20).readableBytesView))
            return Response(status: ok ? .ok : .badRequest, body: ResponseBody(byteBuffer: ByteBuffer(string: "{}")))
        }
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "bench-webhook")
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { portSink.yield($0.localAddress?.port ?? 0) }, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            defer { group.cancelAll() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw CancellationError() }
            try await body("http://127.0.0.1:\(port)")
        }
    }
}

/// Sends a probe every interval, each in a task of its own (a slow answer never delays the next probe).
struct Prober: Sendable {
    let http: HTTPClient
    let url: String
    let authorization: String
    let probes: Probes

    func run(phase: String, every interval: Duration, from countFrom: ContinuousClock.Instant, until end: ContinuousClock.Instant) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var due = ContinuousClock.now
            while due < end {
                try await Task.sleep(until: due)
                let number = probes.add(phase: phase, counted: due >= countFrom)
                group.addTask { await send(number) }
                due += interval
            }
            try await group.waitForAll()
        }
    }

    func send(_ number: Int) async {
        let time = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        let user = "probe-\(number)"
        let body = #"{"batch":[{"type":"identify","userId":"\#(user)","messageId":"\#(user)-i","traits":{"email":"\#(user)@bench.test","name":"Probe \#(number)"},"timestamp":"\#(time)"},{"type":"track","userId":"\#(user)","messageId":"\#(user)-t","event":"Added to Cart","properties":{"product_id":"sku-\#(number % 1000)","price":19.99,"quantity":1},"timestamp":"\#(time)"}],"sentAt":"\#(time)"}"#
        probes.answered(number, error: await post(http, url, authorization, body))
    }
}

/// POSTs a body; nil when answered 200, else what went wrong.
func post(_ http: HTTPClient, _ url: String, _ authorization: String, _ body: String) async -> String? {
    var request = HTTPClientRequest(url: url)
    request.method = .POST
    request.headers.add(name: "Authorization", value: authorization)
    request.headers.add(name: "Content-Type", value: "application/json")
    request.body = .bytes(ByteBuffer(string: body))
    do {
        let response = try await http.execute(request, timeout: .seconds(60))
        let text = try await response.body.collect(upTo: 1 << 20)
        return response.status == .ok ? nil : "HTTP \(response.status.code): \(String(buffer: text).prefix(200))"
    } catch {
        return "\(error)"
    }
}

// MARK: - Background load

/// Ordinary traffic: 100 events a request, 4 "Product Viewed" tracks to 1 page call, of known users.
struct Load: Sendable {
    let http: HTTPClient
    let url: String
    let authorization: String
    let users: [String]

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var next = 0, done = 0, failures = 0
        private var firstError: String?
        func take() -> Int { lock.withLock { next += 1; return next - 1 } }
        func finished(_ error: String?) {
            lock.withLock {
                if let error { failures += 1; firstError = firstError ?? error } else { done += 1 }
            }
        }
        var result: (done: Int, failures: Int, error: String?) { lock.withLock { (done, failures, firstError) } }
    }

    /// Sends from `senders` clients, paced to `rate` events/s (nil: as fast as they can), until `limit` requests were
    /// sent or the next one would be due after `end`. Returns the events answered 200.
    func run(tag: String, rate: Double?, senders: Int, requests limit: Int?, until end: ContinuousClock.Instant?) async throws -> (events: Int, failures: Int) {
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
                        counter.finished(await post(http, url, authorization, body(tag: tag, index: index)))
                    }
                }
            }
        }
        let result = counter.result
        if let error = result.error { say("background: \(result.failures) requests failed; first: \(error)") }
        return (result.done * 100, result.failures)
    }

    func body(tag: String, index: Int) -> String {
        let time = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        var calls: [String] = []
        calls.reserveCapacity(100)
        for k in 0..<100 {
            let n = index &* 100 &+ k
            let user = users[(n &* 7919) % users.count]
            let id = "\(tag)-\(n)"
            if k % 5 == 0 {
                calls.append(#"{"type":"page","messageId":"\#(id)","userId":"\#(user)","name":"Shoes","properties":{"path":"/c/shoes","url":"https://shop.example.com/c/shoes","title":"Shoes","referrer":"https://www.google.com/"},"context":{"library":{"name":"analytics.js","version":"4.1.0"},"ip":"203.0.113.\#(n % 255)","locale":"en-US","userAgent":"Mozilla/5.0 (X11; Linux x86_64)"},"timestamp":"\#(time)"}"#)
            } else {
                calls.append(#"{"type":"track","messageId":"\#(id)","userId":"\#(user)","event":"Product Viewed","properties":{"product_id":"sku-\#(n % 1000)","category":"shoes","price":89.0,"currency":"USD"},"context":{"library":{"name":"analytics.js","version":"4.1.0"},"ip":"203.0.113.\#(n % 255)","locale":"en-US","page":{"path":"/p/sku-\#(n % 1000)","url":"https://shop.example.com/p/sku-\#(n % 1000)"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64)"},"timestamp":"\#(time)"}"#)
            }
        }
        return #"{"batch":[\#(calls.joined(separator: ","))],"sentAt":"\#(time)"}"#
    }
}

// MARK: - The pipeline's progress

struct Pipeline: Sendable {
    let client: PostgresClient

    func lastSeq() async throws -> Int64 { try await client.query("SELECT coalesce(max(seq), 0) FROM cdp.events").scalar(Int64.self) }

    func profilesCheckpoint() async throws -> Int64 {
        try await client.query("SELECT coalesce((SELECT seq FROM cdp.stage_checkpoints WHERE stage = 'profiles'), 0)").scalar(Int64.self)
    }

    /// Events stored but not yet through the profile stage.
    func backlog() async throws -> Int64 { try await lastSeq() - profilesCheckpoint() }

    /// The real-time runs since `start`: how many, their duration, changes delivered.
    func runs(since start: Date) async throws -> String {
        let (runs, p50, max, delivered) = try await client.query("""
            SELECT count(*), coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms), 0)::bigint,
                   coalesce(max(duration_ms), 0)::bigint, coalesce(sum(delivered), 0)::bigint
            FROM cdp.sync_runs WHERE trigger = 'realtime' AND started_at >= \(start)
            """).first!.decode((Int, Int, Int, Int).self)
        return "\(runs) real-time runs (duration p50 \(p50) ms, max \(max) ms), \(delivered) changes delivered"
    }

    func syncFollowed() async throws -> Bool {
        try await client.query("SELECT count(*) FROM cdp.sync_realtime WHERE sync = 'carts_hook'").scalar(Int.self) > 0
    }

    func waitForProfiles(through seq: Int64, timeout: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while try await profilesCheckpoint() < seq {
            if ContinuousClock.now > deadline { return false }
            try await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// Waits until the sync's checkpoint is at the last segment change.
    func waitForActivation(timeout: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            let behind = try await client.query("""
                SELECT coalesce((SELECT max(change_id) FROM cdp.segment_changes WHERE segment = 'carts'), 0)
                     > coalesce((SELECT change_id FROM cdp.sync_realtime WHERE sync = 'carts_hook'), 0)
                """).scalar(Bool.self)
            if !behind { return true }
            if ContinuousClock.now > deadline { return false }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

// MARK: - Where the time goes

/// Per probe, the database's timestamps of the hops (wall clock, this host), by email.
struct Splits {
    /// email → (identity batch start, profile batch start)
    var hops: [String: (identity: Date?, profile: Date?)]
    /// run id → start
    var runs: [Int64: Date]

    static func load(_ client: PostgresClient, probes: [Probe]) async throws -> Splits {
        var hops: [String: (identity: Date?, profile: Date?)] = [:]
        let rows = try await client.query("""
            SELECT d.traits ->> 'email', ip.created_at, min(c.changed_at)
            FROM cdp.segment_changes AS c
            JOIN cdp.profile_data AS d ON d.profile_id = c.profile_id
            LEFT JOIN cdp.identity_profiles AS ip ON ip.profile_id = c.profile_id
            WHERE c.segment = 'carts' AND c.change = 'entered'
            GROUP BY 1, 2
            """).map { try $0.decode((String?, Date?, Date).self) }
        for (email, identity, profile) in rows { if let email { hops[email] = (identity, profile) } }
        let ids = Array(Set(probes.compactMap { $0.runID.map(Int.init) }))
        var runs: [Int64: Date] = [:]
        for (id, start) in try await client.query("SELECT run_id, started_at FROM cdp.sync_runs WHERE run_id = ANY(\(ids))")
            .map({ try $0.decode((Int64, Date).self) }) {
            runs[id] = start
        }
        return Splits(hops: hops, runs: runs)
    }

    /// p50 and p99 of each hop, in ms, over the probes with every timestamp.
    func report(_ probes: [Probe]) {
        var parts: [[Double]] = [[], [], [], []]
        for probe in probes {
            guard let ok = probe.okDate, let arrived = probe.arrivedDate, let hop = hops[probe.email], let identity = hop.identity,
                  let profile = hop.profile, let run = probe.runID.flatMap({ runs[$0] })
            else { continue }
            let marks = [ok, identity, profile, run, arrived]
            for i in 0..<4 { parts[i].append(marks[i + 1].timeIntervalSince(marks[i])) }
        }
        let names = ["HTTP 200 → identity batch start", "→ profile batch start", "→ activation run start", "→ webhook receipt"]
        let lines = zip(names, parts).map { name, values in
            let sorted = values.sorted()
            return "\(name) p50 \(Stats.ms(sorted, 0.5)) p99 \(Stats.ms(sorted, 0.99))"
        }
        say("    split (ms, \(parts[0].count) probes with every timestamp): " + lines.joined(separator: "; "))
        // A stage that is busy starts each batch as the previous one ends: the gaps between the batch starts that
        // carried probes are then its batch durations (when idle, they follow the probe interval instead).
        let emails = Set(probes.map(\.email))
        let mine = hops.filter { emails.contains($0.key) }.values
        let gaps = [("identity", mine.compactMap(\.identity)), ("profile", mine.compactMap(\.profile))].map { name, starts in
            let distinct = Array(Set(starts)).sorted()
            let sorted = zip(distinct.dropFirst(), distinct).map { $0.timeIntervalSince($1) }.sorted()
            return "\(name) \(distinct.count) batches, gap p50 \(Stats.ms(sorted, 0.5)) p90 \(Stats.ms(sorted, 0.9)) max \(Stats.ms(sorted, 1))"
        }
        say("    batches carrying probes (ms between consecutive starts): " + gaps.joined(separator: "; "))
    }
}

enum Stats {
    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// The `p` quantile of sorted seconds, in ms with one decimal ("-" when empty).
    static func ms(_ sorted: [Double], _ p: Double) -> String {
        guard !sorted.isEmpty else { return "-" }
        return String(format: "%.1f", sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000)
    }
}

enum Machine {
    /// `uname -a`, nproc, the CPU model and the memory.
    static func describe() -> String {
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
        let memory = field("/proc/meminfo", "MemTotal").flatMap { Double($0.split(separator: " ").first ?? "") }
            .map { String(format: "%.0f GiB", $0 / 1_048_576) } ?? "memory unknown"
        return "\(ProcessInfo.processInfo.activeProcessorCount) cores (nproc), \(cpu), \(memory); \(kernel); load average \(loadAverage())"
    }

    static func field(_ file: String, _ key: String) -> String? {
        let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return nil }
        return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) }
    }

    static func loadAverage() -> String {
        ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").prefix(3).joined(separator: " ")
    }
}
