import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Postgres
import PostgresTesting
import Testing
import TributaryCollection
import TributaryModel
@testable import TributaryServer
import TributaryService

@Suite struct WebhookTests {
    static let stripeMapping = #"""
        {"source": "payments", "type": "track", "event": "Payment Succeeded", "userId": "$.data.object.customer",
         "messageId": "$.id", "timestamp": "$.created", "timestampFormat": "unix",
         "traits": {"email": "$.data.object.receipt_email"},
         "properties": {"amount": "$.data.object.amount", "currency": "$.data.object.currency", "kind": "$.type"}}
        """#

    @Test func mappingFilesAreCheckedWithPaths() throws {
        func error(_ text: String) -> String {
            do {
                _ = try WebhookMapping(json: JSONParser.parse(Array(text.utf8)))
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        #expect(error(#"{"type":"track"}"#) == "mapping.source: required")
        #expect(error(#"{"source":"s","type":"buy"}"#).hasPrefix("mapping.type: required, one of"))
        #expect(error(#"{"source":"s","type":"track","userID":"$.u"}"#).hasPrefix("mapping.userID: unknown key"))
        #expect(error(#"{"source":"s","type":"track","traits":{"email":5}}"#) == "mapping.traits.email: must be a string")
        #expect(error(#"{"source":"s","type":"track","userId":"$..u"}"#) == "mapping.userId: '$..u' has an empty step")
        #expect(error(Self.stripeMapping) == "accepted")
    }

    @Test func paymentPayloadsBecomeCallsAndRedeliveriesAreStoredOnce() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            let (_, key) = try await SourceStore(client: client).create(name: "payments")
            let (_, otherKey) = try await SourceStore(client: client).create(name: "web")
            let app = buildApplication(
                configuration: ServerConfiguration(port: 0, writeKeyCacheTTL: .zero), client: client, logger: TestDatabase.logger)
            let payload =
                #"{"id":"evt_1","type":"charge.succeeded","created":1764000000,"data":{"object":{"customer":"cus_9","amount":4200,"currency":"eur","receipt_email":"ada@example.com"}}}"#
            try await app.test(.live) { (http) async throws in
                try await http.execute(
                    uri: "/v1/webhooks/payments?writeKey=\(key)", method: .post, body: ByteBuffer(string: payload)
                ) { (r: TestResponse) async throws in
                    #expect(r.status == .notFound, "no mapping yet")
                }
                try await WebhookMappingStore(client: client).apply(
                    try WebhookMapping(json: JSONParser.parse(Array(Self.stripeMapping.utf8))))
                for _ in 0..<2 {
                    try await http.execute(
                        uri: "/v1/webhooks/payments?writeKey=\(key)", method: .post, body: ByteBuffer(string: payload)
                    ) { (r: TestResponse) async throws in
                        #expect(r.status == .ok)
                    }
                }
                // Another source's key cannot post to this source.
                try await http.execute(
                    uri: "/v1/webhooks/payments?writeKey=\(otherKey)", method: .post, body: ByteBuffer(string: payload)
                ) { (r: TestResponse) async throws in
                    #expect(r.status == .unauthorized)
                }
                try await http.execute(
                    uri: "/v1/webhooks/payments?writeKey=\(key)", method: .post,
                    body: ByteBuffer(string: #"{"id":"evt_2","created":"soon"}"#)
                ) { (r: TestResponse) async throws in
                    #expect(r.status == .badRequest)
                }
            }
            let row = try await client.query(
                """
                SELECT count(*) OVER (), event, user_id, message_id, timestamp, traits->>'email', properties->>'amount', properties->>'kind'
                FROM cdp.events
                """
            ).first!
            let (count, event, user, message, when, email, amount, kind) =
                try row.decode((Int, String, String, String, Date, String, String, String).self)
            #expect(count == 1)
            #expect(event == "Payment Succeeded" && user == "cus_9" && message == "evt_1")
            #expect(when == Date(timeIntervalSince1970: 1_764_000_000))
            #expect(email == "ada@example.com" && amount == "4200" && kind == "charge.succeeded")
        }
    }

    @Test func batchedPayloadsMakeOneCallPerElementWithDerivedIds() async throws {
        let mapping =
            #"{"source":"mail","type":"track","each":"$.events","event":"$.event","userId":"$.email","properties":{"campaign":"$.campaign_id"}}"#
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await Migrator(files: ProjectFiles(root: TestDatabase.packageRoot), logger: TestDatabase.logger).migrate(client)
            let (_, key) = try await SourceStore(client: client).create(name: "mail")
            try await WebhookMappingStore(client: client).apply(try WebhookMapping(json: JSONParser.parse(Array(mapping.utf8))))
            let app = buildApplication(configuration: ServerConfiguration(port: 0), client: client, logger: TestDatabase.logger)
            let payload =
                #"{"events":[{"event":"Email Opened","email":"a@x.com","campaign_id":"c1"},{"event":"Email Clicked","email":"b@x.com","campaign_id":"c1"},{"email":"c@x.com"}]}"#
            let headers: HTTPFields = [.authorization: "Basic " + Data("\(key):".utf8).base64EncodedString()]
            try await app.test(.live) { (http) async throws in
                for _ in 0..<2 {
                    try await http.execute(
                        uri: "/v1/webhooks/mail", method: .post, headers: headers, body: ByteBuffer(string: payload)
                    ) { (r: TestResponse) async throws in
                        #expect(r.status == .ok)
                        let answer = try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: Any]
                        #expect((answer?["rejected"] as? [[String: Any]])?.first?["field"] as? String == "batch[2].event")
                    }
                }
            }
            let events = try await client.query("SELECT array_agg(event ORDER BY seq) FROM cdp.events").scalar([String].self)
            #expect(events == ["Email Opened", "Email Clicked"])
        }
    }
}
