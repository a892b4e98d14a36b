import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryGovernance
@testable import TributaryIdentity
@testable import TributaryModel
@testable import TributaryProfiles
@testable import TributarySegments
@testable import TributaryService
@testable import TributarySyncs

/// Consent from `context.consent.categoryPreferences`, kept by the profile stage, and syncs that serve purposes.
@Suite struct ConsentTests {
    typealias F = ProfileFixture

    static func consent(_ preferences: String) -> String { #"{"consent": {"categoryPreferences": \#(preferences)}}"# }

    /// purpose → granted of the profile holding user_id `user`.
    static func consent(of user: String, _ client: PostgresClient) async throws -> [String: Bool] {
        var result: [String: Bool] = [:]
        for row in try await client.query(
            """
            SELECT c.purpose, c.granted FROM cdp.consent AS c JOIN cdp.identities AS i USING (profile_id)
            WHERE i.kind = 'user_id' AND i.value = \(user)
            """)
        {
            let (purpose, granted) = try row.decode((String, Bool).self)
            result[purpose] = granted
        }
        return result
    }

    /// Every consent row, for comparing the real-time stage with a rebuild.
    static func state(_ client: PostgresClient) async throws -> [String] {
        try await client.query(
            """
            SELECT profile_id::text || ' ' || purpose || ' ' || granted || ' ' || event_seq FROM cdp.profile_consent ORDER BY 1
            """
        ).map { try $0.decode(String.self) }
    }

    @Test func newestPreferenceWinsWhateverTheArrivalOrderAndHistoryIsKept() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.ingest(
                [
                    F.event(
                        .track, user: "u1", event: "Page Viewed",
                        context: Self.consent(#"{"Marketing": true, "Advertising": false}"#), at: F.day(2)),
                    F.event(user: "u2", context: Self.consent(#"{"Marketing": "yes", "Analytics": true}"#), at: F.day(2)),
                ], client)
            #expect(try await Self.consent(of: "u1", client) == ["Marketing": true, "Advertising": false])
            // Non-boolean values are not consent.
            #expect(try await Self.consent(of: "u2", client) == ["Analytics": true])

            // A late event from before: it loses. A newer one withdraws Marketing.
            try await F.ingest(
                [
                    F.event(
                        .track, user: "u1", event: "Old", context: Self.consent(#"{"Marketing": false, "Advertising": true}"#),
                        at: F.day(1))
                ], client)
            #expect(try await Self.consent(of: "u1", client) == ["Marketing": true, "Advertising": false])
            try await F.ingest(
                [
                    F.event(
                        .track, user: "u1", event: Consent.eventName, context: Self.consent(#"{"Marketing": false}"#),
                        at: F.day(3))
                ], client)
            #expect(try await Self.consent(of: "u1", client) == ["Marketing": false, "Advertising": false])

            let history = try await client.query(
                """
                SELECT purpose, granted, previous, reason FROM cdp.consent_changes AS c JOIN cdp.identities AS i USING (profile_id)
                WHERE i.kind = 'user_id' AND i.value = 'u1' ORDER BY change_id
                """
            ).map { row -> String in
                let (purpose, granted, previous, reason) = try row.decode((String, Bool?, Bool?, String).self)
                return "\(purpose) \(previous.map(String.init) ?? "-")→\(granted.map(String.init) ?? "-") \(reason)"
            }
            #expect(history.sorted() == ["Advertising -→false event", "Marketing -→true event", "Marketing true→false event"])
        }
    }

    /// A merge recomputes consent from all the merged events; a rebuild gives the real-time answer.
    @Test func mergesAndRebuildsRecomputeConsent() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.ingest(
                [
                    F.event(
                        .track, anonymous: "a1", event: "Viewed", context: Self.consent(#"{"Marketing": true}"#), at: F.day(5)),
                    F.event(user: "u1", context: Self.consent(#"{"Marketing": false, "Analytics": true}"#), at: F.day(1)),
                ], client)
            #expect(try await Self.consent(of: "u1", client) == ["Marketing": false, "Analytics": true])
            // The visitor signs in: one profile, and the visitor's newer Marketing preference wins.
            try await F.ingest([F.event(user: "u1", anonymous: "a1", at: F.day(6))], client)
            #expect(try await Self.consent(of: "u1", client) == ["Marketing": true, "Analytics": true])
            #expect(try await client.query("SELECT count(DISTINCT profile_id) FROM cdp.profile_consent").scalar(Int.self) == 1)

            let realTime = try await Self.state(client)
            _ = try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()]).rebuild()
            #expect(try await Self.state(client) == realTime)
        }
    }

    /// A sync serving a purpose sends only consenting profiles, removes a profile that withdraws (even in upsert
    /// mode), sends it again when it consents again; hashed and masked fields leave protected.
    @Test func syncsServePurposesAndProtectFields() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("consent-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.ingest(
                [
                    F.event(
                        user: "u1", traits: #"{"email": " Ann@Example.com ", "phone": "+1 (555) 010-9999"}"#,
                        context: Self.consent(#"{"Marketing": true, "Email": true}"#), at: F.day(1)),
                    F.event(
                        user: "u2", traits: #"{"email": "bob@example.com"}"#, context: Self.consent(#"{"Marketing": true}"#),
                        at: F.day(1)),
                    F.event(user: "u3", traits: #"{"email": "cy@example.com"}"#, at: F.day(1)),
                ], client)
            let registry = DestinationRegistry.core()
            let store = SyncStore(client: client, logger: TestDatabase.logger, registry: registry)
            try await store.apply(
                try await store.load(
                    Data(
                        """
                        {"syncs": [{"name": "marketing", "mode": "upsert", "primaryKey": ["profile_id"], "purposes": ["Marketing", "Email"],
                          "source": {"query": "SELECT profile_id, traits->>'email' AS email, traits->>'phone' AS phone FROM cdp.profiles"},
                          "fields": {"email_sha256": {"column": "email", "transform": "hash_email"},
                                     "phone_sha256": {"column": "phone", "transform": "hash_phone"},
                                     "email": {"column": "email", "transform": "mask"}},
                          "destination": {"type": "file", "path": "\(directory.path)/{run}.jsonl"}}]}
                        """.utf8)))
            let runner = SyncRunner(client: client, logger: TestDatabase.logger, registry: registry)
            func lines(_ run: SyncRunner.Report) throws -> [JSONValue] {
                try String(contentsOf: directory.appendingPathComponent("\(run.runID).jsonl"), encoding: .utf8)
                    .split(separator: "\n").map { try JSONParser.parse(Array($0.utf8)) }
            }
            let u1 = try await client.query("SELECT profile_id FROM cdp.identities WHERE kind = 'user_id' AND value = 'u1'")
                .scalar(UUID.self)

            // Only u1 granted both purposes; its fields leave hashed and masked.
            let first = try await runner.run("marketing")
            #expect(first.status == .succeeded && first.added == 1, "\(first)")
            let sent = try lines(first)
            #expect(sent.count == 1 && sent[0]["op"] == .string("upsert"))
            #expect(sent[0]["key"]?["profile_id"] == .string(u1.uuidString.lowercased()))
            let fields = try #require(sent[0]["fields"])
            // SHA-256 of "ann@example.com" and of "15550109999".
            #expect(fields["email_sha256"] == .string(sha256Hex(Data("ann@example.com".utf8))))
            #expect(fields["phone_sha256"] == .string(sha256Hex(Data("15550109999".utf8))))
            #expect(fields["email"] == .string("A***@Example.com"))

            // u1 withdraws Email: removed at the destination although the mode is upsert; u2 grants Email: added.
            try await F.ingest(
                [
                    F.event(
                        .track, user: "u1", event: Consent.eventName, context: Self.consent(#"{"Email": false}"#), at: F.day(2)),
                    F.event(
                        .track, user: "u2", event: Consent.eventName, context: Self.consent(#"{"Email": true}"#), at: F.day(2)),
                ], client)
            let second = try await runner.run("marketing")
            let ops = try lines(second).map { "\($0["op"]!.serialized) \($0["fields"]!["email"]!.serialized)" }.sorted()
            #expect(ops == [#""delete" "A***@Example.com""#, #""upsert" "b***@example.com""#], "\(ops)")
            #expect(second.removed == 1 && second.added == 1)

            // Nothing changes: nothing is sent; u1 consents again: sent again as new.
            let idle = try await runner.run("marketing")
            #expect(idle.added + idle.changed + idle.removed == 0)
            try await F.ingest(
                [
                    F.event(
                        .track, user: "u1", event: Consent.eventName, context: Self.consent(#"{"Email": true}"#), at: F.day(3))
                ], client)
            let third = try await runner.run("marketing")
            let resent = try lines(third).map { $0["op"] }
            #expect(third.added == 1 && resent == [.string("upsert")])
        }
    }

    @Test func purposeAndTransformErrorsNameThePath() throws {
        let registry = DestinationRegistry.core()
        func error(_ sync: String) -> String {
            do {
                _ = try SyncDefinitions.parse(
                    Data(
                        #"{"syncs": [{"name": "s", "source": {"segment": "x"}, "primaryKey": ["profile_id"], "destination": {"type": "file", "path": "/tmp/x.jsonl"}, \#(sync)}]}"#
                            .utf8), registry: registry)
                return "no error"
            } catch { return "\(error)" }
        }
        #expect(error(#""purposes": "Marketing""#) == "syncs[0].purposes: a list of consent purposes")
        #expect(error(#""purposes": ["a", "a"]"#) == "syncs[0].purposes: a purpose is listed twice")
        #expect(
            error(#""fields": {"e": {"column": "email", "transform": "md5"}}"#)
                == "syncs[0].fields.e.transform: unknown transform 'md5'; use hash, hash_email, hash_phone, mask")
        #expect(error(#""fields": {"e": {"transform": "mask"}}"#) == "syncs[0].fields.e.column: required, a string")
        #expect(
            error(#""fields": {"e": {"column": "email", "salt": "x"}}"#)
                == "syncs[0].fields.e.salt: unknown key; known keys are column, transform")
    }
}
