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
import TributarySyncs

/// The privacy API through a real socket, against real PostgreSQL and the real identity and profile stages: who may
/// call it (401, 403, 200), what it does, and the 400s naming the bad field.
@Suite struct PrivacyAPITests {
    struct Tokens {
        var reader: String
        var privacy: String
        var admin: String
        var revoked: String
        var writeKey: String
    }

    func withServer(
        _ body: @escaping @Sendable (any TestClientProtocol, PostgresClient, Tokens) async throws -> Void
    ) async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            let (_, writeKey) = try await SourceStore(client: client).create(name: "web")
            let store = APITokenStore(client: client)
            let tokens = Tokens(
                reader: try await store.create(name: "reader", scopes: [.profilesRead]).secret,
                privacy: try await store.create(name: "dpo", scopes: [.privacy]).secret,
                admin: try await store.create(name: "root", scopes: [.admin]).secret,
                revoked: try await store.create(name: "old", scopes: [.privacy]).secret,
                writeKey: writeKey)
            _ = try await store.revoke(name: "old")
            let writer = EventWriter(client: client, logger: TestDatabase.logger)
            let parsed = try SegmentParser(limits: CollectionLimits()).parse(
                Array(
                    """
                    {"batch": [
                      {"type": "identify", "userId": "u-1", "messageId": "e1", "traits": {"email": "Ann@Example.com", "plan": "pro"}},
                      {"type": "identify", "userId": "u-2", "messageId": "e2", "traits": {"email": "bob@example.com"}}
                    ]}
                    """.utf8), type: nil, receivedAt: Date())
            _ = try await writer.write(parsed.events, sourceID: "src-test")
            try await Self.resolve(client)
            let app = buildApplication(
                configuration: ServerConfiguration(port: 0, writeKeyCacheTTL: .zero, apiTokenCacheTTL: .zero),
                client: client, logger: TestDatabase.logger)
            try await app.test(.live) { http in try await body(http, client, tokens) }
        }
    }

    static func resolve(_ client: PostgresClient) async throws {
        _ = try await IdentityStage(client: client, logger: TestDatabase.logger).catchUp()
        _ = try await ProfileStage(client: client, logger: TestDatabase.logger, followers: [RealtimeSegments()]).catchUp()
    }

    /// POSTs `body` to `/v1/privacy/<action>` with `token` (nil: no Authorization) and returns the status and body.
    static func post(
        _ http: any TestClientProtocol, _ action: String, _ body: String, token: String?
    ) async throws -> (HTTPResponse.Status, String) {
        var headers = HTTPFields()
        if let token { headers[.authorization] = "Bearer " + token }
        headers[.contentType] = "application/json"
        return try await http.execute(
            uri: "/v1/privacy/\(action)", method: .post, headers: headers, body: ByteBuffer(string: body)
        ) {
            (response: TestResponse) async throws in (response.status, String(buffer: response.body))
        }
    }

    static func error(_ text: String) -> String {
        guard case .string(let message)? = (try? JSONParser.parse(Array(text.utf8)))?["error"] else { return text }
        return message
    }

    @Test func onlyPrivacyAndAdminTokensMayCallIt() async throws {
        try await withServer { http, client, tokens in
            let body = #"{"identifier": "email:nobody@example.com"}"#
            for action in ["delete", "export", "consent"] {
                for token in [nil, "trb_unknown", tokens.revoked, tokens.writeKey, "x"] {
                    let (status, text) = try await Self.post(http, action, body, token: token)
                    #expect(status == .unauthorized, "\(action) \(token ?? "none")")
                    #expect(Self.error(text) == "a valid API token is required: send Authorization: Bearer <token>")
                }
                let (status, text) = try await Self.post(http, action, body, token: tokens.reader)
                #expect(
                    status == .forbidden && Self.error(text) == "this API token does not have the privacy or admin scope",
                    "\(action)")
            }
            // Nothing was done for any of them.
            #expect(try await client.query("SELECT count(*) FROM cdp.privacy_requests").scalar(Int.self) == 0)

            let (exported, document) = try await Self.post(
                http, "export", #"{"identifier": "email: ANN@example.com"}"#, token: tokens.privacy)
            #expect(
                exported == .ok && document.contains(#""plan": "pro""#) && !document.contains("bob@example.com"), "\(document)")
            let (consented, receipt) = try await Self.post(
                http, "consent", #"{"identifier": "user_id:u-1", "purposes": {"Marketing": false}}"#, token: tokens.admin)
            #expect(consented == .ok && receipt.contains(#""stored":true"#), "\(receipt)")
            try await Self.resolve(client)
            #expect(
                try await client.query("SELECT count(*) FROM cdp.consent WHERE purpose = 'Marketing' AND NOT granted").scalar(
                    Int.self) == 1)

            let (deleted, report) = try await Self.post(http, "delete", #"{"identifier": "user_id:u-1"}"#, token: tokens.privacy)
            #expect(deleted == .ok, "\(report)")
            let counts = try JSONParser.parse(Array(report.utf8))
            #expect(counts["counts"]?["events"] == .number("2") && counts["identifiers"] == .number("2"), "\(report)")
            #expect(
                try await client.query("SELECT count(*) FROM cdp.identity_nodes").scalar(Int.self) == 2,
                "Bob's two identifiers stay")
            let actors = try await AuditLog(client: client).entries(actionPrefix: "privacy.").map { "\($0.actor) \($0.action)" }
            #expect(actors == ["token:dpo privacy.delete", "token:root privacy.consent", "token:dpo privacy.export"])
            // Deleted people's events are still answered 200 by the collection API, and dropped.
            var headers = HTTPFields()
            headers[.authorization] = "Basic " + Data((tokens.writeKey + ":").utf8).base64EncodedString()
            headers[.contentType] = "application/json"
            let status = try await http.execute(
                uri: "/v1/track", method: .post, headers: headers,
                body: ByteBuffer(string: #"{"userId": "u-1", "event": "Back", "messageId": "late-1"}"#)
            ) { (r: TestResponse) async throws in r.status }
            #expect(status == .ok)
            #expect(try await client.query("SELECT count(*) FROM cdp.events WHERE message_id = 'late-1'").scalar(Int.self) == 0)
            #expect(try await client.query("SELECT sum(events_dropped)::int FROM cdp.suppressions").scalar(Int.self) == 1)
        }
    }

    @Test func badRequestsNameTheProblem() async throws {
        try await withServer { http, client, tokens in
            for (action, body, message) in [
                ("delete", "not json", "the body is not valid JSON: invalid JSON at byte 1: invalid literal"),
                ("delete", "[1]", "the body must be a JSON object"),
                ("delete", "{}", "identifier: required, a string KIND:VALUE"),
                ("delete", #"{"identifier": 5}"#, "identifier: required, a string KIND:VALUE"),
                ("delete", #"{"identifier": "u-1"}"#, "'u-1' is not KIND:VALUE"),
                (
                    "delete", #"{"identifier": "user_id:u-1", "skipDestinations": "yes"}"#,
                    "skipDestinations: must be true or false"
                ),
                (
                    "delete", #"{"identifier": "user_id:u-1", "purposes": {}}"#,
                    "purposes: unknown field; known fields are identifier, skipDestinations"
                ),
                ("export", #"{"identifier": "emial:a@example.com"}"#, "'emial' is not an identifier kind in use or configured"),
                (
                    "export", #"{"identifier": "email:a\u0000b"}"#,
                    "the body is not valid JSON: invalid JSON at byte 29: \\u0000 is not allowed"
                ),
                ("consent", #"{"identifier": "user_id:u-1"}"#, "purposes: required, an object of purpose"),
                (
                    "consent", #"{"identifier": "user_id:u-1", "purposes": {"Marketing": "yes"}}"#,
                    "purposes.Marketing: must be true or false"
                ),
                ("consent", #"{"identifier": "user_id:u-1", "purposes": {}}"#, "purposes: at least one purpose is required"),
                ("consent", #"{"identifier": "email:", "purposes": {"A": true}}"#, "the identifier 'email:' has an empty value"),
            ] {
                let (status, text) = try await Self.post(http, action, body, token: tokens.admin)
                #expect(status == .badRequest && Self.error(text).hasPrefix(message), "\(action) \(body): \(text)")
            }
            let big = #"{"identifier": "user_id:"# + String(repeating: "a", count: 70_000) + #""}"#
            #expect(try await Self.post(http, "delete", big, token: tokens.admin).0 == .contentTooLarge)
            #expect(try await client.query("SELECT count(*) FROM cdp.events").scalar(Int.self) == 2, "nothing stored or lost")
            #expect(try await client.query("SELECT count(*) FROM cdp.suppressions").scalar(Int.self) == 0)
        }
    }
}
