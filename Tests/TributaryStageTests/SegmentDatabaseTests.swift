import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryModel
@testable import TributaryProfiles
@testable import TributarySegments

/// A deliberately odd dialect: any quoting the compiler writes itself instead of asking the dialect shows up as a
/// stray `'` or `"` in the SQL.
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
