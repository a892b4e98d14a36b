import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryModel
@testable import TributaryProfiles
@testable import TributarySegments

@Suite struct SegmentHostileInputTests {
    /// Names and values with quotes, backslashes, comment and statement separators, unicode: compiled into views,
    /// executed on real PostgreSQL, and they mean exactly what they say.
    @Test func hostileNamesAndValuesCompileRunAndMatchLiterally() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let key = #"k'"\; --😀"#
            let value = #"v'); DROP TABLE cdp.events; -- \' " \\ é"#
            let event = #"Ev"ent'; SELECT 1; --\"#
            try await ProfileFixture.ingest(
                [
                    ProfileFixture.event(
                        .identify, user: "hostile", traits: #"{"\#(jsonEscaped(key))": "\#(jsonEscaped(value))"}"#,
                        at: ProfileFixture.base),
                    ProfileFixture.event(
                        .track, user: "hostile", event: event, properties: #"{"\#(jsonEscaped(key))": 5}"#,
                        at: ProfileFixture.base),
                    ProfileFixture.event(
                        .identify, user: "plain", traits: #"{"\#(jsonEscaped(key))": "other"}"#, at: ProfileFixture.base),
                ], client)
            let name = #"Seg"ment'; DROP VIEW x; --\ ü"#
            let segment = Segment(name, fields: [SegmentField(name: "k", trait: key, computed: nil)]) {
                Trait<String>(key) == value
                Trait<String>(key).contains(#"); DROP TABLE"#)
                Event(event) { Property<Int>(key) >= 5 }.count >= 1
                Event(event).notSince(Event(event))
            }
            let store = SegmentStore(client: client, logger: TestDatabase.logger)
            try await store.apply(SegmentDefinitions([segment]))
            try await SegmentMembership(client: client, logger: TestDatabase.logger).refresh()
            // Without a catalog the field is jsonb.
            let rows = try await client.query("SELECT k #>> '{}' FROM \(unescaped: try SQLQuoting.qualified("segments", name))")
                .map { try $0.decode(String.self) }
            #expect(rows == [value])
            let members = try await client.query("SELECT count(*) FROM cdp.segment_members WHERE segment = \(name)").first![0]
                .decode(Int.self)
            #expect(members == 1)
            #expect(try await client.query("SELECT count(*) FROM cdp.events").first![0].decode(Int.self) == 3)
            // NUL is refused with a clear error, before anything is stored.
            let nul = Segment("nul") { Trait<String>("k") == "a\u{0}b" }
            await #expect(throws: ProfileError.self) { try await store.apply(SegmentDefinitions([segment, nul])) }
            #expect(try await store.current().segments.map(\.name) == [name])
        }
    }

    private func jsonEscaped(_ text: String) -> String {
        // swift-format-ignore: NeverUseForceTry
        let data = try! JSONEncoder().encode(text)
        return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
    }
}

@Suite struct SegmentProfileDocumentTests {
    /// The profile API's document lists the segments a profile is a member of, with when it entered.
    @Test func theProfileDocumentListsSegments() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await ProfileFixture.ingest(
                [
                    ProfileFixture.event(.identify, user: "u1", traits: #"{"plan": "pro"}"#, at: ProfileFixture.base),
                    ProfileFixture.event(.identify, user: "u2", traits: #"{"plan": "free"}"#, at: ProfileFixture.base),
                ], client)
            try await SegmentStore(client: client, logger: TestDatabase.logger).apply(
                SegmentDefinitions([
                    Segment("pro") { Trait<String>("plan") == "pro" },
                    Segment("anyone") {},
                ]))
            try await SegmentMembership(client: client, logger: TestDatabase.logger).refresh()
            let documents = ProfileDocuments(client: client)
            guard case .found(let pro) = try await documents.lookup(kind: "user_id", value: "u1", events: 0),
                case .found(let free) = try await documents.lookup(kind: "user_id", value: "u2", events: 0)
            else {
                Issue.record("profiles not found")
                return
            }
            func segments(_ document: String) throws -> [String] {
                guard case .array(let list)? = try JSONParser.parse(Array(document.utf8))["segments"] else { return [] }
                return list.compactMap { if case .string(let name)? = $0["segment"] { name } else { nil } }
            }
            #expect(try segments(pro) == ["anyone", "pro"])
            #expect(try segments(free) == ["anyone"])
            #expect(pro.contains(#""entered_at""#))
        }
    }
}

/// Page and screen calls carry their name at the top level (`cdp.events.name`), as the Segment and RudderStack SDKs
/// send it: `name` in an event condition or a computed trait reads it there first, then `properties.name`.
@Suite struct PageNameTests {
    @Test func pageNamesAreFilteredWhereTheSDKsSendThem() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let admin = ProfileAdmin(client: client, logger: TestDatabase.logger)
            _ = try await admin.apply(
                try await admin.load(
                    Data(
                        #"{"computedTraits": [{"name": "last_page", "aggregate": "last", "property": "name", "types": ["page"]}]}"#
                            .utf8)))
            var pricing = ProfileFixture.event(.page, user: "reader", at: ProfileFixture.base)
            pricing.name = "Pricing"
            var home = ProfileFixture.event(.page, user: "browser", at: ProfileFixture.base)
            home.name = "Home"
            let viewed = ProfileFixture.event(
                .track, user: "shopper", event: "Viewed", properties: #"{"name": "Pricing"}"#, at: ProfileFixture.base)
            try await ProfileFixture.ingest([pricing, home, viewed], client, clock: ProfileFixture.base)
            let store = SegmentStore(client: client, logger: TestDatabase.logger)
            _ = try await store.apply(
                try await store.load(
                    Data(
                        #"""
                        {"segments": [
                          {"name": "saw_pricing", "conditions": [{"event": {"name": "$page", "where": [{"property": "name", "op": "=", "value": "Pricing"}]}, "op": ">=", "value": 1}]},
                          {"name": "viewed_pricing", "conditions": [{"event": {"name": "Viewed", "where": [{"property": "name", "op": "contains", "value": "Pric"}]}, "op": ">=", "value": 1}]}
                        ]}
                        """#.utf8)))
            try await SegmentMembership(client: client, logger: TestDatabase.logger).refresh()
            #expect(try await segmentMembers(client, "saw_pricing") == ["reader"])
            #expect(try await segmentMembers(client, "viewed_pricing") == ["shopper"])
            let pages = try await client.query(
                """
                SELECT n.value, p.last_page #>> '{}' FROM cdp.profiles AS p
                JOIN cdp.identity_nodes AS n ON n.profile_id = p.profile_id AND n.kind = 'user_id' ORDER BY n.value
                """
            ).map { try $0.decode((String, String?).self) }
            #expect(pages.map { "\($0.0)=\($0.1 ?? "-")" } == ["browser=Home", "reader=Pricing", "shopper=-"])
        }
    }
}

/// `Event.any`: "no event of any kind in N days" evaluated when read, in the view and in the per-profile form.
@Suite struct AnyEventConditionTests {
    @Test func inactivityIsFoundWithoutAComputedTrait() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let now = Date()
            try await ProfileFixture.ingest(
                [
                    ProfileFixture.event(.page, user: "active", at: now.addingTimeInterval(-2 * 86_400)),
                    ProfileFixture.event(.identify, user: "active", at: now.addingTimeInterval(-90 * 86_400)),
                    ProfileFixture.event(
                        .track, user: "dormant", event: "Order Completed", at: now.addingTimeInterval(-60 * 86_400)),
                ], client, clock: now)
            let store = SegmentStore(client: client, logger: TestDatabase.logger)
            let definitions = SegmentDefinitions([
                Segment("dormant_30d", realtime: true) { Event.any(within: .days(30)).count == 0 },
                Segment("active_30d") { Event.any(within: .days(30)).count >= 1 },
            ])
            _ = try await store.apply(definitions)
            // The file form says the same.
            let parsed = try SegmentDefinitions.parse(
                Data(
                    #"{"segments": [{"name": "dormant_30d", "realtime": true, "conditions": [{"event": {"name": "*", "within": {"days": 30}}, "op": "=", "value": 0}]}, {"name": "active_30d", "conditions": [{"event": {"name": "*", "within": {"days": 30}}}]}]}"#
                        .utf8))
            #expect(parsed == definitions)
            try await SegmentMembership(client: client, logger: TestDatabase.logger).refresh()
            #expect(try await segmentMembers(client, "dormant_30d") == ["dormant"])
            #expect(try await segmentMembers(client, "active_30d") == ["active"])
            // The per-profile form (real-time segments) agrees.
            let profiles = try await client.query("SELECT profile_id FROM cdp.identity_nodes WHERE kind = 'user_id'").map {
                try $0.decode(UUID.self)
            }
            let perProfile = try await client.query(
                try SegmentCompiler(definitions).perProfile("dormant_30d", profiles: profiles))
            #expect(perProfile.count == 1)
        }
    }
}

/// The user ids of a segment's current members, sorted.
private func segmentMembers(_ client: PostgresClient, _ segment: String) async throws -> [String] {
    try await client.query(
        """
        SELECT n.value FROM cdp.segment_members AS m
        JOIN cdp.identity_nodes AS n ON n.profile_id = m.profile_id AND n.kind = 'user_id'
        WHERE m.segment = \(segment) ORDER BY n.value
        """
    ).map { try $0.decode(String.self) }
}
