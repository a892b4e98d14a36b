import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Postgres
import PostgresTesting
import Testing
import TributaryCollection
import TributaryIdentity
import TributaryModel
import TributaryProfiles
@testable import TributaryServer
import TributaryService
import TributarySyncs

/// The profile API through a real socket, against real PostgreSQL, with identities made by the real identity stage.
@Suite struct ProfileAPITests {
    struct Setup {
        var client: PostgresClient
        var writeKey: String
        /// Tokens by scope: profiles:read, admin.
        var reader: String
        var admin: String
        /// The profile of u-1 / a-1 / alice, and the id merged into it.
        var profile: UUID
        var mergedAway: UUID
    }

    /// A migrated fresh database holding one person seen under three identifiers (two profiles merged into one), a
    /// hub email and tokens; the application listens on an ephemeral port.
    func withServer(_ body: @escaping @Sendable (any TestClientProtocol, Setup) async throws -> Void) async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            // A low hub threshold, so three people sharing an email make it a hub.
            try await IdentityAdmin(client: client, logger: TestDatabase.logger).apply(
                rules: IdentityRules(hubThreshold: 2), resolve: false)
            let (source, writeKey) = try await SourceStore(client: client).create(name: "web")
            let tokens = APITokenStore(client: client)
            let (_, reader) = try await tokens.create(name: "reader", scopes: [.profilesRead])
            let (_, admin) = try await tokens.create(name: "admin", scopes: [.admin])
            let writer = EventWriter(client: client, maxQueuedEvents: 1000, logger: TestDatabase.logger) { _, _, _ in }
            let parsed = try SegmentParser(limits: CollectionLimits()).parse(
                Array(Self.events.utf8), type: nil, receivedAt: Date())
            #expect(parsed.issues.isEmpty, "\(parsed.issues)")
            _ = try await writer.write(parsed.events, sourceID: source.id)
            _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
            let profile = try await client.query(
                "SELECT profile_id FROM cdp.identity_nodes WHERE kind = 'user_id' AND value = 'u-1'"
            ).scalar(UUID.self)
            try await client.execute(
                """
                INSERT INTO cdp.profile_data (profile_id, traits, computed, first_seen_at, last_seen_at, event_count)
                VALUES (\(profile), '{"plan": "pro", "name": "Alice"}', '{"lifetime_value": 42.5}',
                        '2026-01-01T09:00:00Z', '2026-01-05T12:00:00Z', 7)
                """)
            let setup = Setup(
                client: client, writeKey: writeKey, reader: reader, admin: admin, profile: profile,
                mergedAway: Identifier(kind: "user_id", value: "u-1").foundedProfileID)
            let app = buildApplication(
                configuration: ServerConfiguration(port: 0, writeKeyCacheTTL: .zero, apiTokenCacheTTL: .zero),
                client: client, logger: TestDatabase.logger)
            try await app.test(.live) { http in try await body(http, setup) }
        }
    }

    /// a-1 browses first (founding the surviving profile), u-1 identifies with an email and a phone, then an event
    /// carries both; shared@example.com is used by three different users (a hub).
    static let events = """
        {"batch": [
          {"type": "page", "anonymousId": "a-1", "name": "Home", "messageId": "m1", "timestamp": "2026-01-01T09:00:00Z"},
          {"type": "identify", "userId": "u-1", "messageId": "m2", "timestamp": "2026-01-02T10:00:00Z",
           "traits": {"email": "Alice@Example.com", "phone": "+1 (555) 010-9999"}},
          {"type": "track", "userId": "u-1", "anonymousId": "a-1", "event": "Order Completed", "messageId": "m3",
           "timestamp": "2026-01-03T11:00:00Z", "properties": {"revenue": 19.99, "quote": "it's \\"fine\\""}},
          {"type": "track", "userId": "u-1", "event": "Same Time A", "messageId": "m4", "timestamp": "2026-01-04T12:00:00Z"},
          {"type": "track", "userId": "u-1", "event": "Same Time B", "messageId": "m5", "timestamp": "2026-01-04T12:00:00Z"},
          {"type": "identify", "userId": "team/alpha", "messageId": "m6", "timestamp": "2026-01-01T00:00:00Z"},
          {"type": "identify", "userId": "h-1", "traits": {"email": "shared@example.com"}, "messageId": "h1", "timestamp": "2026-01-01T00:00:00Z"},
          {"type": "identify", "userId": "h-2", "traits": {"email": "shared@example.com"}, "messageId": "h2", "timestamp": "2026-01-01T00:00:00Z"},
          {"type": "identify", "userId": "h-3", "traits": {"email": "shared@example.com"}, "messageId": "h3", "timestamp": "2026-01-01T00:00:00Z"}
        ]}
        """

    static func bearer(_ token: String) -> HTTPFields {
        var fields = HTTPFields()
        fields[.authorization] = "Bearer " + token
        return fields
    }

    static func json(_ response: TestResponse) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any] ?? [:]
    }

    /// GETs `uri` with the reader token (or `headers`) and returns the status and the JSON body.
    static func get(
        _ http: any TestClientProtocol, _ uri: String, _ headers: HTTPFields
    ) async throws -> (HTTPResponse.Status, [String: Any], TestResponse) {
        try await http.execute(uri: uri, method: .get, headers: headers, body: nil) { (r: TestResponse) async throws in
            (r.status, try Self.json(r), r)
        }
    }

    /// `/recommendations`: the profile's own ranked products, the popular products for a profile without any, 404 for
    /// nobody; predictive traits appear in the document once computed.
    @Test func recommendationsAndPredictionsAreServed() async throws {
        try await withServer { http, setup in
            let (status, empty, _) = try await Self.get(
                http, "/v1/profiles/user_id/u-1/recommendations", Self.bearer(setup.reader))
            #expect(status == .ok && (empty["recommendations"] as? [Any])?.isEmpty == true, "\(empty)")
            try await setup.client.execute(
                """
                INSERT INTO cdp.popular_products (rank, product_id, score, computed_at)
                VALUES (1, 'sku-9', 40, now()), (2, 'sku-8', 30, now());
                """)
            let (_, popular, _) = try await Self.get(
                http, "/v1/profiles/user_id/u-1/recommendations", Self.bearer(setup.reader))
            #expect((popular["recommendations"] as? [[String: Any]])?.map { $0["product_id"] as? String } == ["sku-9", "sku-8"])
            try await setup.client.execute(
                """
                INSERT INTO cdp.profile_recommendation_lists (profile_id, product_ids, scores, sources, computed_at)
                VALUES (\(setup.profile), '{sku-2,sku-9}', '{0.9,40}', '{similar,popular}', now())
                """)
            let (ok, own, response) = try await Self.get(
                http, "/v1/profiles/email/ALICE@example.com/recommendations", Self.bearer(setup.reader))
            #expect(ok == .ok && response.headers[.contentType] == "application/json")
            #expect(own["profile_id"] as? String == setup.profile.uuidString.lowercased())
            let list = own["recommendations"] as? [[String: Any]] ?? []
            #expect(list.map { $0["product_id"] as? String } == ["sku-2", "sku-9"])
            #expect(list.map { $0["source"] as? String } == ["similar", "popular"])
            let (missing, _, _) = try await Self.get(
                http, "/v1/profiles/user_id/nobody/recommendations", Self.bearer(setup.reader))
            #expect(missing == .notFound)
            let (unauthorized, _, _) = try await Self.get(http, "/v1/profiles/user_id/u-1/recommendations", HTTPFields())
            #expect(unauthorized == .unauthorized)

            let (_, before, _) = try await Self.get(http, "/v1/profiles/user_id/u-1", Self.bearer(setup.reader))
            #expect(before["predictions"] is NSNull && (before["propensities"] as? [String: Any])?.isEmpty == true)
            try await setup.client.execute(
                """
                INSERT INTO cdp.propensity_models (name, kind, goal_event, window_days, training_cutoff, validation_cutoff,
                    training_examples, training_positives, validation_examples, validation_positives, auc, log_loss, model,
                    duration_ms)
                VALUES ('purchase_30d', 'goal', 'Order Completed', 30, now(), now(), 100, 50, 100, 50, 0.8, 0.5, '{}', 1)
                """)
            try await setup.client.execute(
                """
                INSERT INTO cdp.profile_propensities (profile_id, name, model_id, probability, percentile, scored_at)
                SELECT \(setup.profile), 'purchase_30d', model_id, 0.25, 80, now() FROM cdp.propensity_models;
                """)
            let (_, after, _) = try await Self.get(http, "/v1/profiles/user_id/u-1", Self.bearer(setup.reader))
            let propensity = (after["propensities"] as? [String: Any])?["purchase_30d"] as? [String: Any]
            #expect(propensity?["probability"] as? Double == 0.25 && propensity?["percentile"] as? Double == 80)
        }
    }

    @Test func documentHoldsTraitsIdentitiesAndTheNewestEventsInOrder() async throws {
        try await withServer { http, setup in
            let (status, document, response) = try await Self.get(
                http, "/v1/profiles/user_id/u-1?events=3", Self.bearer(setup.reader))
            #expect(status == .ok)
            #expect(response.headers[.contentType] == "application/json")
            #expect(response.headers[.cacheControl] == "no-store")
            // Members in a fixed order, as PostgreSQL built them.
            let text = String(buffer: response.body)
            let keys = [
                "profile_id", "traits", "computed_traits", "segments", "identities", "first_seen_at", "last_seen_at",
                "event_count", "predictions", "propensities", "recommendations", "events",
            ]
            let positions = keys.map { text.range(of: "\"\($0)\"")?.lowerBound }
            #expect(positions.allSatisfy { $0 != nil } && positions.map { $0! } == positions.map { $0! }.sorted(), "\(text)")

            #expect(document["profile_id"] as? String == setup.profile.uuidString.lowercased())
            #expect(document["traits"] as? [String: String] == ["plan": "pro", "name": "Alice"])
            #expect((document["computed_traits"] as? [String: Any])?["lifetime_value"] as? Double == 42.5)
            #expect((document["segments"] as? [Any])?.isEmpty == true)
            #expect(document["first_seen_at"] as? String == "2026-01-01T09:00:00.000Z")
            #expect(document["last_seen_at"] as? String == "2026-01-05T12:00:00.000Z")
            #expect(document["event_count"] as? Int == 7)
            let identities = document["identities"] as? [[String: Any]] ?? []
            #expect(
                identities.map { "\($0["kind"]!):\($0["value"]!)" }
                    == ["anonymous_id:a-1", "email:alice@example.com", "phone:+15550109999", "user_id:u-1"],
                "by first event, then creation")
            #expect(identities.first?["first_seen_at"] as? String == "2026-01-01T09:00:00.000Z")
            let events = document["events"] as? [[String: Any]] ?? []
            // Newest first; equal timestamps by receive order, later first.
            #expect(events.map { $0["message_id"] as? String } == ["m5", "m4", "m3"])
            guard events.count == 3 else { return }
            let order = events[2]
            #expect(order["type"] as? String == "track" && order["event"] as? String == "Order Completed")
            #expect(order["timestamp"] as? String == "2026-01-03T11:00:00.000Z")
            #expect((order["properties"] as? [String: Any])?["quote"] as? String == #"it's "fine""#)
            for key in ["name", "received_at", "source_id", "traits", "context"] { #expect(order.keys.contains(key), "\(key)") }

            // The default is 20 events (all 5 here); 0 gives none.
            let (_, all, _) = try await Self.get(http, "/v1/profiles/user_id/u-1", Self.bearer(setup.reader))
            #expect((all["events"] as? [[String: Any]])?.map { $0["message_id"] as? String } == ["m5", "m4", "m3", "m2", "m1"])
            let (_, none, _) = try await Self.get(http, "/v1/profiles/user_id/u-1?events=0", Self.bearer(setup.admin))
            #expect((none["events"] as? [Any])?.isEmpty == true)
        }
    }

    @Test func identifiersAreNormalizedAndOldProfileIDsResolve() async throws {
        try await withServer { http, setup in
            let expected = setup.profile.uuidString.lowercased()
            #expect(setup.mergedAway != setup.profile)
            for uri in [
                "/v1/profiles/email/Alice%40Example.COM",
                "/v1/profiles/email/%20alice@example.com%20",
                "/v1/profiles/phone/%2B1%20(555)%20010-9999",
                "/v1/profiles/phone/+1-555-010-9999",
                "/v1/profiles/anonymous_id/a-1",
                "/v1/profiles/profile_id/\(setup.profile.uuidString)",
                "/v1/profiles/profile_id/\(setup.mergedAway.uuidString.lowercased())",
            ] {
                let (status, document, _) = try await Self.get(http, uri, Self.bearer(setup.reader))
                #expect(status == .ok, "\(uri)")
                #expect(document["profile_id"] as? String == expected, "\(uri)")
            }
            // %2F is a slash inside the value, not a path separator.
            let (status, document, _) = try await Self.get(http, "/v1/profiles/user_id/team%2Falpha", Self.bearer(setup.reader))
            #expect(status == .ok)
            #expect((document["identities"] as? [[String: Any]])?.first?["value"] as? String == "team/alpha")
            // A profile with no cdp.profile_data row yet: empty traits, aggregates from its identifiers.
            #expect((document["traits"] as? [String: Any])?.isEmpty == true)
            #expect(document["event_count"] as? Int == 0)
            #expect(document["first_seen_at"] as? String == "2026-01-01T00:00:00.000Z")
        }
    }

    @Test func unknownProfilesHubsAndBadRequestsGetClearErrors() async throws {
        try await withServer { http, setup in
            let auth = Self.bearer(setup.reader)
            let cases: [(String, HTTPResponse.Status, String, [String])] = [
                (
                    "/v1/profiles/email/nobody@example.com", .notFound, "not_found",
                    ["no profile has the identifier email:nobody@example.com"]
                ),
                ("/v1/profiles/email/NOT-AN-EMAIL", .notFound, "not_found", ["email:not-an-email", "invalid email"]),
                ("/v1/profiles/profile_id/7d9f0c4e-0000-4000-8000-000000000000", .notFound, "not_found", ["profile_id:7d9f0c4e"]),
                (
                    "/v1/profiles/email/shared@example.com", .conflict, "hub",
                    ["email:shared@example.com is a hub", "more than 2", "another identifier"]
                ),
                (
                    "/v1/profiles/emial/alice@example.com", .badRequest, "unknown_kind",
                    ["'emial'", "anonymous_id, email, phone, profile_id, user_id"]
                ),
                ("/v1/profiles/Email/alice@example.com", .badRequest, "invalid_kind", ["'Email' is not a valid identifier kind"]),
                (
                    "/v1/profiles/profile_id/not-a-uuid", .badRequest, "invalid_value",
                    ["'not-a-uuid' cannot be a profile_id", "UUID"]
                ),
                (
                    "/v1/profiles/user_id/u-1?events=abc", .badRequest, "invalid_events",
                    ["events: must be a whole number from 0 to 100, got 'abc'"]
                ),
                ("/v1/profiles/user_id/u-1?events=101", .badRequest, "invalid_events", ["got '101'"]),
                ("/v1/profiles/user_id/u-1?events=-1", .badRequest, "invalid_events", ["got '-1'"]),
                ("/v1/profiles/user_id/u-1?events=", .badRequest, "invalid_events", ["got ''"]),
            ]
            for (uri, status, code, parts) in cases {
                let (got, body, _) = try await Self.get(http, uri, auth)
                #expect(got == status, "\(uri)")
                #expect(body["code"] as? String == code, "\(uri): \(body)")
                let message = body["error"] as? String ?? ""
                for part in parts { #expect(message.contains(part), "\(uri): \(message)") }
            }
        }
    }

    @Test func hostileValuesAreOnlyEverValues() async throws {
        try await withServer { http, setup in
            let auth = Self.bearer(setup.reader)
            let long = String(repeating: "x", count: 5000)
            let cases: [(String, HTTPResponse.Status, String)] = [
                ("/v1/profiles/user_id/'%3B%20DROP%20TABLE%20cdp.events%3B%20--", .notFound, "not_found"),
                ("/v1/profiles/user_id/%22quoted%22%20%5C%20back", .notFound, "not_found"),
                ("/v1/profiles/user_id/a%00b", .badRequest, "invalid_value"),
                ("/v1/profiles/user_id/%FF%FE", .badRequest, "invalid_value"),
                ("/v1/profiles/user_id/100%", .badRequest, "invalid_value"),
                ("/v1/profiles/user_id/\(long)", .notFound, "not_found"),
                ("/v1/profiles/\(long)/x", .badRequest, "invalid_kind"),
                ("/v1/profiles/user_id/%E2%80%AEu-1", .notFound, "not_found"),
            ]
            for (uri, status, code) in cases {
                let (got, body, _) = try await Self.get(http, uri, auth)
                #expect(got == status, "\(uri.prefix(80))")
                #expect(body["code"] as? String == code, "\(uri.prefix(80)): \(body)")
                #expect((body["error"] as? String)?.count ?? 0 < 400, "the message quotes at most a prefix of the value")
            }
            let (_, tooLong, _) = try await Self.get(http, "/v1/profiles/user_id/\(long)", auth)
            #expect((tooLong["error"] as? String)?.contains("too long") == true, "\(tooLong)")
            #expect(try await setup.client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == 9)
        }
    }

    @Test func onlyValidUnrevokedTokensWithTheScopeMayRead() async throws {
        try await withServer { http, setup in
            let uri = "/v1/profiles/user_id/u-1"
            var basic = HTTPFields()
            basic[.authorization] = "Basic " + Data((setup.writeKey + ":").utf8).base64EncodedString()
            let wellFormedUnknown = "trb_" + String(repeating: "A", count: 43)
            var unauthorizedBodies = Set<String>()
            for headers in [
                HTTPFields(), Self.bearer("garbage"), Self.bearer(wellFormedUnknown), Self.bearer(setup.writeKey), basic,
                Self.bearer(""), Self.bearer(setup.reader + "x"),
            ] {
                let (status, body, response) = try await Self.get(http, uri, headers)
                #expect(status == .unauthorized, "\(headers)")
                #expect(response.headers[.wwwAuthenticate] == "Bearer realm=\"tributary\"")
                #expect(body["code"] as? String == "unauthorized")
                unauthorizedBodies.insert(String(buffer: response.body))
            }
            // The scheme is case-insensitive.
            var lower = HTTPFields()
            lower[.authorization] = "bearer \(setup.reader)"
            #expect(try await Self.get(http, uri, lower).0 == .ok)

            // Revoked: refused at once here (the cache TTL is zero), with the same answer as an unknown token.
            try await APITokenStore(client: setup.client).revoke(name: "reader")
            let (revoked, _, revokedResponse) = try await Self.get(http, uri, Self.bearer(setup.reader))
            #expect(revoked == .unauthorized)
            unauthorizedBodies.insert(String(buffer: revokedResponse.body))
            #expect(unauthorizedBodies.count == 1, "\(unauthorizedBodies)")

            // A token whose scopes do not include profiles:read (here one a later version would grant).
            let secret = "trb_" + String(repeating: "s", count: 43)
            try await setup.client.execute(
                """
                INSERT INTO cdp.api_tokens (token_id, name, token_sha256, token_hint, scopes)
                VALUES ('tok_syncs', 'syncs', \(APITokenStore.hash(secret)), 'trb_ssss', ARRAY['syncs:run'])
                """)
            let (forbidden, body, _) = try await Self.get(http, uri, Self.bearer(secret))
            #expect(forbidden == .forbidden)
            #expect(body["code"] as? String == "forbidden" && (body["error"] as? String)?.contains("profiles:read") == true)

            // Collection endpoints do not take API tokens.
            try await http.execute(
                uri: "/v1/track", method: .post, headers: Self.bearer(setup.admin),
                body: ByteBuffer(string: #"{"userId":"u","event":"e"}"#)
            ) { (r: TestResponse) async throws in
                #expect(r.status == .unauthorized)
            }
            try await http.execute(uri: "/metrics", method: .get) { (r: TestResponse) async throws in
                let text = String(buffer: r.body)
                #expect(text.contains("tributary_profile_request_duration_seconds"))
                #expect(text.contains(#"route="profiles",status="401""#) && text.contains(#"route="profiles",status="403""#))
            }
        }
    }
}
