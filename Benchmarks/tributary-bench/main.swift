// tributary-bench: measures the Postgres layer against psql, in the same run, on the same server and data.
//
//   swift run -c release tributary-bench [--rows 1000000] [--round-trips 10000] [--rounds 2]
//
// COPY: the same file of Segment-style events (about 530 bytes of JSON each) is loaded into the same
// monthly-partitioned table with a primary key, alternately by `psql \copy` and by PostgresConnection.copyIn,
// truncating in between. Round trip: `SELECT 1` repeated on one connection, by psql (a script of statements)
// and by PostgresConnection.query. Prints the figures and the ratios; nothing here is a test.
import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryFixtures

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tributary-bench", abstract: "COPY throughput and query round trip of the Postgres layer vs psql.")

    @Option(help: "Rows in the COPY file.") var rows = 1_000_000
    @Option(help: "Statements in the round-trip test.") var roundTrips = 10_000
    @Option(help: "Rounds of each COPY contender (alternating).") var rounds = 2
    @Option(help: "Embedded data directory used when DATABASE_URL/PG* are unset.") var dataDir = ".tributary/bench-pgdata"

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let configuration: PostgresConfiguration
        if let configured = try PostgresConfiguration.fromEnvironment() {
            configuration = configured
        } else {
            configuration = try await EmbeddedPostgres(dataDirectory: dataDir, logger: logger).start()
        }
        let conninfo = configuration.resolvedConnectionString
        let bin = try EmbeddedPostgres.findBinaries()
        let psql = FileManager.default.isExecutableFile(atPath: "\(bin)/psql") ? "\(bin)/psql" : "/usr/bin/psql"
        let connection = try await PostgresConnection.connect(configuration: configuration, logger: logger)
        let version = try await connection.query("SHOW server_version").scalar(String.self)
        print("server: PostgreSQL \(version); \(ProcessInfo.processInfo.activeProcessorCount) cores")

        let file = try EventFile.make(rows: rows)
        let size = (try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
        print("file: \(file), \(rows) rows, \(size / rows) bytes/row on average")
        try await connection.script(EventFile.tableSQL)

        let columns = "message_id, source_id, type, event, user_id, anonymous_id, timestamp, received_at, properties, context"
        var psqlTimes: [Double] = []
        var ourTimes: [Double] = []
        for round in 1...rounds {
            try await connection.execute("TRUNCATE bench_events")
            try await connection.execute("CHECKPOINT")
            let psqlSeconds = try time {
                let output = try shell(
                    psql,
                    [
                        "-X", "-q", "-v", "ON_ERROR_STOP=1", conninfo, "-c",
                        "\\copy bench_events (\(columns)) FROM '\(file)'",
                    ])
                guard output.isEmpty else { throw CleanExit.message("psql failed: \(output)") }
            }
            try await expectRows(connection)
            psqlTimes.append(psqlSeconds)
            print(
                String(
                    format: "round %d  psql \\copy        %6.2f s  %8.0f rows/s", round, psqlSeconds, Double(rows) / psqlSeconds))

            try await connection.execute("TRUNCATE bench_events")
            try await connection.execute("CHECKPOINT")
            let started = ContinuousClock.now
            let copied = try await connection.copyIn("COPY bench_events (\(unescaped: columns)) FROM STDIN") { writer in
                let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: file))
                defer { try? handle.close() }
                while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
                    try await writer.write(chunk)
                }
            }
            let ourSeconds = seconds(ContinuousClock.now - started)
            guard copied == rows else { throw CleanExit.message("copyIn stored \(copied) rows, expected \(rows)") }
            try await expectRows(connection)
            ourTimes.append(ourSeconds)
            print(
                String(format: "round %d  Postgres.copyIn   %6.2f s  %8.0f rows/s", round, ourSeconds, Double(rows) / ourSeconds))
        }
        let psqlBest = psqlTimes.min()!
        let ourBest = ourTimes.min()!
        print(
            String(
                format: "COPY best: psql %.0f rows/s, Postgres.copyIn %.0f rows/s, ratio %.2fx (throughput, ours/psql)",
                Double(rows) / psqlBest, Double(rows) / ourBest, psqlBest / ourBest))

        // Round trip: N statements on one connection.
        let script = FileManager.default.temporaryDirectory.appendingPathComponent("bench-select.sql")
        try String(repeating: "SELECT 1;\n", count: roundTrips).write(to: script, atomically: true, encoding: .utf8)
        let psqlEmpty = try time { _ = try shell(psql, ["-X", "-q", conninfo, "-c", "SELECT 1", "-o", "/dev/null"]) }
        let psqlRound = try time { _ = try shell(psql, ["-X", "-q", conninfo, "-f", script.path, "-o", "/dev/null"]) }
        let psqlPer = max(psqlRound - psqlEmpty, 0) / Double(roundTrips)
        var started = ContinuousClock.now
        for _ in 0..<roundTrips { try await connection.query("SELECT 1") }
        let ourPer = seconds(ContinuousClock.now - started) / Double(roundTrips)
        started = ContinuousClock.now
        for n in 0..<roundTrips { try await connection.query("SELECT \(n)::int8") }
        let ourBound = seconds(ContinuousClock.now - started) / Double(roundTrips)
        print(
            String(
                format: "round trip: psql %.1f µs/stmt (startup %.0f ms subtracted), Postgres.query %.1f µs/stmt "
                    + "(with one bind %.1f µs), ratio %.2fx (time, ours/psql)",
                psqlPer * 1e6, psqlEmpty * 1e3, ourPer * 1e6, ourBound * 1e6, ourPer / psqlPer))
        try await connection.execute("DROP TABLE bench_events")
        await connection.close()
    }

    func expectRows(_ connection: PostgresConnection) async throws {
        let count = try await connection.query("SELECT count(*) FROM bench_events").scalar(Int.self)
        guard count == rows else { throw CleanExit.message("table holds \(count) rows, expected \(rows)") }
    }
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func time(_ body: () throws -> Void) throws -> Double {
    let started = ContinuousClock.now
    try body()
    return seconds(ContinuousClock.now - started)
}

/// Runs a program; returns nothing on success, or what it printed.
func shell(_ program: String, _ arguments: [String]) throws -> String {
    let output = try ProcessRunner.run(program, arguments, directory: FileManager.default.currentDirectoryPath)
    return output.status == 0 ? "" : "exit \(output.status): \(output.tail)"
}

/// The benchmark's data: Segment-style track events in COPY text format, generated once and kept.
enum EventFile {
    static let tableSQL = """
        DROP TABLE IF EXISTS bench_events;
        CREATE TABLE bench_events (
            message_id   text NOT NULL,
            source_id    text NOT NULL,
            type         text NOT NULL,
            event        text,
            user_id      text,
            anonymous_id text,
            timestamp    timestamptz NOT NULL,
            received_at  timestamptz NOT NULL,
            properties   jsonb NOT NULL,
            context      jsonb NOT NULL,
            PRIMARY KEY (message_id, timestamp)
        ) PARTITION BY RANGE (timestamp);
        DO $$
        DECLARE month date := date '2026-01-01';
        BEGIN
            WHILE month < date '2027-01-01' LOOP
                EXECUTE format('CREATE TABLE %I PARTITION OF bench_events FOR VALUES FROM (%L) TO (%L)',
                               'bench_events_' || to_char(month, 'YYYY_MM'), month, month + interval '1 month');
                month := month + interval '1 month';
            END LOOP;
        END $$;
        """

    static func make(rows: Int) throws -> String {
        let directory = "Benchmarks/data"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = FileManager.default.currentDirectoryPath + "/\(directory)/events-\(rows).tsv"
        if FileManager.default.fileExists(atPath: path) { return path }
        FileManager.default.createFile(atPath: path + ".partial", contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path + ".partial"))
        var random = SplitMix(seed: 42)
        let events = ["Order Completed", "Product Viewed", "Product Added", "Checkout Started", "Signed Up"]
        let categories = ["shoes", "shirts", "outdoor", "kitchen", "books", "toys"]
        var buffer = ""
        let base = 1_767_225_600  // 2026-01-01T00:00:00Z
        for n in 0..<rows {
            let seconds = base + Int(random.next() % UInt64(364 * 86_400))
            let timestamp = PostgresTimeText.iso(seconds)
            let received = PostgresTimeText.iso(seconds + 1)
            let user = random.next() % 3 == 0 ? "\\N" : "user-\(random.next() % 300_000)"
            let anonymous = "anon-\(String(random.next(), radix: 16))"
            let product = random.next() % 10_000
            let price = Double(random.next() % 20_000) / 100
            let properties =
                #"{"product_id":"sku-\#(product)","category":"\#(categories[n % categories.count])","price":\#(price),"quantity":\#(random.next() % 5 + 1),"currency":"USD","revenue":\#(price),"coupon":null}"#
            let context =
                #"{"ip":"203.0.113.\#(random.next() % 255)","library":{"name":"analytics.js","version":"4.1.0"},"locale":"en-US","page":{"path":"/products/\#(product)","referrer":"https://www.example.com/search?q=item","url":"https://shop.example.com/products/\#(product)"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"}"#
            buffer +=
                "\(UUID().uuidString.lowercased())\tsrc-web\ttrack\t\(events[n % events.count])\t\(user)\t\(anonymous)\t\(timestamp)\t\(received)\t\(properties)\t\(context)\n"
            if buffer.utf8.count > 1 << 20 {
                try handle.write(contentsOf: Data(buffer.utf8))
                buffer = ""
            }
        }
        try handle.write(contentsOf: Data(buffer.utf8))
        try handle.close()
        try FileManager.default.moveItem(atPath: path + ".partial", toPath: path)
        return path
    }
}

enum PostgresTimeText {
    static func iso(_ seconds: Int) -> String {
        let date = Date(timeIntervalSince1970: TimeInterval(seconds))
        return date.formatted(.iso8601)
    }
}

/// A small deterministic generator, so every run loads the same data.
typealias SplitMix = SeededRandom
