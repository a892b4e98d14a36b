import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Postgres
import PostgresTesting
import Testing
import TributaryCollection
import TributaryGovernance
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributarySegments
@testable import TributaryServer
import TributaryService

/// Deleting people who made alias calls, through the API `tributary privacy delete` calls and through the HTTP privacy
/// API (a real socket), with alias calls sent before and after: afterwards no column of any table, in any schema,
/// holds any of their identifiers (emails in any case, phones as sent and normalized, user ids, anonymous ids), and
/// the same scan finds them before.
@Suite struct AliasPrivacyTests {
    /// `schema.table.column` → rows whose column, as text and lower-cased, contains one of `needles` (lower-cased, also
    /// JSON-escaped). The tables and columns come from the catalog: every table and materialized view of every schema
    /// but PostgreSQL's own (partitions one by one), every column, whatever its type; one added later is scanned too.
    static func scan(_ client: PostgresClient, for needles: [String]) async throws -> [String: Int] {
        let forms = Array(
            Set(
                needles.flatMap {
                    [$0.lowercased(), String(JSONValue.string($0.lowercased()).serialized.dropFirst().dropLast())]
                }))
        let tables = try await client.query(
            """
            SELECT n.nspname::text, c.relname::text, array_agg(a.attname::text ORDER BY a.attnum)
            FROM pg_catalog.pg_class AS c
            JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
            JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname !~ '^pg_(toast|temp)'
            GROUP BY 1, 2 ORDER BY 1, 2
            """
        ).map { try $0.decode((String, String, [String]).self) }
        #expect(tables.count > 20 && tables.contains { $0.1 == "identity_nodes" }, "the scan sees the tables: \(tables.map(\.1))")
        var found: [String: Int] = [:]
        for (schema, table, columns) in tables {
            let counts = try columns.map { column in
                "count(*) FILTER (WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) AS n WHERE strpos(lower(t.\(try SQLQuoting.identifier(column))::text), n) > 0))"
            }
            let row = try await client.query(
                PostgresQuery(
                    unsafeSQL: "SELECT \(counts.joined(separator: ", ")) FROM \(try SQLQuoting.qualified(schema, table)) AS t",
                    binds: [try forms.postgresBind()]))[0]
            for (index, column) in columns.enumerated() {
                let count = try row[index].decode(Int.self)
                if count > 0 { found["\(schema).\(table).\(column)"] = count }
            }
        }
        return found
    }

    static func resolve(_ client: PostgresClient) async throws {
        _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
        _ = try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()]).catchUp()
    }

    static func write(_ batch: String, _ client: PostgresClient) async throws -> EventWriter.Outcome {
        let parsed = try SegmentParser(limits: CollectionLimits()).parse(Array(batch.utf8), type: nil, receivedAt: Date())
        return try await EventWriter(client: client, logger: TestDatabase.logger).write(parsed.events, sourceID: "src-test")
    }

    static func profiles(_ client: PostgresClient, _ identifiers: [String]) async throws -> Set<String> {
        Set(
            try await client.query(
                """
                SELECT coalesce(profile_id::text, 'none') FROM unnest(\(identifiers)::text[]) AS i (id)
                LEFT JOIN cdp.identities AS n ON n.kind || ':' || n.value = i.id
                """
            ).map { try $0[0].decode(String.self) })
    }

    static let ann = [
        "anon-ann-5k2", "user-ann-5k2", "user-ann-renamed-5k2", "user-ann-after-5k2",
        "Ann.Alias@Example.COM", "ann.alias@example.com", "+1 (555) 010-7788", "+15550107788", "15550107788",
    ]
    static let bob = [
        "anon-bob-9x", "user-bob-9x", "user-bob-renamed-9x", "user-bob-late-9x", "user-bob-after-9x",
        "BOB.alias@Example.org", "555.010.4455", "5550104455",
    ]
    static let carol = ["anon-carol-3z", "user-carol-3z", "carol.alias@example.net"]

    @Test func deletedPeopleWithAliasCallsLeaveNoValueInAnyColumn() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            // Room for a renamed user id in one profile, so a user-id-to-user-id alias links (as any link, within limits).
            var rules = IdentityRules()
            rules.limits["user_id"] = 3
            try await IdentityAdmin(client: client, logger: TestDatabase.logger).apply(rules: rules, resolve: false)
            let (_, writeKey) = try await SourceStore(client: client).create(name: "web")
            let privacyToken = try await APITokenStore(client: client).create(name: "dpo", scopes: [.privacy]).secret
            _ = try await Self.write(
                """
                {"batch": [
                  {"type": "page", "anonymousId": "anon-ann-5k2", "messageId": "a1"},
                  {"type": "alias", "previousId": "anon-ann-5k2", "userId": "user-ann-5k2", "messageId": "a2"},
                  {"type": "identify", "userId": "user-ann-5k2", "messageId": "a3",
                   "traits": {"email": "Ann.Alias@Example.COM", "phone": "+1 (555) 010-7788", "plan": "pro"}},
                  {"type": "alias", "previousId": "user-ann-5k2", "userId": "user-ann-renamed-5k2", "messageId": "a4"},
                  {"type": "identify", "userId": "user-bob-9x", "anonymousId": "anon-bob-9x", "messageId": "b1",
                   "traits": {"email": "BOB.alias@Example.org", "phone": "555.010.4455"}},
                  {"type": "alias", "previousId": "user-bob-9x", "userId": "user-bob-renamed-9x", "messageId": "b2"},
                  {"type": "track", "userId": "user-bob-renamed-9x", "event": "Order Completed", "messageId": "b3"},
                  {"type": "identify", "userId": "user-carol-3z", "anonymousId": "anon-carol-3z", "messageId": "c1",
                   "traits": {"email": "carol.alias@example.net"}},
                  {"type": "alias", "previousId": "anon-carol-3z", "userId": "user-carol-3z", "messageId": "c2"}
                ]}
                """, client)
            try await Self.resolve(client)
            // The identity stage linked each alias's previousId and userId.
            #expect(
                try await Self.profiles(
                    client,
                    [
                        "anonymous_id:anon-ann-5k2", "user_id:user-ann-5k2", "user_id:user-ann-renamed-5k2",
                        "email:ann.alias@example.com",
                    ]
                ).count == 1)
            #expect(
                try await Self.profiles(
                    client, ["user_id:user-bob-9x", "user_id:user-bob-renamed-9x", "anonymous_id:anon-bob-9x"]
                ).count == 1)
            // Not yet resolved when Bob's deletion starts: the deletion resolves it, so it goes too.
            _ = try await Self.write(
                #"{"batch": [{"type": "alias", "previousId": "user-bob-9x", "userId": "user-bob-late-9x", "messageId": "b4"}]}"#,
                client)

            // The scan finds each person before, in the alias calls' columns among others (so it can fail).
            let annBefore = try await Self.scan(client, for: Self.ann)
            let bobBefore = try await Self.scan(client, for: Self.bob)
            let carolBefore = try await Self.scan(client, for: Self.carol)
            for (name, found) in [("ann", annBefore), ("bob", bobBefore)] {
                #expect(found.keys.contains { $0.hasPrefix("cdp.events") && $0.hasSuffix(".previous_id") }, "\(name): \(found)")
                #expect(found.keys.contains { $0.hasPrefix("cdp.events") && $0.hasSuffix(".user_id") }, "\(name): \(found)")
                #expect(
                    found["cdp.identity_nodes.value"] != nil && found["cdp.identity_profiles.founder_value"] != nil,
                    "\(name): \(found)")
            }
            #expect(annBefore.keys.contains { $0.hasSuffix(".traits") }, "\(annBefore)")
            #expect(!carolBefore.isEmpty)

            // The access export holds Bob's alias calls, the unresolved one too.
            let privacy = PrivacyRequests(client: client, logger: TestDatabase.logger)
            let exported = try JSONParser.parse(
                Array(try await privacy.export(identifier: "user_id:user-bob-9x", actor: .cli).utf8))
            guard case .array(let events)? = exported["events"] else {
                Issue.record("no events in the export")
                return
            }
            #expect(Set(events.compactMap { $0["message_id"]?.serialized }) == [#""b1""#, #""b2""#, #""b3""#, #""b4""#])
            #expect(events.contains { $0["previous_id"] == .string("user-bob-9x") })

            // Ann through what `tributary privacy delete` calls.
            let report = try await privacy.delete(
                identifier: "email: Ann.Alias@EXAMPLE.com", actor: .cli, registry: DestinationRegistry())
            #expect(report.profiles.count == 1, "\(report)")
            #expect(try await Self.scan(client, for: Self.ann) == [:])

            let app = buildApplication(
                configuration: ServerConfiguration(port: 0, writeKeyCacheTTL: .zero, apiTokenCacheTTL: .zero),
                client: client, logger: TestDatabase.logger)
            try await app.test(.live) { http in
                // Bob through the HTTP privacy API.
                let (status, text) = try await PrivacyAPITests.post(
                    http, "delete", #"{"identifier": "user_id:user-bob-9x"}"#, token: privacyToken)
                #expect(status == .ok, "\(text)")
                #expect(try await Self.scan(client, for: Self.bob) == [:])

                // Alias calls after the deletions naming them as previousId are answered 200 and dropped; Carol's is stored.
                var headers = HTTPFields()
                headers[.authorization] = "Basic " + Data((writeKey + ":").utf8).base64EncodedString()
                headers[.contentType] = "application/json"
                for body in [
                    #"{"previousId": "anon-ann-5k2", "userId": "user-ann-after-5k2", "messageId": "after-1"}"#,
                    #"{"previousId": "user-ann-renamed-5k2", "userId": "user-ann-after-5k2", "messageId": "after-2"}"#,
                    #"{"previousId": " user-bob-9x ", "userId": "user-bob-after-9x", "messageId": "after-3"}"#,
                    #"{"previousId": "anon-bob-9x", "userId": "user-bob-after-9x", "messageId": "after-4"}"#,
                    #"{"previousId": "anon-carol-3z", "userId": "user-carol-3z", "messageId": "after-5"}"#,
                ] {
                    let status = try await http.execute(
                        uri: "/v1/alias", method: .post, headers: headers, body: ByteBuffer(string: body)
                    ) {
                        (response: TestResponse) async throws in response.status
                    }
                    #expect(status == .ok, "\(body)")
                }
            }
            #expect(try await client.query("SELECT sum(events_dropped)::int FROM cdp.suppressions").scalar(Int.self) == 4)
            #expect(
                try await client.query("SELECT count(*) FROM cdp.events WHERE message_id LIKE 'after-%'").scalar(Int.self) == 1)
            try await Self.resolve(client)
            _ = try await IdentityRebuild(configuration: client.configuration, logger: TestDatabase.logger).run()
            let annAfter = try await Self.scan(client, for: Self.ann)
            let bobAfter = try await Self.scan(client, for: Self.bob)
            #expect(annAfter == [:] && bobAfter == [:], "ann: \(annAfter), bob: \(bobAfter)")
            #expect(
                try await Self.scan(client, for: Self.carol).keys.contains { $0.hasSuffix(".previous_id") }, "Carol is untouched")
        }
    }
}
