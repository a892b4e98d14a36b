import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryFixtures
@testable import TributaryIdentity
@testable import TributaryModel
@testable import TributaryProfiles
@testable import TributarySegments

/// Helpers for the profile tests: events with chosen times and properties, both stages, reading profiles back.
enum ProfileFixture {
    static let base = Date(timeIntervalSince1970: 1_780_000_000)

    static func event(
        _ type: CallType = .identify, user: String? = nil, anonymous: String? = nil, event: String? = nil,
        properties: String = "{}", traits: String = "{}", context: String = "{}", at timestamp: Date
    ) -> IncomingEvent {
        IdentityFixture.event(
            anonymous: anonymous, user: user, event: event, properties: properties, traits: traits, context: context, type: type,
            at: timestamp)
    }

    static func day(_ days: Double) -> Date { base.addingTimeInterval(days * 86_400) }

    /// Writes events, then runs the identity and profile stages over them.
    static func ingest(_ events: [IncomingEvent], _ client: PostgresClient, clock: Date = Date()) async throws {
        try await IdentityFixture.write(events, client)
        try await resolve(client, clock: clock)
    }

    static func resolve(_ client: PostgresClient, clock: Date = Date(), batchSize: Int = 5000) async throws {
        _ = try await IdentityStage(client: client, logger: TestDatabase.logger, batchSize: batchSize).catchUp()
        _ = try await ProfileStage(
            client: client, logger: TestDatabase.logger, batchSize: batchSize, followers: [RealtimeSegments()], clock: { clock }
        ).catchUp()
    }

    /// The merged traits of the profile holding `user_id:user`.
    static func traits(of user: String, _ client: PostgresClient) async throws -> [String: String] {
        let text = try await client.query(
            """
            SELECT p.traits::text FROM cdp.profiles AS p JOIN cdp.identities AS i ON i.profile_id = p.profile_id
            WHERE i.kind = 'user_id' AND i.value = \(user)
            """
        ).scalar(String.self)
        return try flat(text)
    }

    static func computed(of user: String, _ client: PostgresClient) async throws -> [String: String] {
        let text = try await client.query(
            """
            SELECT p.computed_traits::text FROM cdp.profiles AS p JOIN cdp.identities AS i ON i.profile_id = p.profile_id
            WHERE i.kind = 'user_id' AND i.value = \(user)
            """
        ).scalar(String.self)
        return try flat(text)
    }

    /// A JSON object's members as their JSON text (strings unquoted).
    static func flat(_ json: String) throws -> [String: String] {
        guard case .object(let members) = try JSONParser.parse(Array(json.utf8)) else { return [:] }
        var result: [String: String] = [:]
        for (key, value) in members {
            switch value {
            case .string(let text): result[key] = text
            case .number(let text): result[key] = text
            case .bool(let flag): result[key] = flag ? "true" : "false"
            case .null: result[key] = "null"
            default: result[key] = "\(value)"
            }
        }
        return result
    }

    /// Everything the profile stage stores, to compare the real-time path with a rebuild.
    static func state(_ client: PostgresClient) async throws -> [String] {
        let values = try await client.query(
            """
            SELECT profile_id::text || '|' || key || '|' || value::text || '|' || seq FROM cdp.profile_trait_values ORDER BY 1
            """
        ).map { try $0[0].decode(String.self) }
        let data = try await client.query(
            """
            SELECT profile_id::text || '|' || traits::text || '|' || computed::text || '|' || first_seen_at || '|'
                   || last_seen_at || '|' || event_count FROM cdp.profile_data ORDER BY 1
            """
        ).map { try $0[0].decode(String.self) }
        return values + data
    }

    static func apply(_ definitions: ComputedTraitDefinitions, _ client: PostgresClient) async throws {
        try await ProfileAdmin(client: client, logger: TestDatabase.logger).apply(definitions)
    }
}

@Suite struct TraitMergeTests {
    typealias F = ProfileFixture

    @Test func newerTraitsWinWhateverOrderTheyArriveInAndNullRemoves() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.ingest(
                [
                    F.event(user: "u1", traits: #"{"plan": "pro", "city": "Paris", "age": 30}"#, at: F.day(2))
                ], client)
            // Arrives later, happened earlier: changes nothing it also sets, adds what is new.
            try await F.ingest(
                [
                    F.event(user: "u1", traits: #"{"plan": "free", "name": "Ann"}"#, at: F.day(1))
                ], client)
            #expect(try await F.traits(of: "u1", client) == ["plan": "pro", "city": "Paris", "age": "30", "name": "Ann"])
            // context.traits of a track call count too; an identify's own traits beat context.traits of the same event.
            try await F.ingest(
                [
                    F.event(.track, user: "u1", context: #"{"traits": {"city": "Lyon"}}"#, at: F.day(3)),
                    F.event(user: "u1", traits: #"{"age": 31}"#, context: #"{"traits": {"age": 99}}"#, at: F.day(3)),
                ], client)
            #expect(try await F.traits(of: "u1", client) == ["plan": "pro", "city": "Lyon", "age": "31", "name": "Ann"])
            // null removes; an older value arriving after the removal does not bring it back; a newer one does.
            try await F.ingest([F.event(user: "u1", traits: #"{"city": null}"#, at: F.day(4))], client)
            try await F.ingest([F.event(user: "u1", traits: #"{"city": "Nice"}"#, at: F.day(3.5))], client)
            #expect(try await F.traits(of: "u1", client)["city"] == nil)
            try await F.ingest([F.event(user: "u1", traits: #"{"city": "Nice"}"#, at: F.day(5))], client)
            #expect(try await F.traits(of: "u1", client)["city"] == "Nice")
            // The profile API's document, from SQL, carries the merged traits; an unknown identifier gives NULL.
            let document = try await client.query(
                """
                SELECT cdp.profile_document('user_id', 'u1', 1)::jsonb #>> '{traits,plan}',
                       cdp.profile_document('user_id', 'nobody', 1) IS NULL
                """
            ).first!.decode((String, Bool).self)
            #expect(document == ("pro", true))
            // Group traits are the group's, not the person's.
            try await F.ingest([F.event(.group, user: "u1", traits: #"{"plan": "enterprise"}"#, at: F.day(6))], client)
            #expect(try await F.traits(of: "u1", client)["plan"] == "pro")

            let history = try await client.query(
                """
                SELECT key, coalesce(old_value::text, '-'), coalesce(new_value::text, '-'), reason FROM cdp.trait_changes
                WHERE key = 'city' ORDER BY seq
                """
            ).map { try $0.decode((String, String, String, String).self) }
            #expect(
                history.map { "\($0.0) \($0.1)→\($0.2) \($0.3)" } == [
                    #"city -→"Paris" event"#, #"city "Paris"→"Lyon" event"#, #"city "Lyon"→- event"#, #"city -→"Nice" event"#,
                ])
            // The real-time result is what a rebuild computes.
            let before = try await F.state(client)
            let rebuilt = try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()])
                .rebuild()
            #expect(rebuilt.traitChanges == 0)
            #expect(try await F.state(client) == before)
        }
    }

    @Test func mergedProfilesMergeTheirTraitsByTheSameRule() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.ingest(
                [
                    // A visitor tells us things anonymously, some of them newer than what the account holds.
                    F.event(anonymous: "a1", traits: #"{"plan": "free", "city": "Paris", "newsletter": true}"#, at: F.day(1)),
                    F.event(user: "u1", traits: #"{"plan": "pro", "city": "Berlin"}"#, at: F.day(2)),
                    F.event(anonymous: "a1", traits: #"{"city": "Rome"}"#, at: F.day(3)),
                ], client)
            let profiles = try await client.query("SELECT count(*) FROM cdp.profiles").scalar(Int.self)
            #expect(profiles == 2)
            // Then the visitor logs in: the profiles merge.
            try await F.ingest([F.event(.track, user: "u1", anonymous: "a1", at: F.day(4))], client)
            #expect(try await client.query("SELECT count(*) FROM cdp.profiles").scalar(Int.self) == 1)
            #expect(try await F.traits(of: "u1", client) == ["plan": "pro", "city": "Rome", "newsletter": "true"])
            let merged = try await client.query(
                """
                SELECT key || ' ' || coalesce(old_value::text, '-') || '→' || coalesce(new_value::text, '-')
                FROM cdp.trait_changes WHERE reason = 'merge' ORDER BY key
                """
            ).map { try $0[0].decode(String.self) }
            // The survivor is the profile founded first (the visitor's); it gains the account's newer plan.
            #expect(merged == [#"plan "free"→"pro""#])
            // No state is left for the merged-away profile, and the data row counts all events.
            #expect(try await client.query("SELECT count(*) FROM cdp.profile_data").scalar(Int.self) == 1)
            #expect(try await client.query("SELECT event_count FROM cdp.profiles").scalar(Int.self) == 4)
            let before = try await F.state(client)
            #expect(
                try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()]).rebuild()
                    .traitChanges == 0)
            #expect(try await F.state(client) == before)
        }
    }

    @Test func anIdentityRebuildRebuildsProfiles() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.ingest(
                [
                    F.event(user: "u1", traits: #"{"plan": "pro"}"#, at: F.day(1)),
                    F.event(user: "u2", traits: #"{"plan": "free"}"#, at: F.day(1)),
                ], client)
            let before = try await F.state(client)
            _ = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            let report = try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()])
                .catchUp()
            #expect(report.rebuilt)
            #expect(try await F.state(client) == before)
        }
    }
}

/// The real-time path, interleaved with ingestion in small batches through merges, hubs and splits, ends in
/// exactly the state a rebuild computes from the events.
@Suite struct ProfileStageEquivalenceTests {
    typealias F = ProfileFixture

    @Test(arguments: [UInt64(5), 6, 7, 8, 9])
    func realTimeProfilesEqualARebuild(seed: UInt64) async throws {
        // A shared address no blocklist knows, typed by 30 visitors: it merges them until it becomes a hub and is split.
        let data = SyntheticPeople.generate(
            SyntheticPeople.Options(
                people: 300, seed: seed, placeholderEmails: ["frontdesk@outfitters.example", "test@test.com"]))
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.apply(ComputedTraitTests.definitions, client)
            let now = Date()
            var random = SeededRandom(seed: seed)
            var start = 0
            while start < data.events.count {
                let end = min(data.events.count, start + 50 + random.below(300))
                try await IdentityFixture.write(Array(data.events[start..<end]), client)
                _ = try await IdentityStage(client: client, logger: TestDatabase.logger, batchSize: 20 + random.below(200))
                    .catchUp()
                _ = try await ProfileStage(
                    client: client, logger: TestDatabase.logger, batchSize: 10 + random.below(150),
                    followers: [RealtimeSegments()], clock: { now }
                )
                .catchUp()
                start = end
            }
            let splits = try await client.query("SELECT count(*) FROM cdp.profile_merge_log WHERE reason = 'split'").scalar(
                Int.self)
            let merges = try await client.query("SELECT count(*) FROM cdp.profile_merge_log WHERE reason = 'identifier'").scalar(
                Int.self)
            #expect(splits > 0 && merges > 0, "the data set exercises merges (\(merges)) and splits (\(splits))")
            let changes = try await client.query("SELECT count(*) FROM cdp.trait_history").scalar(Int.self)
            #expect(changes > 100)
            // RFM boundaries come from the bulk recompute, which the rebuild also does.
            _ = try await ProfileStage(
                client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()], clock: { now }
            ).recomputeAll()
            let before = try await F.state(client)
            let report = try await ProfileStage(
                client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()], clock: { now }
            ).rebuild()
            #expect(report.traitChanges == 0)
            #expect(report.profilesUpdated == 0)
            let after = try await F.state(client)
            #expect(after.count == before.count)
            #expect(Array(Set(after).symmetricDifference(before)).sorted().prefix(6) == [])
        }
    }
}

/// `cdp.profiles` gets a typed column per catalog trait and per computed trait.
@Suite struct ProfileViewTests {
    typealias F = ProfileFixture

    @Test func catalogTraitsBecomeTypedColumnsThatNeverFailAQuery() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let catalog = Catalog(traits: [
                "age": .init(type: .integer), "plan": .init(type: .string), "vip": .init(type: .boolean),
                "signedUpAt": .init(type: .timestamp), "score": .init(type: .double),
                "it's \"odd\"": .init(type: .string, column: "odd_key"),
            ])
            _ = try await CatalogStore(client: client).apply(catalog)
            try await F.ingest(
                [
                    F.event(
                        user: "u1",
                        traits:
                            #"{"age": 41, "plan": "pro", "vip": true, "signedUpAt": "2026-01-02T03:04:05Z", "score": 2.5, "it's \"odd\"": "yes"}"#,
                        at: F.day(1)),
                    // Wrong types read as NULL instead of failing the analyst's query.
                    F.event(
                        user: "u2",
                        traits: #"{"age": "forty", "vip": "yes", "signedUpAt": "2026-13-45T00:00:00Z", "score": "high"}"#,
                        at: F.day(1)),
                ], client)
            let rows = try await client.query(
                """
                SELECT coalesce(age::text, '-'), coalesce(plan, '-'), coalesce(vip::text, '-'),
                       coalesce(to_char(signed_up_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '-'), coalesce(score::text, '-'),
                       coalesce(odd_key, '-')
                FROM cdp.profiles ORDER BY age NULLS LAST
                """
            ).map { try $0.decode((String, String, String, String, String, String).self) }
            #expect(
                rows.map { [$0.0, $0.1, $0.2, $0.3, $0.4, $0.5] } == [
                    ["41", "pro", "true", "2026-01-02 03:04:05", "2.5", "yes"], ["-", "-", "-", "-", "-", "-"],
                ])
            let types = try await client.query(
                """
                SELECT attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute
                WHERE attrelid = 'cdp.profiles'::regclass AND attname IN ('age', 'vip', 'signed_up_at', 'score') ORDER BY attname
                """
            ).map { try $0[0].decode(String.self) }
            #expect(types == ["age bigint", "score double precision", "signed_up_at timestamp with time zone", "vip boolean"])

            // A computed trait named like a catalog column is refused, and nothing changes.
            await #expect(throws: ProfileError.self) {
                try await F.apply(ComputedTraitDefinitions(computedTraits: [.count("plan")]), client)
            }
            #expect(
                try await client.query("SELECT count(*) FROM cdp.profile_config WHERE name = 'computed_traits'").scalar(Int.self)
                    == 0)
            // Re-applying sql/ keeps the generated columns.
            try await IdentityFixture.migrated(client)
            #expect(try await client.query("SELECT count(*) FROM cdp.profiles WHERE plan = 'pro'").scalar(Int.self) == 1)
        }
    }
}

/// Several profile stage processors at once, racing ingestion and the identity stage: one works at a time, and the
/// result is the state a rebuild computes.
@Suite struct ProfileStageConcurrencyTests {
    typealias F = ProfileFixture

    @Test func concurrentProcessorsEndInTheRebuildState() async throws {
        let data = SyntheticPeople.generate(SyntheticPeople.Options(people: 200, seed: 21))
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.apply(ComputedTraitTests.definitions, client)
            let now = Date()
            let identity = IdentityStage(client: client, logger: TestDatabase.logger, batchSize: 64)
            let profiles = (0..<3).map {
                ProfileStage(
                    client: client, logger: TestDatabase.logger, batchSize: 40 + 17 * $0, followers: [RealtimeSegments()],
                    clock: { now })
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for start in stride(from: 0, to: data.events.count, by: 97) {
                        try await IdentityFixture.write(Array(data.events[start..<min(data.events.count, start + 97)]), client)
                        _ = try await identity.catchUp()
                    }
                }
                for stage in profiles {
                    group.addTask {
                        for _ in 0..<40 {
                            _ = try await stage.catchUp()
                            try await Task.sleep(for: .milliseconds(20))
                        }
                    }
                }
                try await group.waitForAll()
            }
            _ = try await identity.catchUp()
            _ = try await profiles[0].catchUp()
            #expect(
                try await client.query("SELECT seq FROM cdp.stage_checkpoints WHERE stage = 'profiles'").scalar(Int.self)
                    == data.events.count)
            _ = try await profiles[0].recomputeAll()
            let before = try await F.state(client)
            let report = try await profiles[0].rebuild()
            #expect(report.traitChanges == 0 && report.profilesUpdated == 0)
            #expect(try await F.state(client) == before)
        }
    }
}
