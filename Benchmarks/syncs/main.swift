// tributary-syncs-bench: the reverse-ETL sync engine: a customer table to a local webhook and to a file.
//
//   swift build -c release --product tributary-syncs-bench && .build/release/tributary-syncs-bench [--rows 1000000]
//
// Creates the database `tributary_syncs_bench` on the bench server (migrated), and for each size (--baseline-rows,
// then --rows):
//   1. (re)creates `bench_customers` with that many realistic customers (INSERT … SELECT … FROM generate_series),
//      VACUUM ANALYZE;
//   2. applies the syncs with `SyncStore.apply`, mode `mirror`, 7 mapped fields, key `id`: one to the `webhook`
//      destination per --webhook-batch size, pointing at a Hummingbird receiver in this process (127.0.0.1, parses
//      every body, counts changes per run and distinct keys, answers 200 `{}`), one to the `file` destination (jsonl)
//      in a temporary directory (the previous size's syncs go, and their delivered state with them);
//   3. runs each sync in a child process of its own (this executable with --child), so the child's peak RSS is the
//      sync worker's alone: the initial run (every row added), then --repeats times a run after an UPDATE of
//      --changed-percent of the rows (random ids, a mapped column) and a run with nothing changed. The child reads
//      its VmHWM from /proc/self/status and resets it (`echo 5 > /proc/self/clear_refs`) around every run.
//
// The destinations are wrapped (same registry entries as `DestinationRegistry.standard()`) to time the phases of a
// run from outside the runner: diff (run start to the destination's creation, which follows the diff), page reads and
// state commits (the gaps between sends), sends, finish, the final confirmation of a file run, and the tail.
// Rows delivered are checked against the receiver's counts and the files' line counts.
//
// Then, for the largest size, unless --no-diagnosis (or alone, with --diagnose-only SYNC on the existing database):
// EXPLAIN (ANALYZE, BUFFERS) of the diff SQL (`SyncDiff(sync).insert()`) with nothing changed and after a 1% UPDATE
// (rolled back); timings of its parts (the source's key, payload and hash expressions, the delivered state) and of
// rewritten forms of the diff (a hash of the columns instead of md5 of the jsonb payload, jsonb built only for the
// rows that differ, a narrow state side, the joins reordered), against a copy of the state with those hashes
// (`bench_alt_state`, dropped at the end); and the page reads and state commits of a 1% run replayed in SQL.
import ArgumentParser
import BenchmarkSupport
import Foundation
import LocalReceiver
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Postgres
import TributaryDestinations
import TributaryModel
import TributaryService
import TributarySyncs

@main
struct SyncsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tributary-syncs-bench")

    @Option(help: "Rows of the source table for the main measurements.") var rows = 1_000_000
    @Option(help: "The smaller size the peak RSS is compared against (0: none).") var baselineRows = 100_000
    @Option(help: "Percent of the rows changed (UPDATE of a mapped column) before each 'changed' run.") var changedPercent = 1.0
    @Option(help: "Batch size of the webhook sync; comma-separated for one webhook sync per size.") var webhookBatch = "1000"
    @Option(help: "Batch size of the file sync.") var fileBatch = 10_000
    @Option(help: "Times the changed and nothing-changed runs are repeated (alternating) after the initial run.") var repeats = 2
    @Option(help: "Embedded data directory used when DATABASE_URL/PG* are unset.") var dataDir = ".tributary/bench-pgdata"
    @Flag(help: "Skip the EXPLAIN and per-phase SQL diagnosis of the largest size.") var noDiagnosis = false
    @Option(help: "Only the diagnosis, of this sync of an existing bench database (its state must be current).") var diagnoseOnly:
        String?

    // Child mode: one sync's runs, in a process of its own.
    @Flag(help: .hidden) var child = false
    @Option(help: .hidden) var connection: String?
    @Option(help: .hidden) var sync: String?
    @Option(help: .hidden) var resultFile: String?

    static let database = "tributary_syncs_bench"
    static let table = "bench_customers"
    static let fields: [(String, String)] = [
        ("email", "email"), ("first_name", "first_name"), ("plan", "plan"), ("country", "country"),
        ("ltv", "lifetime_value"), ("orders", "orders"), ("updated_at", "updated_at"),
    ]

    func run() async throws {
        if child { try await runChild(); return }
        if let diagnoseOnly {
            var logger = Logger(label: "bench")
            logger.logLevel = .warning
            let server = try await DatabaseTarget.resolve(dataDirectory: dataDir, logger: logger).configuration
            let client = PostgresClient(
                configuration: server.with(database: Self.database), options: .init(maxConnections: 2), logger: logger)
            let count = try await client.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(Self.table)")).scalar(Int.self)
            let batch = try await client.query(
                "SELECT coalesce((definition ->> 'batchSize')::int, 500) FROM cdp.syncs WHERE name = \(diagnoseOnly)"
            ).scalar(Int.self)
            say("date: \(Date().formatted(Date.ISO8601FormatStyle())); load average \(loadAverage())")
            try await diagnose(rows: count, syncName: diagnoseOnly, batchSize: batch, client: client, logger: logger)
            await client.shutdown()
            say("load average \(loadAverage())")
            return
        }
        try await runParent()
    }

    // MARK: - Parent: data, syncs, receiver, children, summary

    func runParent() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let started = ContinuousClock.now
        let batchSizes = webhookBatch.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !batchSizes.isEmpty, batchSizes.allSatisfy({ $0 > 0 }) else {
            throw ValidationError("--webhook-batch: positive numbers")
        }
        let sizes = (baselineRows > 0 && baselineRows != rows ? [baselineRows] : []) + [rows]

        let server = try await DatabaseTarget.resolve(dataDirectory: dataDir, logger: logger).configuration
        let files = try ProjectFiles.locate()
        let admin = try await PostgresConnection.connect(configuration: server.with(database: "postgres"), logger: logger)
        let version = try await admin.query("SHOW server_version").scalar(String.self)
        let settings = try await admin.query(
            """
            SELECT current_setting('shared_buffers'), current_setting('work_mem'), current_setting('max_wal_size'),
                   current_setting('synchronous_commit')
            """
        ).first!.decode((String, String, String, String).self)
        await admin.close()
        say("date: \(Date().formatted(Date.ISO8601FormatStyle()))")
        say(
            "machine: \(ProcessInfo.processInfo.activeProcessorCount) cores (nproc), \(cpuModel()), \(memory()); \(ProcessInfo.processInfo.operatingSystemVersionString); load average \(loadAverage())"
        )
        say(
            "server: PostgreSQL \(version) (shared_buffers \(settings.0), work_mem \(settings.1), max_wal_size \(settings.2), synchronous_commit \(settings.3))"
        )
        say(
            "sizes: \(sizes.map(String.init).joined(separator: ", ")) rows; webhook batch \(batchSizes.map(String.init).joined(separator: ", ")); file batch \(fileBatch); \(changedPercent)% changed; \(repeats) repeats"
        )

        let clock = ContinuousClock.now
        let configuration = try await freshDatabase(Self.database, on: server, files: files, logger: logger)
        let client = PostgresClient(configuration: configuration, options: .init(maxConnections: 4), logger: logger)
        let schema = try await client.query("SELECT max(version) FROM cdp.schema_migrations").scalar(Int.self)
        say("database \(Self.database): created and migrated in \(seconds(since: clock)) s (schema v\(schema))")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "tributary-syncs-bench-\(ProcessInfo.processInfo.processIdentifier)"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        let receiver = Receiver()
        let results = try await receiver.serve { base in
            say("receiver: \(base)/hook (Hummingbird, in the parent process; parses every body with JSONParser)")
            var results: [SizeResult] = []
            for size in sizes {
                results.append(
                    try await measureSize(
                        size, client: client, configuration: configuration, base: base, directory: directory,
                        batchSizes: batchSizes,
                        receiver: receiver, logger: logger))
            }
            return results
        }
        summarize(results)
        // The sync run last: its state is current (each child's UPDATEs leave the syncs run before it behind).
        if !noDiagnosis, let last = results.last, let sync = last.syncs.last, sync.destination == "webhook" {
            try await diagnose(rows: last.rows, syncName: sync.name, batchSize: sync.batchSize, client: client, logger: logger)
        }
        await client.shutdown()
        say("total: \(seconds(since: started)) s; load average \(loadAverage())")
    }

    struct SyncResult {
        var name: String
        var destination: String
        var batchSize: Int
        var child: ChildResult
        var checks: [String]
        var verified: Bool
    }

    struct SizeResult {
        var rows: Int
        var tableMB: Double
        var syncs: [SyncResult]
    }

    func measureSize(
        _ size: Int, client: PostgresClient, configuration: PostgresConfiguration, base: String, directory: String,
        batchSizes: [Int], receiver: Receiver, logger: Logger
    ) async throws -> SizeResult {
        say("\n== \(size) rows ==")
        var clock = ContinuousClock.now
        try await client.withConnection { db in
            try await db.execute(PostgresQuery(unsafeSQL: "DROP TABLE IF EXISTS \(Self.table)"))
            try await db.execute(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE TABLE \(Self.table) (
                            id             text PRIMARY KEY,
                            email          text NOT NULL,
                            first_name     text,
                            last_name      text,
                            plan           text NOT NULL,
                            country        text,
                            lifetime_value numeric(12, 2) NOT NULL,
                            orders         int NOT NULL,
                            created_at     timestamptz NOT NULL,
                            updated_at     timestamptz NOT NULL
                        )
                        """))
            try await db.execute("SELECT setseed(0.42)")
            try await db.execute(
                PostgresQuery(
                    unsafeSQL: """
                        INSERT INTO \(Self.table)
                        SELECT 'cus_' || lpad(g::text, 8, '0'),
                               'user' || g || '@' || (ARRAY['gmail.com','yahoo.com','outlook.com','icloud.com','hotmail.com','example.org'])[1 + floor(random() * 6)::int],
                               (ARRAY['Olivia','Liam','Emma','Noah','Ava','Elijah','Sophia','Mateo','Mia','Lucas','Amelia','Levi','Harper','Ezra',
                                      'Chloe','Hiro','Aisha','Lars','Zoë','Rafael'])[1 + floor(random() * 20)::int],
                               (ARRAY['Smith','García','Müller','Nguyen','Kowalski','Rossi','Dubois','Tanaka','Silva','Johnson','Okafor','Larsen'])[1 + floor(random() * 12)::int],
                               (ARRAY['free','free','free','starter','starter','pro','business','enterprise'])[1 + floor(random() * 8)::int],
                               (ARRAY['US','US','US','GB','DE','FR','CA','BR','IN','JP','AU','NL','ES','SE','MX'])[1 + floor(random() * 15)::int],
                               round((random() ^ 3 * 5000)::numeric, 2),
                               floor(random() ^ 2 * 60)::int,
                               timestamptz '2026-11-26 00:00:00+00' - interval '90 days' - random() * interval '1400 days',
                               timestamptz '2026-11-26 00:00:00+00' - random() * interval '90 days'
                        FROM generate_series(1, \(size)) AS g
                        """))
        }
        let insertSeconds = elapsed(since: clock)
        clock = .now
        try await client.execute(PostgresQuery(unsafeSQL: "VACUUM ANALYZE \(Self.table)"))
        let tableBytes = try await client.query(PostgresQuery(unsafeSQL: "SELECT pg_total_relation_size('\(Self.table)')"))
            .scalar(Int.self)
        let sample = try await client.query(
            PostgresQuery(unsafeSQL: "SELECT row_to_json(c)::text FROM \(Self.table) AS c ORDER BY id LIMIT 1")
        ).scalar(String.self)
        say(
            String(
                format: "source %@: %d rows inserted in %.1f s, VACUUM ANALYZE %.1f s, %.0f MB with its index; a row: %@",
                Self.table, size, insertSeconds, elapsed(since: clock), Double(tableBytes) / 1e6, sample))

        // The syncs of this size (apply removes the previous size's, and their state).
        var syncs: [(name: String, destination: String, batch: Int, json: String)] = []
        let fieldsJSON = "{" + Self.fields.map { "\"\($0.0)\": \"\($0.1)\"" }.joined(separator: ", ") + "}"
        // The file sync first, then the webhook syncs, the first --webhook-batch size last: each child's UPDATEs leave
        // the syncs run before it behind, and the diagnosis needs the last one current.
        let fileName = "file_\(size)"
        syncs.append(
            (
                fileName, "file", fileBatch,
                """
                {"name": "\(fileName)", "source": {"relation": "public.\(Self.table)"}, "primaryKey": ["id"], "fields": \(fieldsJSON),
                 "mode": "mirror", "destination": {"type": "file", "path": "\(directory)/", "format": "jsonl"}, "batchSize": \(fileBatch)}
                """
            ))
        for batch in batchSizes.reversed() {
            let name = "webhook_\(size)_b\(batch)"
            syncs.append(
                (
                    name, "webhook", batch,
                    """
                    {"name": "\(name)", "source": {"relation": "public.\(Self.table)"}, "primaryKey": ["id"], "fields": \(fieldsJSON),
                     "mode": "mirror", "destination": {"type": "webhook", "url": "\(base)/hook", "maxBatchSize": \(batch)},
                     "batchSize": \(batch)}
                    """
                ))
        }
        let store = SyncStore(client: client, logger: logger, registry: .standard())
        let document = "{\"syncs\": [" + syncs.map(\.json).joined(separator: ",\n") + "]}"
        clock = .now
        let definitions = try await store.load(Data(document.utf8))
        let changes = try await store.apply(definitions)
        try await client.execute("VACUUM ANALYZE cdp.sync_state")
        say(
            "syncs applied in \(seconds(since: clock)) s: "
                + changes.map { "\($0.name) (\($0.kind.rawValue))" }.joined(separator: ", "))
        say(
            "sync definition (webhook): "
                + syncs.last!.json.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " "))

        var results: [SyncResult] = []
        for sync in syncs {
            say("\n-- \(sync.name): \(sync.destination), batch \(sync.batch), child process; load average \(loadAverage()) --")
            let resultPath = "\(directory)/\(sync.name).result.json"
            let status = try await spawnChild([
                "--child", "--rows", String(size), "--changed-percent", String(changedPercent), "--repeats", String(repeats),
                "--connection", configuration.resolvedConnectionString, "--sync", sync.name, "--result-file", resultPath,
            ])
            guard status == 0 else { throw ValidationError("the child for \(sync.name) exited with status \(status)") }
            let childResult = try JSONDecoder().decode(ChildResult.self, from: Data(contentsOf: URL(fileURLWithPath: resultPath)))

            // Checks: what the destination got against what the runner reported.
            var checks: [String] = []
            var verified = true
            let expectedChanged = max(1, Int((Double(size) * changedPercent / 100).rounded()))
            for run in childResult.runs {
                let expectedSent = run.added + run.changed + run.removed
                let shape: Bool =
                    switch run.scenario {
                    case "initial": run.added == size && run.changed == 0 && run.removed == 0
                    case "changed": run.added == 0 && run.changed == expectedChanged && run.removed == 0
                    default: run.added == 0 && run.changed == 0 && run.removed == 0
                    }
                var ok = shape && run.status == "succeeded" && run.delivered == expectedSent
                var note =
                    "\(run.scenario) run \(run.runID): diff \(run.added)/\(run.changed)/\(run.removed) (added/changed/removed) \(shape ? "as expected" : "NOT AS EXPECTED"), delivered \(run.delivered)"
                if sync.destination == "webhook" {
                    let got = receiver.stats(run.runID)
                    ok =
                        ok && got.changes == run.delivered && got.distinctKeys == run.delivered && got.upserts == run.delivered
                        && got.badBodies == 0
                    note +=
                        "; receiver: \(got.requests) requests, \(got.changes) changes (\(got.upserts) upserts), \(got.distinctKeys) distinct keys, \(String(format: "%.1f", Double(got.bytes) / 1e6)) MB"
                } else {
                    let path = "\(directory)/\(sync.name)-\(run.runID).jsonl"
                    if FileManager.default.fileExists(atPath: path) {
                        let (lines, bytes, fieldCount) = try countLines(path)
                        ok = ok && lines == run.delivered && fieldCount == Self.fields.count
                        note +=
                            "; file: \(lines) lines, \(String(format: "%.1f", Double(bytes) / 1e6)) MB, \(fieldCount) fields in the first line"
                        try? FileManager.default.removeItem(atPath: path)
                    } else {
                        ok = ok && run.delivered == 0
                        note += "; file: none written"
                    }
                }
                verified = verified && ok
                checks.append((ok ? "ok: " : "FAILED: ") + note)
            }
            for line in checks { say("  check " + line) }
            say("  load average \(loadAverage())")
            results.append(
                SyncResult(
                    name: sync.name, destination: sync.destination, batchSize: sync.batch, child: childResult, checks: checks,
                    verified: verified))
        }
        return SizeResult(rows: size, tableMB: Double(tableBytes) / 1e6, syncs: results)
    }

    func spawnChild(_ arguments: [String]) async throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        process.arguments = arguments
        return try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
    }

    /// Lines and bytes of a JSON Lines file, read in chunks; and the number of fields in its first line.
    func countLines(_ path: String) throws -> (Int, Int, Int) {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var lines = 0, bytes = 0
        var first: [UInt8] = []
        while let chunk = try handle.read(upToCount: 4 << 20), !chunk.isEmpty {
            bytes += chunk.count
            if lines == 0 { first += chunk.prefix { $0 != UInt8(ascii: "\n") } }
            lines += chunk.reduce(0) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
        }
        var fieldCount = -1
        if let line = try? JSONParser.parse(first), case .object(let members)? = line["fields"] { fieldCount = members.count }
        return (lines, bytes, fieldCount)
    }

    // MARK: - Summary

    func summarize(_ sizes: [SizeResult]) {
        say("\n== summary ==")
        say(
            "per run: wall time around SyncRunner.run; rows sent; rows/s; phases (s): diff = run start to the destination's creation (definition, lock, run row, diff INSERT, ANALYZE, counts), read+commit = gaps between sends (page reads, JSON parsing, state commits), send, finish, final = the file's confirmation after finish, tail = run row update; peak RSS of the child during the run (RSS at its start)"
        )
        for size in sizes {
            for sync in size.syncs {
                say(
                    "\(sync.name) (\(size.rows) rows, \(sync.destination), batch \(sync.batchSize)): child peak RSS \(mb(sync.child.peakKB)) (\(mb(sync.child.startupKB)) after start-up)\(sync.verified ? "" : " — CHECKS FAILED")"
                )
                for run in sync.child.runs {
                    let sent = run.added + run.changed + run.removed
                    say(
                        String(
                            format:
                                "  %-9@ %7.2f s  %8d rows  %9@ rows/s  diff %6.2f  read+commit %6.2f  send %6.2f  finish %5.2f  final %5.2f  tail %5.2f  peak %@ (%@)%@",
                            run.scenario as NSString, run.wall, sent,
                            (sent > 0 ? String(format: "%.0f", Double(sent) / run.wall) : "-") as NSString,
                            run.diff, run.reads, run.send, run.finish, run.finalConfirm, run.tail,
                            (mb(run.peakKB)
                                + (run.finalPeakKB > 0
                                    ? " [to finish \(mb(run.sendingPeakKB)), final \(mb(run.finalPeakKB))]" : ""))
                                as NSString,
                            mb(run.rssBeforeKB) as NSString,
                            (run.update.map { String(format: "  (UPDATE before: %.2f s)", $0) } ?? "") as NSString))
                }
            }
        }
        guard let main = sizes.last else { return }
        say("\ntargets (\(main.rows) rows):")
        for sync in main.syncs {
            let changed = sync.child.runs.filter { $0.scenario == "changed" }.map(\.wall)
            let unchanged = sync.child.runs.filter { $0.scenario == "unchanged" }.map(\.wall)
            if let worst = unchanged.max() {
                say(
                    String(
                        format: "  %@: nothing changed %@ s (worst %.2f s) vs 2 s: %.2fx, %@", sync.name as NSString,
                        unchanged.map { String(format: "%.2f", $0) }.joined(separator: ", ") as NSString, worst, worst / 2,
                        (worst <= 2 ? "met" : "NOT met") as NSString))
            }
            if let worst = changed.max() {
                say(
                    String(
                        format: "  %@: %.0f%% changed %@ s (worst %.2f s) vs 5 s: %.2fx, %@", sync.name as NSString,
                        changedPercent,
                        changed.map { String(format: "%.2f", $0) }.joined(separator: ", ") as NSString, worst, worst / 5,
                        (worst <= 5 ? "met" : "NOT met") as NSString))
            }
        }
        if sizes.count > 1, let small = sizes.first {
            for sync in main.syncs {
                guard
                    let other = small.syncs.first(where: { $0.destination == sync.destination && $0.batchSize == sync.batchSize })
                else { continue }
                let ratio = Double(sync.child.peakKB) / Double(other.child.peakKB)
                say(
                    String(
                        format: "  peak RSS, %@: %@ at %d rows vs %@ at %d rows = %.2fx (target <= 1.2x: %@)",
                        sync.destination as NSString,
                        mb(sync.child.peakKB) as NSString, main.rows, mb(other.child.peakKB) as NSString, small.rows, ratio,
                        (ratio <= 1.2 ? "met" : "NOT met") as NSString))
            }
            let bigWorker = main.syncs.map(\.child.peakKB).max()!, smallWorker = small.syncs.map(\.child.peakKB).max()!
            say(
                String(
                    format: "  peak RSS, worst sync (one worker running these syncs): %@ vs %@ = %.2fx",
                    mb(bigWorker) as NSString,
                    mb(smallWorker) as NSString, Double(bigWorker) / Double(smallWorker)))
        }
        let failed = sizes.flatMap(\.syncs).filter { !$0.verified }.map(\.name)
        say(
            failed.isEmpty
                ? "  correctness checks: all passed" : "  correctness checks FAILED for: \(failed.joined(separator: ", "))")
    }

    // MARK: - Diagnosis: the diff SQL and the per-batch SQL of a 1% run

    /// EXPLAIN of the diff, timings of its parts and of rewritten forms, and the per-batch SQL of a 1% run, for the
    /// sync `syncName` whose delivered state must be current (`rows` rows in the source).
    func diagnose(rows: Int, syncName: String, batchSize: Int, client: PostgresClient, logger: Logger) async throws {
        let store = SyncStore(client: client, logger: logger, registry: .standard())
        guard let sync = try await store.current()[syncName] else { throw ValidationError("no sync \(syncName)") }
        let name = try SQLQuoting.literal(sync.name)
        let insert = try SyncDiff(sync).insert().inlined().sql
        let select = String(insert[insert.range(of: "\nSELECT ")!.lowerBound...])
        let keyed = try SyncDiff(sync).keyedSource().inlined().sql
        let payload = "jsonb_build_object(" + Self.fields.map { "'\($0.0)', s.\($0.1)" }.joined(separator: ", ") + ")"
        let pending = insert.contains("cdp.sync_pending")
        let alternativeMD5 = Self.alternativeDiffSQL(
            name, hash: Self.recordHash("src0"), stateHash: "hash", pendingHash: "p.hash", into: "pg_temp.tributary_sync_diff",
            pending: pending)
        let alternative64 = Self.alternativeDiffSQL(
            name, hash: "hash_record_extended(ROW(\(Self.columns("src0"))), 0)", stateHash: "hash64", pendingHash: "NULL::bigint",
            into: "pg_temp.bench_diff64", pending: pending)
        let sourcePayload = "jsonb_build_object(" + Self.fields.map { "'\($0.0)', src0.\($0.1)" }.joined(separator: ", ") + ")"
        let reorderedSame = Self.alternativeDiffSQL(
            name, hash: "md5(\(sourcePayload)::text)::uuid", stateHash: "hash_payload", pendingHash: "p.hash",
            into: "pg_temp.tributary_sync_diff",
            pending: pending, reordered: true)
        let reorderedMD5 = Self.alternativeDiffSQL(
            name, hash: Self.recordHash("src0"), stateHash: "hash", pendingHash: "p.hash", into: "pg_temp.tributary_sync_diff",
            pending: pending,
            reordered: true)
        let reordered64 = Self.alternativeDiffSQL(
            name, hash: "hash_record_extended(ROW(\(Self.columns("src0"))), 0)", stateHash: "hash64", pendingHash: "NULL::bigint",
            into: "pg_temp.bench_diff64", pending: pending, reordered: true)
        say("\n== diagnosis (\(rows) rows, sync \(sync.name)) ==")
        say("diff SQL (SyncDiff.insert(), values inlined):\n\(insert)")

        // The runner's diff table (SyncDiff.createSQL is internal): the INSERT's columns, typed by its SELECT.
        let header = insert.prefix { $0 != "\n" }
        let columns = header[header.index(after: header.firstIndex(of: "(")!)..<header.lastIndex(of: ")")!]
        let diffTable = """
            CREATE TEMP TABLE tributary_sync_diff AS SELECT * FROM (\(select)) AS x (\(columns)) LIMIT 0;
            ALTER TABLE pg_temp.tributary_sync_diff ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ADD UNIQUE (key);
            CREATE TEMP TABLE bench_diff64 (LIKE pg_temp.tributary_sync_diff INCLUDING ALL);
            ALTER TABLE pg_temp.bench_diff64 ALTER COLUMN hash TYPE bigint USING NULL
            """ + (columns.contains("pending_hash") ? ", ALTER COLUMN pending_hash TYPE bigint USING NULL" : "")
        try await client.withConnection { db in
            for statement in diffTable.components(separatedBy: ";\n") {
                try await db.execute(PostgresQuery(unsafeSQL: statement))
            }
            try await db.execute("SET jit = off")
            let stateRows = try await db.query("SELECT count(*) FROM cdp.sync_state WHERE sync = \(sync.name)").scalar(Int.self)
            let stateBytes = try await db.query("SELECT pg_total_relation_size('cdp.sync_state')").scalar(Int.self)
            let allState = try await db.query("SELECT count(*) FROM cdp.sync_state").scalar(Int.self)
            say(
                String(
                    format: "cdp.sync_state: %d rows of this sync, %d in all (the syncs of this size), %.0f MB with its index",
                    stateRows, allState, Double(stateBytes) / 1e6))

            func explain(_ sql: String, _ label: String, workMem: String = "64MB") async throws {
                try await db.execute("TRUNCATE pg_temp.tributary_sync_diff, pg_temp.bench_diff64 RESTART IDENTITY")
                say("EXPLAIN (ANALYZE, BUFFERS) of \(label) (jit off, work_mem \(workMem)):")
                try await db.execute(PostgresQuery(unsafeSQL: "SET work_mem = '\(workMem)'"))
                for line in try await db.query(PostgresQuery(unsafeSQL: "EXPLAIN (ANALYZE, BUFFERS) \(sql)")).map({
                    try $0.decode(String.self)
                }) {
                    say("  " + line)
                }
            }
            /// Each statement `rounds` times, interleaved; the best time of each, in seconds.
            func measure(_ items: [(label: String, sql: String, workMem: String)], rounds: Int = 3) async throws -> [Double] {
                var best = Array(repeating: Double.infinity, count: items.count)
                for _ in 0..<rounds {
                    for (index, item) in items.enumerated() {
                        try await db.execute("TRUNCATE pg_temp.tributary_sync_diff, pg_temp.bench_diff64 RESTART IDENTITY")
                        try await db.execute(PostgresQuery(unsafeSQL: "SET work_mem = '\(item.workMem)'"))
                        let clock = ContinuousClock.now
                        _ = try await db.query(PostgresQuery(unsafeSQL: item.sql))
                        best[index] = min(best[index], elapsed(since: clock))
                    }
                }
                try await db.execute("SET work_mem = '64MB'")
                for (item, seconds) in zip(items, best) {
                    say(String(format: "  %7.3f s  %@ (work_mem %@)", seconds, item.label as NSString, item.workMem as NSString))
                }
                return best
            }

            // The alternative state: a copy of this sync's state with two other hashes of each (unchanged) row.
            var clock = ContinuousClock.now
            try await db.execute("DROP TABLE IF EXISTS bench_alt_state")
            try await db.execute(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE UNLOGGED TABLE bench_alt_state AS
                        SELECT st.sync, st.key, st.key_object, st.payload, \(Self.recordHash("s")) AS hash,
                               hash_record_extended(ROW(\(Self.columns("s"))), 0) AS hash64, st.hash AS hash_payload, st.removed, st.run_id, st.delivered_at
                        FROM cdp.sync_state AS st JOIN \(Self.table) AS s ON st.key = jsonb_build_array(s.id)::text
                        WHERE st.sync = \(name)
                        """))
            try await db.execute("ALTER TABLE bench_alt_state ADD PRIMARY KEY (sync, key)")
            try await db.execute("VACUUM ANALYZE bench_alt_state")
            say(
                String(
                    format:
                        "alternative state (a copy of this sync's state; hash = md5 of the mapped columns' record text, hash64 = hash_record_extended of them): built in %.1f s",
                    elapsed(since: clock)))
            say("alternative diff SQL (md5 form; the 64-bit form differs only in the hash):\n\(alternativeMD5)")
            if pending { say("alternative diff SQL, joins reordered (64-bit hash form):\n\(reordered64)") }

            // 1. Nothing changed.
            try await explain(insert, "the diff INSERT, nothing changed (as the runner runs it)")
            try await explain(alternativeMD5, "the alternative diff INSERT (md5 of the record text), nothing changed")
            if pending {
                try await explain(
                    reordered64, "the alternative diff INSERT, joins reordered, hash_record_extended, nothing changed")
            }
            say("nothing changed: parts and forms of the diff, best of 2, interleaved (jit off):")
            let source = "FROM \(Self.table) AS s WHERE s.id IS NOT NULL"
            let items: [(label: String, sql: String, workMem: String)] =
                [
                    ("source: scan only", "SELECT count(*) \(source) AND s.updated_at IS NOT NULL", "64MB"),
                    (
                        "source: key (jsonb_build_array(id)::text)",
                        "SELECT count(*) \(source) AND jsonb_build_array(s.id)::text IS NOT NULL", "64MB"
                    ),
                    (
                        "source: key + payload jsonb",
                        "SELECT count(*) \(source) AND jsonb_build_array(s.id)::text IS NOT NULL AND \(payload) IS NOT NULL",
                        "64MB"
                    ),
                    (
                        "source: key + md5(payload::text) (what the comparison needs)",
                        "SELECT count(*) \(source) AND jsonb_build_array(s.id)::text IS NOT NULL AND md5(\(payload)::text) IS NOT NULL",
                        "64MB"
                    ),
                    (
                        "source: key, key_object, payload, hash (the keyed source, every column)",
                        "SELECT count(*) FROM (\(keyed)) AS k WHERE k.key IS NOT NULL AND k.key_object IS NOT NULL AND k.payload IS NOT NULL AND k.hash IS NOT NULL",
                        "64MB"
                    ),
                    (
                        "source: key + md5 of the record text (no jsonb)",
                        "SELECT count(*) \(source) AND jsonb_build_array(s.id)::text IS NOT NULL AND \(Self.recordHash("s")) IS NOT NULL",
                        "64MB"
                    ),
                    (
                        "source: key + hash_record_extended (64 bits)",
                        "SELECT count(*) \(source) AND jsonb_build_array(s.id)::text IS NOT NULL AND hash_record_extended(ROW(\(Self.columns("s"))), 0) IS NOT NULL",
                        "64MB"
                    ),
                    (
                        "state: key, key_object, payload, hash, removed, run_id",
                        "SELECT count(*) FROM cdp.sync_state WHERE sync = \(name) AND payload IS NOT NULL AND key_object IS NOT NULL AND run_id IS NOT NULL",
                        "64MB"
                    ),
                    (
                        "state: key, hash, removed",
                        "SELECT count(*) FROM cdp.sync_state WHERE sync = \(name) AND key IS NOT NULL AND hash IS NOT NULL AND NOT removed",
                        "64MB"
                    ),
                    ("current diff SELECT (no INSERT)", "SELECT count(*) FROM (\(select)) AS d", "64MB"),
                    ("current diff INSERT (as the runner)", insert, "64MB"),
                    ("current diff INSERT", insert, "256MB"),
                    ("alternative diff INSERT, hash_record_extended", alternative64, "64MB"),
                ]
                + (pending
                    ? [
                        ("reordered alternative INSERT, the same hash as now (md5 of the payload's text)", reorderedSame, "64MB"),
                        ("reordered alternative INSERT, md5 of the record text", reorderedMD5, "64MB"),
                        ("reordered alternative INSERT, hash_record_extended", reordered64, "64MB"),
                    ] : [])
            _ = try await measure(items, rounds: 2)

            // 2. One percent changed, replayed in a transaction that is rolled back.
            let changedRows = max(1, Int((Double(rows) * changedPercent / 100).rounded()))
            struct Rollback: Error {}
            do {
                try await db.withTransaction { tx in
                    clock = ContinuousClock.now
                    try await tx.execute(
                        PostgresQuery(
                            unsafeSQL: """
                                UPDATE \(Self.table) SET lifetime_value = lifetime_value + 1, orders = orders + 1, updated_at = now()
                                WHERE id IN (SELECT id FROM \(Self.table) ORDER BY random() LIMIT \(changedRows))
                                """))
                    say(
                        String(
                            format:
                                "\n%.0f%% changed, replayed in a transaction rolled back at the end: UPDATE of %d rows %.2f s",
                            changedPercent, changedRows, elapsed(since: clock)))
                    try await explain(insert, "the diff INSERT, \(changedRows) rows changed")
                    _ = try await measure(
                        [
                            ("current diff INSERT (as the runner)", insert, "64MB"),
                            ("alternative diff INSERT, hash_record_extended", alternative64, "64MB"),
                        ]
                            + (pending
                                ? [
                                    (
                                        "reordered alternative INSERT, the same hash as now (md5 of the payload's text)",
                                        reorderedSame, "64MB"
                                    ),
                                    ("reordered alternative INSERT, md5 of the record text", reorderedMD5, "64MB"),
                                    ("reordered alternative INSERT, hash_record_extended", reordered64, "64MB"),
                                ] : []),
                        rounds: 2)
                    let alternativeCount = try await tx.query("SELECT count(*) FROM pg_temp.bench_diff64").scalar(Int.self)
                    let alternativeKinds =
                        try await tx.query(
                            "SELECT string_agg(kind || ' ' || n, ', ') FROM (SELECT kind, count(*) AS n FROM pg_temp.bench_diff64 GROUP BY kind) AS k"
                        ).scalar(String?.self) ?? "none"
                    try await tx.execute("TRUNCATE pg_temp.tributary_sync_diff RESTART IDENTITY")
                    try await tx.execute("SET work_mem = '64MB'")
                    try await tx.execute(PostgresQuery(unsafeSQL: insert))
                    clock = .now
                    try await tx.execute("ANALYZE pg_temp.tributary_sync_diff")
                    let count = try await tx.query("SELECT count(*) FROM pg_temp.tributary_sync_diff").scalar(Int.self)
                    let kinds =
                        try await tx.query(
                            "SELECT string_agg(kind || ' ' || n, ', ') FROM (SELECT kind, count(*) AS n FROM pg_temp.tributary_sync_diff GROUP BY kind) AS k"
                        ).scalar(String?.self) ?? "none"
                    say("diff rows by kind: \(kinds); the last alternative's: \(alternativeKinds)")
                    say(
                        String(
                            format: "diff rows: %d (alternative: %d); ANALYZE and count of the diff table: %.3f s", count,
                            alternativeCount, elapsed(since: clock)))
                    var last = 0, batches = 0
                    var readSeconds = 0.0, commitSeconds = 0.0
                    while true {
                        clock = .now
                        let rows = try await tx.query(
                            """
                            SELECT n, kind, key, key_object::text, payload::text, hash::text, previous_run FROM pg_temp.tributary_sync_diff
                            WHERE n > \(last) ORDER BY n LIMIT \(batchSize)
                            """)
                        readSeconds += elapsed(since: clock)
                        if rows.isEmpty { break }
                        let numbers = try rows.map { try $0[0].decode(Int.self) }
                        last = numbers.last!
                        batches += 1
                        clock = .now
                        if pending {
                            // SyncRunner.markPending, before the batch is sent (fixed idempotency keys here).
                            try await tx.execute(
                                """
                                INSERT INTO cdp.sync_pending AS p (sync, key, key_object, payload, hash, operation, idempotency_key, run_id)
                                SELECT \(sync.name), d.key, d.key_object, d.payload, d.hash, 'upsert', md5(d.key), -1
                                FROM pg_temp.tributary_sync_diff AS d WHERE d.n = ANY(\(numbers)::bigint[])
                                ON CONFLICT (sync, key) DO UPDATE SET key_object = excluded.key_object, payload = excluded.payload, hash = excluded.hash,
                                    operation = excluded.operation, idempotency_key = excluded.idempotency_key, run_id = excluded.run_id, sent_at = now()
                                """)
                        }
                        // SyncRunner.confirm, after the destination confirmed the batch.
                        try await tx.execute(
                            """
                            WITH d AS (SELECT * FROM pg_temp.tributary_sync_diff WHERE n = ANY(\(numbers)::bigint[])),
                            saved AS (
                                INSERT INTO cdp.sync_state AS s (sync, key, key_object, payload, hash, removed, run_id)
                                SELECT \(sync.name), key, key_object, payload, hash, kind = 'removed', -1 FROM d
                                ON CONFLICT (sync, key) DO UPDATE SET key_object = excluded.key_object, payload = excluded.payload,
                                    hash = excluded.hash, removed = excluded.removed, run_id = excluded.run_id, delivered_at = now()
                                RETURNING 1
                            ),
                            settled AS (DELETE FROM cdp.sync_pending AS p USING d WHERE p.sync = \(sync.name) AND p.key = d.key AND \(pending) RETURNING 1)
                            DELETE FROM cdp.sync_errors AS e USING d WHERE e.sync = \(sync.name) AND e.key = d.key
                            """)
                        commitSeconds += elapsed(since: clock)
                    }
                    say(
                        String(
                            format:
                                "page reads (%d batches of %d): %.3f s; state commits (the runner's pending and confirm statements per batch, as of commit c67ef9a; one transaction here, so without the commits' fsyncs): %.3f s",
                            batches, batchSize, readSeconds, commitSeconds))
                    throw Rollback()
                }
            } catch is Rollback {}
            try await db.execute("DROP TABLE IF EXISTS bench_alt_state")
        }
    }

    /// The mapped columns of `alias`, in the fields' order.
    static func columns(_ alias: String) -> String { fields.map { "\(alias).\($0.1)" }.joined(separator: ", ") }

    /// A hash of the mapped columns without building jsonb: md5 of the record's text.
    static func recordHash(_ alias: String) -> String { "md5(ROW(\(columns(alias)))::text)::uuid" }

    /// The diff as it could be written: the source carries its key, a hash of the mapped columns and the columns
    /// themselves through the join; the state side is only key, hash, removed and run_id (and the pending change's
    /// hash, operation and key); the jsonb key object and payload are built only for the rows that differ (read back
    /// from the state or the pending change for removed rows). Same kinds, keys and hashes as SyncDiff's.
    ///
    /// `hash` is an expression over `src0` (the source row), `stateHash` the column of `bench_alt_state` it is
    /// compared with, `pendingHash` the pending change's (an expression over `p`). `reordered`: the source is joined
    /// to the state on the plain key (a hash join, the narrow state hashed) and the result to the pending changes
    /// (few), instead of to `state FULL JOIN pending` on `coalesce(st.key, p.key)` (which makes the planner sort both
    /// sides for a merge join).
    static func alternativeDiffSQL(
        _ name: String, hash: String, stateHash: String, pendingHash: String, into target: String, pending: Bool,
        reordered: Bool = false
    ) -> String {
        let payload = "jsonb_build_object(" + fields.map { "'\($0.0)', src.\($0.1)" }.joined(separator: ", ") + ")"
        func readBack(_ column: String, key: String) -> String {
            "coalesce((SELECT x.\(column) FROM bench_alt_state AS x WHERE x.sync = \(name) AND x.key = \(key))"
                + (pending ? ", (SELECT y.\(column) FROM cdp.sync_pending AS y WHERE y.sync = \(name) AND y.key = \(key)))" : ")")
        }
        let source = """
            SELECT jsonb_build_array(src0.id)::text AS key, \(hash) AS hash, src0.id, \(columns("src0"))
                FROM \(table) AS src0 WHERE src0.id IS NOT NULL
            """
        if reordered && pending {
            return """
                INSERT INTO \(target) (kind, key, key_object, payload, hash, previous_run, pending_hash, pending_operation, pending_key)
                SELECT CASE WHEN src.key IS NULL THEN 'removed' WHEN st.key IS NULL OR st.removed THEN 'added' ELSE 'changed' END,
                       coalesce(src.key, st.key, p.key),
                       CASE WHEN src.key IS NULL THEN \(readBack("key_object", key: "coalesce(st.key, p.key)")) ELSE jsonb_build_object('id', src.id) END,
                       CASE WHEN src.key IS NULL THEN \(readBack("payload", key: "coalesce(st.key, p.key)")) ELSE \(payload) END,
                       coalesce(src.hash, st.hash, \(pendingHash)), coalesce(st.run_id, 0), \(pendingHash), p.operation, p.idempotency_key
                FROM (
                    \(source)
                ) AS src
                FULL JOIN (SELECT key, \(stateHash) AS hash, removed, run_id FROM bench_alt_state WHERE sync = \(name)) AS st ON st.key = src.key
                FULL JOIN (SELECT key, hash, operation, idempotency_key FROM cdp.sync_pending WHERE sync = \(name)) AS p
                    ON p.key = coalesce(src.key, st.key)
                WHERE (src.key IS NULL OR st.key IS NULL OR st.removed OR st.hash IS DISTINCT FROM src.hash OR p.key IS NOT NULL)
                  AND (src.key IS NOT NULL OR NOT coalesce(st.removed, true) OR p.key IS NOT NULL)
                """
        }
        let state =
            pending
            ? """
                SELECT coalesce(st.key, p.key) AS key, st.hash, coalesce(st.removed, true) AS removed, st.run_id,
                       p.key IS NOT NULL AS pending, \(pendingHash) AS pending_hash, p.operation AS pending_operation, p.idempotency_key AS pending_key
                FROM (SELECT key, \(stateHash) AS hash, removed, run_id FROM bench_alt_state WHERE sync = \(name)) AS st
                FULL JOIN (SELECT key, hash, operation, idempotency_key FROM cdp.sync_pending WHERE sync = \(name)) AS p ON p.key = st.key
            """
            : """
                SELECT key, \(stateHash) AS hash, removed, run_id, false AS pending FROM bench_alt_state WHERE sync = \(name)
            """
        return """
            INSERT INTO \(target) (kind, key, key_object, payload, hash, previous_run\(pending ? ", pending_hash, pending_operation, pending_key" : ""))
            SELECT CASE WHEN src.key IS NULL THEN 'removed' WHEN k.key IS NULL OR k.removed THEN 'added' ELSE 'changed' END,
                   coalesce(src.key, k.key),
                   CASE WHEN src.key IS NULL THEN \(readBack("key_object", key: "k.key")) ELSE jsonb_build_object('id', src.id) END,
                   CASE WHEN src.key IS NULL THEN \(readBack("payload", key: "k.key")) ELSE \(payload) END,
                   coalesce(src.hash, k.hash\(pending ? ", k.pending_hash" : "")), coalesce(k.run_id, 0)\(pending ? ", k.pending_hash, k.pending_operation, k.pending_key" : "")
            FROM (
                \(source)
            ) AS src
            FULL JOIN (
            \(state)
            ) AS k ON k.key = src.key
            WHERE (src.key IS NULL OR k.key IS NULL OR k.removed OR k.hash IS DISTINCT FROM src.hash OR k.pending)
              AND (src.key IS NOT NULL OR NOT k.removed OR k.pending)
            """
    }

    // MARK: - Child: one sync's runs

    func runChild() async throws {
        guard let connection, let sync, let resultFile else {
            throw ValidationError("--child needs --connection, --sync and --result-file")
        }
        var logger = Logger(label: "bench-child")
        logger.logLevel = .warning
        let startupKB = memoryStatus().hwm
        let client = PostgresClient(
            configuration: try PostgresConfiguration(connectionString: connection), options: .init(maxConnections: 2),
            logger: logger)
        let phases = PhaseLog()
        let standard = DestinationRegistry.standard()
        var registry = DestinationRegistry()
        registry.register("file", validate: FileDestination.validate) { TimedDestination(try await standard.make($0), phases) }
        registry.register("webhook", validate: WebhookDestination.validate) {
            TimedDestination(try await standard.make($0), phases)
        }
        let runner = SyncRunner(client: client, logger: logger, registry: registry)

        var result = ChildResult(sync: sync, startupKB: startupKB, peakKB: startupKB, runs: [])
        let scenarios = ["initial"] + Array(repeating: ["changed", "unchanged"], count: repeats).flatMap { $0 }
        let changedRows = max(1, Int((Double(rows) * changedPercent / 100).rounded()))
        for scenario in scenarios {
            var update: Double?
            if scenario == "changed" {
                let clock = ContinuousClock.now
                try await client.execute(
                    PostgresQuery(
                        unsafeSQL: """
                            UPDATE \(Self.table) SET lifetime_value = lifetime_value + 1, orders = orders + 1, updated_at = now()
                            WHERE id IN (SELECT id FROM \(Self.table) ORDER BY random() LIMIT \(changedRows))
                            """))
                update = elapsed(since: clock)
            }
            let before = memoryStatus()
            result.peakKB = max(result.peakKB, before.hwm)
            resetPeak()
            phases.reset()
            let clock = ContinuousClock.now
            let report = try await runner.run(sync)
            let end = ContinuousClock.now
            let peak = max(memoryStatus().hwm, phases.peakBeforeFinalKB)
            let finalPeak = phases.peakFinalKB
            result.peakKB = max(result.peakKB, peak)
            let wall = Double((end - clock).components.attoseconds) / 1e18 + Double((end - clock).components.seconds)
            let split = phases.breakdown(start: clock, end: end)
            let run = RunResult(
                scenario: scenario, runID: report.runID, status: report.status.rawValue, added: report.added,
                changed: report.changed,
                removed: report.removed, delivered: report.delivered, rejected: report.rejected, failed: report.failed,
                batches: report.batches, attempts: report.attempts, error: report.error, wall: wall,
                reported: Double(report.duration.components.seconds) + Double(report.duration.components.attoseconds) / 1e18,
                update: update, diff: split.diff, reads: split.reads, send: split.send, finish: split.finish,
                finalConfirm: split.finalConfirm, tail: split.tail, rssBeforeKB: before.rss, peakKB: peak,
                sendingPeakKB: phases.peakBeforeFinalKB, finalPeakKB: finalPeak)
            result.runs.append(run)
            let sent = report.added + report.changed + report.removed
            say(
                String(
                    format:
                        "  %@ %@: %.2f s, %d rows sent (%@ rows/s); report: %@ run %lld, added %d, changed %d, removed %d, delivered %d, rejected %d, failed %d, %d batches, %d attempts, %.2f s%@; phases: diff %.2f, read+commit %.2f, send %.2f, finish %.2f, final %.2f, tail %.2f; peak RSS %@ (%@ at start)%@",
                    sync as NSString, scenario as NSString, wall, sent,
                    (sent > 0 ? String(format: "%.0f", Double(sent) / wall) : "-") as NSString,
                    report.status.rawValue as NSString, report.runID, report.added, report.changed, report.removed,
                    report.delivered,
                    report.rejected, report.failed, report.batches, report.attempts, run.reported,
                    (report.error.map { " error: \($0)" } ?? "") as NSString, split.diff, split.reads, split.send, split.finish,
                    split.finalConfirm, split.tail,
                    (mb(peak)
                        + (finalPeak > 0
                            ? "; up to finish \(mb(phases.peakBeforeFinalKB)), final confirmation \(mb(finalPeak))" : ""))
                        as NSString, mb(before.rss) as NSString,
                    (update.map { String(format: "; UPDATE of %d rows before it %.2f s", changedRows, $0) } ?? "") as NSString))
        }
        await client.shutdown()
        result.peakKB = max(result.peakKB, memoryStatus().hwm)
        try JSONEncoder().encode(result).write(to: URL(fileURLWithPath: resultFile))
    }
}

// MARK: - Child results

struct RunResult: Codable {
    var scenario: String
    var runID: Int64
    var status: String
    var added: Int, changed: Int, removed: Int, delivered: Int, rejected: Int, failed: Int, batches: Int, attempts: Int
    var error: String?
    /// Seconds around `SyncRunner.run`, and as the runner reported it.
    var wall: Double, reported: Double
    /// Seconds of the UPDATE before a 'changed' run.
    var update: Double?
    var diff: Double, reads: Double, send: Double, finish: Double, finalConfirm: Double, tail: Double
    var rssBeforeKB: Int, peakKB: Int
    /// Peak RSS up to the end of `finish()`, and during the final confirmation after it (0: not measured).
    var sendingPeakKB: Int, finalPeakKB: Int
}

struct ChildResult: Codable {
    var sync: String
    var startupKB: Int
    /// The whole child's peak RSS (every run's peak and the start-up's).
    var peakKB: Int
    var runs: [RunResult]
}

// MARK: - Phases of a run, seen from the destination

/// Times of what the runner asks of the destination, for one run at a time.
final class PhaseLog: @unchecked Sendable {
    enum Event { case made, sendStart, sendEnd, finishStart, finishEnd, closed }
    private let lock = NSLock()
    private var events: [(Event, ContinuousClock.Instant)] = []
    /// Peak RSS (kB) from the start of the run to the end of `finish()`, and from there to `close()` (a file run's
    /// final confirmation); 0 when the run did not get there.
    private(set) var peakBeforeFinalKB = 0, peakFinalKB = 0

    /// At the end of `finish()`: notes the peak so far and resets it.
    func finishedSending() {
        let peak = memoryStatus().hwm
        resetPeak()
        lock.withLock { peakBeforeFinalKB = peak }
    }

    /// At `close()`: notes the peak since `finishedSending()`.
    func closing() {
        let peak = memoryStatus().hwm
        lock.withLock { if peakBeforeFinalKB > 0 { peakFinalKB = peak } }
    }

    func mark(_ event: Event) {
        let now = ContinuousClock.now
        lock.withLock { events.append((event, now)) }
    }

    func reset() {
        lock.withLock {
            events.removeAll()
            peakBeforeFinalKB = 0
            peakFinalKB = 0
        }
    }

    struct Breakdown { var diff = 0.0, reads = 0.0, send = 0.0, finish = 0.0, finalConfirm = 0.0, tail = 0.0 }

    func breakdown(start: ContinuousClock.Instant, end: ContinuousClock.Instant) -> Breakdown {
        let events = lock.withLock { self.events }
        func s(_ duration: Duration) -> Double {
            Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }
        var split = Breakdown()
        guard let made = events.first(where: { $0.0 == .made }) else {
            split.diff = s(end - start)
            return split
        }
        split.diff = s(made.1 - start)
        var last = made.1
        var finished = false
        for (event, time) in events.dropFirst() {
            switch event {
            case .made: break
            case .sendStart, .finishStart: split.reads += s(time - last)
            case .sendEnd: split.send += s(time - last)
            case .finishEnd: split.finish += s(time - last); finished = true
            case .closed: if finished { split.finalConfirm += s(time - last) } else { split.reads += s(time - last) }
            }
            last = time
        }
        split.tail = s(end - last)
        return split
    }
}

/// A destination that notes when the runner creates it, sends to it, finishes and closes it.
struct TimedDestination: Destination {
    let inner: any Destination
    let log: PhaseLog

    init(_ inner: any Destination, _ log: PhaseLog) {
        self.inner = inner
        self.log = log
        log.mark(.made)
    }

    var maxBatchSize: Int { inner.maxBatchSize }
    var confirmsAtFinish: Bool { inner.confirmsAtFinish }

    func send(_ batch: [SyncChange]) async throws -> [ChangeResult] {
        log.mark(.sendStart)
        defer { log.mark(.sendEnd) }
        return try await inner.send(batch)
    }

    func finish() async throws {
        log.mark(.finishStart)
        defer {
            log.mark(.finishEnd)
            log.finishedSending()
        }
        try await inner.finish()
    }

    func close() async {
        log.closing()
        await inner.close()
        log.mark(.closed)
    }
}

// MARK: - The webhook receiver (parent process)

/// A local HTTP server that parses every webhook body and counts, per run, requests, changes, upserts and distinct keys.
final class Receiver: @unchecked Sendable {
    struct Stats: Sendable {
        var requests = 0, changes = 0, upserts = 0, bytes = 0, badBodies = 0
        var keys = Set<String>()
        var distinctKeys: Int { keys.count }
    }

    private let lock = NSLock()
    private var runs: [Int64: Stats] = [:]
    private var bad = 0

    func stats(_ runID: Int64) -> Stats {
        lock.withLock {
            var stats = runs[runID] ?? Stats()
            stats.badBodies = bad
            // The keys are only needed for the count: free them.
            runs[runID]?.keys = []
            return stats
        }
    }

    /// Parses a body; false if it is not a webhook batch.
    func record(_ body: [UInt8]) -> Bool {
        guard let document = try? JSONParser.parse(body), case .number(let text)? = document["run_id"], let runID = Int64(text),
            case .array(let changes)? = document["changes"]
        else {
            lock.withLock { bad += 1 }
            return false
        }
        var keys: [String] = []
        keys.reserveCapacity(changes.count)
        var upserts = 0
        for change in changes {
            if case .string("upsert")? = change["op"] { upserts += 1 }
            if case .string(let id)? = change["key"]?["id"] { keys.append(id) }
        }
        lock.withLock {
            var stats = runs[runID] ?? Stats()
            stats.requests += 1
            stats.changes += changes.count
            stats.upserts += upserts
            stats.bytes += body.count
            stats.keys.formUnion(keys)
            runs[runID] = stats
        }
        return true
    }

    /// Runs the server on 127.0.0.1 (a free port, ``LocalReceiver``) while `body` runs with its base URL.
    func serve<T>(_ body: (String) async throws -> T) async throws -> T {
        try await LocalReceiver.serve(
            handler: { [self] request in
                let ok = record(request.body)
                return LocalReceiver.Answer(status: ok ? 200 : 400, body: ok ? "{}" : "{\"error\": \"not a webhook batch\"}")
            }, body)
    }
}

// MARK: - Helpers

/// VmRSS and VmHWM of this process, in kB.
func memoryStatus() -> (rss: Int, hwm: Int) {
    let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    func value(_ key: String) -> Int {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return 0 }
        return Int(line.split(separator: " ").dropFirst().first { Int($0) != nil } ?? "") ?? 0
    }
    return (value("VmRSS:"), value("VmHWM:"))
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/PID/clear_refs`).
func resetPeak() {
    guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return }
    try? handle.write(contentsOf: Data("5".utf8))
    try? handle.close()
}

func mb(_ kilobytes: Int) -> String { String(format: "%.1f MB", Double(kilobytes) / 1024) }

/// The 1, 5 and 15-minute load averages (another process sharing the cores shows here).
func loadAverage() -> String {
    ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").prefix(3).joined(separator: " ")
}

func cpuModel() -> String {
    let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let line = text.split(separator: "\n").first { $0.hasPrefix("model name") }
    return line.map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) }
        ?? "unknown CPU"
}

func memory() -> String {
    let text = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }),
        let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return "memory unknown" }
    return String(format: "%.0f GiB", kb / 1024 / 1024)
}
