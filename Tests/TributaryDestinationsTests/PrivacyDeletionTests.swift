import Foundation
import LocalReceiver
import Postgres
import PostgresTesting
import Testing
@testable import TributaryCollection
@testable import TributaryDestinations
@testable import TributaryGovernance
@testable import TributaryIdentity
@testable import TributaryModel
@testable import TributaryProfiles
@testable import TributarySegments
@testable import TributarySyncs

/// Deleting a person end to end: a person seen under several identifiers (merged into one profile) with traits,
/// consent, a segment membership and a mirror sync that delivered them to a webhook; the destination is told first,
/// then every table is scanned for any trace, and later events carrying their identifiers are dropped.
@Suite struct PrivacyDeletionTests {
    typealias F = SyncFixture

    /// Rows of every table (in every schema but PostgreSQL's own) whose text contains one of `needles`
    /// (case-insensitive), by table. A table added later is scanned without changing this test.
    static func scan(_ client: PostgresClient, for needles: [String]) async throws -> [String: Int] {
        // Values inside jsonb are shown JSON-escaped.
        let forms = Array(
            Set(
                needles.flatMap {
                    [$0.lowercased(), String(JSONValue.string($0.lowercased()).serialized.dropFirst().dropLast())]
                }))
        let tables = try await client.query(
            """
            SELECT n.nspname, c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
            ORDER BY 1, 2
            """
        ).map { try $0.decode((String, String).self) }
        #expect(tables.count > 20, "the scan sees the tables: \(tables)")
        var found: [String: Int] = [:]
        for (schema, table) in tables {
            let count = try await client.query(
                PostgresQuery(
                    unsafeSQL: """
                        SELECT count(*) FROM \(try SQLQuoting.qualified(schema, table)) AS t
                        WHERE EXISTS (SELECT 1 FROM jsonb_each_text(to_jsonb(t)) AS c, unnest($1::text[]) AS n
                                      WHERE strpos(lower(c.value), n) > 0)
                        """, binds: [try forms.postgresBind()])
            ).scalar(Int.self)
            if count > 0 { found["\(schema).\(table)"] = count }
        }
        return found
    }

    static func profile(of user: String, _ client: PostgresClient) async throws -> UUID {
        try await client.query("SELECT profile_id FROM cdp.identity_nodes WHERE kind = 'user_id' AND value = \(user)").scalar(
            UUID.self)
    }

    static func resolve(_ client: PostgresClient) async throws {
        _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
        _ = try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()]).catchUp()
        try await SegmentMembership(client: client, logger: TestDatabase.logger).refresh()
    }

    /// The segment "pro" (plan = pro, with the email and the plan), the stages run, and a sync of it to the receiver at `base`.
    static func syncSegment(_ client: PostgresClient, name: String, mode: String, base: String) async throws {
        try await SegmentStore(client: client, logger: TestDatabase.logger).apply(
            SegmentDefinitions([
                Segment("pro", fields: [.trait("email"), .trait("plan")]) { Trait<String>("plan") == "pro" }
            ]))
        try await resolve(client)
        try await F.apply(
            """
            {"syncs": [{"name": "\(name)", "source": {"segment": "pro"}, "primaryKey": ["profile_id"], "mode": "\(mode)",
              "destination": {"type": "webhook", "url": "\(base)/hook", "secret": "s"}}]}
            """, client)
    }

    /// Each change the receiver got: "op profile_id".
    static func received(_ receiver: TestReceiver) async -> [String] {
        await receiver.requests.flatMap { request -> [String] in
            guard let body = try? JSONParser.parse(request.body), case .array(let changes)? = body["changes"] else { return [] }
            return changes.map { change in
                let op: String = if case .string(let text)? = change["op"] { text } else { "?" }
                let key: String = if case .string(let text)? = change["key"]?["profile_id"] { text } else { "?" }
                return "\(op) \(key)"
            }
        }
    }

    @Test func deletedPersonLeavesNoTraceDestinationsAreToldAndLaterEventsAreDropped() async throws {
        let receiver = TestReceiver()
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                let writer = EventWriter(client: client, logger: TestDatabase.logger)
                let (source, _) = try await SourceStore(client: client).create(name: "web")
                let parsed = try SegmentParser(limits: CollectionLimits()).parse(
                    Array(
                        """
                        {"batch": [
                          {"type": "page", "anonymousId": "a-ann", "name": "Home", "messageId": "p1", "timestamp": "2026-01-01T09:00:00Z"},
                          {"type": "identify", "userId": "u-ann", "anonymousId": "a-ann", "messageId": "p2", "timestamp": "2026-01-02T09:00:00Z",
                           "traits": {"email": "Ann@Example.com", "plan": "pro", "phone": "+1 (555) 010-7777"}},
                          {"type": "track", "userId": "u-ann", "event": "Order Completed", "messageId": "p3", "timestamp": "2026-01-03T09:00:00Z",
                           "properties": {"total": 12}},
                          {"type": "identify", "userId": "u-bob", "messageId": "p4", "timestamp": "2026-01-02T09:00:00Z",
                           "traits": {"email": "bob@example.com", "plan": "pro"}}
                        ]}
                        """.utf8), type: nil, receivedAt: Date())
                #expect(parsed.issues.isEmpty, "\(parsed.issues)")
                _ = try await writer.write(parsed.events, sourceID: source.id)
                let privacy = PrivacyRequests(client: client, logger: TestDatabase.logger)
                _ = try await privacy.recordConsent(
                    identifier: "email:ann@example.com", purposes: ["Marketing": true], actor: .cli, writer: writer)
                try await Self.syncSegment(client, name: "pro_hook", mode: "mirror", base: base)
                let first = try await F.runner(client).run("pro_hook")
                #expect(first.delivered == 2, "\(first)")

                let ann = try await Self.profile(of: "u-ann", client)
                let bob = try await Self.profile(of: "u-bob", client)
                #expect(
                    try await client.query("SELECT count(*) FROM cdp.profile_consent WHERE profile_id = \(ann) AND granted")
                        .scalar(Int.self) == 1)
                #expect(
                    try await client.query("SELECT count(*) FROM cdp.segment_members WHERE profile_id = \(ann)").scalar(Int.self)
                        == 1)
                let annNeedles = [
                    "u-ann", "a-ann", "ann@example.com", "+15550107777", ann.uuidString,
                    Identifier(kind: "user_id", value: "u-ann").foundedProfileID.uuidString,
                ]
                let bobNeedles = ["u-bob", "bob@example.com", bob.uuidString]
                let annBefore = try await Self.scan(client, for: annNeedles)
                #expect(annBefore["cdp.sync_state"] == 1 && annBefore["cdp.identity_nodes"] == 4, "\(annBefore)")
                let bobBefore = try await Self.scan(client, for: bobNeedles)

                // The destination is down: the request fails naming the sync, and nothing is deleted.
                // Its answer quotes her email: the logs must not keep it.
                await receiver.setResponder { _ in .init(status: 503, body: #"{"error": "cannot reach ANN@example.com's store"}"#)
                }
                let registry = F.registry
                let failure = await #expect(throws: PrivacyDestinationError.self) {
                    try await privacy.delete(identifier: "email: ANN@example.com", actor: .cli, registry: registry)
                }
                #expect(
                    failure?.sync == "pro_hook" && failure?.description.contains("HTTP 503") == true,
                    "\(String(describing: failure))")
                #expect(try await Self.scan(client, for: annNeedles) == annBefore)
                #expect(
                    try await client.query("SELECT status FROM cdp.privacy_requests WHERE kind = 'delete'").scalar(String.self)
                        == "failed")

                // The destination is back: it gets the delete of Ann's row, then everything about her goes.
                await receiver.setResponder { _ in .init() }
                let before = await receiver.requests.count
                let report = try await privacy.delete(
                    identifier: "email: ANN@example.com", actor: .token("dpo"), registry: registry)
                #expect(
                    report.profiles == [ann] && report.identifiers == 4 && report.counts["destinations.pro_hook"] == 1,
                    "\(report)")
                #expect(report.counts["events"] == 4, "three events and the consent event: \(report)")
                let sent = await Self.received(receiver)
                #expect(sent.suffix(from: before).contains("delete \(ann.uuidString.lowercased())"), "\(sent)")
                #expect(try await Self.scan(client, for: annNeedles) == [:])
                #expect(try await Self.scan(client, for: bobNeedles) == bobBefore, "Bob is untouched")

                // Later events carrying any of her identifiers (normalized as identity does) are dropped and counted.
                let again = try SegmentParser(limits: CollectionLimits()).parse(
                    Array(
                        """
                        {"batch": [
                          {"type": "identify", "userId": "u-ann", "messageId": "q1", "traits": {"plan": "free"}},
                          {"type": "track", "anonymousId": "a-ann", "event": "Clicked", "messageId": "q2"},
                          {"type": "page", "anonymousId": "a-new", "messageId": "q3", "context": {"traits": {"email": " ANN@EXAMPLE.COM"}}},
                          {"type": "track", "userId": "u-bob", "event": "Clicked", "messageId": "q4"}
                        ]}
                        """.utf8), type: nil, receivedAt: Date())
                let outcome = try await writer.write(again.events, sourceID: source.id)
                #expect(outcome.stored == 1 && outcome.suppressed == 3 && outcome.duplicates == 0, "\(outcome)")
                #expect(try await client.query("SELECT sum(events_dropped)::int FROM cdp.suppressions").scalar(Int.self) == 3)
                try await Self.resolve(client)
                #expect(try await Self.scan(client, for: annNeedles) == [:])
                // The next sync run has nothing of hers to send.
                let next = try await F.runner(client).run("pro_hook")
                #expect(next.removed == 0 && next.added == 0, "\(next)")

                let audit = try await AuditLog(client: client).entries(actionPrefix: "privacy.delete")
                #expect(audit.map(\.actor) == ["token:dpo", AuditLog.Actor.cli.description])
                #expect(
                    audit.first?.details["skip_destinations"] == .bool(false)
                        && audit.first?.details["status"] == .string("succeeded"))
            }
        }
    }

    @Test func skippingDestinationsDeletesLocallyAndIsAudited() async throws {
        let receiver = TestReceiver { _ in .init(status: 500) }
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                let writer = EventWriter(client: client, logger: TestDatabase.logger)
                let parsed = try SegmentParser(limits: CollectionLimits()).parse(
                    Array(
                        """
                        {"type": "identify", "userId": "u-1", "messageId": "m1", "traits": {"email": "one@example.com", "plan": "pro"}}
                        """.utf8), type: .identify, receivedAt: Date())
                _ = try await writer.write(parsed.events, sourceID: "src-test")
                try await Self.syncSegment(client, name: "aud", mode: "audience", base: base)
                // Delivered once (the receiver answers 200 for that run only).
                await receiver.setResponder { _ in .init() }
                #expect(try await F.runner(client).run("aud").delivered == 1)
                await receiver.setResponder { _ in .init(status: 500) }
                let before = await receiver.requests.count
                let report = try await PrivacyRequests(client: client, logger: TestDatabase.logger)
                    .delete(identifier: "user_id:u-1", actor: .cli, registry: F.registry, skipDestinations: true)
                #expect(report.skippedDestinations && report.counts["sync_state"] == 1, "\(report)")
                #expect(await receiver.requests.count == before, "the destination is not called")
                #expect(try await Self.scan(client, for: ["u-1", "one@example.com"]) == [:])
                let audit = try await AuditLog(client: client).entries(actionPrefix: "privacy.")
                #expect(audit.first?.details["skip_destinations"] == .bool(true))
            }
        }
    }

    @Test func aShortIdentifierDoesNotMatchAnotherPersonsField() async throws {
        let receiver = TestReceiver()
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                let parsed = try SegmentParser(limits: CollectionLimits()).parse(
                    Array(
                        """
                        {"batch": [
                          {"type": "identify", "userId": "pro", "messageId": "s1", "traits": {"plan": "free"}},
                          {"type": "identify", "userId": "u-b", "messageId": "s2", "traits": {"plan": "pro", "email": "b@example.com"}}
                        ]}
                        """.utf8), type: nil, receivedAt: Date())
                _ = try await EventWriter(client: client, logger: TestDatabase.logger).write(parsed.events, sourceID: "src-test")
                try await Self.syncSegment(client, name: "pro_hook", mode: "mirror", base: base)
                #expect(try await F.runner(client).run("pro_hook").delivered == 1)
                let before = await receiver.requests.count
                // u-b's row holds "plan": "pro"; deleting user_id:pro leaves it (and the destination) alone.
                let report = try await PrivacyRequests(client: client, logger: TestDatabase.logger)
                    .delete(identifier: "user_id:pro", actor: .cli, registry: F.registry)
                #expect(report.counts["sync_state"] == 0 && report.counts["destinations.pro_hook"] == nil, "\(report)")
                #expect(await receiver.requests.count == before)
                #expect(try await client.query("SELECT count(*) FROM cdp.sync_state").scalar(Int.self) == 1)
            }
        }
    }
}
