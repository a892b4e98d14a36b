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
import TributaryCollection
import TributaryDestinations
import TributaryFixtures
import TributaryIdentity
import TributaryProfiles
import TributarySegments
import TributaryServer
import TributarySyncs
import TributaryModel

@main
struct RealtimeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-realtime-bench")

    @Option(help: "Comma-separated phases, in order: peak, half, overload.") var phases = "peak,half,overload"
    @Option(help: "People of the SyntheticPeople data set stored and resolved first (0: none).") var seedPeople = 50_000
    @Option(help: "Background events sent at full speed to measure the end-to-end peak.") var peakEvents = 200_000
    @Option(
        help:
            "Background rates (events/s) of the half phase, comma-separated, each measured in turn; 0: half the end-to-end peak.")
    var rate = "0"
    @Option(help: "Background rate (events/s) of the overload phase.") var overloadRate = 16_500.0
    @Option(help: "Seconds of load before probes count (half phase).") var warmup = 10
    @Option(name: .customLong("seconds"), help: "Seconds of counted probes (half phase).") var countedSeconds = 60
    @Option(help: "Seconds of load (overload phase).") var overloadSeconds = 60
    @Option(help: "Seconds per window of the overload report.") var window = 10
    @OptionGroup var options: LoadOptions
    @Option(help: "Distinct users of the background traffic (the seed's users first).") var users = 50_000
    @Option(help: "Diagnosis: the server logs this database's statements slower than this many ms (-1: off).")
    var logMinDuration = -1

    static let database = "tributary_realtime_bench"

    func validate() throws {
        let known: Set = ["peak", "half", "overload"]
        guard !phaseList.isEmpty, phaseList.allSatisfy(known.contains) else {
            throw ValidationError("--phases: peak, half, overload")
        }
        guard window > 0, users > 0, peakEvents >= 100 else {
            throw ValidationError("--window, --users: positive; --peak-events at least 100")
        }
        guard !rates.isEmpty, rates.allSatisfy({ $0 >= 0 }) else { throw ValidationError("--rate: numbers, comma-separated") }
        if phaseList.contains("half"), !phaseList.contains("peak"), rates.contains(0) {
            throw ValidationError("half without peak needs --rate")
        }
    }

    var phaseList: [String] { phases.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
    var rates: [Double] { rate.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) } }

    func run() async throws {
        let started = ContinuousClock.now
        let (logger, server, files) = try await benchmarkEnvironment(dataDirectory: options.dataDir)
        let admin = try await PostgresConnection.connect(configuration: server.with(database: "postgres"), logger: logger)
        let settings = try await admin.query(
            """
            SELECT current_setting('server_version'), current_setting('shared_buffers'), current_setting('synchronous_commit')
            """
        ).first!.decode((String, String, String).self)
        await admin.close()
        say("date: \(Date().formatted(Date.ISO8601FormatStyle()))")
        say("machine: \(Machine.describe())")
        say("server: PostgreSQL \(settings.0) (shared_buffers \(settings.1), synchronous_commit \(settings.2))")

        let configuration = try await freshDatabase(Self.database, on: server, files: files, logger: logger)
        if logMinDuration >= 0 {
            let connection = try await PostgresConnection.connect(configuration: configuration, logger: logger)
            try await connection.execute(
                PostgresQuery(unsafeSQL: "ALTER DATABASE \(Self.database) SET log_min_duration_statement = \(logMinDuration)"))
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
            try await PipelineProgress(client: serveClient).applyCartsSync(webhook: base, logger: logger)
            let pool = try await seed(serveClient, logger: logger)
            try await measure(
                serveClient: serveClient, workerClient: workerClient, writeKey: writeKey, users: pool, probes: probes,
                logger: logger)
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
            let profiles = try await ProfileStage(client: client, logger: logger, followers: [RealtimeSegments()]).catchUp()
            try await client.execute("VACUUM ANALYZE")
            var seen = Set<String>()
            for event in data.events {
                guard let user = event.userID, pool.count < users, seen.insert(user).inserted else { continue }
                pool.append(user)
            }
            say(
                "seed: \(seedPeople) people, \(data.events.count) events stored, resolved (\(identity.profilesCreated) profiles) "
                    + "and profiled (\(profiles.profilesUpdated)) in \(seconds(since: clock)) s")
        }
        pool += (0..<max(0, users - pool.count)).map { "bench-user-\($0)" }
        return pool
    }

    // MARK: - The pipeline and the phases

    func measure(
        serveClient: PostgresClient, workerClient: PostgresClient, writeKey: String, users: [String], probes: Probes,
        logger: Logger
    ) async throws {
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        // The server's own logger is quiet: its shutdown logs cancellation errors.
        var serverLogger = logger
        serverLogger.logLevel = .critical
        let app = buildApplication(
            configuration: ServerConfiguration(port: 0), client: serveClient, logger: serverLogger,
            onListening: { portSink.yield($0) })
        let runner = SyncRunner(client: workerClient, logger: logger, registry: .standard())
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            group.addTask { try await IdentityStage(client: serveClient, logger: logger).run() }
            group.addTask { try await ProfileStage(client: serveClient, logger: logger, followers: [RealtimeSegments()]).run() }
            group.addTask { await RealtimeActivation(client: workerClient, logger: logger, runner: runner).run() }
            defer { group.cancelAll() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw CancellationError() }
            let pipeline = PipelineProgress(client: serveClient)
            // The activation's first sight of the sync (a full run) before anything is measured.
            for _ in 0..<600 where try await !pipeline.syncFollowed() { try await Task.sleep(for: .milliseconds(100)) }
            say(
                "pipeline: collection API on 127.0.0.1:\(port), identity and profile stages, real-time activation (in this process)"
            )

            try await withLoad(
                port: port, writeKey: writeKey, senders: options.senders, probes: probes, batch: ordinaryTraffic(users: users)
            ) { load, prober in
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
                                counted: countedSeconds, windows: false, load: load, prober: prober, pipeline: pipeline,
                                probes: probes,
                                client: serveClient)
                        }
                    default:
                        try await measureLatency(
                            "overload", rate: overloadRate, warmup: 0, counted: overloadSeconds, windows: true, load: load,
                            prober: prober, pipeline: pipeline, probes: probes, client: serveClient)
                    }
                }
            }
        }
    }

    /// Sends --peak-events at full speed; returns the end-to-end rate (events/s through the profile stage).
    func measurePeak(load: Load, pipeline: PipelineProgress) async throws -> Double {
        say("\n== peak: \(peakEvents) background events at full speed from \(options.senders) clients ==")
        let start = ContinuousClock.now
        let sent = try await load.run(tag: "peak", rate: nil, senders: options.senders, requests: peakEvents / 100, until: nil)
        let httpSeconds = elapsed(since: start)
        let last = try await pipeline.lastSeq()
        let drained = try await pipeline.waitForProfiles(through: last, timeout: .seconds(options.drainTimeout))
        let total = elapsed(since: start)
        guard drained else {
            throw CleanExit.message("the profile stage did not reach seq \(last) within \(options.drainTimeout) s")
        }
        let peak = Double(sent.events) / total
        say(
            String(
                format: "HTTP: %d events in %.1f s = %.0f events/s accepted; profile stage at the last seq after %.1f s",
                sent.events, httpSeconds, Double(sent.events) / httpSeconds, total))
        say(
            String(
                format: "end-to-end peak: %.0f events/s (HTTP 200 through identity and profile stages); half: %.0f events/s",
                peak, peak / 2))
        _ = try await pipeline.waitForActivation(timeout: .seconds(options.drainTimeout))
        return peak
    }

    /// Background load at `rate` with a probe every --probe-interval for `warmup` + `counted` seconds, then the drain.
    func measureLatency(
        _ name: String, rate: Double, warmup: Int, counted: Int, windows: Bool, load: Load, prober: Prober,
        pipeline: PipelineProgress,
        probes: Probes, client: PostgresClient
    ) async throws {
        say(
            "\n== \(name): background \(Int(rate)) events/s from \(options.senders) clients, probes every \(options.probeInterval) ms, "
                + "\(warmup) s warm-up + \(counted) s ==")
        let start = ContinuousClock.now, startDate = Date()
        let countFrom = start + .seconds(warmup)
        let end = countFrom + .seconds(counted)
        let senders = options.senders
        async let background = load.run(tag: name, rate: rate, senders: senders, requests: nil, until: end)
        try await prober.run(phase: name, every: .milliseconds(options.probeInterval), from: countFrom, until: end)
        let sent = try await background
        let loadSeconds = elapsed(since: start)
        let backlog = try await pipeline.backlog()
        say(
            String(
                format: "background: %d events in %.1f s = %.0f events/s achieved (target %.0f); backlog at the end: %d events",
                sent.events, loadSeconds, Double(sent.events) / loadSeconds, rate, backlog))
        let drainStart = ContinuousClock.now
        let last = try await pipeline.lastSeq()
        let profiles = try await pipeline.waitForProfiles(through: last, timeout: .seconds(options.drainTimeout))
        let activation = try await pipeline.waitForActivation(timeout: .seconds(options.drainTimeout))
        // The last webhook may still be in flight after the checkpoint moved.
        try await Task.sleep(for: .milliseconds(500))
        say(
            "drain: \(profiles && activation ? "done" : "NOT done") in \(seconds(since: drainStart)) s; "
                + (try await pipeline.runs(since: startDate)) + "; load average \(Machine.loadAverage())")

        let phaseProbes = probes.all(phase: name)
        let splits = try await Splits.load(client, probes: phaseProbes)
        let measured = phaseProbes.filter(\.counted)
        report("\(name), all counted probes", measured, splits)
        if windows {
            for offset in stride(from: 0, to: counted, by: window) {
                let from = countFrom + .seconds(offset), to = countFrom + .seconds(min(counted, offset + window))
                report(
                    String(format: "  sent at %3d–%3d s", offset, min(counted, offset + window)),
                    measured.filter { $0.sent >= from && $0.sent < to }, nil)
            }
        }
    }

    func report(_ label: String, _ list: [Probe], _ splits: Splits?) {
        let latencies = list.compactMap(\.latency).sorted()
        let failed = list.filter { $0.error != nil }.count
        let missing = list.filter { $0.error == nil && $0.latency == nil }.count
        let http = list.compactMap(\.httpLatency).sorted()
        say(
            String(
                format:
                    "%@: probes sent %d, received %d, HTTP errors %d, never delivered %d; latency ms p50 %@ p90 %@ p99 %@ max %@; HTTP 200 p50 %@ p99 %@",
                label as NSString, list.count, latencies.count, failed, missing, Stats.ms(latencies, 0.5) as NSString,
                Stats.ms(latencies, 0.9) as NSString, Stats.ms(latencies, 0.99) as NSString, Stats.ms(latencies, 1) as NSString,
                Stats.ms(http, 0.5) as NSString, Stats.ms(http, 0.99) as NSString))
        if let splits { splits.report(list) }
    }
}

// MARK: - Background traffic

/// Ordinary traffic: 100 events a request, 4 "Product Viewed" tracks to 1 page call, of known users.
func ordinaryTraffic(users: [String]) -> @Sendable (String, Int) -> String {
    { tag, index in
        let time = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        var calls: [String] = []
        calls.reserveCapacity(100)
        for k in 0..<100 {
            let n = index &* 100 &+ k
            let user = users[(n &* 7919) % users.count]
            let id = "\(tag)-\(n)"
            if k % 5 == 0 {
                calls.append(
                    #"{"type":"page","messageId":"\#(id)","userId":"\#(user)","name":"Shoes","properties":{"path":"/c/shoes","url":"https://shop.example.com/c/shoes","title":"Shoes","referrer":"https://www.google.com/"},"context":{"library":{"name":"analytics.js","version":"4.1.0"},"ip":"203.0.113.\#(n % 255)","locale":"en-US","userAgent":"Mozilla/5.0 (X11; Linux x86_64)"},"timestamp":"\#(time)"}"#
                )
            } else {
                calls.append(
                    #"{"type":"track","messageId":"\#(id)","userId":"\#(user)","event":"Product Viewed","properties":{"product_id":"sku-\#(n % 1000)","category":"shoes","price":89.0,"currency":"USD"},"context":{"library":{"name":"analytics.js","version":"4.1.0"},"ip":"203.0.113.\#(n % 255)","locale":"en-US","page":{"path":"/p/sku-\#(n % 1000)","url":"https://shop.example.com/p/sku-\#(n % 1000)"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64)"},"timestamp":"\#(time)"}"#
                )
            }
        }
        return #"{"batch":[\#(calls.joined(separator: ","))],"sentAt":"\#(time)"}"#
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
        let rows = try await client.query(
            """
            SELECT d.traits ->> 'email', ip.created_at, min(c.changed_at)
            FROM cdp.segment_changes AS c
            JOIN cdp.profile_data AS d ON d.profile_id = c.profile_id
            LEFT JOIN cdp.identity_profiles AS ip ON ip.profile_id = c.profile_id
            WHERE c.segment = 'carts' AND c.change = 'entered'
            GROUP BY 1, 2
            """
        ).map { try $0.decode((String?, Date?, Date).self) }
        for (email, identity, profile) in rows { if let email { hops[email] = (identity, profile) } }
        let ids = Array(Set(probes.compactMap { $0.runID.map(Int.init) }))
        var runs: [Int64: Date] = [:]
        for (id, start) in try await client.query("SELECT run_id, started_at FROM cdp.sync_runs WHERE run_id = ANY(\(ids))")
            .map({ try $0.decode((Int64, Date).self) })
        {
            runs[id] = start
        }
        return Splits(hops: hops, runs: runs)
    }

    /// p50 and p99 of each hop, in ms, over the probes with every timestamp.
    func report(_ probes: [Probe]) {
        var parts: [[Double]] = [[], [], [], []]
        for probe in probes {
            guard let ok = probe.okDate, let arrived = probe.arrivedDate, let hop = hops[probe.email],
                let identity = hop.identity,
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
            return
                "\(name) \(distinct.count) batches, gap p50 \(Stats.ms(sorted, 0.5)) p90 \(Stats.ms(sorted, 0.9)) max \(Stats.ms(sorted, 1))"
        }
        say("    batches carrying probes (ms between consecutive starts): " + gaps.joined(separator: "; "))
    }
}
