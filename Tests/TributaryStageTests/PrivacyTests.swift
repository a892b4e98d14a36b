import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryGovernance
@testable import TributaryModel
@testable import TributaryProfiles

/// Privacy requests against real PostgreSQL with the real identity and profile stages: hostile identifiers,
/// suppression on every ingestion path, the access export, consent with history, refused input, and the request log
/// holding no identifier. (Deletion with destinations and the scan of every table: PrivacyDeletionTests.)
@Suite struct PrivacyTests {
    typealias F = ProfileFixture

    static func privacy(_ client: PostgresClient) -> PrivacyRequests {
        PrivacyRequests(client: client, logger: TestDatabase.logger)
    }

    static func count(_ sql: String, _ value: String, _ client: PostgresClient) async throws -> Int {
        try await client.query(PostgresQuery(unsafeSQL: sql, binds: [try value.postgresBind()])).scalar(Int.self)
    }

    /// A user id with quotes, backslashes, a colon, a tab-free control-free unicode mix; an email with quotes and accents.
    static let hostileUser = #"o'brien "q" \ \\n: zoë 😀 ; DROP TABLE x"#
    static let hostileEmail = #"\"Zoë\"+o'b@Exämple.com"#

    @Test func hostileIdentifiersAreDeletedAndSuppressedExactly() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            let traits = JSONValue.object([("email", .string(Self.hostileEmail)), ("plan", "pro")]).serialized
            try await F.ingest(
                [
                    F.event(user: Self.hostileUser, traits: traits, at: F.day(0)),
                    F.event(.track, user: Self.hostileUser, event: "Clicked", at: F.day(1)),
                    F.event(user: "other", traits: #"{"email": "other@example.com"}"#, at: F.day(0)),
                ], client)
            // Not yet resolved when the deletion starts: resolved by it, so its new anonymous id goes (and is suppressed) too.
            try await IdentityFixture.write(
                [F.event(.track, user: Self.hostileUser, anonymous: "a-late", event: "Late", at: F.day(2))], client)
            let privacy = Self.privacy(client)
            let report = try await privacy.delete(
                identifier: "user_id:" + Self.hostileUser, actor: .cli, registry: DestinationRegistry())
            #expect(report.profiles.count == 1 && report.identifiers == 3 && report.counts["events"] == 3, "\(report)")
            let normalizedEmail = Self.hostileEmail.lowercased()
            for (sql, value) in [
                ("SELECT count(*) FROM cdp.events WHERE user_id = $1", Self.hostileUser),
                ("SELECT count(*) FROM cdp.identity_nodes WHERE value = $1", Self.hostileUser),
                ("SELECT count(*) FROM cdp.identity_nodes WHERE value = $1", normalizedEmail),
                ("SELECT count(*) FROM cdp.profile_data WHERE traits::text LIKE '%' || $1 || '%'", "pro"),
            ] {
                #expect(try await Self.count(sql, value, client) == 0, "\(sql) \(value)")
            }
            // Suppressed as SHA-256 of kind:normalized value (the same in Swift and SQL), never the value itself.
            let hashes = try await client.query("SELECT identifier_hash FROM cdp.suppressions ORDER BY 1").map {
                try $0[0].decode(String.self)
            }
            #expect(
                hashes
                    == [
                        Identifier(kind: "user_id", value: Self.hostileUser), Identifier(kind: "email", value: normalizedEmail),
                        Identifier(kind: "anonymous_id", value: "a-late"),
                    ]
                    .map(PrivacyRequests.identifierHash).sorted())
            #expect(
                try await client.query(
                    "SELECT count(*) FROM cdp.suppressions WHERE identifier_hash = cdp.identifier_hash('email', \(normalizedEmail))"
                ).scalar(Int.self) == 1)

            // Later events: the user id as sent, the email differently cased and padded in context.traits; the other person stays.
            let writer = EventWriter(client: client, logger: TestDatabase.logger)
            let outcome = try await writer.write(
                [
                    F.event(.track, user: Self.hostileUser, event: "Back", at: F.day(2)),
                    F.event(
                        .page, anonymous: "fresh",
                        context: JSONValue.object([
                            ("traits", .object([("email", .string("  " + Self.hostileEmail.uppercased() + " "))]))
                        ]).serialized, at: F.day(2)),
                    F.event(.track, user: "other", event: "Back", at: F.day(2)),
                ], sourceID: "src-test")
            #expect(outcome.stored == 1 && outcome.suppressed == 2, "\(outcome)")
            // The importer writes through the same writer.
            let file = FileManager.default.temporaryDirectory.appendingPathComponent(
                "privacy-\(UUID().uuidString.prefix(8)).jsonl")
            defer { try? FileManager.default.removeItem(at: file) }
            let lines = [
                JSONValue.object([("type", "identify"), ("userId", .string(Self.hostileUser)), ("messageId", "imp-1")]),
                JSONValue.object([("type", "identify"), ("userId", "imported"), ("messageId", "imp-2")]),
            ]
            try Data(lines.map(\.serialized).joined(separator: "\n").utf8).write(to: file)
            let (source, _) = try await SourceStore(client: client).create(name: "import")
            let imported = try await Importer(writer: writer).importFile(
                at: file.path, format: .jsonl, mapping: nil, source: source)
            #expect(imported.rows == 2 && imported.stored == 1, "\(imported)")
            #expect(try await client.query("SELECT sum(events_dropped)::int FROM cdp.suppressions").scalar(Int.self) == 3)
            #expect(
                try await client.query("SELECT count(*) FROM cdp.suppressions WHERE last_dropped_at IS NOT NULL").scalar(Int.self)
                    == 2)
            try await F.resolve(client)
            #expect(try await Self.count("SELECT count(*) FROM cdp.identity_nodes WHERE value = $1", "a-late", client) == 0)
            #expect(try await Self.count("SELECT count(*) FROM cdp.events WHERE user_id = $1", "other", client) == 2)
        }
    }

    @Test func exportHoldsProfileTraitsConsentEventsAndIsLogged() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.ingest(
                [
                    F.event(.page, anonymous: "a-1", at: F.day(0)),
                    F.event(user: "u-1", anonymous: "a-1", traits: #"{"email": "Ann@Example.com", "plan": "pro"}"#, at: F.day(1)),
                    F.event(.track, user: "u-1", event: "Order Completed", properties: #"{"total": 12}"#, at: F.day(2)),
                    F.event(user: "u-2", traits: #"{"plan": "free"}"#, at: F.day(1)),
                ], client)
            let privacy = Self.privacy(client)
            let writer = EventWriter(client: client, logger: TestDatabase.logger)
            _ = try await privacy.recordConsent(
                identifier: "email:ann@example.com", purposes: ["Marketing": true, "Analytics": false], actor: .cli,
                writer: writer)
            try await F.resolve(client)
            // Not yet resolved by the identity stage, but carrying her email: exported too.
            try await IdentityFixture.write(
                [
                    F.event(
                        .track, anonymous: "a-9", event: "Late", context: #"{"traits": {"email": "ann@example.com"}}"#,
                        at: F.day(3))
                ], client)

            let text = try await privacy.export(identifier: "user_id:u-1", actor: .token("dpo"))
            let document = try JSONParser.parse(Array(text.utf8))
            guard case .array(let profiles)? = document["profiles"], case .array(let events)? = document["events"],
                case .array(let consent)? = document["consent"], case .array(let history)? = document["consent_history"]
            else {
                Issue.record("unexpected export: \(text)")
                return
            }
            #expect(profiles.count == 1 && profiles[0]["traits"]?["plan"] == .string("pro"))
            if case .array(let identities)? = profiles[0]["identities"] { #expect(identities.count == 3) }
            #expect(events.count == 5, "page, identify, order, consent, the unresolved one: \(events.count)")
            #expect(events.contains { $0["event"] == .string("Order Completed") && $0["properties"]?["total"] == .number("12") })
            #expect(events.contains { $0["event"] == .string("Late") && $0["profile_id"] == .null })
            #expect(!text.contains("u-2"), "nobody else's data")
            #expect(
                Set(consent.map { "\($0["purpose"]!.serialized)=\($0["granted"]!.serialized)" }) == [
                    #""Analytics"=false"#, #""Marketing"=true"#,
                ])
            #expect(history.count == 2)
            if case .array(let changes)? = document["trait_history"] {
                #expect(changes.contains { $0["key"] == .string("plan") })
            }

            let entry = try #require(try await AuditLog(client: client).entries(actionPrefix: "privacy.export").first)
            #expect(entry.actor == "token:dpo" && entry.details["counts"]?["events"] == .number("5"))
            #expect(
                entry.details["identifier_hash"]
                    == .string(PrivacyRequests.identifierHash(Identifier(kind: "user_id", value: "u-1"))))
            // The logs hold no identifier: only kinds and hashes.
            let logs = try await client.query(
                """
                SELECT count(*) FROM (SELECT to_jsonb(r)::text AS t FROM cdp.privacy_requests AS r
                                      UNION ALL SELECT to_jsonb(a)::text FROM cdp.audit_log AS a WHERE a.action LIKE 'privacy.%') AS logs
                WHERE t ILIKE '%u-1%' OR t ILIKE '%ann@example.com%'
                """
            ).scalar(Int.self)
            #expect(logs == 0)
            let requests = try await privacy.requests()
            #expect(requests.map(\.kind) == ["export", "consent"] && requests.allSatisfy { $0.status == "succeeded" })
        }
    }

    @Test func consentIsRecordedThroughTheStagesWithHistory() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await F.ingest([F.event(user: "u-1", traits: #"{"phone": "+1 555 010 1234"}"#, at: F.day(0))], client)
            let privacy = Self.privacy(client)
            let writer = EventWriter(client: client, logger: TestDatabase.logger)
            let profile = try await client.query("SELECT profile_id FROM cdp.identity_nodes WHERE value = 'u-1'").scalar(
                UUID.self)
            let first = try await privacy.recordConsent(
                identifier: "phone:+1 (555) 010-1234", purposes: ["Marketing": true], actor: .cli, writer: writer)
            #expect(first.stored)
            try await F.resolve(client)
            _ = try await privacy.recordConsent(
                identifier: "profile_id:\(profile)", purposes: ["Marketing": false], actor: .cli, writer: writer)
            try await F.resolve(client)
            #expect(
                try await client.query("SELECT granted FROM cdp.consent WHERE profile_id = \(profile) AND purpose = 'Marketing'")
                    .scalar(Bool.self) == false)
            let history = try await client.query(
                """
                SELECT coalesce(previous::text, '-') || '>' || granted FROM cdp.consent_changes WHERE profile_id = \(profile) ORDER BY change_id
                """
            ).map { try $0[0].decode(String.self) }
            #expect(history == ["->true", "true>false"])
            #expect(
                try await client.query("SELECT count(*) FROM cdp.events WHERE event = \(Consent.eventName)").scalar(Int.self) == 2
            )
            let source = try #require(try await SourceStore(client: client).named(PrivacyRequests.sourceName))
            #expect(!source.enabled, "the internal source's write key is never usable")
        }
    }

    @Test func refusedInputIsOneClearErrorAndNothingIsStoredOrLost() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await IdentityFixture.applyRules(IdentityRules(hubThreshold: 2), client)
            try await F.ingest(
                [
                    F.event(user: "u-1", traits: #"{"email": "shared@example.com"}"#, at: F.day(0)),
                    F.event(user: "u-2", traits: #"{"email": "shared@example.com"}"#, at: F.day(0)),
                    F.event(user: "u-3", traits: #"{"email": "shared@example.com"}"#, at: F.day(0)),
                ], client)
            let privacy = Self.privacy(client)
            let events = try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self)
            func refusal(_ identifier: String) async -> String {
                do {
                    _ = try await privacy.delete(identifier: identifier, actor: .cli, registry: DestinationRegistry())
                    return "deleted"
                } catch let error as PrivacyError {
                    return error.description
                } catch {
                    return "unexpected: \(error)"
                }
            }
            #expect(await refusal("ann@example.com").hasPrefix("'ann@example.com' is not KIND:VALUE"))
            #expect(await refusal("email:").contains("empty value"))
            #expect(await refusal("email:   ").contains("empty value"))
            #expect(await refusal("email:a\u{0}b").contains("NUL"))
            #expect(await refusal("Email:x@example.com").contains("not a valid identifier kind"))
            #expect(await refusal("emial:x@example.com").hasPrefix("'emial' is not an identifier kind in use or configured"))
            #expect(await refusal("email:not-an-email").contains("it would be ignored: invalid email"))
            #expect(await refusal("user_id:null").contains("it would be ignored: blocked"))
            #expect(await refusal("email:shared@example.com").contains("is a hub"))
            #expect(await refusal("profile_id:not-a-uuid").contains("cannot be a profile_id"))
            #expect(await refusal("profile_id:\(UUID())").hasPrefix("no profile has the identifier"))
            #expect(throws: PrivacyError("purposes: at least one purpose is required (for example {\"Marketing\": true})")) {
                try PrivacyRequests.validate(purposes: [:])
            }
            #expect(throws: PrivacyError("purposes: 'Mar\nketing' contains a control character")) {
                try PrivacyRequests.validate(purposes: ["Mar\nketing": true])
            }
            #expect(try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == events)
            #expect(try await client.query("SELECT count(*) FROM cdp.suppressions").scalar(Int.self) == 0)
            #expect(try await client.query("SELECT count(*) FROM cdp.privacy_requests").scalar(Int.self) == 0)

            // The email u-1 shares with others is a hub: not theirs to delete or suppress, and others' events carrying it stay.
            let deleted = try await privacy.delete(identifier: "user_id:u-1", actor: .cli, registry: DestinationRegistry())
            #expect(deleted.identifiers == 1 && deleted.counts["events"] == 1, "\(deleted)")
            #expect(try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == events - 1)
            #expect(try await client.query("SELECT count(*) FROM cdp.identity_nodes WHERE status = 'hub'").scalar(Int.self) == 1)
            let outcome = try await EventWriter(client: client, logger: TestDatabase.logger)
                .write([F.event(user: "u-2", traits: #"{"email": "shared@example.com"}"#, at: F.day(1))], sourceID: "src-test")
            #expect(outcome.stored == 1)
            try await client.execute("DELETE FROM cdp.suppressions")

            // An identifier nobody holds (yet) is suppressed all the same.
            let report = try await privacy.delete(
                identifier: "email:Nobody@Example.com", actor: .cli, registry: DestinationRegistry())
            #expect(report.profiles.isEmpty && report.identifiers == 1 && report.counts["events"] == 0)
            #expect(
                try await client.query("SELECT identifier_hash FROM cdp.suppressions").scalar(String.self)
                    == PrivacyRequests.identifierHash(Identifier(kind: "email", value: "nobody@example.com")))
        }
    }

    /// An alias naming a person as previousId whose link the limits refused (default rules: one user id per profile)
    /// is stamped with the other profile; it is still theirs to export and delete, and a later one is dropped.
    @Test func aliasCallsNamingThePersonAreExportedDeletedAndSuppressedWhereverTheyLanded() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await IdentityFixture.write(
                [
                    F.event(user: "u-old", traits: #"{"email": "old@example.com"}"#, at: F.day(0)),
                    F.event(user: "b-other", traits: #"{"email": "other@example.com"}"#, at: F.day(0)),
                ], client)
            try await F.resolve(client)
            try await IdentityFixture.write(
                [IdentityFixture.event(user: "b-other", type: .alias, previous: "u-old", at: F.day(1))], client)
            try await F.resolve(client)
            // b-other comes first in priority order (byte order within a kind), so the call went to b-other's profile.
            #expect(
                try await client.query(
                    """
                    SELECT count(*) FROM cdp.events AS e JOIN cdp.identities AS i ON i.profile_id = e.profile_id
                    WHERE e.type = 'alias' AND i.kind = 'user_id' AND i.value = 'b-other'
                    """
                ).scalar(Int.self) == 1)
            let privacy = Self.privacy(client)
            let exported = try await privacy.export(identifier: "user_id:u-old", actor: .cli)
            guard case .array(let events)? = try JSONParser.parse(Array(exported.utf8))["events"] else {
                Issue.record("no events: \(exported)")
                return
            }
            #expect(events.contains { $0["previous_id"] == .string("u-old") && $0["type"] == .string("alias") }, "\(exported)")
            let report = try await privacy.delete(
                identifier: "email:old@example.com", actor: .cli, registry: DestinationRegistry())
            #expect(report.counts["events"] == 2, "\(report)")
            #expect(try await Self.count("SELECT count(*) FROM cdp.events WHERE previous_id = $1", "u-old", client) == 0)
            #expect(
                try await Self.count("SELECT count(*) FROM cdp.events WHERE user_id = $1", "b-other", client) == 1,
                "the other person stays")
            let outcome = try await EventWriter(client: client, logger: TestDatabase.logger).write(
                [IdentityFixture.event(user: "u-new", type: .alias, previous: "  u-old", at: F.day(2))], sourceID: "src-test")
            #expect(outcome.stored == 0 && outcome.suppressed == 1, "\(outcome)")
        }
    }
}
