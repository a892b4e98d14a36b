import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCore

/// Helpers shared by the identity tests: write events, run the stage, read the partition back.
enum IdentityFixture {
    static func migrated(_ client: PostgresClient) async throws {
        try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
    }

    nonisolated(unsafe) static var counter = 0
    static let lock = NSLock()

    static func event(
        anonymous: String? = nil, user: String? = nil, traits: String = "{}", context: String = "{}",
        type: CallType = .identify, at timestamp: Date = Date(timeIntervalSince1970: 1_780_000_000)
    ) -> IncomingEvent {
        lock.lock()
        counter += 1
        let id = "m-\(counter)"
        lock.unlock()
        return IncomingEvent(
            messageID: id, type: type, event: type == .track ? "Clicked" : nil, name: nil, userID: user, anonymousID: anonymous,
            groupID: nil, previousID: nil, timestamp: timestamp, originalTimestamp: nil, sentAt: nil, receivedAt: Date(),
            properties: "{}", traits: traits, context: context, integrations: "{}")
    }

    static func write(_ events: [IncomingEvent], _ client: PostgresClient) async throws {
        let writer = EventWriter(client: client, logger: TestDatabase.logger)
        _ = try await writer.write(events, sourceID: "src-test")
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
        Set(try await client.query("SELECT profile_id::text || founder_kind || ':' || founder_value || founded_seq FROM cdp.identity_profiles")
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
            try await F.write([
                F.event(anonymous: "a-1", type: .page),
                F.event(anonymous: "a-1", user: "u-1", traits: #"{"email": "  Jane.Doe@Example.COM ", "phone": "+1 (555) 010-1234"}"#),
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
            for key in ["anonymous_id:a-1", "anonymous_id:a-2", "anonymous_id:a-3", "email:jane.doe@example.com", "phone:+15550101234"] {
                #expect(partition[key] == jane, "\(key)")
            }
            #expect(partition["user_id:u-2"] != jane && partition["email:bob@example.com"] == partition["user_id:u-2"])
            // Profile id founded by the first identifier of the first event: a-1.
            #expect(jane == Identifier(kind: "anonymous_id", value: "a-1").foundedProfileID.uuidString.lowercased())
            // Every event is stamped with its final profile, including those before the merges.
            let stamps = try await F.stamps(client)
            #expect(stamps.values.filter { $0 == jane }.count == 6)
            // a-2 and a-3 founded profiles that merged into Jane's; their ids resolve to hers.
            let merges = try await client.query("SELECT from_profile_id::text, into_profile_id::text, reason, kind FROM cdp.profile_merges")
            #expect(merges.count == 2)
            for row in merges {
                let (from, into, reason, kind) = try row.decode((String, String, String, String).self)
                #expect(into == jane && reason == "identifier" && (kind == "email" || kind == "anonymous_id"))
                #expect(try await client.query("SELECT cdp.resolve_profile(\(UUID(uuidString: from)!))::text").scalar(String.self) == jane)
            }
            // The rebuild agrees exactly: same ids, nothing to change.
            let rebuild = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            #expect(rebuild.nodesChanged == 0 && rebuild.eventsRestamped == 0)
            #expect(try await F.partition(client) == partition)
        }
    }

    @Test func userIDLimitKeepsFamilyMembersApartOnASharedDevice() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await F.migrated(client)
            try await F.write([
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
            #expect(stamps == [partition["user_id:mum"]!, partition["user_id:son"]!, partition["user_id:son"]!, partition["user_id:mum"]!])
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
            // Four different visitors type the same placeholder email; the fourth makes it a hub.
            let stage = IdentityStage(client: client, logger: TestDatabase.logger)
            for visitor in 1...3 {
                try await F.write([F.event(anonymous: "v-\(visitor)", traits: #"{"email": "test@test.com"}"#)], client)
            }
            _ = try await stage.catchUp()
            var partition = try await F.partition(client)
            #expect(Set(["v-1", "v-2", "v-3"].map { partition["anonymous_id:\($0)"]! }).count == 1, "merged while under the threshold")
            try await F.write([F.event(anonymous: "v-4", traits: #"{"email": "TEST@test.com"}"#)], client)
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
