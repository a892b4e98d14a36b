// tributary-pipeline-bench: the whole pipeline as shipped, on a stock server, against psql \copy of the same rows.
//
//   swift build -c release --product tributary-pipeline-bench --product tributary && .build/release/tributary-pipeline-bench
//   (a quick check: --sustain-seconds 20 --peak-events 20000 --latency-seconds 15)
//
// On a fresh database `tributary_pipeline_bench` of the bench server (DATABASE_URL/PG*, or the embedded one), with no
// setting changed (JIT stays as the server has it):
//   - `tributary serve --port 0` (the binary next to this one, its defaults: identity and profile stages on) and
//     `tributary worker` (real-time activation), each a process of its own; a source; the real-time segment `carts`
//     and a real-time audience sync of it to a webhook receiver in this process;
//   - peak: --peak-events events (batches of 100 tracks of about 700 bytes, --users users on two devices each plus
//     anonymous visitors) from --senders clients at full speed: events/s answered 200; then each stage's events/s
//     while it works off that backlog (events from the start to the stage's checkpoint reaching the last one);
//   - sustained: --sustain-seconds at --rate events/s offered: events/s stored, stamped (identity checkpoint) and
//     profiled (profile checkpoint), with each stage's lag (last seq − checkpoint) printed every --sample-every s;
//     the figure holds only if the lag is bounded (mean lag of the last third ≤ 1.5 × the first third's + 2 s of
//     events at the stored rate);
//   - latency: event → webhook p50/p99 with background load at 2,000 events/s and at half --rate (--latency-seconds
//     each, after --warmup s): probes (identify with an email + "Added to Cart") every --probe-interval ms;
//   - psql \copy of the peak phase's rows (exported from cdp.events) into a monthly-partitioned table with a primary
//     key in the same database; the serve process's peak RSS (VmHWM).
// Prints one markdown table row (with its header) for Benchmarks/RESULTS.md.
import ArgumentParser
import AsyncHTTPClient
import BenchmarkSupport
import Foundation
import Logging
import Postgres
import NIOCore
import NIOHTTP1
import TributaryCollection
import TributaryProfiles
import TributaryService

@main
struct PipelineBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-pipeline-bench")

    @Option(help: "Events sent at full speed in the peak phase (also the rows loaded with psql \\copy).") var peakEvents = 200_000
    @Option(help: "Seconds of the sustained phase.") var sustainSeconds = 300
    @Option(help: "Events/s offered in the sustained phase (the latency phases use 2,000 and half of it).") var rate = 20_000.0
    @Option(help: "Seconds of counted probes per latency phase (0: no latency phases).") var latencySeconds = 60
    @Option(help: "Seconds of load before probes count, per latency phase.") var warmup = 5
    @OptionGroup var options: LoadOptions
    @Option(help: "Distinct known users of the traffic (each on two devices), besides anonymous visitors.") var users = 200_000
    @Option(help: "Seconds between lag samples in the sustained phase.") var sampleEvery = 5
    @Option(help: "An argument for `tributary serve` (repeatable), for example --serve-argument=--no-guess-profiles.")
    var serveArgument: [String] = []
    @Flag(help: "Serve the console too, and keep its live events screen open (its event stream read) through the run.")
    var consoleLive = false

    static let database = "tributary_pipeline_bench"

    func validate() throws {
        guard peakEvents >= 100, sustainSeconds >= 3, rate > 0, users > 0, sampleEvery > 0 else {
            throw ValidationError("--peak-events at least 100, --sustain-seconds at least 3; the others positive")
        }
    }

    func run() async throws {
        let started = ContinuousClock.now
        let (logger, server, files) = try await benchmarkEnvironment(dataDirectory: options.dataDir)
        let database = try await freshDatabase(Self.database, on: server, files: files, logger: logger)
        var row = Row()
        row.date = Date().formatted(Date.ISO8601FormatStyle().year().month().day())
        // As a user's client sees the server: psql, not Tributary's connections.
        let version =
            try psql("SHOW server_version", database: database).output.split(separator: " ").first.map(String.init) ?? "?"
        let jit = try psql("SHOW jit", database: database).output
        let loadAtStart = Machine.loadAverage()
        say("machine: \(Machine.describe())")
        say("server: PostgreSQL \(version), jit \(jit) (stock settings; database \(Self.database))")

        let client = PostgresClient(configuration: database, options: .init(maxConnections: 4), logger: logger)
        let (_, writeKey) = try await SourceStore(client: client).create(name: "bench")
        let pipeline = PipelineProgress(client: client)
        let probes = Probes()
        try await ProbeReceiver(probes: probes).serve { base in
            try await pipeline.applyCartsSync(webhook: base, logger: logger)
            let (serve, port) = try await TributaryProcess.serve(
                serveArgument + (consoleLive ? ["--console"] : []), database: database, files: files,
                logName: "pipeline-bench-serve.log")
            // A console visitor watching live events for the whole run (its stream read and thrown away).
            let watcher: Task<Int, any Error>? =
                consoleLive ? try await ConsoleWatcher.start(port: port, client: client) : nil
            defer { watcher?.cancel() }
            defer { serve.stop() }
            let worker = try TributaryProcess.start(
                ["worker"], database: database, files: files, logName: "pipeline-bench-worker.log")
            defer { worker.stop() }
            say(
                "tributary serve (pid \(serve.pid), port \(port), log \(serve.log)); tributary worker (pid \(worker.pid), log \(worker.log))"
            )
            for _ in 0..<600 where try await !pipeline.syncFollowed() { try await Task.sleep(for: .milliseconds(100)) }

            let traffic = Traffic(users: users)
            let peakLast = try await withLoad(
                port: port, writeKey: writeKey, senders: options.senders, probes: probes,
                batch: { traffic.batch(tag: $0, index: $1) }
            ) { load, prober in
                let peakLast = try await peak(load: load, stages: pipeline, row: &row)
                try await sustain(load: load, stages: pipeline, row: &row)
                if latencySeconds > 0 {
                    for (name, background) in [("2000", 2_000.0), ("half", rate / 2)] {
                        let result = try await latency(
                            name, rate: background, load: load, prober: prober, pipeline: pipeline, probes: probes)
                        if name == "2000" { row.latency2000 = result } else { row.latencyHalf = result }
                    }
                }
                return peakLast
            }
            row.rssMB = Double(serve.peakRSS) / 1024
            row.copy = try copy(through: peakLast, database: database, client: client)
        }
        await client.shutdown()
        row.machine =
            "\(ProcessInfo.processInfo.activeProcessorCount) cores, load \(loadAtStart) → \(Machine.loadAverage()), PostgreSQL \(version), jit \(jit)"
        row.command =
            CommandLine.arguments.dropFirst().isEmpty ? "defaults" : CommandLine.arguments.dropFirst().joined(separator: " ")
        row.commit =
            (try? ProcessRunner.run("/usr/bin/git", ["rev-parse", "--short", "HEAD"], directory: files.root.path).text)?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        say("\ntotal: \(seconds(since: started)) s\n")
        say(row.markdown(offered: rate))
    }

    // MARK: - Phases

    /// Full speed; returns the peak's last seq.
    func peak(load: Load, stages: PipelineProgress, row: inout Row) async throws -> Int64 {
        say("\n== peak: \(peakEvents) events at full speed from \(options.senders) clients ==")
        let start = ContinuousClock.now
        let before = try await stages.sample()
        let sent = try await load.run(tag: "peak", rate: nil, senders: options.senders, requests: peakEvents / 100, until: nil)
        let httpSeconds = elapsed(since: start)
        row.peak = Double(sent.events) / httpSeconds
        let last = try await stages.lastSeq()
        say(
            String(format: "stored: %d events in %.1f s = %.0f events/s (HTTP 200)", sent.events, httpSeconds, row.peak)
                + (sent.failures > 0 ? " (\(sent.failures) requests failed)" : ""))
        for stage in ["identity", "profiles"] {
            let reached = try await stages.wait(stage, through: last, timeout: .seconds(options.drainTimeout))
            let now = try await stages.sample()
            let events = try await stages.events(after: before.checkpoint(stage), through: now.checkpoint(stage))
            let rate = Double(events) / elapsed(since: start)
            say(
                "\(stage) stage: " + String(format: "%d events in %.1f s = %.0f events/s", events, elapsed(since: start), rate)
                    + (reached ? "" : " (NOT drained within --drain-timeout)"))
            if stage == "identity" { row.identityRate = rate } else { row.profilesRate = rate }
        }
        return last
    }

    /// A fixed offered rate; samples lag throughout.
    func sustain(load: Load, stages: PipelineProgress, row: inout Row) async throws {
        say("\n== sustained: \(Int(rate)) events/s offered for \(sustainSeconds) s from \(options.senders) clients ==")
        let start = ContinuousClock.now
        let end = start + .seconds(sustainSeconds)
        let before = try await stages.sample()
        let (offered, senders) = (rate, options.senders)
        async let background = load.run(tag: "sustain", rate: offered, senders: senders, requests: nil, until: end)
        var samples: [PipelineProgress.Sample] = []
        var due = start + .seconds(sampleEvery)
        while due <= end {
            try await Task.sleep(until: due)
            let sample = try await stages.sample()
            samples.append(sample)
            say(
                String(
                    format: "  t=%4.0f s  stored seq %10d  lag identity %9d  profiles %9d", elapsed(since: start), sample.last,
                    sample.last - sample.identity, sample.last - sample.profiles))
            due += .seconds(sampleEvery)
        }
        let sent = try await background
        let seconds = elapsed(since: start)
        let after = try await stages.sample()
        row.stored = Double(sent.events) / seconds
        row.stamped = Double(try await stages.events(after: before.identity, through: after.identity)) / seconds
        row.profiled = Double(try await stages.events(after: before.profiles, through: after.profiles)) / seconds
        row.lag = Lag(samples: samples, slack: row.stored * 2)
        say(
            String(
                format: "stored %.0f, stamped %.0f, profiled %.0f events/s over %.1f s", row.stored, row.stamped, row.profiled,
                seconds)
                + (sent.failures > 0 ? " (\(sent.failures) requests failed)" : ""))
        say(
            "lag (mean events behind, first third → last third): \(row.lag.text); \(row.lag.bounded ? "bounded" : "GREW: the sustained figure is not valid")"
        )
        let drain = ContinuousClock.now
        let drained = try await stages.wait(
            "profiles", through: try await stages.lastSeq(), timeout: .seconds(options.drainTimeout))
        say("drain: \(drained ? "done" : "NOT done") in \(BenchmarkSupport.seconds(since: drain)) s")
    }

    /// Event → webhook latency with background load at `rate`; p50 and p99 in ms.
    func latency(
        _ name: String, rate: Double, load: Load, prober: Prober, pipeline: PipelineProgress, probes: Probes
    ) async throws -> String {
        say(
            "\n== latency \(name): background \(Int(rate)) events/s, a probe every \(options.probeInterval) ms, \(warmup) s warm-up + \(latencySeconds) s =="
        )
        let start = ContinuousClock.now
        let countFrom = start + .seconds(warmup)
        let end = countFrom + .seconds(latencySeconds)
        let senders = options.senders
        async let background = load.run(tag: "latency-\(name)", rate: rate, senders: senders, requests: nil, until: end)
        try await prober.run(phase: name, every: .milliseconds(options.probeInterval), from: countFrom, until: end)
        let sent = try await background
        let backlog = try await pipeline.backlog()
        let drained = try await pipeline.waitForProfiles(
            through: try await pipeline.lastSeq(), timeout: .seconds(options.drainTimeout))
        let delivered = try await pipeline.waitForActivation(timeout: .seconds(options.drainTimeout))
        try await Task.sleep(for: .milliseconds(500))
        let counted = probes.all(phase: name).filter(\.counted)
        let latencies = counted.compactMap(\.latency).sorted()
        let result = "\(Stats.ms(latencies, 0.5)) / \(Stats.ms(latencies, 0.99))"
        say(
            String(
                format: "background %.0f events/s achieved; backlog at the end %d; ", Double(sent.events) / elapsed(since: start),
                backlog)
                + "drain \(drained && delivered ? "done" : "NOT done"); probes \(counted.count) sent, \(latencies.count) received, "
                + "\(counted.filter { $0.error != nil }.count) HTTP errors; latency ms p50 / p99 (HTTP 200 → webhook) \(result)")
        let failed = counted.filter { $0.error != nil }
        if let error = failed.first?.error { say("first probe error: \(error)") }
        let undelivered = counted.count - failed.count - latencies.count
        let notes = [(failed.count, "HTTP errors"), (undelivered, "never delivered")].filter { $0.0 > 0 }.map {
            "\($0.0) \($0.1)"
        }
        return notes.isEmpty ? result : "\(result) (\(notes.joined(separator: ", ")))"
    }

    /// psql \copy of the rows through `seq` into a monthly-partitioned table with a primary key; events/s.
    func copy(through seq: Int64, database: PostgresConfiguration, client: PostgresClient) throws -> Double {
        say("\n== psql \\copy of the peak's rows ==")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-bench-copy.tsv").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try psql("\\copy (SELECT * FROM cdp.events WHERE seq <= \(seq) ORDER BY seq) TO '\(file)'", database: database)
        try psql(
            """
            DROP TABLE IF EXISTS public.copy_events;
            CREATE TABLE public.copy_events (LIKE cdp.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS, PRIMARY KEY (seq, timestamp))
                PARTITION BY RANGE (timestamp);
            DO $$ DECLARE m date; BEGIN
                FOR m IN SELECT generate_series(date_trunc('month', min(timestamp)), max(timestamp), '1 month')::date
                         FROM cdp.events WHERE seq <= \(seq) LOOP
                    EXECUTE format('CREATE TABLE public.copy_events_%s PARTITION OF public.copy_events FOR VALUES FROM (%L) TO (%L)',
                                   to_char(m, 'YYYYMM'), m, m + interval '1 month');
                END LOOP;
            END $$;
            """, database: database)
        let (seconds, _) = try psql("\\copy public.copy_events FROM '\(file)'", database: database)
        let rows = Int(try psql("SELECT count(*) FROM public.copy_events", database: database).output) ?? 0
        let rate = Double(rows) / seconds
        say(String(format: "psql \\copy: %d rows in %.1f s = %.0f rows/s", rows, seconds, rate))
        try psql("DROP TABLE public.copy_events", database: database)
        return rate
    }
}

// MARK: - Traffic

/// Realistic tracks of about 700 bytes: three in four from one of `users` known users (on one of two devices, so the
/// identity stage links anonymous ids to user ids), one in four from an anonymous visitor seen once.
struct Traffic: Sendable {
    let users: Int

    func batch(tag: String, index: Int) -> String {
        let time = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        let calls = (0..<100).map { call(tag: tag, n: index &* 100 &+ $0, time: time) }
        return #"{"batch":[\#(calls.joined(separator: ","))],"sentAt":"\#(time)"}"#
    }

    func call(tag: String, n: Int, time: String) -> String {
        let user = (n &* 7919) % users
        let who =
            n % 4 == 3
            ? #""anonymousId":"visitor-\#(tag)-\#(n)""# : #""userId":"user-\#(user)","anonymousId":"device-\#(user)-\#(n % 2)""#
        let (event, sku) = (n % 3 == 0 ? "Product Added" : "Product Viewed", n % 5000)
        return
            #"{"type":"track","messageId":"\#(tag)-\#(n)",\#(who),"event":"\#(event)","properties":{"product_id":"sku-\#(sku)","sku":"SKU-\#(sku)-BLK-42","category":"Shoes","name":"Trail Runner \#(sku % 40)","brand":"Northwind","variant":"black","price":89.95,"quantity":1,"currency":"USD","position":\#(n % 24)},"context":{"library":{"name":"analytics.js","version":"4.1.0"},"ip":"203.0.113.\#(n % 255)","locale":"en-US","timezone":"Europe/Berlin","page":{"path":"/p/sku-\#(sku)","url":"https://shop.example.com/p/sku-\#(sku)","referrer":"https://www.google.com/","title":"Trail Runner"},"campaign":{"source":"newsletter","medium":"email","name":"winter-sale"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"},"timestamp":"\#(time)"}"#
    }
}

// MARK: - The result

/// Whether the stages' lag stayed bounded in the sustained phase: mean lag of the last third of the samples against
/// the first third's.
struct Lag {
    var identity: (first: Double, last: Double) = (0, 0)
    var profiles: (first: Double, last: Double) = (0, 0)
    var bounded = false
    var measured = false

    init() {}

    /// Bounded: for each stage, last third ≤ 1.5 × first third + `slack` events.
    init(samples: [PipelineProgress.Sample], slack: Double) {
        let third = max(1, samples.count / 3)
        func mean(_ part: ArraySlice<PipelineProgress.Sample>, _ lag: (PipelineProgress.Sample) -> Int64) -> Double {
            part.isEmpty ? 0 : Double(part.map(lag).reduce(0, +)) / Double(part.count)
        }
        let (first, last) = (samples.prefix(third), samples.suffix(third))
        identity = (mean(first) { $0.last - $0.identity }, mean(last) { $0.last - $0.identity })
        profiles = (mean(first) { $0.last - $0.profiles }, mean(last) { $0.last - $0.profiles })
        bounded = [identity, profiles].allSatisfy { $0.last <= 1.5 * $0.first + slack }
        measured = !samples.isEmpty
    }

    var text: String {
        String(format: "identity %.0f → %.0f, profiles %.0f → %.0f", identity.first, identity.last, profiles.first, profiles.last)
    }
}

/// One run's figures, as a row of the table in Benchmarks/RESULTS.md.
struct Row {
    var date = "", machine = "", command = "", commit = ""
    var peak = 0.0, stored = 0.0, stamped = 0.0, profiled = 0.0, identityRate = 0.0, profilesRate = 0.0, copy = 0.0, rssMB = 0.0
    var lag = Lag()
    var latency2000 = "-", latencyHalf = "-"

    static let header = [
        "date", "machine", "command", "commit", "peak stored ev/s (× \\copy)", "sustained offered ev/s",
        "stored ev/s (×)", "stamped ev/s (×)", "profiled ev/s (×)", "lag first → last third", "lag bounded",
        "identity stage ev/s", "profile stage ev/s", "webhook p50 / p99 ms @ 2,000 ev/s", "webhook p50 / p99 ms @ half",
        "serve peak RSS MB", "psql \\copy ev/s",
    ]

    func markdown(offered: Double) -> String {
        func rate(_ value: Double) -> String {
            copy > 0 ? String(format: "%.0f (%.2fx)", value, value / copy) : String(format: "%.0f", value)
        }
        let cells = [
            date, machine, "`\(command)`", commit, rate(peak), String(format: "%.0f", offered), rate(stored), rate(stamped),
            rate(profiled), lag.text, lag.measured ? (lag.bounded ? "yes" : "NO (figure invalid)") : "-", rate(identityRate),
            rate(profilesRate), latency2000, latencyHalf, String(format: "%.0f", rssMB), String(format: "%.0f", copy),
        ]
        return [
            "| " + Self.header.joined(separator: " | ") + " |", "|" + String(repeating: "---|", count: Self.header.count),
            "| " + cells.joined(separator: " | ") + " |",
        ].joined(separator: "\n")
    }
}

/// A signed-in console session reading `/console/live/stream` until cancelled; its task returns the bytes read.
enum ConsoleWatcher {
    static func start(port: Int, client: PostgresClient) async throws -> Task<Int, any Error> {
        let (_, secret) = try await APITokenStore(client: client).create(
            name: "pipeline-bench-console-\(UUID().uuidString.prefix(8))", scopes: [.profilesRead])
        let base = "http://127.0.0.1:\(port)"
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let cookie = try await consoleSignIn(http, base: base, secret: secret)
        say("console: watching /console/live/stream for the whole run")
        return Task {
            var read = 0
            do {
                while !Task.isCancelled {
                    var request = HTTPClientRequest(url: base + "/console/live/stream")
                    request.headers.add(name: "cookie", value: cookie)
                    let response = try await http.execute(request, timeout: .seconds(600))
                    for try await chunk in response.body { read += chunk.readableBytes }
                }
            } catch {}
            try? await http.shutdown()
            return read
        }
    }
}
