import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryModel
@testable import TributaryService

/// Sources and the event writer against real PostgreSQL.
@Suite struct CollectionStoreTests {
    func migrated(_ client: PostgresClient) async throws {
        try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
    }

    func event(_ id: String, user: String = "u", at timestamp: Date = Date(), properties: String = "{}") -> IncomingEvent {
        IncomingEvent(
            messageID: id, type: .track, event: "Order Completed", name: nil, userID: user, anonymousID: nil, groupID: nil,
            previousID: nil, timestamp: timestamp, originalTimestamp: nil, sentAt: nil, receivedAt: Date(),
            properties: properties, traits: "{}", context: "{}", integrations: "{}")
    }

    @Test func sourcesKeepOnlyHashesAndAuthenticateEnabledKeys() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await migrated(client)
            let store = SourceStore(client: client)
            let hostile = #"Zoë's "web" -- ; DROP TABLE cdp.sources; \ 🌊"#
            let (source, key) = try await store.create(name: hostile)
            #expect(source.name == hostile && source.enabled)
            #expect(key.hasPrefix("trb_") && key.count == 36)
            #expect(try await store.authenticate(writeKey: key)?.id == source.id)
            #expect(try await store.authenticate(writeKey: key + "x") == nil)
            let stored = try await client.query("SELECT write_key_sha256 FROM cdp.sources").scalar(String.self)
            #expect(stored == SourceStore.hash(key) && !stored.contains(key))
            await #expect(throws: SourceError.self) { try await store.create(name: hostile) }
            await #expect(throws: SourceError.self) { try await store.create(name: "  ") }

            let (_, rotated) = try await store.rotateKey(name: hostile)
            #expect(try await store.authenticate(writeKey: key) == nil)
            #expect(try await store.authenticate(writeKey: rotated) != nil)
            try await store.disable(name: hostile)
            #expect(try await store.authenticate(writeKey: rotated) == nil)
            try await store.enable(name: hostile)
            #expect(try await store.authenticate(writeKey: rotated) != nil)
            await #expect(throws: SourceError.self) { try await store.disable(name: "nope") }
            #expect(try await store.list().map(\.name) == [hostile])
        }
    }

    @Test func eachMessageIsStoredOnceHoweverLateTheRetry() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await migrated(client)
            let writer = EventWriter(client: client, logger: TestDatabase.logger)
            let first = try await writer.write([event("m1"), event("m2"), event("m1")], sourceID: "src_a")
            #expect(first.stored == 2 && first.duplicates == 1)
            // A retry months later lands in another partition's range, and is still recognised.
            let late = try await writer.write(
                [event("m2", at: Date(timeIntervalSince1970: 1_500_000_000)), event("m3")], sourceID: "src_a")
            #expect(late.stored == 1 && late.duplicates == 1)
            // The same messageId from another source is another message.
            let other = try await writer.write([event("m1")], sourceID: "src_b")
            #expect(other.stored == 1)
            #expect(try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == 4)
            // cdp.event_counts counts what was stored, per source, duplicates not.
            let counts = try await client.query("SELECT source_id, sum(events)::int8 FROM cdp.event_counts GROUP BY 1 ORDER BY 1")
                .map { try $0.decode((String, Int).self) }
            #expect(counts.map(\.0) == ["src_a", "src_b"] && counts.map(\.1) == [3, 1])
            // On the checking path (something is suppressed) too: the suppressed event is not counted.
            try await client.execute(
                "INSERT INTO cdp.suppressions (identifier_hash, kind) VALUES (cdp.identifier_hash('user_id', 'gone'), 'user_id')")
            let checked = EventWriter(client: client, logger: TestDatabase.logger)
            let outcome = try await checked.write([event("m9"), event("m10", user: "gone"), event("m1")], sourceID: "src_b")
            #expect(outcome.stored == 1 && outcome.suppressed == 1 && outcome.duplicates == 1)
            #expect(
                try await client.query("SELECT sum(events)::int8 FROM cdp.event_counts WHERE source_id = 'src_b'").scalar(
                    Int.self)
                    == 2)
        }
    }

    @Test(.timeLimit(.minutes(6)))
    func concurrentRequestsShareCommitsAndSequenceNumbersFollowCommitOrder() async throws {
        try await TestDatabase.withFreshDatabase(maxConnections: 6) { (client) async throws in
            try await migrated(client)
            // Two writers, as two server processes would be.
            let writers = [
                EventWriter(client: client, logger: TestDatabase.logger),
                EventWriter(client: client, logger: TestDatabase.logger),
            ]
            let total = try await withThrowingTaskGroup(of: Int.self) { group in
                for request in 0..<40 {
                    group.addTask {
                        let events = (0..<25).map { self.event("r\(request)-\($0)", user: "u\(request)") }
                        // Every request is sent twice, as a client retry would.
                        async let a = writers[request % 2].write(events, sourceID: "src")
                        async let b = writers[(request + 1) % 2].write(events, sourceID: "src")
                        let (x, y) = try await (a, b)
                        #expect(x.stored + y.stored == 25)
                        return x.stored + y.stored
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(total == 1000)
            let stats = try await client.query(
                "SELECT count(*), count(DISTINCT seq), count(DISTINCT message_id) FROM cdp.events"
            ).first!
            #expect(try stats.decode((Int, Int, Int).self) == (1000, 1000, 1000))
            // Within one request, events keep their order in the sequence.
            let ordered = try await client.query(
                """
                SELECT bool_and(ok) FROM (
                    SELECT seq > lag(seq) OVER (PARTITION BY user_id ORDER BY split_part(message_id, '-', 2)::int) IS NOT FALSE AS ok
                    FROM cdp.events) t
                """
            ).scalar(Bool.self)
            #expect(ordered)
        }
    }

    @Test func partitionsAreCreatedForTheMonthsABatchNeeds() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await migrated(client)
            let writer = EventWriter(client: client, logger: TestDatabase.logger)
            let old = Date(timeIntervalSince1970: 1_425_196_800)  // 2015-03-01
            _ = try await writer.write([event("old", at: old), event("now")], sourceID: "s")
            let partition = try await client.query(
                "SELECT tableoid::regclass::text FROM cdp.events WHERE message_id = 'old'"
            ).scalar(String.self)
            #expect(partition == "cdp.events_2015_03")
            #expect(try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == 2)
        }
    }

    @Test func overloadIsRefusedAtOnce() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await migrated(client)
            let writer = EventWriter(client: client, maxQueuedEvents: 2, logger: TestDatabase.logger)
            await #expect(throws: EventWriter.Overloaded.self) {
                try await writer.write([event("a"), event("b"), event("c")], sourceID: "s")
            }
            #expect(try await writer.write([event("a"), event("b")], sourceID: "s").stored == 2)
        }
    }

    @Test func copyEscapingKeepsEveryCharacter() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await migrated(client)
            let writer = EventWriter(client: client, logger: TestDatabase.logger)
            let tricky = "tab\there\\back\nnewline\r🌊 \\N"
            var e = event("esc", user: tricky, properties: #"{"k":"v\\t\"q\""}"#)
            e.name = tricky
            _ = try await writer.write([e], sourceID: "s")
            let row = try await client.query("SELECT user_id, name, properties->>'k' FROM cdp.events").first!
            #expect(try row.decode((String, String, String).self) == (tricky, tricky, "v\\t\"q\""))
        }
    }
    /// Retries racing their originals across the two ways of storing (one writer still believing nothing is
    /// suppressed records ids before the sequence lock, one that knows of a suppression records them under it):
    /// every message is stored exactly once, none fails, and the suppressed person's events are dropped.
    @Test(.timeLimit(.minutes(6)))
    func retriesRacingAcrossTheDirectAndTheCheckingPathStoreOnce() async throws {
        try await TestDatabase.withFreshDatabase(maxConnections: 6) { (client) async throws in
            try await migrated(client)
            let direct = EventWriter(client: client, logger: TestDatabase.logger)
            // Reads its suppression hint (nothing suppressed) now, and keeps it for two seconds.
            _ = try await direct.write([event("warm-up")], sourceID: "src")
            try await client.execute(
                """
                INSERT INTO cdp.suppressions (identifier_hash, kind) VALUES (cdp.identifier_hash('user_id', 'deleted'), 'user_id')
                """)
            let checking = EventWriter(client: client, logger: TestDatabase.logger)
            let stored = try await withThrowingTaskGroup(of: Int.self) { group in
                for request in 0..<30 {
                    group.addTask {
                        var events = (0..<20).map { self.event("race\(request)-\($0)", user: "u\(request)") }
                        events.append(self.event("gone\(request)", user: "deleted"))
                        async let a = direct.write(events, sourceID: "src")
                        async let b = checking.write(events.reversed(), sourceID: "src")
                        let (x, y) = try await (a, b)
                        #expect(x.stored + y.stored == 20)
                        #expect(y.suppressed == 1)
                        return x.stored + y.stored
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(stored == 600)
            let counts = try await client.query(
                """
                SELECT count(*), count(DISTINCT seq), count(*) FILTER (WHERE user_id = 'deleted') FROM cdp.events WHERE message_id LIKE 'race%' OR message_id LIKE 'gone%'
                """
            ).first!
            #expect(try counts.decode((Int, Int, Int).self) == (600, 600, 0))
        }
    }
}
