// tributary-ingest-bench: the collection API under load, against psql \copy of the same events into the same table.
//
//   swift build -c release && .build/release/tributary-ingest-bench [--events 1000000] [--concurrency 16] [--no-stages]
//
// Starts `tributary serve` (the binary next to this one) on a fresh database, posts /v1/batch requests of 100
// realistic events (about 500 bytes each) from concurrent clients until --events are stored, then repeats at half
// the measured peak rate, and reports events/s, request latency p50/p99 and the server's peak RSS. Then loads the same
// number of events into cdp.events of another fresh database with `psql \copy`, in the same run.
import ArgumentParser
import AsyncHTTPClient
import BenchmarkSupport
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Postgres
import TributaryCollection
import TributaryService
import TributarySyncs

@main
struct IngestBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-ingest-bench")

    @Option(help: "Events to send at peak (and half as many at half rate).") var events = 1_000_000
    @Option(help: "Concurrent HTTP clients.") var concurrency = 16
    @Option(help: "Embedded data directory used when DATABASE_URL/PG* are unset.") var dataDir = ".tributary/bench-pgdata"
    @Flag(
        inversion: .prefixedNo,
        help: "Run serve's identity and profile stages (--no-stages: serve --no-identity --no-profiles, the API alone).")
    var stages = true

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let server = try await DatabaseTarget.resolve(dataDirectory: dataDir, logger: logger).configuration
        let files = try ProjectFiles.locate()
        let version = try await PostgresConnection.connect(configuration: server, logger: logger).query("SHOW server_version")
            .scalar(String.self)
        print(
            "server: PostgreSQL \(version); \(ProcessInfo.processInfo.activeProcessorCount) cores; \(events) events, batches of 100, \(concurrency) clients; serve \(stages ? "with" : "without") its stages"
        )

        // 1. The API.
        let apiDatabase = try await freshDatabase("tributary_ingest_api", on: server, files: files, logger: logger)
        let client = PostgresClient(configuration: apiDatabase, logger: logger)
        let (_, key) = try await SourceStore(client: client).create(name: "bench")
        let (serve, port) = try await TributaryProcess.serve(
            stages ? [] : ["--no-identity", "--no-profiles"], database: apiDatabase, files: files,
            logName: "ingest-bench-server.log")
        defer { serve.stop() }

        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = concurrency
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
        let poster = Poster(http: http, url: "http://127.0.0.1:\(port)/v1/batch", key: key)

        let peak = try await poster.run(batches: events / 100, prefix: "peak", concurrency: concurrency, rate: nil)
        print(
            String(
                format: "API peak:      %8.0f events/s   p50 %6.1f ms   p99 %6.1f ms   (%d events in %.1f s)",
                peak.eventsPerSecond, peak.p50, peak.p99, peak.events, peak.seconds))
        let half = try await poster.run(
            batches: events / 200, prefix: "half", concurrency: concurrency, rate: peak.eventsPerSecond / 2 / 100)
        print(
            String(
                format: "API half rate: %8.0f events/s   p50 %6.1f ms   p99 %6.1f ms", half.eventsPerSecond, half.p50, half.p99))
        let rss = serve.peakRSS
        print(String(format: "server peak RSS: %.0f MB", Double(rss) / 1024))
        let stored = try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self)
        guard stored == peak.events + half.events else {
            throw CleanExit.message("stored \(stored) events, sent \(peak.events + half.events)")
        }
        try await http.shutdown()
        await client.shutdown()

        // 2. psql \copy of the same events into the same table, in another fresh database.
        let copyDatabase = try await freshDatabase("tributary_ingest_copy", on: server, files: files, logger: logger)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ingest-bench-\(events).tsv").path
        try Self.writeCopyFile(path: file, events: events)
        let columns = "seq, message_id, source_id, type, event, user_id, timestamp, received_at, properties, context"
        let seconds = try psql("\\copy cdp.events (\(columns)) FROM '\(file)'", database: copyDatabase).seconds
        let copyRate = Double(events) / seconds
        print(String(format: "psql \\copy:    %8.0f events/s   (%d events in %.1f s)", copyRate, events, seconds))
        print(String(format: "ratio: API peak / \\copy = %.2fx", peak.eventsPerSecond / copyRate))
        try? FileManager.default.removeItem(atPath: file)
    }

    /// One realistic track call, about 500 bytes.
    static func event(_ id: String, _ n: Int) -> String {
        #"{"type":"track","messageId":"\#(id)","userId":"user-\#(n % 300_000)","event":"Order Completed","properties":{"order_id":"o-\#(n)","revenue":\#(n % 500).95,"currency":"USD","products":[{"product_id":"sku-\#(n % 1000)","category":"shoes","price":89.0,"quantity":1}],"coupon":null},"context":{"library":{"name":"analytics.js","version":"4.1.0"},"ip":"203.0.113.\#(n % 255)","locale":"en-US","page":{"path":"/checkout","url":"https://shop.example.com/checkout"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64)"},"originalTimestamp":"2026-11-25T10:00:00.000Z"}"#
    }

    /// The same events in COPY text format, for psql.
    static func writeCopyFile(path: String, events: Int) throws {
        FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var buffer = ""
        for n in 0..<events {
            let properties =
                #"{"order_id":"o-\#(n)","revenue":\#(n % 500).95,"currency":"USD","products":[{"product_id":"sku-\#(n % 1000)","category":"shoes","price":89.0,"quantity":1}],"coupon":null}"#
            let context =
                #"{"library":{"name":"analytics.js","version":"4.1.0"},"ip":"203.0.113.\#(n % 255)","locale":"en-US","page":{"path":"/checkout","url":"https://shop.example.com/checkout"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64)"}"#
            buffer +=
                "\(n + 1)\tcopy-\(n)\tsrc\ttrack\tOrder Completed\tuser-\(n % 300_000)\t2026-11-25 10:00:00+00\t2026-11-25 10:00:01+00\t\(properties)\t\(context)\n"
            if buffer.utf8.count > 1 << 20 {
                try handle.write(contentsOf: Data(buffer.utf8))
                buffer = ""
            }
        }
        try handle.write(contentsOf: Data(buffer.utf8))
    }
}

/// Posts batches and measures them.
struct Poster: Sendable {
    let http: HTTPClient
    let url: String
    let key: String

    struct Result {
        var events: Int
        var seconds: Double
        var p50: Double
        var p99: Double
        var eventsPerSecond: Double { Double(events) / seconds }
    }

    final class Collector: @unchecked Sendable {
        let lock = NSLock()
        var latencies: [Double] = []
        var next = 0
        func take(_ limit: Int) -> Int? {
            lock.lock()
            defer { lock.unlock() }
            guard next < limit else { return nil }
            next += 1
            return next - 1
        }
        func record(_ milliseconds: Double) {
            lock.lock()
            latencies.append(milliseconds)
            lock.unlock()
        }
    }

    /// Sends `batches` batches from `concurrency` clients, as fast as possible or at `rate` batches per second.
    func run(batches: Int, prefix: String, concurrency: Int, rate: Double?) async throws -> Result {
        let collector = Collector()
        let authorization = "Basic " + Data("\(key):".utf8).base64EncodedString()
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    while let index = collector.take(batches) {
                        if let rate {
                            let due = start + .nanoseconds(Int64(Double(index) / rate * 1e9))
                            if due > .now { try await Task.sleep(until: due) }
                        }
                        let calls = (0..<100).map { IngestBench.event("\(prefix)-\(index)-\($0)", index * 100 + $0) }
                        var request = HTTPClientRequest(url: url)
                        request.method = .POST
                        request.headers.add(name: "Authorization", value: authorization)
                        request.headers.add(name: "Content-Type", value: "application/json")
                        request.body = .bytes(
                            ByteBuffer(
                                string: #"{"batch":[\#(calls.joined(separator: ","))],"sentAt":"2026-11-25T10:00:00.000Z"}"#))
                        let sent = ContinuousClock.now
                        let response = try await http.execute(request, timeout: .seconds(60))
                        let body = try await response.body.collect(upTo: 1 << 20)
                        guard response.status == .ok else {
                            throw CleanExit.message("HTTP \(response.status.code): \(String(buffer: body))")
                        }
                        let took = ContinuousClock.now - sent
                        collector.record(Double(took.components.seconds) * 1000 + Double(took.components.attoseconds) / 1e15)
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let sorted = collector.latencies.sorted()
        return Result(
            events: batches * 100, seconds: seconds, p50: sorted[sorted.count / 2],
            p99: sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))])
    }
}
