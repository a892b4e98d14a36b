import Crypto
import Foundation
import LocalReceiver
import Postgres
import PostgresTesting
import Testing
@testable import TributaryDestinations
@testable import TributaryGovernance
@testable import TributaryModel
@testable import TributaryService
@testable import TributarySyncs

/// Shared set-up for sync tests: a migrated database, a source table, syncs applied from JSON.
enum SyncFixture {
    static func migrated(_ client: PostgresClient) async throws {
        try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
    }

    static let registry = DestinationRegistry.standard()

    /// A runner that retries quickly.
    static func runner(_ client: PostgresClient, registry: DestinationRegistry = registry) -> SyncRunner {
        SyncRunner(
            client: client, logger: TestDatabase.logger, registry: registry,
            retry: RetryPolicy(base: .milliseconds(5), cap: .milliseconds(50), maxRetryAfter: .milliseconds(200)))
    }

    static func apply(_ json: String, _ client: PostgresClient, registry: DestinationRegistry = registry) async throws {
        let store = SyncStore(client: client, logger: TestDatabase.logger, registry: registry)
        try await store.apply(try await store.load(Data(json.utf8)))
    }

    /// `public.customers (id text PRIMARY KEY, email text, plan text, score int)`.
    static func customers(_ client: PostgresClient, _ rows: [(String, String, String, Int)]) async throws {
        try await client.execute(
            "CREATE TABLE IF NOT EXISTS public.customers (id text PRIMARY KEY, email text, plan text, score int)")
        for (id, email, plan, score) in rows {
            try await client.execute(
                """
                INSERT INTO public.customers VALUES (\(id), \(email), \(plan), \(score))
                ON CONFLICT (id) DO UPDATE SET email = excluded.email, plan = excluded.plan, score = excluded.score
                """)
        }
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sync-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func lines(_ url: URL) throws -> [JSONValue] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { try JSONParser.parse(Array($0.utf8)) }
    }
}

@Suite struct SyncRunnerTests {
    typealias F = SyncFixture

    @Test func mirrorToFilesSendsOnlyWhatChanged() async throws {
        let directory = try F.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await F.customers(client, [("c1", "a@example.com", "pro", 1), ("c2", "b@example.com", "free", 2)])
            try await F.apply(
                """
                {"syncs": [{"name": "customers_file", "source": {"relation": "public.customers"}, "primaryKey": ["id"],
                  "fields": {"email": "email", "plan": "plan"}, "mode": "mirror",
                  "destination": {"type": "file", "path": "\(directory.path)/{sync}-{run}.jsonl"}}]}
                """, client)
            let runner = F.runner(client)
            let first = try await runner.run("customers_file")
            #expect(first.status == .succeeded && first.added == 2 && first.delivered == 2, "\(first)")
            let firstFile = directory.appendingPathComponent("customers_file-\(first.runID).jsonl")
            let lines = try F.lines(firstFile)
            #expect(lines.count == 2)
            #expect(lines[0]["op"] == .string("upsert") && lines[0]["key"] == .object([("id", .string("c1"))]))
            #expect(lines[0]["fields"]?["email"] == .string("a@example.com") && lines[0]["fields"]?["plan"] == .string("pro"))
            #expect(lines[0]["fields"]?.objectKeys.count == 2)

            // Nothing changed: nothing sent, no file. The score is not mapped, so changing it changes nothing either.
            try await client.execute("UPDATE public.customers SET score = 9")
            let idle = try await runner.run("customers_file")
            #expect(idle.status == .succeeded && idle.added + idle.changed + idle.removed == 0 && idle.batches == 0)
            #expect(
                !FileManager.default.fileExists(
                    atPath: directory.appendingPathComponent("customers_file-\(idle.runID).jsonl").path))

            try await client.execute("UPDATE public.customers SET plan = 'team' WHERE id = 'c2'")
            try await client.execute("DELETE FROM public.customers WHERE id = 'c1'")
            try await F.customers(client, [("c3", "c@example.com", "free", 3)])
            let third = try await runner.run("customers_file")
            #expect(third.added == 1 && third.changed == 1 && third.removed == 1 && third.delivered == 3, "\(third)")
            let ops = try F.lines(directory.appendingPathComponent("customers_file-\(third.runID).jsonl")).map {
                "\($0["op"]!.serialized) \($0["key"]!["id"]!.serialized)"
            }.sorted()
            #expect(ops == [#""delete" "c1""#, #""upsert" "c2""#, #""upsert" "c3""#])
            // The removal left a tombstone; adding the row again is a new change with a new idempotency key.
            try await F.customers(client, [("c1", "a@example.com", "pro", 1)])
            let fourth = try await runner.run("customers_file")
            #expect(fourth.added == 1)
            let again = try F.lines(directory.appendingPathComponent("customers_file-\(fourth.runID).jsonl"))
            #expect(again.count == 1 && again[0]["idempotency_key"] != lines[0]["idempotency_key"])
            let runs = try await client.query("SELECT count(*) FROM cdp.sync_runs WHERE status = 'succeeded'").first![0].decode(
                Int.self)
            #expect(runs == 4)
        }
    }

    @Test func webhookSignsBatchesAndRejectedRowsAreRetried() async throws {
        let receiver = TestReceiver()
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, (1...5).map { ("c\($0)", "user\($0)@example.com", "free", $0) })
                try await F.apply(
                    """
                    {"syncs": [{"name": "hook", "source": {"query": "SELECT id, email, score FROM public.customers"}, "primaryKey": ["id"],
                      "mode": "upsert", "batchSize": 2,
                      "destination": {"type": "webhook", "url": "\(base)/hook", "secret": "s3cret"}}]}
                    """, client)
                // The receiver refuses c3 the first time.
                await receiver.setResponder { request in
                    guard let body = try? JSONParser.parse(request.body), case .array(let changes)? = body["changes"] else {
                        return .init(status: 400)
                    }
                    let bad = changes.filter { $0["key"]?["id"] == .string("c3") }.compactMap { $0["idempotency_key"] }
                    let rejected = JSONValue.array(
                        bad.map { .object([("idempotency_key", $0), ("reason", .string("bad email"))]) })
                    return .init(body: JSONValue.object([("rejected", rejected)]).serialized)
                }
                let runner = F.runner(client)
                let first = try await runner.run("hook")
                #expect(first.status == .partial && first.delivered == 4 && first.rejected == 1 && first.batches == 3, "\(first)")
                let requests = await receiver.requests
                #expect(requests.count == 3)
                for request in requests {
                    let timestamp = try #require(request.header("X-Tributary-Timestamp"))
                    #expect(
                        request.header("X-Tributary-Signature")
                            == WebhookDestination.signature(secret: "s3cret", timestamp: timestamp, body: request.body))
                    #expect(
                        request.header("Idempotency-Key")?.count == 32 && request.header("Content-Type") == "application/json")
                }
                let errors = try await client.query("SELECT key, reason, attempts FROM cdp.sync_errors").map {
                    try $0.decode((String, String, Int).self)
                }
                #expect(errors.count == 1 && errors[0].0 == #"["c3"]"# && errors[0].1 == "bad email" && errors[0].2 == 1)

                // Next run: only c3 again (not yet delivered), and the receiver accepts it now.
                await receiver.setResponder { _ in .init() }
                let second = try await runner.run("hook")
                #expect(second.status == .succeeded && second.added == 1 && second.delivered == 1, "\(second)")
                #expect(try await client.query("SELECT count(*) FROM cdp.sync_errors").first![0].decode(Int.self) == 0)
                // The same change keeps the same idempotency key across runs.
                let all = await receiver.requests
                func keys(_ request: TestReceiver.Request) -> [JSONValue] {
                    guard case .array(let changes)? = (try? JSONParser.parse(request.body))?["changes"] else { return [] }
                    return changes.filter { $0["key"]?["id"] == .string("c3") }.compactMap { $0["idempotency_key"] }
                }
                #expect(all.flatMap(keys).count == 2 && Set(all.flatMap(keys).map(\.serialized)).count == 1)
            }
        }
    }

    /// Every row a run sends is kept with its outcome (delivered, rejected with the reason, failed) for the sync's
    /// rowHistoryDays; a replay sends a run's refused rows again, with their current values, and nothing else.
    @Test func rowOutcomesAreKeptAndRefusedRowsReplay() async throws {
        let receiver = TestReceiver()
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, (1...6).map { ("c\($0)", "user\($0)@example.com", "free", $0) })
                try await F.apply(
                    """
                    {"syncs": [{"name": "hook", "source": {"query": "SELECT id, email, score FROM public.customers"}, "primaryKey": ["id"],
                      "mode": "upsert", "batchSize": 2, "maxAttempts": 1, "rowHistoryDays": 3,
                      "destination": {"type": "webhook", "url": "\(base)/hook"}}]}
                    """, client)
                let refusals = ["c3": "bad email", "c5": "unknown list"]
                func sentIDs(_ request: TestReceiver.Request) -> [String] {
                    guard case .array(let changes)? = (try? JSONParser.parse(request.body))?["changes"] else { return [] }
                    return changes.compactMap { if case .string(let id)? = $0["key"]?["id"] { id } else { nil } }
                }
                await receiver.setResponder { request in
                    guard case .array(let changes)? = (try? JSONParser.parse(request.body))?["changes"] else {
                        return .init(status: 400)
                    }
                    let rejected = changes.compactMap { change -> JSONValue? in
                        guard case .string(let id)? = change["key"]?["id"], let reason = refusals[id] else { return nil }
                        return .object([("idempotency_key", change["idempotency_key"] ?? .null), ("reason", .string(reason))])
                    }
                    return .init(body: JSONValue.object([("rejected", .array(rejected))]).serialized)
                }
                let runner = F.runner(client)
                let first = try await runner.run("hook")
                #expect(first.status == .partial && first.delivered == 4 && first.rejected == 2, "\(first)")
                let rows = Dictionary(
                    uniqueKeysWithValues: try await client.query(
                        "SELECT key, outcome || '/' || operation || '/' || coalesce(reason, '') FROM cdp.sync_run_rows WHERE run_id = \(first.runID)"
                    ).map { try $0.decode((String, String).self) })
                #expect(rows.count == 6)
                #expect(rows[#"["c3"]"#] == "rejected/upsert/bad email" && rows[#"["c5"]"#] == "rejected/upsert/unknown list")
                #expect(rows[#"["c1"]"#] == "delivered/upsert/" && rows[#"["c6"]"#] == "delivered/upsert/")

                // The destination is fixed and another row changes meanwhile: the replay sends c3 and c5 only.
                await receiver.setResponder { _ in .init() }
                try await F.customers(client, [("c4", "new4@example.com", "pro", 40)])
                let before = await receiver.requests.count
                let replay = try await runner.replay("hook")
                #expect(replay.sourceRun == first.runID && replay.rows == 2 && replay.settled == 0)
                let report = try #require(replay.report)
                #expect(report.status == .succeeded && report.delivered == 2 && report.added == 2, "\(report)")
                let replayed = await receiver.requests.dropFirst(before).flatMap(sentIDs)
                #expect(replayed.sorted() == ["c3", "c5"], "\(replayed)")
                #expect(
                    try await client.query("SELECT trigger FROM cdp.sync_runs WHERE run_id = \(report.runID)").scalar(String.self)
                        == "replay")
                #expect(try await client.query("SELECT count(*) FROM cdp.sync_errors").scalar(Int.self) == 0)
                // Replayed again: both delivered since, so nothing is sent.
                let again = try await runner.replay("hook", run: first.runID)
                #expect(again.rows == 2 && again.settled == 2 && again.report?.delivered == 0)
                await #expect(throws: SyncError.self) { try await runner.replay("hook", run: 424_242) }

                // A batch that fails after its tries: its rows are recorded as failed, with the error.
                await receiver.setResponder { _ in .init(status: 500) }
                let failed = try? await runner.run("hook")
                #expect(failed == nil || failed?.status == .failed)
                let failedRows = try await client.query(
                    "SELECT key, reason FROM cdp.sync_run_rows WHERE outcome = 'failed'"
                ).map { try $0.decode((String, String).self) }
                #expect(failedRows.map(\.0) == [#"["c4"]"#] && failedRows[0].1.contains("500"), "\(failedRows)")
                await receiver.setResponder { _ in .init() }
                let rescue = try await runner.replay("hook")
                #expect(rescue.rows == 1 && rescue.report?.delivered == 1, "\(rescue)")
                let onlyRejected = try await runner.replay("hook", rejectedOnly: true)
                #expect(onlyRejected.sourceRun == first.runID, "the latest run with rejected rows")

                // Rows older than rowHistoryDays go at the end of the next run.
                try await client.execute(
                    "UPDATE cdp.sync_run_rows SET recorded_at = now() - interval '4 days' WHERE run_id = \(first.runID)")
                _ = try await runner.run("hook")
                #expect(
                    try await client.query("SELECT count(*) FROM cdp.sync_run_rows WHERE run_id = \(first.runID)").scalar(
                        Int.self) == 0)
                #expect(try await client.query("SELECT count(*) FROM cdp.sync_run_rows").scalar(Int.self) > 0)
            }
        }
    }

    @Test func failedBatchesAreRetriedWithBackoffAndRetryAfter() async throws {
        let receiver = TestReceiver()
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, [("c1", "a@example.com", "pro", 1)])
                try await F.apply(
                    """
                    {"syncs": [{"name": "flaky", "source": {"relation": "customers"}, "primaryKey": ["id"], "maxAttempts": 4,
                      "destination": {"type": "webhook", "url": "\(base)/hook"}}]}
                    """, client)
                let calls = Counter()
                await receiver.setResponder { _ in
                    switch calls.next() {
                    case 1: .init(status: 503)
                    case 2: .init(status: 429, headers: [("Retry-After", "0")])
                    default: .init()
                    }
                }
                let report = try await F.runner(client).run("flaky")
                #expect(report.status == .succeeded && report.attempts == 3 && report.delivered == 1, "\(report)")

                // A destination that keeps failing: the run fails, nothing is marked delivered, the next run sends it.
                // Two batches of one: the first gives up after 4 tries, the second is never sent; both count as failed.
                try await F.apply(
                    """
                    {"syncs": [{"name": "flaky", "source": {"relation": "customers"}, "primaryKey": ["id"], "maxAttempts": 4,
                      "batchSize": 1, "destination": {"type": "webhook", "url": "\(base)/hook"}}]}
                    """, client)
                try await F.customers(client, [("c2", "b@example.com", "pro", 2), ("c3", "c@example.com", "pro", 3)])
                await receiver.setResponder { _ in .init(status: 500) }
                await #expect(throws: Never.self) { _ = try await F.runner(client).run("flaky") }
                let failed = try await client.query(
                    "SELECT status, failed, attempts, error, duration_ms FROM cdp.sync_runs ORDER BY run_id DESC LIMIT 1"
                )
                .first!.decode((String, Int, Int, String, Double).self)
                #expect(failed.0 == "failed" && failed.1 == 2 && failed.2 == 4, "\(failed)")
                #expect(failed.3.hasPrefix("a batch failed after 4 tries: "), "\(failed.3)")
                #expect(try await client.query("SELECT count(*) FROM cdp.sync_state").first![0].decode(Int.self) == 1)
                // Refused for good on the first try (401): the message says one try.
                await receiver.setResponder { _ in .init(status: 401) }
                let refused = try await F.runner(client).run("flaky")
                #expect(refused.status == .failed && refused.attempts == 1 && refused.failed == 2, "\(refused)")
                #expect(refused.error?.hasPrefix("a batch failed after 1 try: ") == true, "\(refused.error ?? "-")")
                await receiver.setResponder { _ in .init() }
                let recovered = try await F.runner(client).run("flaky")
                #expect(recovered.added == 2 && recovered.delivered == 2)
            }
        }
    }

    /// Two syncs to one account (here one webhook URL) share its request budget: their requests, run at the same
    /// time, are spaced by the rate limit between them all, not per sync.
    @Test func syncsToOneAccountShareItsRateLimit() async throws {
        let arrivals = Arrivals()
        let receiver = TestReceiver { _ in
            arrivals.note()
            return .init()
        }
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, (1...4).map { ("c\($0)", "u\($0)@example.com", "pro", $0) })
                let sync = { (name: String) in
                    #"{"name": "\#(name)", "source": {"relation": "customers"}, "primaryKey": ["id"], "batchSize": 1, "rateLimit": {"requestsPerSecond": 20}, "destination": {"type": "webhook", "url": "\#(base)/hook"}}"#
                }
                try await F.apply(#"{"syncs": [\#(sync("first")), \#(sync("second"))]}"#, client)
                let runner = F.runner(client)
                async let first = runner.run("first")
                async let second = runner.run("second")
                let reports = try await [first, second]
                #expect(reports.allSatisfy { $0.delivered == 4 }, "\(reports)")
                let gaps = arrivals.gaps()
                #expect(gaps.count == 7)
                // 20 requests a second between both syncs: 8 requests sent at least 50 ms apart span at least 350 ms
                // (each sync alone would take 150 ms: per-sync limits fail this). Arrival jitter under load can bring
                // two arrivals closer, never the first and the last.
                let span = gaps.reduce(Duration.zero, +)
                #expect(span >= .milliseconds(320), "\(span): \(gaps)")
            }
        }
    }

    @Test func postgresTableDestinationMirrorsTheSource() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await F.customers(client, (1...20).map { ("c\($0)", "u\($0)@example.com", $0 % 2 == 0 ? "pro" : "free", $0) })
            try await client.execute("CREATE SCHEMA crm")
            try await client.execute("CREATE TABLE crm.contacts (id text PRIMARY KEY, email text, score int CHECK (score < 100))")
            try await F.apply(
                """
                {"syncs": [{"name": "to_table", "source": {"relation": "public.customers"}, "primaryKey": ["id"],
                  "fields": {"email": "email", "score": "score"}, "mode": "mirror", "batchSize": 7,
                  "destination": {"type": "postgres", "table": "crm.contacts"}}]}
                """, client)
            let runner = F.runner(client)
            func same() async throws -> Bool {
                let source = try await client.query("SELECT id || email || score FROM public.customers ORDER BY id").map {
                    try $0[0].decode(String.self)
                }
                let target = try await client.query("SELECT id || email || score FROM crm.contacts ORDER BY id").map {
                    try $0[0].decode(String.self)
                }
                return source == target
            }
            #expect(try await runner.run("to_table").delivered == 20)
            #expect(try await same())
            try await client.execute("UPDATE public.customers SET score = score + 1 WHERE id IN ('c1', 'c2')")
            try await client.execute("DELETE FROM public.customers WHERE id = 'c3'")
            let second = try await runner.run("to_table")
            #expect(second.changed == 2 && second.removed == 1 && second.delivered == 3)
            #expect(try await same())
            // A value the target refuses (score < 100) rejects that row only.
            try await client.execute("UPDATE public.customers SET score = 500 WHERE id = 'c4'")
            try await client.execute("UPDATE public.customers SET score = 50 WHERE id = 'c5'")
            let third = try await runner.run("to_table")
            #expect(third.status == .partial && third.delivered == 1 && third.rejected == 1, "\(third)")
            let reason = try await client.query("SELECT reason FROM cdp.sync_errors").first![0].decode(String.self)
            #expect(reason.contains("contacts_score_check"), "\(reason)")
            // A new row refused by the target (never held there), then gone from the source: its error is settled by
            // the next run, not reported forever.
            try await F.customers(client, [("c99", "x@example.com", "pro", 999)])
            let fourth = try await runner.run("to_table")
            #expect(fourth.rejected == 2, "\(fourth)")
            try await client.execute("DELETE FROM public.customers WHERE id = 'c99'")
            _ = try await runner.run("to_table")
            let errors = try await client.query("SELECT key FROM cdp.sync_errors ORDER BY key").map { try $0.decode(String.self) }
            #expect(errors == [#"["c4"]"#], "\(errors)")
        }
    }

    @Test func dryRunsSendNothingAndBadDefinitionsNameThePath() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await F.customers(client, [("c1", "a@example.com", "pro", 1)])
            let store = SyncStore(client: client, logger: TestDatabase.logger, registry: F.registry)
            func error(_ json: String) async -> String {
                do { _ = try await store.load(Data(json.utf8)); return "no error" } catch { return "\(error)" }
            }
            #expect(
                await error(
                    #"{"syncs": [{"name": "x", "source": {"relation": "customers"}, "primaryKey": ["id"], "destination": {"type": "fax"}}]}"#
                )
                .hasPrefix("syncs[0].destination.type: unknown destination 'fax'; known: "))
            #expect(
                await error(
                    #"{"syncs": [{"name": "x", "source": {"relation": "customers"}, "primaryKey": ["id"], "fields": {"e": "emial"}, "destination": {"type": "file", "path": "/tmp/x"}}]}"#
                )
                .hasPrefix("syncs[0].source: reading customers failed: column s.emial does not exist"))
            #expect(
                await error(
                    #"{"syncs": [{"name": "x", "source": {"segment": "nope"}, "primaryKey": ["profile_id"], "destination": {"type": "file", "path": "/tmp/x"}}]}"#
                )
                .hasPrefix(#"syncs[0].source: reading the segment view segments."nope" (is the segment applied?) failed"#))
            #expect(
                await error(
                    #"{"syncs": [{"name": "x", "source": {"relation": "customers"}, "primaryKey": ["id"], "schedule": {"cron": "61 * * * *"}, "destination": {"type": "file", "path": "/tmp/x"}}]}"#
                )
                    == "syncs[0].schedule.cron: minute '61' must be 0–59, a range or *")
            #expect(
                await error(
                    #"{"syncs": [{"name": "x", "source": {"relation": "customers"}, "primaryKey": ["id"], "mode": "replace", "destination": {"type": "file", "path": "/tmp/x"}}]}"#
                )
                    == "syncs[0].mode: unknown mode 'replace'; use upsert, update, insert, mirror, audience")
            #expect(
                await error(
                    #"{"syncs": [{"name": "x", "source": {"relation": "customers"}, "primaryKey": ["id"], "destination": {"type": "webhook", "url": "ftp://x"}}]}"#
                )
                    == "syncs[0].destination.url: required, an http:// or https:// URL")

            try await F.apply(
                #"{"syncs": [{"name": "x", "source": {"relation": "customers"}, "primaryKey": ["id"], "destination": {"type": "file", "path": "/nonexistent/dir/x.jsonl"}}]}"#,
                client)
            let seen = Counter()
            let report = try await F.runner(client).run("x", dryRun: true) { _ in _ = seen.next() }
            #expect(report.added == 1 && seen.value == 1 && report.delivered == 0)
            #expect(try await client.query("SELECT count(*) FROM cdp.sync_state").first![0].decode(Int.self) == 0)
        }
    }

    @Test func cronSchedules() throws {
        let utc = { (text: String) in try Date(text, strategy: .iso8601) }
        #expect(try CronSchedule("*/15 * * * *").next(after: utc("2026-11-26T10:07:30Z")) == utc("2026-11-26T10:15:00Z"))
        // Friday → Monday.
        #expect(try CronSchedule("0 6 * * 1-5").next(after: utc("2026-11-27T07:00:00Z")) == utc("2026-11-30T06:00:00Z"))
        #expect(try CronSchedule("30 2 1 * *").next(after: utc("2026-11-26T00:00:00Z")) == utc("2026-12-01T02:30:00Z"))
        #expect(try CronSchedule("0 0 29 2 *").next(after: utc("2026-03-01T00:00:00Z")) == utc("2028-02-29T00:00:00Z"))
        #expect(try CronSchedule("5/20 * * * *").next(after: utc("2026-11-26T10:26:00Z")) == utc("2026-11-26T10:45:00Z"))
        #expect(throws: SyncError.self) { try CronSchedule("* * *") }
        #expect(throws: SyncError.self) { try CronSchedule("0 24 * * *") }
    }
}

/// A thread-safe counter for responders.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    @discardableResult func next() -> Int {
        lock.withLock {
            count += 1; return count
        }
    }
}

/// When requests arrived, in order.
final class Arrivals: @unchecked Sendable {
    private let lock = NSLock()
    private var times: [ContinuousClock.Instant] = []
    func note() { lock.withLock { times.append(ContinuousClock.now) } }
    /// The time between consecutive arrivals.
    func gaps() -> [Duration] {
        lock.withLock { zip(times.dropFirst(), times).map { $0 - $1 } }
    }
}
