import Foundation
import LocalReceiver
import Postgres
import PostgresTesting
import Testing
@testable import TributaryDestinations
@testable import TributaryModel
@testable import TributarySyncs

/// The ready-made `http` definitions in examples/http-destinations, run against a local receiver that answers the way
/// each vendor documents (a refused row included), with the requests checked against the vendor's documented shape.
@Suite struct HTTPExampleDefinitionsTests {
    typealias F = SyncFixture
    typealias M = Marketing

    /// The example file with its vendor URLs pointed at the receiver, its source a query over `public.customers`, and
    /// no consent purposes (no consent is recorded here).
    static func example(_ file: String, base: String) throws -> String {
        var text = try String(
            contentsOf: TestDatabase.packageRoot.appendingPathComponent("examples/http-destinations/\(file)"), encoding: .utf8)
        for (vendor, path) in [
            ("https://api.hubapi.com", "hubspot"), ("https://us21.api.mailchimp.com", "mailchimp"),
            ("https://a.klaviyo.com", "klaviyo"), ("https://yourcompany.my.salesforce.com", "salesforce"),
        ] {
            text = text.replacingOccurrences(of: vendor, with: "\(base)/\(path)")
        }
        let source =
            #""source": {"query": "SELECT id AS profile_id, email, split_part(email, '@', 1) AS first_name, 'Doe' AS last_name, plan, score AS lifetime_value FROM public.customers"}"#
        text = text.replacingOccurrences(of: #""source": \{[^}]*\}"#, with: source, options: .regularExpression)
        return text.replacingOccurrences(of: #""purposes": \[[^\]]*\],"#, with: "", options: .regularExpression)
    }

    static func body(_ request: TestReceiver.Request) -> JSONValue { (try? JSONParser.parse(request.body)) ?? .null }

    static func items(_ value: JSONValue?) -> [JSONValue] { if case .array(let items)? = value { items } else { [] } }

    /// Runs `body` with a migrated database holding ``people``, the example applied against `receiver`, and a runner
    /// with `environment` for its secrets.
    static func withExample(
        _ file: String, _ receiver: TestReceiver, environment: [String: String],
        _ body: @escaping @Sendable (PostgresClient, SyncRunner) async throws -> Void
    ) async throws {
        try await receiver.serve { base in
            try await TestDatabase.withFreshDatabase { (client) async throws in
                try await F.migrated(client)
                try await F.customers(client, Self.people)
                let registry = DestinationRegistry.standard()
                try await F.apply(try Self.example(file, base: base), client, registry: registry)
                try await body(
                    client, SyncRunner(client: client, logger: TestDatabase.logger, registry: registry, environment: environment))
            }
        }
    }

    static let people = [
        ("c1", "ann@example.com", "pro", 7), ("c2", "bad@example", "free", 1), ("c3", "cy@example.com", "free", 3),
    ]

    @Test func hubspotContactsBatchUpsertAndArchive() async throws {
        let receiver = TestReceiver { request in
            guard request.path.hasSuffix("/batch/upsert") else { return .init(status: 204, body: "") }
            // HubSpot: 207 Multi-Status, refused inputs under errors[] with their ids in context.ids.
            let bad = Self.items(Self.body(request)["inputs"]).filter { $0["id"] == .string("bad@example") }
            guard !bad.isEmpty else { return .init(body: #"{"status": "COMPLETE", "results": []}"#) }
            return .init(
                status: 207,
                body:
                    #"{"status": "COMPLETE", "results": [], "numErrors": 1, "errors": [{"status": "error", "category": "VALIDATION_ERROR", "message": "Property values were not valid: email", "context": {"ids": ["bad@example"]}}]}"#
            )
        }
        try await Self.withExample("hubspot-contacts.json", receiver, environment: ["HUBSPOT_TOKEN": "hs-token"]) {
            client, runner in
            let first = try await runner.run("vip_to_hubspot")
            #expect(first.delivered == 2 && first.rejected == 1, "\(first)")
            try await client.execute("DELETE FROM public.customers WHERE id = 'c3'")
            let second = try await runner.run("vip_to_hubspot")
            #expect(second.removed == 1 && second.delivered == 1, "\(second)")
        }
        let requests = await receiver.requests
        // The second run offers the refused row again (until delivered) and archives the row that left.
        #expect(
            requests.map(\.path) == [
                "/hubspot/crm/v3/objects/contacts/batch/upsert", "/hubspot/crm/v3/objects/contacts/batch/upsert",
                "/hubspot/crm/v3/objects/contacts/batch/archive",
            ])
        for request in requests {
            #expect(request.method == "POST" && request.header("Authorization") == "Bearer hs-token")
            #expect(request.header("Content-Type") == "application/json")
        }
        let inputs = Self.items(Self.body(requests[0])["inputs"])
        #expect(inputs.count == 3 && inputs.count <= 100, "HubSpot takes at most 100 inputs per batch")
        for input in inputs {
            #expect(input["idProperty"] == .string("email") && input["id"] != nil)
            #expect(input["properties"]?.objectKeys.sorted() == ["firstname", "lastname", "plan"])
        }
        #expect(Self.items(Self.body(requests[1])["inputs"]).map { $0["id"] } == [.string("bad@example")])
        #expect(Self.items(Self.body(requests[2])["inputs"]) == [.object([("id", .string("cy@example.com"))])])
    }

    @Test func mailchimpAudienceBatchSubscribeAndUnsubscribe() async throws {
        let receiver = TestReceiver { request in
            // Mailchimp: 200, refused members under errors[] by email_address.
            let members = Self.items(Self.body(request)["members"])
            let bad = members.contains { $0["email_address"] == .string("bad@example") }
            return .init(
                body: bad
                    ? #"{"new_members": [], "updated_members": [], "errors": [{"email_address": "bad@example", "error": "bad@example looks fake or invalid, please enter a real email address.", "error_code": "ERROR_GENERIC"}], "total_created": 2, "total_updated": 0, "error_count": 1}"#
                    : #"{"new_members": [], "updated_members": [], "errors": [], "total_created": 0, "total_updated": 1, "error_count": 0}"#
            )
        }
        try await Self.withExample("mailchimp-audience.json", receiver, environment: ["MAILCHIMP_API_KEY": "mc-key-us21"]) {
            client, runner in
            let first = try await runner.run("newsletter_to_mailchimp")
            #expect(first.delivered == 2 && first.rejected == 1, "\(first)")
            let reason = try await client.query("SELECT reason FROM cdp.sync_errors").scalar(String.self)
            #expect(reason.contains("looks fake or invalid"))
            try await client.execute("DELETE FROM public.customers WHERE id = 'c3'")
            let second = try await runner.run("newsletter_to_mailchimp")
            #expect(second.removed == 1 && second.delivered == 1, "\(second)")
        }
        let requests = await receiver.requests
        try #require(requests.count >= 2)
        for request in requests {
            #expect(request.method == "POST" && request.path == "/mailchimp/3.0/lists/LIST_ID")
            #expect(request.header("Authorization") == "Basic " + Data("tributary:mc-key-us21".utf8).base64EncodedString())
            #expect(Self.body(request)["update_existing"] == .bool(true))
        }
        let subscribe = Self.items(Self.body(requests[0])["members"])
        #expect(subscribe.count == 3 && subscribe.count <= 500, "Mailchimp takes at most 500 members per request")
        #expect(subscribe.allSatisfy { $0["status_if_new"] == .string("subscribed") && $0["merge_fields"]?["FNAME"] != nil })
        let unsubscribe = Self.items(Self.body(requests.last!)["members"])
        #expect(
            unsubscribe == [.object([("status", .string("unsubscribed")), ("email_address", .string("cy@example.com"))])]
                || unsubscribe == [.object([("email_address", .string("cy@example.com")), ("status", .string("unsubscribed"))])])
    }

    @Test func salesforceCollectionsUpsertWithClientCredentials() async throws {
        let receiver = TestReceiver { request in
            if request.path == "/salesforce/services/oauth2/token" {
                return .init(body: #"{"access_token": "00Dxx!token", "instance_url": "https://x", "token_type": "Bearer"}"#)
            }
            // Salesforce: one result per record, in order.
            let results = Self.items(Self.body(request)["records"]).map { record in
                record["Email"] == .string("bad@example")
                    ? #"{"success": false, "errors": [{"statusCode": "INVALID_EMAIL_ADDRESS", "message": "Email: invalid email address: bad@example", "fields": ["Email"]}]}"#
                    : #"{"id": "003xx", "success": true, "errors": [], "created": true}"#
            }
            return .init(body: "[" + results.joined(separator: ",") + "]")
        }
        try await Self.withExample(
            "salesforce-contacts.json", receiver,
            environment: ["SALESFORCE_CLIENT_ID": "3MVG9", "SALESFORCE_CLIENT_SECRET": "sf-secret"]
        ) { client, runner in
            let report = try await runner.run("customers_to_salesforce")
            #expect(report.delivered == 2 && report.rejected == 1, "\(report)")
            let reason = try await client.query("SELECT reason FROM cdp.sync_errors").scalar(String.self)
            #expect(reason == "Email: invalid email address: bad@example")
        }
        let requests = await receiver.requests
        try #require(requests.count == 2)
        #expect(requests[0].path == "/salesforce/services/oauth2/token")
        #expect(
            M.form(requests[0].text) == ["grant_type": "client_credentials", "client_id": "3MVG9", "client_secret": "sf-secret"])
        let upsert = requests[1]
        #expect(
            upsert.method == "PATCH"
                && upsert.path == "/salesforce/services/data/v62.0/composite/sobjects/Contact/Tributary_Id__c")
        #expect(upsert.header("Authorization") == "Bearer 00Dxx!token")
        let body = Self.body(upsert)
        #expect(body["allOrNone"] == .bool(false))
        let records = Self.items(body["records"])
        #expect(records.count == 3 && records.count <= 200, "sObject Collections take at most 200 records")
        #expect(records.allSatisfy { $0["attributes"]?["type"] == .string("Contact") && $0["Tributary_Id__c"] != nil })
    }

    @Test func klaviyoProfileImportPerRow() async throws {
        let receiver = TestReceiver { request in
            // Klaviyo: JSON:API; a refused profile is a 400 with an errors list.
            if case .string("bad@example")? = Self.body(request)["data"]?["attributes"]?["email"] {
                return .init(
                    status: 400,
                    body:
                        #"{"errors": [{"id": "e1", "status": 400, "code": "invalid", "title": "Invalid input.", "detail": "Invalid email address", "source": {"pointer": "/data/attributes/email"}}]}"#
                )
            }
            return .init(status: 201, body: #"{"data": {"type": "profile", "id": "01J0"}}"#)
        }
        try await Self.withExample(
            "klaviyo-profiles.json", receiver, environment: ["KLAVIYO_AUTHORIZATION": "Klaviyo-API-Key pk_test"]
        ) { client, runner in
            let report = try await runner.run("customers_to_klaviyo")
            #expect(report.delivered == 2 && report.rejected == 1, "\(report)")
            let reason = try await client.query("SELECT reason FROM cdp.sync_errors").scalar(String.self)
            #expect(reason == "HTTP 400: Invalid email address")
        }
        let requests = await receiver.requests
        #expect(requests.count == 3, "one request per profile")
        for request in requests {
            #expect(request.method == "POST" && request.path == "/klaviyo/api/profile-import")
            #expect(request.header("revision") == "2024-10-15" && request.header("Authorization") == "Klaviyo-API-Key pk_test")
            #expect(request.header("Content-Type") == "application/vnd.api+json", "Klaviyo's JSON:API content type, once")
            #expect(request.headers.filter { $0.0.lowercased() == "content-type" }.count == 1)
            let data = Self.body(request)["data"]
            #expect(data?["type"] == .string("profile") && data?["attributes"]?["external_id"] != nil)
        }
    }
}
