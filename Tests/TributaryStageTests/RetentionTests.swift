import Foundation
import Logging
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryGovernance
@testable import TributaryIdentity
@testable import TributarySegments
@testable import TributaryService
@testable import TributarySyncs
@testable import TributaryModel

/// Event retention against real PostgreSQL: whole old partitions go, newer ones stay, the audit log records it.
@Suite struct RetentionTests {
    func withRetention(_ body: (Retention, PostgresClient) async throws -> Void) async throws {
        try await TestDatabase.withFreshDatabase { client in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            try await body(Retention(client: client), client)
        }
    }

    /// Stores an event (and its message id) `age` before now, received at the same time.
    func insertEvent(_ client: PostgresClient, _ id: String, age: String) async throws {
        try await client.execute("SELECT cdp.ensure_event_partition((now() - \(age)::interval)::date)")
        try await client.execute(
            """
            INSERT INTO cdp.events (seq, message_id, source_id, type, event, timestamp, received_at)
            VALUES (nextval('cdp.events_seq'), \(id), 'src', 'track', 'Order Completed', now() - \(age)::interval, now() - \(age)::interval)
            """)
        try await client.execute(
            """
            INSERT INTO cdp.event_message_ids (source_id, message_id, received_at) VALUES ('src', \(id), now() - \(age)::interval)
            """)
    }

    func partitionName(_ client: PostgresClient, age: String) async throws -> String {
        try await client.query("SELECT 'events_' || to_char(now() - \(age)::interval, 'YYYY_MM')").scalar(String.self)
    }

    func exists(_ client: PostgresClient, _ partition: String) async throws -> Bool {
        try await client.query("SELECT to_regclass(\("cdp." + partition)) IS NOT NULL").scalar(Bool.self)
    }

    @Test func oldPartitionsAreDroppedRecentOnesKeptAndAudited() async throws {
        try await withRetention { retention, client in
            try await insertEvent(client, "old-1", age: "3 years")
            try await insertEvent(client, "old-2", age: "3 years")
            try await insertEvent(client, "older", age: "5 years 2 months")
            try await insertEvent(client, "edge", age: "395 days")  // the partition holding the cutoff: kept
            try await insertEvent(client, "new", age: "1 day")
            let old = try await partitionName(client, age: "3 years"),
                older = try await partitionName(client, age: "5 years 2 months")
            let edge = try await partitionName(client, age: "395 days")

            #expect(try await retention.apply(actor: .cli) == nil, "retention is off by default")
            #expect(try await retention.set(.init(events: try RetentionAge(parsing: "400d")), actor: .cli))
            #expect(
                try await retention.set(.init(events: RetentionAge(days: 400)), actor: .cli) == false,
                "setting the same again changes nothing")
            #expect(try await retention.policy().events == RetentionAge(days: 400))

            let dry = try #require(try await retention.apply(dryRun: true, actor: .cli))
            #expect(dry.partitions.map(\.name) == [older, old] && dry.events == 3 && dry.messageIds == 3, "\(dry)")
            #expect(try await exists(client, old), "a dry run drops nothing")
            #expect(try await exists(client, older))
            #expect(try await client.query("SELECT count(*) FROM cdp.event_message_ids").scalar(Int.self) == 5)
            #expect(try await AuditLog(client: client).entries(actionPrefix: "retention.apply").isEmpty)
            #expect(try await retention.lastRun() == nil)

            let report = try #require(try await retention.apply(actor: .cli))
            #expect(report.partitions.map(\.name) == [older, old] && report.events == 3 && report.messageIds == 3)
            #expect(try await exists(client, old) == false)
            #expect(try await exists(client, older) == false)
            #expect(try await exists(client, edge), "the partition that may hold events newer than the cutoff stays")
            #expect(
                try await client.query("SELECT string_agg(message_id, ',' ORDER BY message_id) FROM cdp.events").scalar(
                    String.self) == "edge,new")
            #expect(
                try await client.query("SELECT string_agg(message_id, ',' ORDER BY message_id) FROM cdp.event_message_ids")
                    .scalar(String.self) == "edge,new")
            let entry = try #require(try await AuditLog(client: client).entries(actionPrefix: "retention.apply").first)
            #expect(entry.actor.hasPrefix("cli:") && entry.target == "cdp.events")
            #expect(entry.details["events"] == 3)
            #expect(entry.details["partitions"] == .array([.string(older), .string(old)]))
            #expect(try await retention.lastRun() != nil)
            #expect(try await retention.apply(actor: .cli)?.partitions.isEmpty == true, "a second run has nothing left to drop")
            #expect(
                try await AuditLog(client: client).entries(actionPrefix: "retention.set").first?.details == [
                    "events": "400 days", "previous": "off",
                ])
        }
    }

    @Test func recentlyImportedOldEventsKeepTheirMessageIds() async throws {
        try await withRetention { retention, client in
            try await insertEvent(client, "old", age: "2 years")
            try await client.execute("UPDATE cdp.event_message_ids SET received_at = now()")  // an import of last week's file
            try await retention.set(.init(events: RetentionAge(months: 13)), actor: .cli)
            let report = try #require(try await retention.apply(actor: .cli))
            #expect(report.events == 1 && report.messageIds == 0)
            #expect(try await client.query("SELECT count(*) FROM cdp.event_message_ids").scalar(Int.self) == 1)
        }
    }

    @Test func runIfDueRunsOnceADayAsTheSystem() async throws {
        try await withRetention { retention, client in
            try await insertEvent(client, "old", age: "3 years")
            #expect(try await Retention.runIfDue(client: client, logger: TestDatabase.logger) == nil, "off: nothing runs")
            try await retention.set(.init(events: RetentionAge(months: 24)), actor: .cli)
            // Several processes at once: exactly one runs.
            let results = try await withThrowingTaskGroup(of: Retention.Report?.self) { group in
                for _ in 0..<3 { group.addTask { try await Retention.runIfDue(client: client, logger: TestDatabase.logger) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.compactMap { $0 }.count == 1)
            #expect(results.compactMap { $0 }.first?.events == 1)
            #expect(try await Retention.runIfDue(client: client, logger: TestDatabase.logger) == nil, "ran less than a day ago")
            #expect(
                try await AuditLog(client: client).entries(actionPrefix: "retention.apply").map(\.actor) == [
                    "tributary:retention"
                ])
            try await client.execute(
                "UPDATE cdp.settings SET updated_at = now() - interval '25 hours' WHERE key = 'retention.last_run'")
            #expect(try await Retention.runIfDue(client: client, logger: TestDatabase.logger)?.partitions == [])
        }
    }

    @Test func agesParseOrSayWhy() throws {
        #expect(try RetentionAge(parsing: "13months") == RetentionAge(months: 13))
        #expect(try RetentionAge(parsing: " 13 Months ") == RetentionAge(months: 13))
        #expect(try RetentionAge(parsing: "2y") == RetentionAge(months: 24))
        #expect(try RetentionAge(parsing: "400d") == RetentionAge(days: 400))
        #expect(try RetentionAge(parsing: "8w") == RetentionAge(days: 56))
        #expect(try RetentionAge(parsing: RetentionAge(months: 13).description) == RetentionAge(months: 13))
        for bad in ["", "0d", "13", "13 parsecs", "-3d", "1.5y", "off"] {
            #expect(throws: RetentionError.self, "\(bad)") { try RetentionAge(parsing: bad) }
        }
    }
}
