import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryFixtures
@testable import TributaryIdentity
@testable import TributaryModel
@testable import TributaryService

/// Helpers shared by the identity tests: write events, run the stage, read the partition back.
enum IdentityFixture {
    static func migrated(_ client: PostgresClient) async throws {
        try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
    }

    nonisolated(unsafe) static var counter = 0
    static let lock = NSLock()

    /// A call with a fresh message id; track calls are named `event` (default `Clicked`).
    static func event(
        anonymous: String? = nil, user: String? = nil, event: String? = nil, properties: String = "{}", traits: String = "{}",
        context: String = "{}", type: CallType = .identify, previous: String? = nil,
        at timestamp: Date = Date(timeIntervalSince1970: 1_780_000_000)
    ) -> IncomingEvent {
        lock.lock()
        counter += 1
        let id = "m-\(counter)"
        lock.unlock()
        return IncomingEvent(
            messageID: id, type: type, event: type == .track ? (event ?? "Clicked") : nil, name: nil, userID: user,
            anonymousID: anonymous, groupID: nil, previousID: previous, timestamp: timestamp, originalTimestamp: nil, sentAt: nil,
            receivedAt: Date(), properties: properties, traits: traits, context: context, integrations: "{}")
    }

    static func write(_ events: [IncomingEvent], _ client: PostgresClient, hints: (any ProfileHints)? = nil) async throws {
        let writer = EventWriter(client: client, profileHints: hints, logger: TestDatabase.logger)
        _ = try await writer.write(events, sourceID: "src-test")
    }

    /// Passes on another's guesses and remembers them by message id.
    final class RecordingHints: ProfileHints, @unchecked Sendable {
        let inner: any ProfileHints
        private let lock = NSLock()
        private var guesses: [String: UUID] = [:]
        init(_ inner: any ProfileHints) { self.inner = inner }
        func profiles(for events: [IncomingEvent]) -> [UUID?] {
            let result = inner.profiles(for: events)
            lock.withLock { for (event, guess) in zip(events, result) { guesses[event.messageID] = guess } }
            return result
        }
        /// How many guesses the stage kept and how many it corrected.
        func tally(_ client: PostgresClient) async throws -> (right: Int, wrong: Int) {
            let recorded = lock.withLock { guesses }
            var (right, wrong) = (0, 0)
            for row in try await client.query("SELECT message_id, profile_id FROM cdp.events") {
                let (message, profile) = try row.decode((String, UUID?).self)
                guard let guess = recorded[message] else { continue }
                if guess == profile { right += 1 } else { wrong += 1 }
            }
            return (right, wrong)
        }
    }

    static func applyRules(_ rules: IdentityRules, _ client: PostgresClient) async throws {
        try await IdentityAdmin(client: client, logger: TestDatabase.logger).apply(rules: rules, resolve: false)
    }

    /// kind:value → profile id, for every identifier.
    static func partition(_ client: PostgresClient) async throws -> [String: String] {
        var result: [String: String] = [:]
        for row in try await client.query("SELECT kind, value, profile_id::text FROM cdp.identities") {
            let (kind, value, profile) = try row.decode((String, String, String).self)
            result["\(kind):\(value)"] = profile
        }
        return result
    }

    /// seq → stamped profile id.
    static func stamps(_ client: PostgresClient) async throws -> [Int64: String] {
        var result: [Int64: String] = [:]
        for row in try await client.query("SELECT seq, coalesce(profile_id::text, '-') FROM cdp.events") {
            let (seq, profile) = try row.decode((Int64, String).self)
            result[seq] = profile
        }
        return result
    }

    static func profiles(_ client: PostgresClient) async throws -> Set<String> {
        Set(
            try await client.query(
                "SELECT profile_id::text || founder_kind || ':' || founder_value || founded_seq FROM cdp.identity_profiles"
            )
            .map { try $0[0].decode(String.self) })
    }

    /// Groups of identifiers that share a profile, independent of profile ids.
    static func groups(_ partition: [String: String]) -> Set<Set<String>> {
        Set(Dictionary(grouping: partition.keys, by: { partition[$0]! }).values.map(Set.init))
    }
}

@Suite struct IdentityStageTests {
    typealias F = IdentityFixture

    @Test func stitchesAnonymousVisitsEmailsAndLoginsIntoOneProfile() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await F.write(
                [
                    F.event(anonymous: "a-1", type: .page),
                    F.event(
                        anonymous: "a-1", user: "u-1",
                        traits: #"{"email": "  Jane.Doe@Example.COM ", "phone": "+1 (555) 010-1234"}"#),
                    F.event(anonymous: "a-2", type: .page),
                    F.event(anonymous: "a-2", traits: #"{"email": "jane.doe@example.com"}"#),
                    F.event(anonymous: "a-3", type: .page),
                    F.event(user: "u-2", traits: #"{"email": "bob@example.com"}"#),
                    F.event(anonymous: "a-3", user: "u-1", type: .track),
                ], client)
            let stage = IdentityStage(client: client, logger: TestDatabase.logger, batchSize: 3)
            let report = try await stage.catchUp()
            #expect(report.events == 7)
            let partition = try await F.partition(client)
            #expect(partition["email:jane.doe@example.com"] != nil, "email normalized")
            #expect(partition["phone:+15550101234"] != nil, "phone normalized")
            let jane = partition["user_id:u-1"]!
            for key in [
                "anonymous_id:a-1", "anonymous_id:a-2", "anonymous_id:a-3", "email:jane.doe@example.com", "phone:+15550101234",
            ] {
                #expect(partition[key] == jane, "\(key)")
            }
            #expect(partition["user_id:u-2"] != jane && partition["email:bob@example.com"] == partition["user_id:u-2"])
            // Profile id founded by the first identifier of the first event: a-1.
            #expect(jane == Identifier(kind: "anonymous_id", value: "a-1").foundedProfileID.uuidString.lowercased())
            // Every event is stamped with its final profile, including those before the merges.
            let stamps = try await F.stamps(client)
            #expect(stamps.values.filter { $0 == jane }.count == 6)
            // a-2 and a-3 founded profiles that merged into Jane's; their ids resolve to hers.
            let merges = try await client.query(
                "SELECT from_profile_id::text, into_profile_id::text, reason, kind FROM cdp.profile_merges")
            #expect(merges.count == 2)
            for row in merges {
                let (from, into, reason, kind) = try row.decode((String, String, String, String).self)
                #expect(into == jane && reason == "identifier" && (kind == "email" || kind == "anonymous_id"))
                #expect(
                    try await client.query("SELECT cdp.resolve_profile(\(UUID(uuidString: from)!))::text").scalar(String.self)
                        == jane)
            }
            // The rebuild agrees exactly: same ids, nothing to change.
            let rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.nodesChanged == 0 && rebuild.eventsRestamped == 0)
            #expect(try await F.partition(client) == partition)
        }
    }

    /// The stage's in-memory cache of known identifiers is used only while nothing else has changed the graph: not
    /// after another process ran batches (its merges moved identifiers), nor after SQL of someone else's changed a node.
    @Test func theIdentifierCacheIsDroppedWhenAnythingElseChangesTheGraph() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            let cached = IdentityStage(client: client, logger: TestDatabase.logger)
            try await F.write(
                [
                    F.event(anonymous: "a-1", user: "u-1"),
                    F.event(anonymous: "a-2", traits: #"{"email": "two@example.com"}"#),
                ], client)
            _ = try await cached.catchUp()
            #expect(cached.cache.count == 4)
            let one = try await F.partition(client)["user_id:u-1"]!
            let two = try await F.partition(client)["anonymous_id:a-2"]!
            #expect(one != two)

            // Another process: a-2's profile merges into u-1's (their email is seen with u-1).
            try await F.write([F.event(user: "u-1", traits: #"{"email": "two@example.com"}"#)], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            #expect(try await F.partition(client)["anonymous_id:a-2"] == one)
            // The cached stage meets a-2 again: it must stamp u-1's profile, not the one merged away.
            try await F.write([F.event(anonymous: "a-2", type: .page), F.event(anonymous: "a-1", type: .page)], client)
            _ = try await cached.catchUp()
            let stamped = try await client.query(
                """
                SELECT profile_id::text FROM cdp.events WHERE anonymous_id = 'a-2' ORDER BY seq DESC LIMIT 1
                """
            ).scalar(String.self)
            #expect(stamped == one)
            #expect(cached.cache.count == 2)

            // Someone's SQL moves a-1 to a profile of its own (the checkpoint stays where the cached stage left it).
            let own = Identifier(kind: "anonymous_id", value: "a-1").foundedProfileID
            try await client.execute(
                """
                INSERT INTO cdp.identity_profiles (profile_id, founder_kind, founder_value, founded_seq)
                VALUES (\(own), 'anonymous_id', 'a-1', 1)
                """)
            try await client.execute(
                "UPDATE cdp.identity_nodes SET profile_id = \(own) WHERE kind = 'anonymous_id' AND value = 'a-1'")
            try await F.write([F.event(anonymous: "a-1", type: .page)], client)
            _ = try await cached.catchUp()
            let moved = try await client.query("SELECT profile_id FROM cdp.events ORDER BY seq DESC LIMIT 1").scalar(UUID.self)
            #expect(moved == own)
        }
    }

    /// Events stored with the stage's guesses: a right guess is left alone (the row is not rewritten), a wrong one
    /// or a missing one is stamped, and a rebuild finds nothing to re-stamp.
    @Test func eventsGuessedRightAtIngestAreNotRewritten() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            let stage = IdentityStage(client: client, logger: TestDatabase.logger)
            // Before its first batch the stage has no rules in hand: nothing is guessed.
            try await F.write(
                [F.event(anonymous: "a-1", user: "u-1"), F.event(anonymous: "a-2", user: "u-2")], client,
                hints: stage.profileHints)
            #expect(try await client.query("SELECT count(*) FROM cdp.events WHERE profile_id IS NOT NULL").scalar(Int.self) == 0)
            _ = try await stage.catchUp()
            let known = try await F.partition(client)
            let u1 = try #require(known["user_id:u-1"])
            // u-1 on a new device: u-1's profile. A stranger (padded as SDKs never do, trimmed as the stage trims): the
            // profile it founds. a-2 (u-2's) with u-1: two profiles, a merge only the stage decides: no guess. A
            // stranger whose email joins u-1: a wrong guess.
            try await F.write(
                [
                    F.event(anonymous: "a-3", user: "u-1", type: .track), F.event(anonymous: " new-1 ", type: .page),
                    F.event(anonymous: "a-2", user: "u-1", type: .track),
                    F.event(anonymous: "new-2", traits: #"{"email": "one@example.com"}"#),
                ], client, hints: stage.profileHints)
            func rows() async throws -> [(profile: String?, xmin: String)] {
                try await client.query("SELECT profile_id::text, xmin::text FROM cdp.events ORDER BY seq OFFSET 2").map {
                    try $0.decode((String?, String).self)
                }
            }
            let before = try await rows()
            let newcomer = Identifier(kind: "anonymous_id", value: "new-1").foundedProfileID.uuidString.lowercased()
            let stranger = Identifier(kind: "anonymous_id", value: "new-2").foundedProfileID.uuidString.lowercased()
            #expect(before.map(\.profile) == [u1, newcomer, nil, stranger])
            try await F.write([F.event(user: "u-1", traits: #"{"email": "one@example.com"}"#)], client)
            _ = try await stage.catchUp()
            let after = try await rows()
            #expect(after[0].profile == u1 && after[0].xmin == before[0].xmin, "a right guess is not rewritten")
            #expect(after[1].profile == newcomer && after[1].xmin == before[1].xmin)
            #expect(after[2].profile != nil && after[2].xmin != before[2].xmin, "an event without a guess is stamped")
            // The guess took new-2 for the founder; the email (higher in priority) founded the profile instead.
            let final = try await F.partition(client)
            #expect(after[3].profile != stranger && after[3].profile == final["anonymous_id:new-2"])
            let rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.eventsRestamped == 0)
        }
    }

    /// The ingest-time guess normalizes user and anonymous ids exactly as `cdp.identity_candidates` does, or not at all.
    @Test func plainIdentifiersAreNormalizedAsTheExtractionNormalizesThem() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            var rules = IdentityRules()
            rules.normalize["user_id"] = "lowercase"
            rules.maxLength = 12
            let document = try rules.document()
            let raws = [
                "u-1", "  U-Two\t", "\n", "", "ÄBC", "a\u{7}b", "1234567890123", "123456789012", " 12345678901 ", "x y",
            ]
            for raw in raws {
                for kind in ["user_id", "anonymous_id"] {
                    let sql = try await client.query(
                        """
                        SELECT c.value, c.problem FROM cdp.identity_candidates(
                            CASE WHEN \(kind) = 'user_id' THEN \(raw) END, CASE WHEN \(kind) = 'anonymous_id' THEN \(raw) END,
                            NULL, NULL, \(document)::jsonb) AS c
                        """
                    ).first.map { try $0.decode((String?, String?).self) }
                    let usable = sql.flatMap { $0.1 == nil ? $0.0 : nil }
                    let swift = rules.plainIdentifier(kind: kind, raw)
                    // Swift may decline what SQL accepts (it is only a guess), never the reverse or a different value.
                    if let swift { #expect(swift.value == usable, "\(kind) '\(raw)'") }
                    if usable.map({ !$0.isEmpty }) == true { #expect(swift != nil, "\(kind) '\(raw)' declined") }
                }
            }
            #expect(rules.plainIdentifier(kind: "email", "a@b.co") == nil)
        }
    }

    @Test func userIDLimitKeepsFamilyMembersApartOnASharedDevice() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await F.write(
                [
                    F.event(anonymous: "tablet", user: "mum", traits: #"{"email": "mum@example.com"}"#),
                    F.event(anonymous: "tablet", user: "son", traits: #"{"email": "son@example.com"}"#),
                    F.event(anonymous: "son-phone", user: "son"),
                    F.event(anonymous: "tablet", type: .page),
                ], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            let partition = try await F.partition(client)
            #expect(partition["user_id:mum"] != partition["user_id:son"])
            #expect(partition["anonymous_id:tablet"] == partition["user_id:mum"], "first login keeps the device")
            #expect(partition["email:son@example.com"] == partition["user_id:son"])
            #expect(partition["anonymous_id:son-phone"] == partition["user_id:son"])
            let stamps = try await F.stamps(client).sorted { $0.key < $1.key }.map(\.value)
            #expect(
                stamps == [
                    partition["user_id:mum"]!, partition["user_id:son"]!, partition["user_id:son"]!, partition["user_id:mum"]!,
                ])
            let rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.conflictComponents == 1 && rebuild.nodesChanged == 0 && rebuild.eventsRestamped == 0)
        }
    }

    @Test func hubIsDetectedAndTheProfilesItMergedAreSplit() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            var rules = IdentityRules()
            rules.hubThreshold = 3
            try await F.applyRules(rules, client)
            // Four different visitors type the same shared email (not a built-in placeholder); the fourth makes it a hub.
            let stage = IdentityStage(client: client, logger: TestDatabase.logger)
            for visitor in 1...3 {
                try await F.write([F.event(anonymous: "v-\(visitor)", traits: #"{"email": "frontdesk@hotel.example"}"#)], client)
            }
            _ = try await stage.catchUp()
            var partition = try await F.partition(client)
            #expect(
                Set(["v-1", "v-2", "v-3"].map { partition["anonymous_id:\($0)"]! }).count == 1, "merged while under the threshold"
            )
            try await F.write([F.event(anonymous: "v-4", traits: #"{"email": "FrontDesk@hotel.example"}"#)], client)
            let report = try await stage.catchUp()
            #expect(report.hubsDetected == 1)
            partition = try await F.partition(client)
            #expect(Set((1...4).map { partition["anonymous_id:v-\($0)"]! }).count == 4, "split apart")
            let hub = try await client.query("SELECT is_hub FROM cdp.identities WHERE kind = 'email'").scalar(Bool.self)
            #expect(hub)
            let splits = try await client.query("SELECT count(*) FROM cdp.profile_merges WHERE reason = 'split'").scalar(Int.self)
            #expect(splits >= 1)
            let stamps = try await F.stamps(client)
            #expect(Set(stamps.values).count == 4)
            let rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.hubs == 1 && rebuild.nodesChanged == 0 && rebuild.eventsRestamped == 0)
        }
    }
}

extension IdentityStageTests {
    /// Placeholders people type instead of their own email or phone link nobody, however few type them; real
    /// addresses at the same domains still link; the rebuild agrees.
    @Test func builtInPlaceholdersLinkNobody() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            let placeholders = [
                #""email": "Test@Test.com""#, #""email": "none@gmail.com""#, #""email": "noemail@shop.example""#,
                #""email": "no-reply@acme.io""#, #""email": "fake@fake.net""#, #""phone": "+1 (111) 111-1111""#,
                #""phone": "1234567890""#,
            ]
            var events: [IncomingEvent] = []
            for (index, placeholder) in placeholders.enumerated() {
                for visitor in 1...3 { events.append(F.event(anonymous: "p\(index)-v\(visitor)", traits: "{\(placeholder)}")) }
            }
            // Real people at the same domains, each on two browsers: these still link.
            events.append(F.event(anonymous: "r-1", traits: #"{"email": "jane@test.com"}"#))
            events.append(F.event(anonymous: "r-2", traits: #"{"email": "jane@test.com", "phone": "+1 201 555 0123"}"#))
            events.append(F.event(anonymous: "r-3", traits: #"{"phone": "+12015550123"}"#))
            try await F.write(events, client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            let partition = try await F.partition(client)
            for index in placeholders.indices {
                let profiles = Set((1...3).map { partition["anonymous_id:p\(index)-v\($0)"] })
                #expect(profiles.count == 3 && !profiles.contains(nil), "\(placeholders[index]) linked visitors")
            }
            #expect(!partition.keys.contains { $0.hasPrefix("email:") && $0 != "email:jane@test.com" })
            #expect(
                Set(["anonymous_id:r-1", "anonymous_id:r-2", "anonymous_id:r-3", "email:jane@test.com"].map { partition[$0] })
                    .count == 1)
            let blocked = try await client.query(
                "SELECT coalesce(sum(count), 0)::int8 FROM cdp.identity_ignored WHERE reason = 'blocked' AND kind IN ('email', 'phone')"
            ).scalar(Int.self)
            #expect(blocked == 3 * placeholders.count)
            let explained = try? await IdentityAdmin(client: client, logger: TestDatabase.logger).explain(
                Identifier(kind: "email", value: "TEST@test.com"))
            #expect(explained == nil)
            do {
                _ = try await IdentityAdmin(client: client, logger: TestDatabase.logger).explain(
                    Identifier(kind: "email", value: "TEST@test.com"))
            } catch {
                #expect("\(error)".contains("email:test@test.com") && "\(error)".contains("blocked"), "\(error)")
            }
            let rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.nodesChanged == 0 && rebuild.eventsRestamped == 0)
        }
    }

    /// A graph stored by an older version, whose built-in rules let a placeholder through, is brought in line by
    /// `migrate`: the placeholder leaves the graph and the visitors it had joined are split.
    @Test func migrateAppliesNewBuiltInBlockedValuesToAStoredGraph() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            var older = IdentityRules()
            older.defaultBlocked = false
            try await F.applyRules(older, client)
            try await F.write(
                (1...3).map { F.event(anonymous: "v-\($0)", traits: #"{"email": "none@none.com"}"#) }
                    + [F.event(anonymous: "v-1", user: "u-1")], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            var partition = try await F.partition(client)
            #expect(Set((1...3).map { partition["anonymous_id:v-\($0)"]! }).count == 1, "merged by the placeholder")
            // What an older version stored: its own defaults, under a checksum this version does not compute.
            try await client.execute(
                """
                UPDATE cdp.identity_rules SET rules = jsonb_set(rules, '{defaultBlocked}', 'true'), checksum = 'older version'
                """)
            let report = try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger)
                .migrate(client)
            guard case .blockedValuesSplit(let removed) = report.identityRules else {
                Issue.record("expected the placeholder to be removed, got \(report.identityRules)")
                return
            }
            #expect(removed == 1)
            partition = try await F.partition(client)
            #expect(partition["email:none@none.com"] == nil)
            #expect(Set((1...3).map { partition["anonymous_id:v-\($0)"]! }).count == 3, "split apart")
            #expect(partition["user_id:u-1"] == partition["anonymous_id:v-1"])
            let rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.nodesChanged == 0 && rebuild.eventsRestamped == 0)
            let again = try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger)
                .migrate(client)
            guard case .unchanged = again.identityRules else { Issue.record("expected unchanged"); return }
        }
    }
}

extension IdentityStageTests {
    /// The alias rule: previousId is an anonymous id when that value was the anonymousId of this or an earlier event,
    /// else a user id; the link is subject to the limits like any other, and the rebuild agrees.
    @Test func aliasLinksPreviousIDToUserIDUnderTheLimits() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await F.write(
                [
                    F.event(anonymous: "a-1", type: .page),
                    // An anonymous id seen before: kind anonymous_id, so user_id's limit of 1 is kept.
                    F.event(user: "u-1", type: .alias, previous: " a-1 "),
                    // Never seen as an anonymous id before this call (a-late comes later): a user id, and u-2 already has one.
                    F.event(user: "u-2", type: .alias, previous: "a-late"),
                    F.event(anonymous: "a-late", type: .page),
                    // A user id renamed: two user ids exceed the default limit of 1, so they stay apart.
                    F.event(user: "u-1-new", type: .alias, previous: "u-1"),
                    // Blocked values link nothing.
                    F.event(user: "u-3", type: .alias, previous: "undefined"),
                ], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger, batchSize: 2).catchUp()
            let partition = try await F.partition(client)
            #expect(partition["anonymous_id:a-1"] != nil && partition["anonymous_id:a-1"] == partition["user_id:u-1"])
            #expect(
                partition["user_id:a-late"] != nil && partition["user_id:a-late"] != partition["user_id:u-2"],
                "refused by the limit")
            #expect(partition["anonymous_id:a-late"] != partition["user_id:u-2"])
            #expect(partition["user_id:u-1-new"] != partition["user_id:u-1"])
            #expect(
                partition["user_id:undefined"] == nil && partition["anonymous_id:undefined"] == nil
                    && partition["user_id:u-3"] != nil)
            let explained = try await IdentityAdmin(client: client, logger: TestDatabase.logger).explain(
                Identifier(kind: "user_id", value: "u-1"))
            #expect(explained.contains("alias (previousId is userId)") && explained.contains("anonymous_id:a-1"), "\(explained)")
            var rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.nodesChanged == 0 && rebuild.eventsRestamped == 0)
            #expect(try await F.partition(client) == partition)

            // With room for two user ids, a renamed user id joins the old one's profile (real time and rebuild).
            var rules = IdentityRules()
            rules.limits["user_id"] = 2
            try await F.applyRules(rules, client)
            rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            try await F.write([F.event(user: "u-9-new", type: .alias, previous: "u-9"), F.event(user: "u-9")], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            var relaxed = try await F.partition(client)
            #expect(relaxed["user_id:u-1-new"] == relaxed["user_id:u-1"] && relaxed["anonymous_id:a-1"] == relaxed["user_id:u-1"])
            #expect(relaxed["user_id:u-9-new"] == relaxed["user_id:u-9"])
            // Two profiles merged by an alias call: explain names it.
            try await F.write([F.event(user: "u-7"), F.event(user: "u-8")], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            try await F.write([F.event(user: "u-8", type: .alias, previous: "u-7")], client)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            let merged = try await IdentityAdmin(client: client, logger: TestDatabase.logger).explain(
                Identifier(kind: "user_id", value: "u-8"))
            #expect(merged.contains("merged in by alias call seq"), "\(merged)")
            relaxed = try await F.partition(client)
            #expect(relaxed["user_id:u-7"] == relaxed["user_id:u-8"])
            rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.nodesChanged == 0 && rebuild.eventsRestamped == 0)
            #expect(try await F.partition(client) == relaxed)
        }
    }
}

/// Random event streams: the real-time stage (random batch sizes, interleaved with ingestion, hubs detected and
/// split on the way, values blocked after the fact) and the SQL rebuild must give the same graph, exactly.
@Suite struct IdentityEquivalenceTests {
    typealias F = IdentityFixture

    typealias SplitMix = SeededRandom

    static func randomStream(seed: UInt64, count: Int) -> [IncomingEvent] {
        var random = SplitMix(seed: seed)
        let emails = ["ann@x.com", "Ann@X.com ", "bob@x.com", "cat@x.com", "dan@x.com", "shared@x.com", "hub@x.com"]
        let junk = ["", "null", "anonymous", "00000000-0000-0000-0000-000000000000", "undefined"]
        var events: [IncomingEvent] = []
        for index in 0..<count {
            var anonymous: String? = random.chance(0.8) ? "a\(random.below(12))" : nil
            if random.chance(0.05) { anonymous = junk[random.below(junk.count)] }
            var user: String? = random.chance(0.35) ? "u\(random.below(6))" : nil
            if anonymous == nil && user == nil { user = "u\(random.below(6))" }
            // Spellings the normalization (trim; lowercase under some seeds' rules) or the checks (control
            // characters, length) act on.
            if let plain = user, random.chance(0.08) { user = " \(plain.uppercased())\t" }
            if random.chance(0.02) { user = "u\u{1}\(random.below(3))" }
            if random.chance(0.02) { anonymous = String(repeating: "a", count: 300) }
            var traits: [String] = []
            if random.chance(0.45) {
                let email = random.chance(0.25) ? "hub@x.com" : emails[random.below(emails.count)]
                traits.append(#""email": "\#(email)""#)
            }
            if random.chance(0.2) { traits.append(#""phone": "+1 555 000 \#(random.below(4))""#) }
            if random.chance(0.1) { traits.append(#""loyalty": "L\#(random.below(5))""#) }
            if random.chance(0.03) { traits.append(#""email": 42"#) }
            if random.chance(0.03) { traits.append(#""email": "\#(String(repeating: "x", count: 300))@x.com""#) }
            var context = "{}"
            if random.chance(0.1) {
                context =
                    #"{"externalIds": [{"id": "crm-\#(random.below(5))", "type": "CRM_ID", "collection": "users", "encoding": "none"}]}"#
            } else if random.chance(0.1) {
                context = #"{"traits": {"email": "\#(emails[random.below(emails.count)])"}}"#
            } else if random.chance(0.05) {
                context = #"{"traits": {"loyalty": "L\#(random.below(5))"}, "ip": "10.0.0.1"}"#
            }
            let at = Date(timeIntervalSince1970: 1_780_000_000 + Double(index * 60 - random.below(3000)))
            if random.chance(0.1) {
                // An alias: previousId an anonymous id (seen before or not yet), a user id, or junk.
                let previous =
                    random.chance(0.5)
                    ? "a\(random.below(14))" : random.chance(0.8) ? "u\(random.below(6))" : junk[random.below(junk.count)]
                events.append(
                    F.event(
                        anonymous: random.chance(0.2) ? anonymous : nil, user: "u\(random.below(6))", type: .alias,
                        previous: previous, at: at))
                continue
            }
            events.append(
                F.event(
                    anonymous: anonymous, user: user, traits: "{" + traits.joined(separator: ", ") + "}", context: context,
                    type: traits.isEmpty ? .track : .identify, at: at))
        }
        return events
    }

    @Test(arguments: Array(1...8) as [UInt64])
    func realTimeStageAndRebuildGiveTheSameGraph(seed: UInt64) async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            var rules = IdentityRules()
            rules.hubThreshold = 4
            rules.limits["email"] = 2
            rules.limits["phone"] = 1
            rules.traitKeys["loyalty"] = "loyalty_id"
            if seed % 2 == 0 { rules.normalize["user_id"] = "lowercase" }
            try await F.applyRules(rules, client)
            var random = SplitMix(seed: seed &* 7919)
            let events = Self.randomStream(seed: seed, count: 200)
            var stage = IdentityStage(client: client, logger: TestDatabase.logger)
            // Events are stored with the stage's guesses, as `serve` stores them: the stage must correct every wrong one.
            let hints = F.RecordingHints(stage.profileHints)
            var position = 0, writes = 0
            while position < events.count {
                let chunk = 1 + random.below(25)
                try await F.write(Array(events[position..<min(events.count, position + chunk)]), client, hints: hints)
                position += chunk
                // Odd seeds leave gaps in the sequence (as deleted events do), so the rebuild meets sparse seqs.
                writes += 1
                if seed % 2 == 1 && writes % 3 == 0 { try await client.execute("SELECT nextval('cdp.events_seq')") }
                if random.chance(0.6) {
                    stage.batchSize = 1 + random.below(40)
                    _ = try await stage.processBatch()
                }
            }
            _ = try await stage.catchUp()
            // Both kinds occur with every seed (the streams carry traits and merges the guesses cannot see).
            let tally = try await hints.tally(client)
            #expect(tally.right > 0 && tally.wrong > 0, "seed \(seed): guesses kept \(tally.right), corrected \(tally.wrong)")
            try await expectComponentsMatchTheRecursiveDefinition(client, seed: seed)
            try await expectTheMigrationFillsRedirectsAsTheTriggersKeepThem(client, seed: seed)
            try await expectRebuildAgrees(client, seed: seed, phase: "real-time")
            try await expectRebuildRepairs(client, seed: seed)

            // A value blocked after the fact: removed, what it joined split, and still the same as a rebuild.
            let partition = try await F.partition(client)
            let victim = partition.keys.filter { $0.hasPrefix("email:") && $0 != "email:hub@x.com" }.sorted().first
            if let victim {
                rules.blocked.append(
                    .init(
                        pattern: "^" + NSRegularExpression.escapedPattern(for: String(victim.dropFirst(6))) + "$",
                        kinds: ["email"]))
                let outcome = try await IdentityAdmin(client: client, logger: TestDatabase.logger).apply(rules: rules)
                guard case .blockedValuesSplit(let removed) = outcome else {
                    Issue.record("expected a split, got \(outcome)")
                    return
                }
                #expect(removed == 1)
                #expect(try await F.partition(client)[victim] == nil)
                try await expectRebuildAgrees(client, seed: seed, phase: "after blocking \(victim)")
            }
        }
    }

    /// The rebuild's union-find over the stored graph (hubs left out) gives each identifier the component the
    /// recursive definition gives: every identifier reaches every identifier of its component over non-hub edges.
    func expectComponentsMatchTheRecursiveDefinition(_ client: PostgresClient, seed: UInt64) async throws {
        try await client.withConnection { db in
            var (finder, _) = try await IdentityRebuild.components(
                db, nodes: "COPY (SELECT node_id, kind FROM cdp.identity_nodes WHERE status <> 'hub' ORDER BY node_id) TO STDOUT",
                edges: "COPY cdp.identity_edges (a, b) TO STDOUT")
            var fast: [Int64: Int64] = [:]
            for (node, label) in finder.labels() { fast[node] = label }
            var recursive: [Int64: Int64] = [:]
            for row in try await db.query(
                """
                WITH RECURSIVE usable AS (
                    SELECT node_id FROM cdp.identity_nodes WHERE status <> 'hub'
                ), adjacent AS (
                    SELECT e.a AS node, e.b AS other FROM cdp.identity_edges AS e
                    WHERE e.a IN (SELECT node_id FROM usable) AND e.b IN (SELECT node_id FROM usable)
                    UNION ALL
                    SELECT e.b, e.a FROM cdp.identity_edges AS e
                    WHERE e.a IN (SELECT node_id FROM usable) AND e.b IN (SELECT node_id FROM usable)
                ), reach (node, root) AS (
                    SELECT node_id, node_id FROM usable
                    UNION
                    SELECT a.other, r.root FROM reach AS r JOIN adjacent AS a ON a.node = r.node
                )
                SELECT node, min(root) FROM reach GROUP BY node
                """)
            {
                let (node, label) = try row.decode((Int64, Int64).self)
                recursive[node] = label
            }
            #expect(!recursive.isEmpty)
            #expect(fast == recursive, "seed \(seed): union-find and the recursive query disagree")
            #expect(Set(fast.values).count < fast.count, "seed \(seed): some component has more than one identifier")
        }
    }

    /// `cdp.profile_redirects` holds, for every profile id merged away or split off, exactly where the recursive walk
    /// along the merge log ends, and nothing for live ids.
    func expectRedirectsMatchTheLog(_ client: PostgresClient, seed: UInt64, phase: String) async throws {
        let wrong = try await client.query(
            """
            SELECT ids.id::text, cdp.resolve_profile_by_log(ids.id)::text, r.profile_id::text
            FROM (SELECT DISTINCT from_profile_id AS id FROM cdp.profile_merge_log) AS ids
            LEFT JOIN cdp.profile_redirects AS r ON r.from_profile_id = ids.id
            WHERE cdp.resolve_profile_by_log(ids.id) IS DISTINCT FROM
                  CASE WHEN EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = ids.id) THEN ids.id
                       ELSE r.profile_id END
            LIMIT 5
            """
        ).map { try $0.decode((String, String?, String?).self) }
        #expect(wrong.isEmpty, "seed \(seed) \(phase): redirects differ from the log: \(wrong)")
        let stray = try await client.query(
            """
            SELECT count(*) FROM cdp.profile_redirects AS r
            WHERE EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = r.from_profile_id)
               OR NOT EXISTS (SELECT 1 FROM cdp.identity_profiles AS p WHERE p.profile_id = r.profile_id)
            """
        ).scalar(Int.self)
        #expect(stray == 0, "seed \(seed) \(phase): redirects from live ids or to dead ones")
    }

    /// Migration 0018 fills `cdp.profile_redirects` for a database upgraded with merges in its log: the same rows
    /// the writers keep.
    func expectTheMigrationFillsRedirectsAsTheTriggersKeepThem(_ client: PostgresClient, seed: UInt64) async throws {
        func rows() async throws -> [String: String] {
            Dictionary(
                uniqueKeysWithValues: try await client.query(
                    "SELECT from_profile_id::text, profile_id::text FROM cdp.profile_redirects"
                ).map { try $0.decode((String, String).self) })
        }
        let kept = try await rows()
        let migration = try String(
            contentsOf: TestDatabase.packageRoot.appendingPathComponent("migrations/0018_profile_redirects.sql"), encoding: .utf8)
        let fill = String(migration[migration.range(of: "-- Filled from the log")!.lowerBound...])
        try await client.execute("TRUNCATE cdp.profile_redirects")
        try await client.withConnection { try await $0.script(fill) }
        #expect(try await rows() == kept, "seed \(seed): the migration's fill differs from what the writers keep")
    }

    /// Everything the rebuild writes, by identifier rather than by node id (a rebuild may give a node a new id): nodes
    /// with their profile, status and times; edges (either way round) with their first event; profiles; event stamps.
    func storedGraph(_ client: PostgresClient) async throws -> [String] {
        try await client.query(
            """
            SELECT 'node ' || kind || ':' || value || ' ' || profile_id || ' ' || status || ' ' || first_seq || ' '
                   || first_seen_at || ' ' || last_seen_at FROM cdp.identity_nodes
            UNION ALL
            SELECT 'edge ' || least(x.kind || ':' || x.value, y.kind || ':' || y.value) || ' '
                   || greatest(x.kind || ':' || x.value, y.kind || ':' || y.value) || ' ' || e.first_seq
            FROM cdp.identity_edges AS e JOIN cdp.identity_nodes AS x ON x.node_id = e.a JOIN cdp.identity_nodes AS y ON y.node_id = e.b
            UNION ALL
            SELECT 'profile ' || profile_id || ' ' || founder_kind || ':' || founder_value || ' ' || founded_seq
            FROM cdp.identity_profiles
            UNION ALL
            SELECT 'stamp ' || seq || ' ' || coalesce(profile_id::text, '-') FROM cdp.events
            ORDER BY 1
            """
        ).map { try $0[0].decode(String.self) }
    }

    /// Both ways of the rebuild put back the real-time graph exactly, from a stored graph damaged in every part the
    /// swap compares (every kind of difference: rows missing, extra and changed), and from nothing at all.
    func expectRebuildRepairs(_ client: PostgresClient, seed: UInt64) async throws {
        let expected = try await storedGraph(client)
        for inMemory in [true, false] {
            for damage in ["damaged", "wiped"] {
                let way = "seed \(seed), \(damage), \(inMemory ? "in memory" : "in the database")"
                try await client.withConnection { db in
                    if damage == "wiped" {
                        try await db.script(
                            """
                            TRUNCATE cdp.identity_nodes, cdp.identity_edges, cdp.identity_profiles;
                            UPDATE cdp.events SET profile_id = NULL;
                            """)
                        return
                    }
                    try await db.script(
                        """
                        UPDATE cdp.events SET profile_id = NULL WHERE seq % 7 = 0;
                        UPDATE cdp.events SET profile_id = (SELECT min(profile_id::text)::uuid FROM cdp.identity_profiles)
                        WHERE seq % 7 = 1;
                        UPDATE cdp.events SET profile_id = gen_random_uuid() WHERE seq % 7 = 2 AND profile_id IS NULL;
                        DELETE FROM cdp.identity_edges WHERE a % 5 = 0;
                        UPDATE cdp.identity_edges SET first_seq = first_seq + 1000 WHERE a % 5 = 1;
                        INSERT INTO cdp.identity_edges (a, b, first_seq)
                        SELECT x.node_id, y.node_id, 1 FROM cdp.identity_nodes AS x JOIN cdp.identity_nodes AS y ON x.node_id < y.node_id
                        WHERE x.profile_id <> y.profile_id ORDER BY 1, 2 LIMIT 3 ON CONFLICT DO NOTHING;
                        UPDATE cdp.identity_nodes SET last_seen_at = last_seen_at + interval '1 day' WHERE node_id % 6 = 0;
                        UPDATE cdp.identity_nodes SET first_seq = first_seq + 1 WHERE node_id % 6 = 1;
                        UPDATE cdp.identity_nodes SET status = CASE status WHEN 'hub' THEN 'active' ELSE 'hub' END WHERE node_id % 6 = 2;
                        UPDATE cdp.identity_nodes SET profile_id = gen_random_uuid() WHERE node_id % 6 = 3;
                        DELETE FROM cdp.identity_nodes WHERE node_id % 6 = 4;
                        INSERT INTO cdp.identity_nodes (kind, value, profile_id, status, first_seq, first_seen_at, last_seen_at)
                        SELECT 'email', 'ghost@nowhere.example', min(profile_id::text)::uuid, 'active', 1, now(), now()
                        FROM cdp.identity_profiles;
                        UPDATE cdp.identity_profiles SET founded_seq = founded_seq + 3
                        WHERE profile_id IN (SELECT profile_id FROM cdp.identity_profiles ORDER BY profile_id LIMIT 3);
                        DELETE FROM cdp.identity_profiles
                        WHERE profile_id IN (SELECT profile_id FROM cdp.identity_profiles ORDER BY profile_id DESC LIMIT 2);
                        INSERT INTO cdp.identity_profiles (profile_id, founder_kind, founder_value, founded_seq)
                        VALUES (gen_random_uuid(), 'email', 'ghost@nowhere.example', 1);
                        """)
                }
                let damaged = try await storedGraph(client) != expected
                #expect(damaged, "\(way): the damage changed nothing")
                var rebuild = IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger)
                if !inMemory { rebuild.memoryBudget = 0 }
                let report = try await rebuild.run()
                #expect(report.inMemory == inMemory)
                #expect(report.nodesChanged > 0 && report.eventsRestamped > 0, "\(way): nothing repaired")
                let repaired = try await storedGraph(client)
                let same = repaired == expected
                #expect(
                    same,
                    "\(way): differs from the real-time graph: missing \(Set(expected).subtracting(repaired).sorted().prefix(5)), extra \(Set(repaired).subtracting(expected).sorted().prefix(5))"
                )
            }
        }
    }

    func expectRebuildAgrees(_ client: PostgresClient, seed: UInt64, phase: String) async throws {
        try await expectRedirectsMatchTheLog(client, seed: seed, phase: phase)
        let partition = try await F.partition(client)
        let stamps = try await F.stamps(client)
        let profiles = try await F.profiles(client)
        #expect(!partition.isEmpty)
        // Both ways of the rebuild: the graph in this process, and in PostgreSQL (a memory budget of 0).
        for inMemory in [true, false] {
            let way = "\(phase), \(inMemory ? "in memory" : "in the database")"
            var rebuild = IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger)
            if !inMemory { rebuild.memoryBudget = 0 }
            // Odd seeds replay each component over a limit on an engine of its own, even seeds all on one.
            if seed % 2 == 1 { rebuild.replayBatch = 1 }
            let report = try await rebuild.run()
            #expect(report.inMemory == inMemory)
            #expect(report.nodesChanged == 0, "seed \(seed) \(way): rebuild changed \(report.nodesChanged) identifiers")
            #expect(report.eventsRestamped == 0, "seed \(seed) \(way): rebuild re-stamped \(report.eventsRestamped) events")
            let rebuilt = try await F.partition(client)
            let before = F.groups(partition), after = F.groups(rebuilt)
            #expect(
                before == after,
                "seed \(seed) \(way): real-time only \(before.subtracting(after)), rebuild only \(after.subtracting(before))")
            #expect(rebuilt == partition, "seed \(seed) \(way): profile ids differ")
            #expect(try await F.stamps(client) == stamps, "seed \(seed) \(way): event stamps differ")
            #expect(try await F.profiles(client) == profiles, "seed \(seed) \(way): profiles differ")
            try await expectRedirectsMatchTheLog(client, seed: seed, phase: "\(way), after the rebuild")
        }
    }
}

/// A generated multi-channel data set with known truth (web, app, email platform, POS, CRM; shared family devices,
/// couples sharing an email, placeholder emails, kiosks, formatting variants, junk): pairwise precision and recall
/// at least 0.99 and no profile with two user ids, from the real-time stage and from the rebuild.
@Suite struct IdentityAccuracyTests {
    typealias F = IdentityFixture

    @Test func multiChannelPeopleResolveAccurately() async throws {
        let data = SyntheticPeople.generate(SyntheticPeople.Options(people: 2000, seed: 11))
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            for start in stride(from: 0, to: data.events.count, by: 1000) {
                try await F.write(Array(data.events[start..<min(data.events.count, start + 1000)]), client)
            }
            let report = try await IdentityStage(client: client, logger: TestDatabase.logger, batchSize: 2000).catchUp()
            #expect(report.events == data.events.count)
            #expect(report.hubsDetected >= 2, "kiosks are hubs")
            let placeholders = try await client.query(
                "SELECT count(*) FROM cdp.identity_nodes WHERE kind = 'email' AND value = ANY(\(SyntheticPeople.Options().placeholderEmails)::text[])"
            ).scalar(Int.self)
            #expect(placeholders == 0, "the placeholder emails are built-in blocked values, never in the graph")
            try await expectAccurate(client, data, "real-time")

            // Junk identifiers were ignored and counted, and their events kept.
            let ignored = Dictionary(
                uniqueKeysWithValues: try await client.query(
                    "SELECT reason, sum(count)::int8 FROM cdp.identity_ignored GROUP BY reason"
                ).map { try $0.decode((String, Int).self) })
            #expect(ignored["blocked", default: 0] > 0 && ignored["wrong_type", default: 0] > 0)
            #expect(ignored["too_long", default: 0] > 0 && ignored["control_characters", default: 0] > 0)
            #expect(try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == data.events.count)

            let rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.nodesChanged == 0 && rebuild.eventsRestamped == 0, "rebuild agrees with the real-time stage")
            try await expectAccurate(client, data, "rebuild")
        }
    }

    /// Placeholder emails typed by 3, 8, 20 and 30 strangers (the issue's traps, below and above `hubThreshold`)
    /// merge nobody: precision and recall exactly 1 at 1,000 to 3,000 people, in real time and after a rebuild.
    @Test(arguments: zip([1000, 2000, 2000, 3000], [3, 8, 20, 30]))
    func placeholderTrapsMergeNobody(people: Int, visitors: Int) async throws {
        let data = SyntheticPeople.generate(
            SyntheticPeople.Options(people: people, seed: 23, visitorsPerPlaceholder: visitors))
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            for start in stride(from: 0, to: data.events.count, by: 2000) {
                try await F.write(Array(data.events[start..<min(data.events.count, start + 2000)]), client)
            }
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger, batchSize: 2000).catchUp()
            let realTime = SyntheticPeople.pairwiseScores(truth: data.truth, predicted: try await F.partition(client))
            #expect(
                realTime.precision == 1 && realTime.recall == 1,
                "\(people) people, traps of \(visitors): precision \(realTime.precision), recall \(realTime.recall)")
            let rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.nodesChanged == 0 && rebuild.eventsRestamped == 0, "rebuild agrees with the real-time stage")
        }
    }

    func expectAccurate(_ client: PostgresClient, _ data: SyntheticPeople.Dataset, _ stage: String) async throws {
        let predicted = try await F.partition(client)
        let scores = SyntheticPeople.pairwiseScores(truth: data.truth, predicted: predicted)
        #expect(scores.precision >= 0.99, "\(stage): precision \(scores.precision)")
        #expect(scores.recall >= 0.99, "\(stage): recall \(scores.recall)")
        #expect(scores.scoredIdentifiers > 5000)
        let doubleUsers = try await client.query(
            """
            SELECT count(*) FROM (SELECT profile_id FROM cdp.identities WHERE kind = 'user_id' GROUP BY profile_id HAVING count(*) > 1) AS p
            """
        ).scalar(Int.self)
        #expect(doubleUsers == 0, "\(stage): profiles holding two user ids")
        print(
            "identity accuracy (\(stage)): precision \(scores.precision), recall \(scores.recall), identifiers \(scores.scoredIdentifiers)"
        )
    }
}

/// The identity stage's cache on its own: merges followed, memory bounded without losing where profiles went.
@Suite struct IdentifierCacheTests {
    func node(_ id: Int64, _ profile: UUID) -> StoredNode { StoredNode(id: id, profile: profile, isHub: false) }

    @Test func mergesAreFollowedAndEvictionKeepsCurrentProfiles() {
        let cache = IdentifierCache(capacity: 100)
        let profiles = (0..<4).map { _ in UUID() }
        var nodes: [Identifier: StoredNode] = [:]
        for i in 0..<80 { nodes[Identifier(kind: "anonymous_id", value: "a\(i)")] = node(Int64(i), profiles[i % 4]) }
        cache.commit(.init(nodes: nodes, redirects: [:], checkpoint: 10, epoch: 3, forget: false))
        // Profile 1 merges into 0, then 0 into 2.
        cache.commit(.init(nodes: [:], redirects: [profiles[1]: profiles[0]], checkpoint: 11, epoch: 4, forget: false))
        cache.commit(.init(nodes: [:], redirects: [profiles[0]: profiles[2]], checkpoint: 12, epoch: 5, forget: false))
        let all = nodes.keys
        #expect(cache.nodes(all, checkpoint: 12, epoch: 5)[Identifier(kind: "anonymous_id", value: "a1")]?.profile == profiles[2])
        // Past capacity: about half is kept, every kept node with its current profile.
        var more: [Identifier: StoredNode] = [:]
        for i in 80..<140 { more[Identifier(kind: "user_id", value: "u\(i)")] = node(Int64(i), profiles[1]) }
        cache.commit(.init(nodes: more, redirects: [:], checkpoint: 13, epoch: 6, forget: false))
        #expect(cache.count > 20 && cache.count < 120)
        let found = cache.nodes(Array(all) + Array(more.keys), checkpoint: 13, epoch: 6)
        #expect(found.count == cache.count)
        for (identifier, stored) in found {
            let expected =
                identifier.kind == "user_id"
                ? profiles[2] : [profiles[2], profiles[2], profiles[2], profiles[3]][Int(stored.id) % 4]
            #expect(stored.profile == expected, "\(identifier)")
        }
        // A position other than the last commit's empties it.
        #expect(cache.nodes(all, checkpoint: 13, epoch: 7).isEmpty)
        #expect(cache.count == 0)
    }
}
